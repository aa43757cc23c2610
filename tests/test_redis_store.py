"""RedisSessionStore against a real redis-server: what only a shared store has to survive
(a flushed script cache, replicas racing). Every rule is in test_store_contract.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import F, P, R, poll, redis_stores
from pydantic import ValidationError
from redis_server import RedisServer, free_port, require_redis_server
from store_helpers import attempt, create

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.errors import InvalidTransitionError
from sidecar.core.models import GenerationRequest, GenerationSession, ScenePrompt
from sidecar.core.rules import EVICTION_ORDER, ExpiryRule
from sidecar.store import Change
from sidecar.store.errors import StoreUnavailableError, UnreadableSessionError
from sidecar.store.redis import RedisSessionStore

MakeStore = Callable[[], RedisSessionStore]


@pytest.fixture
def make_store(redis_server: RedisServer) -> Iterator[MakeStore]:
    """make_store(): stores on one fresh prefix, each with its own connection pool (a replica)."""
    with redis_stores(redis_server.url) as make:
        yield make


@pytest.fixture
def store(make_store: MakeStore) -> RedisSessionStore:
    return make_store()


def test_scripts_survive_a_flushed_script_cache(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    create(store, clock, request_data)
    store.client.script_flush()  # what a restart or failover does to the cache
    create(store, clock, request_data)
    assert len(store) == 2


def test_capacity_holds_when_replicas_create_at_once(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    replicas = [make_store() for _ in range(4)]
    results: list[bool] = []
    start = threading.Barrier(len(replicas))

    def work(replica: RedisSessionStore) -> None:
        start.wait()
        for _ in range(10):
            outcome = attempt(
                replica, clock.now(), request_data, capacity=15, policy=CapacityPolicy.REJECT
            )
            results.append(outcome.session is not None)

    threads = [threading.Thread(target=work, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 15
    assert len(replicas[0]) == 15


def test_racing_transitions_have_exactly_one_winner(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    replicas = [make_store() for _ in range(4)]
    sid = create(replicas[0], clock, request_data).session_id
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(len(replicas))

    def work(replica: RedisSessionStore, target: object) -> None:
        start.wait()
        try:
            previous, _ = replica.update(sid, 1, Change(status=target, leave_from=(P,)))  # type: ignore[arg-type]
            if previous is P:  # the others saw their target already in force: no change
                won.append(str(target))
        except InvalidTransitionError:
            lost.append(str(target))

    threads = [
        threading.Thread(target=work, args=(r, (R, F)[i % 2])) for i, r in enumerate(replicas)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert store_status(replicas[1], sid) == won[0]


def store_status(store: RedisSessionStore, sid: str) -> str:
    session = store.get(sid)
    assert session is not None
    return session.status.value


def test_concurrent_expiry_removes_and_reports_each_session_once(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    replicas = [make_store() for _ in range(3)]
    made = {create(replicas[0], clock, request_data).session_id for _ in range(60)}
    rules = (ExpiryRule(None, to_micros(clock.now()) + 1),)
    reported: list[str] = []
    start = threading.Barrier(len(replicas))

    def work(replica: RedisSessionStore) -> None:
        start.wait()
        while batch := replica.expire(rules, batch=7):
            reported.extend(s.session_id for s in batch)

    threads = [threading.Thread(target=work, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(reported) == sorted(made)
    assert len(replicas[0]) == 0


_CREATE_WITH_KEYS = """
import sys

import redis

from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, ScenePrompt
from sidecar.store.redis import RedisSessionStore

url, prefix = sys.argv[1:3]
store = RedisSessionStore(redis.Redis.from_url(url, socket_timeout=5), prefix)
manager = SessionManager(store=store)
request = GenerationRequest(story_text="A fox finds a lantern in the snow.")
for n in range(50):
    print(manager.create_session(request, f"key-{n}").session_id, flush=True)
