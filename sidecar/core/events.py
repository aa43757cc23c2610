"""What the manager tells its callbacks, and why a session left."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sidecar.core.models import GenerationSession, GenerationStatus

__all__ = ["REJECTED_CAPACITY", "EventType", "RemovalReason", "SessionEvent"]

# Why a create was refused: the only reason today, and the label value of the rejected counter.
REJECTED_CAPACITY = "capacity"


class EventType(enum.StrEnum):
    """What a session callback can be registered for."""

    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    PROGRESS = "progress"
    SCENE_ADDED = "scene_added"
    SCENES_REPLACED = "scenes_replaced"
    REMOVED = "removed"


class RemovalReason(enum.StrEnum):
    """Why a session left the manager."""

    DELETED = "deleted"  # remove_session
    EXPIRED = "expired"  # age-based cleanup, automatic or on demand
    EVICTED = "evicted"  # dropped to make room at capacity
    PURGED = "purged"  # cleanup_failed/completed_sessions, force_cleanup_all


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """What a callback receives; `session` is the state after the change (before, for removed)."""

    type: EventType
    session_id: str
    session: GenerationSession
    previous_status: GenerationStatus | None = None
    reason: RemovalReason | None = None
