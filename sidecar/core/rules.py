"""The state machine: which status may follow which, what a finished session refuses, and
which sessions may be recovered."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sidecar.core.clock import to_micros
from sidecar.core.models import FINISHED, GenerationSession, GenerationStatus

__all__ = [
    "ALLOWED_TRANSITIONS",
    "FINISHED",
    "KNOWN_TRANSITIONS",
    "RECOVER",
    "RECOVERABLE_STATUSES",
    "RECOVERED_MESSAGE",
    "RECOVER_RULE",
    "UPDATABLE_FIELDS",
    "WORK_FIELDS",
    "WORK_STATUSES",
    "finished_refuses",
    "needs_recovery",
]

_S = GenerationStatus
ALLOWED_TRANSITIONS: Mapping[GenerationStatus, frozenset[GenerationStatus]] = {
    _S.PENDING: frozenset({_S.PROCESSING, _S.FAILED}),
    _S.PROCESSING: frozenset({_S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
}
# The state machine's edges: every transition any operation (recovery included) can take.
KNOWN_TRANSITIONS: tuple[tuple[GenerationStatus, GenerationStatus], ...] = tuple(
    (src, dst) for src, dsts in ALLOWED_TRANSITIONS.items() for dst in sorted(dsts)
)
RECOVERED_MESSAGE = "Session recovered from corrupted state"
UPDATABLE_FIELDS = frozenset({"status", "error_message", "progress", "scenes"})
# Progress, scenes and the error message may change only while the work goes on; a finished
# session refuses each of them (409), in this order of report.
WORK_STATUSES = frozenset(set(GenerationStatus) - FINISHED)
WORK_FIELDS: tuple[str, ...] = ("progress", "scenes", "error_message")

# Recovery forces a session whose work stopped into failed: only a pending or processing
# session whose last update is older than stuck_after_seconds (the stuck gauge's clock).
RECOVER = "recover"  # what an InvalidTransitionError names as requested
RECOVERABLE_STATUSES = WORK_STATUSES
RECOVER_RULE = (
    "only a pending or processing session not updated for longer than stuck_after_seconds "
    "can be recovered"
)
_MICROS = 1_000_000


def finished_refuses(status: GenerationStatus, updates: Mapping[str, Any]) -> str | None:
    """The first of WORK_FIELDS in `updates` a session in `status` refuses, or None."""
    if status not in FINISHED:
        return None
    return next((name for name in WORK_FIELDS if name in updates), None)


def needs_recovery(session: GenerationSession, now: datetime, stuck_after_seconds: float) -> bool:
    """True if `session` may be recovered at `now` (see RECOVER_RULE)."""
    if session.status not in RECOVERABLE_STATUSES:
        return False
    # Strictly older, in whole microseconds: the same boundary as the stuck count's.
    threshold = to_micros(now) - round(stuck_after_seconds * _MICROS)
    return to_micros(session.updated_at) < threshold
