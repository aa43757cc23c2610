"""What every benchmark shares: the session fixture, timing helpers and the result records."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from sidecar.core.clock import ManualClock
from sidecar.core.config import ManagerConfig
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationStatus

__all__ = [
    "FIXTURE_START",
    "SPREAD_HOURS",
    "STATUS_MIX",
    "STORY",
    "Figure",
    "Log",
    "Section",
    "bench_config",
    "fmt",
    "load_sessions",
    "machine_info",
    "median",
    "status_path",
    "time_calls",
]

Log = Callable[[str], None]

FIXTURE_START = datetime(2026, 1, 1, tzinfo=UTC)
SPREAD_HOURS = 30.0
# Out of every 20 sessions loaded: 5 pending, 5 processing, 7 completed, 3 failed.
STATUS_MIX: tuple[GenerationStatus, ...] = (
    *[GenerationStatus.PENDING] * 5,
    *[GenerationStatus.PROCESSING] * 5,
    *[GenerationStatus.COMPLETED] * 7,
    *[GenerationStatus.FAILED] * 3,
)
_THREE_DAYS = 3 * 86400.0
STORY = GenerationRequest(
    story_text="A lighthouse keeper adopts a gull that can read the weather. " * 4,
    num_scenes=5,
)


def bench_config(max_sessions: int) -> ManagerConfig:
    """A manager config under which nothing loaded over 30 hours expires while it is measured."""
    return ManagerConfig(
        max_sessions=max_sessions,
        session_max_age_seconds=_THREE_DAYS,
        failed_max_age_seconds=_THREE_DAYS,
        completed_max_age_seconds=_THREE_DAYS,
    )


def status_path(status: GenerationStatus) -> tuple[str, ...]:
    """The transitions that take a new (pending) session to `status`."""
    return {
        GenerationStatus.PENDING: (),
        GenerationStatus.PROCESSING: ("processing",),
        GenerationStatus.COMPLETED: ("processing", "completed"),
        GenerationStatus.FAILED: ("failed",),
    }[status]


def load_sessions(
    n: int,
    *,
    max_sessions: int | None = None,
    request: Callable[[int], GenerationRequest] | None = None,
    before_finish: Callable[[SessionManager, str, int], None] | None = None,
) -> tuple[SessionManager, ManualClock]:
    """A manager (not started) holding `n` sessions in the STATUS_MIX, created over 30 hours.

    Everything goes through the manager's public API. `request(i)` builds the i-th request
    (default: one shared request); `before_finish(manager, session_id, i)` runs while the
    session is still pending or processing, e.g. to add scenes.
    """
    clock = ManualClock(FIXTURE_START)
    manager = SessionManager(bench_config(max_sessions or n), clock=clock)
    step = SPREAD_HOURS * 3600 / n
    for i in range(n):
        session = manager.create_session(STORY if request is None else request(i))
        path = status_path(STATUS_MIX[i % len(STATUS_MIX)])
        if path[:1] == ("processing",):
            manager.update_session_status(session.session_id, "processing")
            path = path[1:]
        if before_finish is not None:
            before_finish(manager, session.session_id, i)
        for status in path:
            manager.update_session_status(session.session_id, status)
        clock.advance(step)
    return manager, clock


def time_calls(call: Callable[[], object], repeat: int) -> list[float]:
    """Seconds taken by each of `repeat` calls."""
    out: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: float) -> str:
    """A figure with about three significant digits, never in scientific notation."""
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1 or size == 0:
        return f"{value:.2f}"
    decimals = 2
    while size < 0.1 and decimals < 8:
        size *= 10
        decimals += 1
    return f"{value:.{decimals + 1}f}"


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure checked against the issue's target; `met` is None for a reference figure."""

    name: str
    value: str
    target: str
    met: bool | None


@dataclass(slots=True)
class Section:
    """One benchmark's report: what was run, a table of medians, and the figures it is judged by."""

    number: int
    title: str
    method: list[str]
    headers: list[str]
    rows: list[list[str]]
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)
    # More tables after the notes: (paragraph before it, headers, rows).
    extra: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def machine_info() -> dict[str, str]:
    """The facts about this machine and its software that the figures depend on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": _cpu_model(),
        "memory": _memory_total(),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        **{
            name: _package_version(name)
            for name in ("flask", "waitress", "prometheus-client", "pydantic", "sortedcontainers")
        },
    }
