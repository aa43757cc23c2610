"""The store's own error: importable without a Redis client installed."""

from __future__ import annotations

__all__ = ["StoreUnavailableError"]


class StoreUnavailableError(Exception):
    """The shared store did not answer within its timeout (or refused the connection).

    Raised before or instead of a reply, so the operation it interrupted is either wholly
    applied (a Lua script is atomic) or not at all; the caller cannot tell which.
    """
