"""Where sessions live: the storage protocol and its in-memory implementation."""

from __future__ import annotations

from sidecar.store.memory import Cursor, InMemorySessionStore, SessionStore

__all__ = ["Cursor", "InMemorySessionStore", "SessionStore"]