"""


def test_two_processes_sending_the_same_keys_create_one_session_per_key(
    redis_server: RedisServer,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE_WITH_KEYS, redis_server.url, prefix],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].split() for run in runs]
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    store = RedisSessionStore(client, prefix)
    try:
        assert [run.returncode for run in runs] == [0, 0]
        assert outputs[0] == outputs[1]
        assert len(set(outputs[0])) == 50
        assert len(store) == 50
    finally:
        store.clear()
        client.close()


def test_scenes_edited_by_hand_are_read_by_the_sessions_own_rule(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    (key,) = store.client.keys(f"*:s:{session.session_id}")

    def scenes(*numbers: int) -> str:
        return json.dumps([{"scene_number": n, "prompt": f"Scene {n}."} for n in numbers])

    store.client.hset(key, "sc", scenes(2, 1))
    found = store.get(session.session_id)
    assert found is not None
    assert found.scenes == (
        ScenePrompt(scene_number=1, prompt="Scene 1."),
        ScenePrompt(scene_number=2, prompt="Scene 2."),
    )
    store.client.hset(key, "sc", scenes(1, 1))
    try:
        with pytest.raises(UnreadableSessionError, match="scene numbers must be unique") as info:
            store.get(session.session_id)
        assert info.value.session_id == session.session_id
        assert isinstance(info.value.__cause__, ValidationError)
    finally:
        store.client.hset(key, "sc", scenes())  # the fixture reads every session at the end


def _spoil(store: RedisSessionStore, session_id: str, field: str, value: bytes) -> None:
    """Overwrite one field of a session's hash, as a hand edit or another version would."""
    (key,) = store.client.keys(f"*:s:{session_id}")
    store.client.hset(key, field, value)


BATCH_REMOVALS: dict[str, Callable[[RedisSessionStore, int], list[Any]]] = {
    "expire": lambda store, now_us: store.expire((ExpiryRule(None, now_us + 1),)),
    "purge": lambda store, now_us: store.purge(None, None),
}


