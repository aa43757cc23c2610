"""A real Redis server for tests: Debian's `redis-server` on a free loopback port in a tmp dir.

No fake Redis anywhere: every Redis test talks to one of these processes. The process itself is
bench/redis_server.py's (the benchmarks start Redis the same way); here its errors become test
failures. Under CI (CI=true) a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import pytest
from missing import missing

from bench import redis_server as _started
from bench.redis_server import START_SECONDS, RedisServerError, free_port, redis_server_binary

__all__ = ["START_SECONDS", "RedisServer", "free_port", "require_redis_server"]


def require_redis_server() -> str:
    """Path of redis-server; under CI a missing one fails instead of skipping."""
    try:
        return redis_server_binary()
    except RedisServerError:
        message = "redis-server is not installed (Debian: redis-server); .ci/run installs it"
        missing(message)


class RedisServer(_started.RedisServer):
    """One redis-server process; `url` is what SIDECAR_STORE takes. A server that exits or does
    not answer in time fails the test."""

    def start(self) -> RedisServer:
        try:
            super().start()
        except RedisServerError as exc:
            pytest.fail(str(exc))
        return self
