"""RedisSessionStore against a real redis-server: what only a shared store has to survive
(a flushed script cache, replicas racing). Every rule is in test_store_contract.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import F, P, R, redis_stores
from pydantic import ValidationError
from redis_server import RedisServer
from store_helpers import attempt, create

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.errors import InvalidTransitionError
from sidecar.core.models import GenerationRequest, ScenePrompt
from sidecar.core.rules import ExpiryRule
from sidecar.store import Change
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
        with pytest.raises(ValidationError, match="scene numbers must be unique"):
            store.get(session.session_id)
    finally:
        store.client.hset(key, "sc", scenes())  # the fixture reads every session at the end
