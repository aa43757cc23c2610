"""The rules every store applies, defined once and handed to a store as plain data.

The state machine (which status may follow which, what a finished session refuses), the
retention rules (expiry ages, eviction order), the age-bucket cutoffs and the stuck threshold.
A store never decides a rule itself: it receives these values with each operation, so the
memory store and a shared store cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.core.figures import AGE_BUCKETS
from sidecar.core.models import FINISHED, GenerationStatus

__all__ = [
    "ALLOWED_TRANSITIONS",
    "EVICTION_ORDER",
    "FINISHED",
    "KNOWN_TRANSITIONS",
    "RECOVERED_MESSAGE",
    "SAME_STATUS_CHANGES_NOTHING",
    "STUCK_STATUS",
    "UPDATABLE_FIELDS",
    "WORK_STATUSES",
    "ExpiryRule",
    "age_cutoffs",
    "expiry_rules",
    "micros",
    "sources_of",
]

_S = GenerationStatus
MICROS = 1_000_000
ALLOWED_TRANSITIONS: Mapping[GenerationStatus, frozenset[GenerationStatus]] = {
    _S.PENDING: frozenset({_S.PROCESSING, _S.FAILED}),
    _S.PROCESSING: frozenset({_S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
}
# The state machine's edges plus completed -> failed, which only recovery takes.
KNOWN_TRANSITIONS: tuple[tuple[GenerationStatus, GenerationStatus], ...] = (
    *((src, dst) for src, dsts in ALLOWED_TRANSITIONS.items() for dst in sorted(dsts)),
    (_S.COMPLETED, _S.FAILED),
)
RECOVERED_MESSAGE = "Session recovered from corrupted state"
UPDATABLE_FIELDS = frozenset({"status", "error_message", "progress", "scenes"})
# Progress and scenes may change only while the work goes on. An error message may change in
# any status (a finished session may have its message corrected).
WORK_STATUSES: tuple[GenerationStatus, ...] = tuple(s for s in _S if s not in FINISHED)
# update_session_status to the status already in force changes nothing at all (not even the
# message); atomic_session_update applies its other fields.
SAME_STATUS_CHANGES_NOTHING = True
# At capacity under evict_oldest: the oldest session of the first group that holds one goes.
# Finished work first, then work not yet started, work in progress last.
EVICTION_ORDER: tuple[tuple[GenerationStatus, ...], ...] = (
    (_S.COMPLETED, _S.FAILED),
    (_S.PENDING,),
    (_S.PROCESSING,),
)
# Stuck: in this status and not updated for stuck_after_seconds.
STUCK_STATUS = _S.PROCESSING


def sources_of(status: GenerationStatus) -> tuple[GenerationStatus, ...]:
    """The statuses a session may enter `status` from."""
    return tuple(s for s in _S if status in ALLOWED_TRANSITIONS[s])


def micros(seconds: float) -> int:
    """Seconds as integer microseconds, the unit every store works in."""
    return round(seconds * MICROS)


@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """Sessions in `status` (None: any) created strictly before `cutoff_us` have expired."""

    status: GenerationStatus | None
    cutoff_us: int


def expiry_rules(
    now_us: int,
    max_age_seconds: float,
    failed_max_age_seconds: float,
    completed_max_age_seconds: float,
) -> tuple[ExpiryRule, ...]:
    """The age rules at `now_us`: any session past the maximum age, failed and completed ones
    past theirs."""
    return (
        ExpiryRule(None, now_us - micros(max_age_seconds)),
        ExpiryRule(_S.FAILED, now_us - micros(failed_max_age_seconds)),
        ExpiryRule(_S.COMPLETED, now_us - micros(completed_max_age_seconds)),
    )


def age_cutoffs(now_us: int) -> tuple[int, ...]:
    """For each age bucket after the first, the creation time a session of at least its lower
    bound was created before (strictly); see figures.by_age."""
    return tuple(now_us - micros(low) + 1 for _, low, _ in AGE_BUCKETS[1:])
