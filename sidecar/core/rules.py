"""The rules every store applies, defined once and handed to a store as plain data.

The state machine (which status may follow which, what a finished session refuses), the
retention rules (expiry ages, eviction order), the age-bucket cutoffs and the stuck threshold.
A store never decides a rule itself: it receives these values with each operation, so the
memory store and a shared store cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, overload

from sidecar.core.figures import AGE_BUCKETS
from sidecar.core.models import FINISHED, GenerationStatus

__all__ = [
    "ALLOWED_TRANSITIONS",
    "EVICTION_ORDER",
    "FINISHED",
    "KNOWN_TRANSITIONS",
    "RECOVER",
    "RECOVERABLE_STATUSES",
    "RECOVERED_MESSAGE",
    "RECOVER_RULE",
    "STUCK_STATUS",
    "UPDATABLE_FIELDS",
    "WORK_FIELDS",
    "WORK_STATUSES",
    "ExpiryAges",
    "ExpiryRule",
    "age_cutoffs",
    "expiry_ages",
    "expiry_rules",
    "micros",
    "recovery_cutoff",
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
# Recovery takes only these edges too (pending or processing to failed).
KNOWN_TRANSITIONS: tuple[tuple[GenerationStatus, GenerationStatus], ...] = tuple(
    (src, dst) for src, dsts in ALLOWED_TRANSITIONS.items() for dst in sorted(dsts)
)
RECOVERED_MESSAGE = "Session recovered from corrupted state"
UPDATABLE_FIELDS = frozenset({"status", "error_message", "progress", "scenes"})
# Progress, scenes and the error message may change only while the work goes on; a finished
# session refuses each of them (409), reported in this order. A message that comes with a
# status change is judged by the status the session leaves, so processing -> failed with a
# message is allowed.
WORK_STATUSES: tuple[GenerationStatus, ...] = tuple(s for s in _S if s not in FINISHED)
WORK_FIELDS: tuple[str, ...] = ("progress", "scenes", "error_message")
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


class ExpiryRule(NamedTuple):
    """Sessions in `status` (None: any) created strictly before `cutoff_us` have expired.

    A NamedTuple, not a frozen dataclass: every create builds three, and a frozen dataclass's
    __init__ (one object.__setattr__ per field) cost 0.41 us against 0.22 (timeit, 2026-12-03).
    """

    status: GenerationStatus | None
    cutoff_us: int


# Per status (None: any), the age in microseconds past which a session has expired.
ExpiryAges = tuple[tuple[GenerationStatus | None, int], ...]


def expiry_ages(
    max_age_seconds: float, failed_max_age_seconds: float, completed_max_age_seconds: float
) -> ExpiryAges:
    """The age rules: any session past the maximum age, failed and completed ones past theirs."""
    return (
        (None, micros(max_age_seconds)),
        (_S.FAILED, micros(failed_max_age_seconds)),
        (_S.COMPLETED, micros(completed_max_age_seconds)),
    )


class ExpiryRules(Sequence[ExpiryRule]):
    """The age rules at `now_us`, each worked out when it is read.

    Every create hands the rules to its store, and the memory store reads them only at
    capacity: building the three ExpiryRules up front cost 1.4 us a create (timeit,
    2026-12-03), this object 0.3.
    """

    __slots__ = ("_ages", "_now_us")

    def __init__(self, now_us: int, ages: ExpiryAges) -> None:
        self._now_us = now_us
        self._ages = ages

    def __len__(self) -> int:
        return len(self._ages)

    def __iter__(self) -> Iterator[ExpiryRule]:
        now_us = self._now_us
        return (ExpiryRule(status, now_us - age) for status, age in self._ages)

    @overload
    def __getitem__(self, index: int) -> ExpiryRule: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[ExpiryRule, ...]: ...

    def __getitem__(self, index: int | slice) -> ExpiryRule | tuple[ExpiryRule, ...]:
        return tuple(self)[index]

    def __repr__(self) -> str:
        return f"ExpiryRules({list(self)!r})"


def expiry_rules(now_us: int, ages: ExpiryAges) -> ExpiryRules:
    """The age rules at `now_us`, as the creation times before which each status has expired."""
    return ExpiryRules(now_us, ages)


def age_cutoffs(now_us: int) -> tuple[int, ...]:
    """For each age bucket after the first, the creation time a session of at least its lower
    bound was created before (strictly); see figures.by_age."""
    return tuple(now_us - micros(low) + 1 for _, low, _ in AGE_BUCKETS[1:])


# Recovery forces a session whose work stopped into failed: only a pending or processing
# session whose last update is strictly older than stuck_after_seconds (the stuck gauge's
# boundary). The store checks both atomically with the change.
RECOVER = "recover"  # what an InvalidTransitionError names as requested
RECOVERABLE_STATUSES: tuple[GenerationStatus, ...] = WORK_STATUSES
RECOVER_RULE = (
    "only a pending or processing session not updated for longer than stuck_after_seconds "
    "can be recovered"
)


def recovery_cutoff(now_us: int, stuck_after_seconds: float) -> int:
    """A session may be recovered at `now_us` only if last updated strictly before this."""
    return now_us - micros(stuck_after_seconds)
