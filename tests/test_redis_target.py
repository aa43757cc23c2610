"""SIDECAR_STORE values, the password kept out of messages, and a store that goes away and back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from redis_server import RedisServer, require_redis_server
from store_helpers import attempt, create

from sidecar.core.clock import ManualClock
from sidecar.core.models import GenerationRequest, GenerationStatus
from sidecar.store.redis import RedisSessionStore, StoreUnavailableError, connect, redact
from sidecar.store.redis.target import check_prefix, check_url

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@host:6380/0", "redis://:***@host:6380/0"),
        (f"rediss://app:{SECRET}@host/1", "rediss://app:***@host/1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (f"http://:{SECRET}@host:6379", "unknown scheme 'http'"),
        (f"redis://:{SECRET}@:6379", "no host"),
        (f"redis://:{SECRET}@host:notaport", "not a valid URL"),
        (f"redis://:{SECRET}@host:0", "port 0"),
        ("unix://", "socket's path"),
    ],
)
def test_bad_urls_are_refused_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        check_url(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("prefix", ["", "{x}", "a b", "x" * 65, "é"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        check_prefix(prefix)


def test_a_stopped_server_gives_unavailable_and_a_restarted_one_serves_again(
    tmp_path: Path, clock: ManualClock, request_data: GenerationRequest
) -> None:
    server = RedisServer(require_redis_server(), tmp_path).start()
    client = connect(server.url, timeout=0.5)
    try:
        store = RedisSessionStore(client, f"t{uuid.uuid4().hex[:8]}")

        def create_one() -> None:
            attempt(store, clock.now(), request_data)

        create_one()
        server.kill()
        with pytest.raises(StoreUnavailableError, match="create"):
            create_one()
        with pytest.raises(StoreUnavailableError, match="figures"):
            store.figures([], GenerationStatus.PROCESSING, 0)
        with pytest.raises(StoreUnavailableError, match="get"):
            store.get("x")
        server.start()  # the same port; no persistence, so an empty store with no scripts
        create_one()  # the same client reconnects, and sends the script again (NOSCRIPT)
        assert len(store) == 1
    finally:
        client.close()
        server.stop()


@pytest.mark.process
def test_aof_everysec_keeps_every_session_written_over_a_second_before_kill_9(
    durable_redis_server: RedisServer, clock: ManualClock, request_data: GenerationRequest
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    client = connect(durable_redis_server.url, timeout=2)
    try:
        store = RedisSessionStore(client, prefix)
        made = set()
        for _ in range(200):
            made.add(create(store, clock, request_data, capacity=1000).session_id)
        # The guarantee is about time (appendfsync everysec): the wait is the thing under test.
        time.sleep(1.5)
    finally:
        client.close()
    durable_redis_server.kill()
    durable_redis_server.start()
    client = connect(durable_redis_server.url, timeout=2)
    try:
        store = RedisSessionStore(client, prefix)
        kept = {s.session_id for s in store.page(None, None, 1000)}
        assert kept == made
        assert store.figures([], GenerationStatus.PROCESSING, 0).total == len(made)
    finally:
        client.close()
