"""Where sessions live: the storage protocol and its in-memory implementation."""

from __future__ import annotations

from sidecar.store.base import (
    BATCH,
    KEEP,
    Change,
    CreateOutcome,
    Cursor,
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
    "InMemorySessionStore",
    "SessionStore",
    "StaleScenesError",
    "StoreFigures",
]
