"""SIDECAR_STORE selects the store: Redis shared by apps, failure answers, labels, settings.

In-process apps (Flask's test client) on a real redis-server; the process-level replicas are
in test_replicas.py.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import STATE_GAUGES, poll
from flask import Flask
from flask.testing import FlaskClient
from redis_server import RedisServer, require_redis_server

from sidecar.cli import main
from sidecar.settings import Settings
from sidecar.store.observed import ObservedStore
from sidecar.store.select import default_store_name
from sidecar.web.app import create_app, get_sidecar

SECRET = "pw-never-shown-9"
S = "/api/v1/sessions"
STORY = {"story_text": "A heron waits by the weir.", "num_scenes": 2}
MakeRedisApp = Callable[..., Flask]


@pytest.fixture
def make_redis_app(clean_env: pytest.MonkeyPatch) -> Iterator[MakeRedisApp]:
    """make_redis_app(url, prefix, **settings): an app of its own on a Redis store."""
    made: list[Flask] = []

    def make(url: str, prefix: str, **settings: object) -> Flask:
        app = create_app(
            Settings(store=url, store_prefix=prefix, store_timeout_seconds=0.5, **settings)
        )
        made.append(app)
        return app

    yield make
    for app in made:
        get_sidecar(app).close()


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def test_two_apps_on_one_redis_share_their_sessions(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    prefix = fresh_prefix()
    one = make_redis_app(redis_server.url, prefix).test_client()
    two = make_redis_app(redis_server.url, prefix).test_client()

    created = one.post(S, json=STORY).get_json()
    sid = created["session_id"]
    moved = two.put(f"{S}/{sid}/status", json={"status": "processing"})
    again = one.put(f"{S}/{sid}/status", json={"status": "pending"})

    assert moved.status_code == 200
    assert one.get(f"{S}/{sid}").get_json()["status"] == "processing"
    assert again.status_code == 409
    assert two.get("/api/v1/stats").get_json()["total_sessions"] == 1


def test_a_stopping_app_leaves_the_shared_sessions_in_redis(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    prefix = fresh_prefix()
    first = make_redis_app(redis_server.url, prefix)
    sid = first.test_client().post(S, json=STORY).get_json()["session_id"]
    get_sidecar(first).close()  # shuts its manager down

    second = make_redis_app(redis_server.url, prefix).test_client()

    assert second.get(f"{S}/{sid}").status_code == 200


def test_an_outage_answers_503_store_unavailable_and_recovery_needs_no_restart(
    tmp_path: Path, make_redis_app: MakeRedisApp
) -> None:
    server = RedisServer(require_redis_server(), tmp_path).start()
    try:
        app = make_redis_app(server.url, fresh_prefix())
        client = app.test_client()
        sid = client.post(S, json=STORY).get_json()["session_id"]
        server.kill()

        create = client.post(S, json=STORY)
        read = client.get(f"{S}/{sid}")
        ready = client.get("/readyz")
        live = client.get("/livez")
        scrape = client.get("/metrics").get_data(as_text=True)

        for answer in (create, read):
            assert answer.status_code == 503
            assert answer.content_type == "application/problem+json"
            assert answer.get_json()["type"] == "urn:sidecar:problem:store-unavailable"
            assert answer.headers["Retry-After"] == "1"
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["store"] is False
        assert live.status_code == 200
        store = get_sidecar(app).metrics.store_name.value
        # the store's label on store_up too: the alerts group the replicas of one store by it
        assert f'sidecar_store_up{{store="{store}"}} 0.0' in scrape
        # no stale figure passed off as current: the state gauges are left out
        assert not any(f"\n{name}{{" in scrape for name in STATE_GAUGES)
        assert "sidecar_sessions_created_total 1.0" in scrape

        server.start()  # same port, empty (no persistence)
        assert client.get("/readyz").status_code == 200
        assert client.post(S, json=STORY).status_code == 201
        up = f'sidecar_store_up{{store="{store}"}} 1.0'
        assert up in client.get("/metrics").get_data(as_text=True)
    finally:
        server.stop()


def test_a_stored_record_that_does_not_decode_is_named_in_the_log_not_hidden_in_a_trace(
    redis_server: RedisServer, make_redis_app: MakeRedisApp, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    prefix = fresh_prefix()
    client = make_redis_app(redis_server.url, prefix).test_client()
    sids = [client.post(S, json=STORY).get_json()["session_id"] for _ in range(3)]
    with redis.Redis.from_url(redis_server.url) as raw:
        raw.hset(f"{{{prefix}}}:s:{sids[0]}", "rq", b"{written by another version")

    read = client.get(f"{S}/{sids[0]}")
    again = [client.get(f"{S}/{sids[0]}").status_code for _ in range(5)]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    cleanup = client.post("/api/v1/admin/cleanup", json={"scope": "all"})

    assert read.status_code == 500
    assert read.content_type == "application/problem+json"
    assert read.get_json()["type"] == "urn:sidecar:problem:internal-error"
    assert "written by another version" not in read.get_data(as_text=True)
    assert again == [500] * 5
    (error,) = errors  # one line, however often it is read: at most one a minute
    assert sids[0] in error.getMessage()
    assert "cannot be read" in error.getMessage()
    assert error.exc_info is None  # one line, not a traceback
    # the other sessions are still removed and counted; the unreadable one is removed too
    assert cleanup.status_code == 200
    assert cleanup.get_json() == {"removed": 2}
    assert client.get(f"{S}/{sids[0]}").status_code == 404


@pytest.mark.parametrize("query", ["", "stuck=true&"])
def test_a_cursor_no_redis_key_can_hold_is_a_422_not_a_500(
    redis_server: RedisServer, make_redis_app: MakeRedisApp, query: str
) -> None:
    client = make_redis_app(redis_server.url, fresh_prefix()).test_client()
    cursor = base64.urlsafe_b64encode(b'[1, "\\ud800"]').decode().rstrip("=")

    answer = client.get(f"{S}?{query}cursor={cursor}")

    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["loc"] == ["query", "cursor"]


def test_closing_the_app_closes_its_store_connections(
    tmp_path: Path, make_redis_app: MakeRedisApp
) -> None:
    import redis

    server = RedisServer(require_redis_server(), tmp_path).start()
    try:
        with redis.Redis.from_url(server.url) as raw:

            def connected() -> int:
                return int(raw.info("clients")["connected_clients"])

            alone = connected()
            app = make_redis_app(server.url, fresh_prefix())
            assert app.test_client().post(S, json=STORY).status_code == 201
            assert connected() > alone
            get_sidecar(app).close()
            poll(
                lambda: True if connected() == alone else None,
                timeout=5,
                what=lambda: f"{connected()} clients, {alone} expected",
                interval=0.01,
            )
    finally:
        server.stop()


def test_the_cleanup_worker_survives_an_outage(
    tmp_path: Path, make_redis_app: MakeRedisApp
) -> None:
    server = RedisServer(require_redis_server(), tmp_path).start()
    try:
        manager = get_sidecar(make_redis_app(server.url, fresh_prefix())).manager
        server.kill()

        assert manager.run_cleanup() == 0  # counted as a failed run, not raised
        assert manager.event_counts().cleanup_errors == 1
        assert manager.worker_alive
        server.start()
        assert manager.run_cleanup() == 0
        assert manager.event_counts().cleanup_errors == 1
    finally:
        server.stop()


def test_store_calls_are_timed_by_operation(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    app = make_redis_app(redis_server.url, fresh_prefix())
    app.test_client().post(S, json=STORY)
    registry = get_sidecar(app).metrics.registry

    def count(operation: str) -> float | None:
        return registry.get_sample_value(
            "sidecar_store_duration_seconds_count", {"operation": operation}
        )

    assert isinstance(get_sidecar(app).manager.store, ObservedStore)
    assert count("create") == 1
    assert count("purge") == 0  # every operation's series exists from the start
    store = get_sidecar(app).metrics.store_name.value
    assert registry.get_sample_value("sidecar_store_up", {"store": store}) == 1


def test_memory_store_calls_are_not_timed(clean_env: pytest.MonkeyPatch) -> None:
    # In-process calls of microseconds: the HTTP latency shows them; a fifth of a scrape saved.
    app = create_app(Settings())
    try:
        client = app.test_client()
        assert client.post(S, json=STORY).status_code == 201
        sidecar = get_sidecar(app)
        assert not isinstance(sidecar.manager.store, ObservedStore)
        assert sidecar.metrics.store_duration is None
        body = client.get("/metrics").get_data(as_text=True)
        assert "sidecar_store_duration_seconds" not in body
        assert "sidecar_http_request_duration_seconds_count" in body
        store = sidecar.metrics.store_name.value
        assert sidecar.metrics.registry.get_sample_value("sidecar_store_up", {"store": store}) == 1
    finally:
        get_sidecar(app).close()


@pytest.mark.parametrize(
    ("url", "prefix", "label"),
    [
        (f"redis://app:{SECRET}@cache.example:6380/2", "fleet", "redis:cache.example:6380/2/fleet"),
        ("redis://127.0.0.1", "sidecar", "redis:127.0.0.1:6379/0/sidecar"),
        (f"rediss://:{SECRET}@[::1]:6390/0", "p", "redis:[::1]:6390/0/p"),
        ("unix:///run/redis.sock?db=3", "p", "redis:unix:/run/redis.sock/3/p"),
    ],
)
def test_the_store_label_names_the_redis_store_without_credentials(
    url: str, prefix: str, label: str
) -> None:
    assert default_store_name(url, prefix, 8000) == label


def test_the_store_label_in_memory_mode_names_the_instance() -> None:
    import socket

    assert default_store_name("memory", "sidecar", 8123) == f"memory:{socket.gethostname()}:8123"


def test_store_name_overrides_the_label(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    app = make_redis_app(redis_server.url, fresh_prefix(), store_name="sessions-eu")
    registry = get_sidecar(app).metrics.registry

    assert registry.get_sample_value("sidecar_sessions_capacity", {"store": "sessions-eu"}) == 100


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--store", f"http://u:{SECRET}@host:1/0"], "unknown scheme 'http'"),
        (["--store", f"redis://u:{SECRET}@host:0/0"], "port 0"),
        (["--store-prefix", "a{b}"], "--store-prefix"),
        (["--store-timeout-seconds", "0"], "must be > 0"),
        (["--store-timeout-seconds", "31"], "must be <= 30"),
        (["--store-name", "a b"], "--store-name"),
    ],
)
def test_bad_store_settings_exit_2_with_one_line_and_no_password(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    complaint: str,
) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert complaint in err
    assert SECRET not in err


def test_the_password_is_kept_out_of_the_settings_repr_and_admin_config(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    url = redis_server.url.replace("redis://", f"redis://default:{SECRET}@")
    assert SECRET not in repr(Settings(store=url))
    # The default user of a redis-server without requirepass is `nopass`: any password works.
    client = make_redis_app(url, fresh_prefix()).test_client()
    assert client.post(S, json=STORY).status_code == 201
    for path in ("/api/v1/admin/config", "/openapi.json", "/metrics", "/readyz"):
        assert SECRET not in client.get(path).get_data(as_text=True)


def test_a_config_patch_through_one_app_is_in_force_on_the_other_at_its_next_request(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    prefix = fresh_prefix()
    one = make_redis_app(redis_server.url, prefix).test_client()
    two_app = make_redis_app(redis_server.url, prefix)
    two = two_app.test_client()
    assert two.post(S, json=STORY).status_code == 201

    patched = one.patch(
        "/api/v1/admin/config", json={"max_sessions": 1, "capacity_policy": "reject"}
    )

    assert patched.status_code == 200
    assert two.post(S, json=STORY).status_code == 429  # its very next request
    assert two.get("/api/v1/admin/config").get_json()["max_sessions"] == 1
    registry = get_sidecar(two_app).metrics.registry
    label = get_sidecar(two_app).metrics.store_name.value
    two.get("/metrics")
    assert registry.get_sample_value("sidecar_sessions_capacity", {"store": label}) == 1


def test_a_later_replica_starts_with_the_patched_settings_laid_over_its_own(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    prefix = fresh_prefix()
    one = make_redis_app(redis_server.url, prefix).test_client()
    assert one.patch("/api/v1/admin/config", json={"stuck_after_seconds": 77}).status_code == 200

    late = make_redis_app(redis_server.url, prefix, failed_max_age_seconds=600).test_client()
    config = late.get("/api/v1/admin/config").get_json()

    assert config["stuck_after_seconds"] == 77  # shared
    assert config["failed_max_age_seconds"] == 600  # its own, no PATCH changed it


def test_a_bad_patch_changes_nothing_anywhere(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    prefix = fresh_prefix()
    one = make_redis_app(redis_server.url, prefix).test_client()
    two = make_redis_app(redis_server.url, prefix).test_client()

    bad = one.patch("/api/v1/admin/config", json={"warning_utilization": 0.95})

    assert bad.status_code == 422  # above the critical 0.9
    assert two.get("/api/v1/admin/config").get_json()["warning_utilization"] == 0.7
    assert one.get("/api/v1/admin/config").get_json()["warning_utilization"] == 0.7
    # nothing of it was saved either: a good PATCH afterwards applies everywhere
    assert one.patch("/api/v1/admin/config", json={"max_sessions": 5}).status_code == 200
    assert two.get("/api/v1/admin/config").get_json()["max_sessions"] == 5


def _serving(redis_server: RedisServer, make_redis_app: MakeRedisApp) -> tuple[FlaskClient, str]:
    """An app on a fresh prefix that has served a create (its live settings are loaded)."""
    prefix = fresh_prefix()
    client = make_redis_app(redis_server.url, prefix).test_client()
    assert client.post(S, json=STORY).status_code == 201
    return client, prefix


def _save_by_hand(url: str, prefix: str, **values: bytes) -> None:
    """Shared settings as a hand edit (or another version) leaves them, version bumped."""
    import redis

    with redis.Redis.from_url(url) as raw:
        raw.hset(f"{{{prefix}}}:cfg", mapping=values)
        raw.incr(f"{{{prefix}}}:cfg:v")


def test_a_shared_setting_that_does_not_decode_is_left_out_once_not_a_500_per_request(
    redis_server: RedisServer, make_redis_app: MakeRedisApp, caplog: pytest.LogCaptureFixture
) -> None:
    client, prefix = _serving(redis_server, make_redis_app)
    _save_by_hand(redis_server.url, prefix, max_sessions=b"{not json", capacity_policy=b'"reject"')

    answers = [client.get("/api/v1/admin/config") for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[-1].get_json()["capacity_policy"] == "reject"  # the rest still applies
    assert answers[-1].get_json()["max_sessions"] == 100
    warned = [r for r in caplog.records if "max_sessions" in r.getMessage()]
    assert len(warned) == 1  # once for this version, not once per request
    assert warned[0].levelname == "WARNING"


def test_shared_settings_this_version_cannot_apply_are_reported_once_per_version(
    redis_server: RedisServer, make_redis_app: MakeRedisApp, caplog: pytest.LogCaptureFixture
) -> None:
    client, prefix = _serving(redis_server, make_redis_app)
    # what a newer version could save: a setting this one does not know
    _save_by_hand(redis_server.url, prefix, max_sessions=b"7", shiny_new_setting=b"1")

    answers = [client.get("/api/v1/admin/config") for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[-1].get_json()["max_sessions"] == 100  # all or nothing: kept as it was
    warned = [r for r in caplog.records if "not applied" in r.getMessage()]
    assert len(warned) == 1
    _save_by_hand(redis_server.url, prefix, shiny_new_setting=b"2")
    client.get("/api/v1/admin/config")
    assert len([r for r in caplog.records if "not applied" in r.getMessage()]) == 2


def test_a_database_redis_does_not_have_is_a_store_down_not_a_500(
    redis_server: RedisServer, make_redis_app: MakeRedisApp
) -> None:
    # SELECT 99 at connect fails on a server with the default 16 databases; before, every
    # route, /readyz and /metrics included, answered 500 with a traceback in the log
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    client = make_redis_app(url, fresh_prefix()).test_client()

    create = client.post(S, json=STORY)
    ready = client.get("/readyz")
    scrape = client.get("/metrics")

    assert create.status_code == 503
    assert create.get_json()["type"] == "urn:sidecar:problem:store-unavailable"
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["store"] is False
    assert scrape.status_code == 200
    assert "sidecar_store_up{" in scrape.get_data(as_text=True)
    assert " 0.0" in next(
        line
        for line in scrape.get_data(as_text=True).splitlines()
        if line.startswith("sidecar_store_up{")
    )


def test_a_store_outage_logs_a_line_at_once_then_at_most_one_a_minute(
    tmp_path: Path, make_redis_app: MakeRedisApp, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(require_redis_server(), tmp_path).start()
    try:
        client = make_redis_app(server.url, fresh_prefix()).test_client()
        server.kill()

        answers = [client.get("/api/v1/stats").status_code for _ in range(20)]
    finally:
        server.stop()

    assert answers == [503] * 20
    lines = [r for r in caplog.records if "session store unavailable" in r.getMessage()]
    assert len(lines) == 1  # before: one WARNING per request, which any client could cause
    assert "1 request(s) answered 503" in lines[0].getMessage()
