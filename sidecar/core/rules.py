"""The state machine: which status may follow which, and what a finished session refuses."""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.core.models import FINISHED, GenerationStatus

__all__ = [
    "ALLOWED_TRANSITIONS",
    "FINISHED",
    "KNOWN_TRANSITIONS",
    "RECOVERED_MESSAGE",
    "UPDATABLE_FIELDS",
    "WORK_STATUSES",
]

_S = GenerationStatus
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
# Progress and scenes may change only while the work goes on.
WORK_STATUSES = frozenset(set(GenerationStatus) - FINISHED)