@pytest.mark.parametrize("how", sorted(BATCH_REMOVALS))
@pytest.mark.parametrize(("field", "value"), [("rq", b"{not json"), ("pg", b"[1]")])
def test_a_batch_removal_reports_the_rest_when_one_record_does_not_decode(
    store: RedisSessionStore,
    clock: ManualClock,
    request_data: GenerationRequest,
    caplog: pytest.LogCaptureFixture,
    how: str,
    field: str,
    value: bytes,
) -> None:
    sessions = [create(store, clock, request_data) for _ in range(3)]
    spoiled = sessions[1].session_id
    _spoil(store, spoiled, field, value)

    removed = BATCH_REMOVALS[how](store, to_micros(clock.now()))

    assert sorted(s.session_id for s in removed) == sorted(
        s.session_id for s in sessions if s.session_id != spoiled
    )
    assert len(store) == 0
    assert store.get(spoiled) is None
    (record,) = [r for r in caplog.records if spoiled in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "cannot be read" in record.getMessage()


def test_a_create_at_capacity_evicts_a_record_that_does_not_decode(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    old = create(store, clock, request_data)
    _spoil(store, old.session_id, "rq", b"[]")
    clock.advance(1)

    outcome = attempt(store, clock.now(), request_data, capacity=1)

    assert outcome.session is not None
    assert outcome.evicted == []  # gone, but not reported: it cannot be read
    assert len(store) == 1
    assert store.get(old.session_id) is None


def test_removing_a_record_that_does_not_decode_removes_it_and_says_so(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    _spoil(store, session.session_id, "er", b"{")

    with pytest.raises(
        UnreadableSessionError, match=r"JSONDecodeError.*\(the session was removed\)"
    ):
        store.remove(session.session_id)

    assert store.remove(session.session_id) is None
    assert len(store) == 0


# ---------------------------------------------------------------- times the indexes cannot hold

EPOCH_US_BOUND = 10**16  # index members hold 16 digits of microseconds: up to 2286-11-20


@pytest.mark.parametrize("now_us", [-5_000_000, EPOCH_US_BOUND + 5])
def test_a_time_the_indexes_cannot_hold_is_refused_before_anything_is_written(
    store: RedisSessionStore, request_data: GenerationRequest, now_us: int
) -> None:
    with pytest.raises(ValueError, match="outside what the Redis store can index"):
        store.create(
            "a",
            request_data,
            now_us,
            capacity=10,
            policy=CapacityPolicy.EVICT_OLDEST,
            eviction_order=EVICTION_ORDER,
            expiry=(),
        )

    assert len(store) == 0
    assert store.client.keys("*:s:a") == []
    assert store.get("a") is None


def test_cutoffs_beyond_the_stored_times_keep_their_meaning(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    before_1970, after_2286 = -60_000_000, EPOCH_US_BOUND + 5

    figures = store.figures([before_1970, after_2286], R, before_1970)
    assert store.expire((ExpiryRule(None, before_1970),)) == []
    assert store.purge(None, before_1970) == []
    assert store.page_stuck(P, before_1970, None, 10) == []
    assert [s.session_id for s in store.page_stuck(P, after_2286, None, 10)] == [session.session_id]

    assert figures.created_before == [0, 1]
    assert figures.stuck == 0
    assert [s.session_id for s in store.purge(None, after_2286)] == [session.session_id]


# ---------------------------------------------------------------- a server that refuses for now


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test changes its settings."""
    server = RedisServer(require_redis_server(), tmp_path).start()
    yield server
    server.stop()


@pytest.mark.parametrize("refusal", ["read-only replica", "out of memory"])
def test_a_server_that_refuses_commands_for_now_is_unavailable_not_an_error(
    own_server: RedisServer, clock: ManualClock, request_data: GenerationRequest, refusal: str
) -> None:
    with redis_stores(own_server.url) as make:
        store = make()
        create(store, clock, request_data)
        admin = store.client
        if refusal == "read-only replica":
            # a replica of a master that is not there: it serves reads and refuses writes
            admin.replicaof("127.0.0.1", str(free_port()))
        else:
            admin.config_set("maxmemory", "1")  # noeviction (the default): writes refused
        try:
            with pytest.raises(StoreUnavailableError, match="create"):
                create(store, clock, request_data)
            assert len(store) == 1  # reads still answer
        finally:
            admin.replicaof("NO", "ONE")
            admin.config_set("maxmemory", "0")
        create(store, clock, request_data)
        assert len(store) == 2


def test_a_server_busy_with_another_clients_script_is_unavailable_not_an_error(
    own_server: RedisServer, clock: ManualClock, request_data: GenerationRequest
) -> None:
    with redis_stores(own_server.url) as make:
        store = make()
        admin = redis.Redis.from_url(own_server.url)
        admin.config_set("busy-reply-threshold", "1")  # ms before other clients get BUSY
        spinner = redis.Redis.from_url(own_server.url)
        ended: list[BaseException] = []

        def run_forever() -> None:  # until SCRIPT KILL: "while true do end" writes nothing
            try:
                spinner.eval("while true do end", 0)
            except redis.ResponseError as exc:
                ended.append(exc)

        spin = threading.Thread(target=run_forever, daemon=True)
        spin.start()
        try:
            poll(lambda: _busy(admin), timeout=10, what="the spinning script", interval=0.01)
            with pytest.raises(StoreUnavailableError, match="BUSY"):
                create(store, clock, request_data)
        finally:
            poll(lambda: _killed(admin), timeout=10, what="SCRIPT KILL", interval=0.01)
            spin.join(10)
            assert ended, "the spinning script was not killed"
            admin.close()
            spinner.close()
        create(store, clock, request_data)
        assert len(store) == 1


def _busy(client: redis.Redis) -> bool | None:
    try:
        client.ping()
    except redis.ResponseError as exc:
        return True if str(exc).startswith("BUSY") else None
    return None


def _killed(client: redis.Redis) -> bool | None:
    try:
        client.script_kill()
    except redis.ResponseError as exc:
        return True if "NOTBUSY" in str(exc) else None  # nothing runs (any more)
    return True


# ---------------------------------------------------------------- a hash deleted by hand


def _create_later(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> GenerationSession:
    """A create a second after the last: index order is creation order."""
    clock.advance(1)
    return create(store, clock, request_data)


def _delete_hash(store: RedisSessionStore, session_id: str) -> None:
    """What an operator's `redis-cli DEL '{prefix}:s:<id>'` does: the indexes keep the id."""
    (key,) = store.client.keys(f"*:s:{session_id}")
    store.client.delete(key)


def test_a_create_at_capacity_passes_an_index_entry_whose_hash_was_deleted(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    gone, kept = (_create_later(store, clock, request_data) for _ in range(2))
    _delete_hash(store, gone.session_id)
    clock.advance(1)

    # before: the eviction loop picked the dangling entry forever and held the server (BUSY)
    outcome = attempt(store, clock.now(), request_data, capacity=2)

    assert outcome.session is not None
    assert outcome.evicted == []  # the dangling entry made the room, and reports nothing
    assert {s.session_id for s in store.page(None, None, 10)} == {
        kept.session_id,
        outcome.session.session_id,
    }
    assert len(store) == 2


def test_batches_pass_an_index_entry_whose_hash_was_deleted(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    first, *rest = (_create_later(store, clock, request_data) for _ in range(3))
    _delete_hash(store, first.session_id)

    removed = [store.purge(None, None, batch=1) for _ in range(3)]

    assert [[s.session_id for s in batch] for batch in removed] == [
        [],  # the dangling entry: dropped, nothing to report
        [rest[0].session_id],
        [rest[1].session_id],
    ]
    assert len(store) == 0
