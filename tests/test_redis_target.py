"""SIDECAR_STORE values, the password kept out of messages, and a store that goes away and back."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis_server import RedisServer, require_redis_server

from sidecar.clock import ManualClock, to_micros
from sidecar.config import CapacityPolicy
from sidecar.models import GenerationRequest
from sidecar.redisstore import RedisSessionStore, StoreUnavailableError, connect, redact
from sidecar.redisstore.target import check_prefix, check_url

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

        def create() -> None:
            store.create(
                str(uuid.uuid4()),
                request_data,
                to_micros(clock.now()),
                capacity=10,
                policy=CapacityPolicy.REJECT,
                eviction_order=(),
                expiry=(),
            )

        create()
        server.kill()
        with pytest.raises(StoreUnavailableError, match="create"):
            create()
        with pytest.raises(StoreUnavailableError, match="figures"):
            store.figures([], 0)
        with pytest.raises(StoreUnavailableError, match="get"):
            store.get("x")
        server.start()  # the same port; no persistence, so an empty store with no scripts
        create()  # the same client reconnects, and sends the script again (NOSCRIPT)
        assert len(store) == 1
    finally:
        client.close()
        server.stop()
