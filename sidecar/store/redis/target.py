"""A client for the shared store named by a checked SIDECAR_STORE URL.

The URL's checks and its redacted form live in `sidecar.store.url` (no Redis client needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.store.errors import StoreUnavailableError
from sidecar.store.url import SCHEMES, check_prefix, check_url, redact

if TYPE_CHECKING:
    import redis

__all__ = ["SCHEMES", "StoreUnavailableError", "check_prefix", "check_url", "connect", "redact"]


def connect(url: str, timeout: float) -> redis.Redis:
    """A client whose every call gives up after `timeout` seconds: no retries behind our back
    (redis-py retries three times by default, which would multiply the wait)."""
    # Imported here: checking a URL and redacting it work without the `redis` extra.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        check_url(url),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
