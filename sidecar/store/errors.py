"""The store's own errors: importable without a Redis client installed."""

from __future__ import annotations

__all__ = ["StoreUnavailableError", "UnreadableSessionError"]


class StoreUnavailableError(Exception):
    """The shared store did not answer within its timeout, refused the connection, or refused
    the command for want of a usable state (a read-only replica, out of memory, busy with
    another client's script).

    Raised before or instead of a reply, so the operation it interrupted is either wholly
    applied (a Lua script is atomic) or not at all; the caller cannot tell which.
    """


class UnreadableSessionError(Exception):
    """A session's stored record could not be read back into a session.

    Only a record this code did not write can cause it: one edited by hand, or written by a
    version that stored its fields differently. The message names the session and the reason.
    """

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(f"stored session {session_id} cannot be read: {reason}")
        self.session_id = session_id
        self.reason = reason
