"""Where sessions live: the storage protocol and its in-memory implementation."""

from __future__ import annotations

from sidecar.store.base import (
    BATCH,
    KEEP,
    Change,
    CreateOutcome,
    Cursor,
    IdempotencyKey,
    KeyOutcome,
    SessionStore,
    StaleScenesError,
    StoreFigures,
)
from sidecar.store.memory import InMemorySessionStore

__all__ = [
    "BATCH",
    "KEEP",
    "Change",
    "CreateOutcome",
    "Cursor",
    "IdempotencyKey",
    "InMemorySessionStore",
    "KeyOutcome",
    "SessionStore",
    "StaleScenesError",
    "StoreFigures",
]
