"""The figures of a snapshot: age buckets, health by utilization, the snapshot itself."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sidecar.core.events import RemovalReason
from sidecar.core.models import GenerationStatus

__all__ = [
    "AGE_BUCKETS",
    "Health",
    "ManagerSnapshot",
    "by_age",
    "health_of",
    "health_report",
    "performance_stats",
]

# (label, lower bound inclusive, upper bound exclusive) of a session's age, in seconds.
AGE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("under_1h", 0, 3600),
    ("1h_to_6h", 3600, 6 * 3600),
    ("6h_to_24h", 6 * 3600, 24 * 3600),
    ("over_24h", 24 * 3600, float("inf")),
)


class Health(enum.StrEnum):
    """Overall health by utilization; the values are the API's and the metric's labels."""

    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"


def health_of(utilization: float, warning: float, critical: float) -> Health:
    """The health state for `utilization` under the two thresholds."""
    if utilization >= critical:
        return Health.CRITICAL
    if utilization >= warning:
        return Health.WARNING
    return Health.HEALTHY


def by_age(total: int, created_before: Sequence[int]) -> dict[str, int]:
    """Sessions per age bucket, from how many were created before each bucket's lower bound
    (after the first; see rules.age_cutoffs)."""
    at_least = [total, *created_before]
    return {
        name: at_least[i] - (at_least[i + 1] if i + 1 < len(at_least) else 0)
        for i, (name, _, _) in enumerate(AGE_BUCKETS)
    }


@dataclass(frozen=True, slots=True)
class ManagerSnapshot:
    """Every figure stats, health and /metrics need, read under one short lock."""

    taken_at: datetime
    total: int
    capacity: int
    utilization: float
    health: Health
    by_status: Mapping[GenerationStatus, int]
    by_age: Mapping[str, int]
    stuck: int
    stuck_after_seconds: float
    oldest_created: Mapping[GenerationStatus, datetime]
    average_age_seconds: float
    oldest_age_seconds: float
    newest_age_seconds: float
    created_total: int
    removed_total: Mapping[RemovalReason, int]
    rejected_total: Mapping[str, int]
    transitions_total: Mapping[tuple[GenerationStatus, GenerationStatus], int]
    cleanup_runs_total: int
    cleanup_errors_total: int
    cleanup_last_run: datetime | None
    worker_alive: bool
    closed: bool


def performance_stats(snap: ManagerSnapshot) -> dict[str, Any]:
    """The seed's statistics: counts, utilization, status breakdown, age distribution."""
    return {
        "total_sessions": snap.total,
        "max_capacity": snap.capacity,
        "utilization_percent": round(snap.utilization * 100, 1),
        "status_breakdown": {s.value: n for s, n in snap.by_status.items()},
        "age_distribution": dict(snap.by_age),
        "average_age_hours": round(snap.average_age_seconds / 3600, 2),
        "oldest_session_hours": round(snap.oldest_age_seconds / 3600, 2),
        "newest_session_hours": round(snap.newest_age_seconds / 3600, 2),
        "stuck_sessions": snap.stuck,
    }


def health_report(snap: ManagerSnapshot) -> dict[str, Any]:
    """The seed's health report, in real types (ints, floats, bools)."""
    return {
        "overall_health": snap.health.value,
        "session_count": snap.total,
        "utilization_percent": round(snap.utilization * 100, 1),
        "stuck_sessions": snap.stuck,
        "cleanup_active": snap.worker_alive,
    }
