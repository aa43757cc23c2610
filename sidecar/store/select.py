"""The store SIDECAR_STORE names, and the `store` label its state gauges carry.

`memory` is this process's own store; a Redis URL is a store shared with every replica that
names the same URL and prefix. The Redis client is imported only when one is asked for (the
`redis` extra). Nothing connects here: redis-py connects on the first call, so a sidecar
whose Redis is down starts, answers 503 and reports not ready until Redis answers.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from sidecar.store.base import SessionStore
from sidecar.store.memory import InMemorySessionStore
from sidecar.store.url import redact, store_label

if TYPE_CHECKING:
    from sidecar.store.redis.config import RedisSharedSettings

__all__ = ["MEMORY", "default_store_name", "describe_store", "open_store", "shared_settings_of"]

MEMORY = "memory"


def open_store(url: str, prefix: str, timeout: float) -> SessionStore:
    """The store `url` names: `memory`, or a Redis store under `prefix` whose every call
    gives up after `timeout` seconds (StoreUnavailableError)."""
    if url == MEMORY:
        return InMemorySessionStore()
    from sidecar.store.redis import RedisSessionStore, connect

    return RedisSessionStore(connect(url, timeout), prefix)


def shared_settings_of(store: SessionStore, prefix: str) -> RedisSharedSettings | None:
    """Where replicas of `store` share their live settings; None for a memory store."""
    if not store.shared:
        return None
    from sidecar.store.redis import RedisSessionStore
    from sidecar.store.redis.config import RedisSharedSettings

    if not isinstance(store, RedisSessionStore):
        return None
    return RedisSharedSettings(store.client, prefix)


def default_store_name(url: str, prefix: str, port: int) -> str:
    """The `store` label when SIDECAR_STORE_NAME is not set: `memory:<hostname>:<port>` (each
    instance its own store) or `redis:<host>:<port>/<db>/<prefix>` (never a credential)."""
    if url == MEMORY:
        return f"memory:{socket.gethostname()}:{port}"
    return store_label(url, prefix)


def describe_store(url: str, prefix: str) -> str:
    """The store as a log line may name it (password redacted)."""
    return MEMORY if url == MEMORY else f"{redact(url)} (prefix {prefix})"
