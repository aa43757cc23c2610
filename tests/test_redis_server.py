"""The test Redis itself: a real server that answers, and keeps data across a crash with AOF."""

from __future__ import annotations

import redis
from conftest import poll
from redis_server import RedisServer


def test_the_test_server_answers(redis_server: RedisServer) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.ping() is True
        assert client.info("server")["redis_version"]


def test_appendonly_server_keeps_an_acknowledged_write_across_kill_9(
    durable_redis_server: RedisServer,
) -> None:
    with redis.Redis.from_url(durable_redis_server.url) as client:
        client.set("{t}:k", "v")
        # Wait for the fsync instead of a fixed pause: everysec flushes within about a second.
        client.execute_command("BGREWRITEAOF")
        poll(
            lambda: None if client.info("persistence")["aof_rewrite_in_progress"] else True,
            timeout=15,
            what="the AOF rewrite",
        )
    durable_redis_server.kill()
    durable_redis_server.start()
    with redis.Redis.from_url(durable_redis_server.url) as client:
        assert client.get("{t}:k") == b"v"
