"""Exceptions raised by the session core.

SessionManagerError
├── SessionNotFoundError     (also a LookupError)   .session_id
├── SessionCapacityError                            .max_sessions
├── SessionLockError                                .timeout
├── InvalidTransitionError                          .session_id .current .requested
├── SessionValidationError   (also a ValueError)    .errors: list of {loc, msg, type}
└── IdempotencyKeyError                             .key .session_id (the key's session)
    ├── IdempotencyKeyReusedError                   the key came with another request
    └── IdempotencyKeySpentError                    the key's session has been removed
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "IdempotencyKeyError",
    "IdempotencyKeyReusedError",
    "IdempotencyKeySpentError",
    "InvalidTransitionError",
    "SessionCapacityError",
    "SessionLockError",
    "SessionManagerError",
    "SessionNotFoundError",
    "SessionValidationError",
]


class SessionManagerError(Exception):
    """Base class of every error the session core raises on purpose."""


class SessionNotFoundError(SessionManagerError, LookupError):
    """No session has this id (it never existed, or it was removed)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session not found: {session_id}")
        self.session_id = session_id


class SessionCapacityError(SessionManagerError):
    """The manager is full and its capacity policy is `reject`."""

    def __init__(self, max_sessions: int) -> None:
        super().__init__(f"session capacity reached ({max_sessions}); capacity_policy is reject")
        self.max_sessions = max_sessions


class SessionLockError(SessionManagerError):
    """The manager's lock could not be taken within the given time."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"could not acquire the session lock within {timeout}s")
        self.timeout = timeout


class InvalidTransitionError(SessionManagerError):
    """The change is not allowed from the session's current status."""

    def __init__(self, session_id: str, current: str, requested: str) -> None:
        super().__init__(f"session {session_id}: cannot go from {current} to {requested}")
        self.session_id = session_id
        self.current = current
        self.requested = requested


class SessionValidationError(SessionManagerError, ValueError):
    """A change was rejected before anything was applied; `errors` lists each reason."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class IdempotencyKeyError(SessionManagerError):
    """A create's Idempotency-Key is remembered and cannot be answered with its session."""

    def __init__(self, message: str, key: str, session_id: str) -> None:
        super().__init__(message)
        self.key = key
        self.session_id = session_id


class IdempotencyKeyReusedError(IdempotencyKeyError):
    """The key was first sent with another request; nothing was created."""

    def __init__(self, key: str, session_id: str) -> None:
        super().__init__("the Idempotency-Key was used with another request", key, session_id)


class IdempotencyKeySpentError(IdempotencyKeyError):
    """The key created a session that has since been removed; nothing was created."""

    def __init__(self, key: str, session_id: str) -> None:
        super().__init__(
            f"the Idempotency-Key created session {session_id}, since removed", key, session_id
        )
