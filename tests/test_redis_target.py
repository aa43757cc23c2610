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
        # before: shown whole, password and all (urlsplit's host part ends at # / ?, and the
        # query was never looked at), or a ValueError from redact itself (the IPv6 one)
        (f"redis://:s3#{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://:s3/{SECRET}?x@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://h:6379/0?password={SECRET}&db=1", "redis://h:6379/0?password=***&db=***"),
        (
            f"unix://u:{SECRET}@/tmp/r.sock?password={SECRET}",
            "unix://u:***@/tmp/r.sock?password=***",
        ),
        (f"redis://u:{SECRET}@[::1/0", "redis://u:***@[::1/0"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"redis://h:6379/0?password={SECRET}",
        f"redis://:s3#{SECRET}@h:6379/0",
        f"redis://u:{SECRET}@[::1/0",
    ],
)
def test_a_refused_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"\*\*\*") as caught:
        check_url(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (f"http://:{SECRET}@host:6379", "unknown scheme 'http'"),
        (f"redis://:{SECRET}@:6379", "no host"),
        (f"redis://:{SECRET}@host:notaport", "not a valid URL"),
        (f"redis://:{SECRET}@host:0", "port 0"),
        ("unix://", "socket's path"),
        # redis-py: case-sensitive schemes; a path that is not a number silently db 0; query
        # values it checks only when it connects; timeouts that would override the setting
        (f"REDIS://:{SECRET}@host:6379/0", "unknown scheme 'REDIS'"),
        (f"redis://:{SECRET}@host:6379/x", "the path names the database"),
        (f"redis://:{SECRET}@host:6379/0?db=x", "db must be a number"),
        (f"redis://:{SECRET}@host:6379/0?db=", "db must be a number"),
        (f"redis://:{SECRET}@host:6379/0?db=1&db=2", "given more than once"),
        (f"redis://:{SECRET}@host:6379/0?socket_timeout=abc", "'socket_timeout' not taken"),
        (f"redis://:{SECRET}@host:6379/0?ssl_cert_reqs=none", "'ssl_cert_reqs' not taken"),
        (f"rediss://:{SECRET}@host:6379/0?ssl_cert_reqs=off", "ssl_cert_reqs must be"),
    ],
)
def test_bad_urls_are_refused_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        check_url(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://host:6379",
        "redis://host:6379/",
        "redis://host:6379/15",
        "redis://host/0?db=3",
        "rediss://user:pw@host:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_good_urls_pass_as_given(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "db"),
    [("redis://127.0.0.1:{port}/3", 3), ("redis://127.0.0.1:{port}?db=4", 4)],
)
def test_the_database_a_url_names_is_the_one_written_to(
    redis_server: RedisServer,
    clock: ManualClock,
    request_data: GenerationRequest,
    url: str,
    db: int,
) -> None:
    import redis

    client = connect(url.format(port=redis_server.port), timeout=5)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    try:
        create(RedisSessionStore(client, prefix), clock, request_data)
        with redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{db}") as raw:
            assert raw.exists(f"{{{prefix}}}:c") == 1
        with redis.Redis.from_url(redis_server.url) as raw:  # and not database 0
            assert raw.exists(f"{{{prefix}}}:c") == 0
    finally:
        RedisSessionStore(client, prefix).clear()
        client.close()


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
