"""Sessions in Redis or Valkey, shared by every replica attached to one store.

Each rule-bearing operation is one Lua script (lua/*.lua, one file per operation), so it is one
atomic step on the server whatever other replicas do meanwhile.
"""

from __future__ import annotations

from sidecar.store.redis.store import RedisSessionStore
from sidecar.store.redis.target import StoreUnavailableError, connect, redact

__all__ = [
    "RedisSessionStore",
    "StoreUnavailableError",
    "connect",
    "redact",
]
