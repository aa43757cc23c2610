"""RedisSessionStore against a real redis-server: every rule, and the races between replicas."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from conftest import C, F, P, R
from redis_server import RedisServer

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.errors import InvalidTransitionError, SessionNotFoundError
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.store import InMemorySessionStore
from sidecar.store.redis import CreateOutcome, ExpiryRule, RedisSessionStore, StaleScenesError

ORDER = ((C, F), (P,), (R,))  # the memory manager's eviction order
MakeStore = Callable[[], RedisSessionStore]


@pytest.fixture
def make_store(redis_server: RedisServer) -> Iterator[MakeStore]:
    """make_store(): stores on one fresh prefix, each with its own connection pool (a replica)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    clients: list[redis.Redis] = []

    def make() -> RedisSessionStore:
        client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
        clients.append(client)
        return RedisSessionStore(client, prefix)

    yield make
    if clients:
        RedisSessionStore(clients[0], prefix).clear()
    for client in clients:
        client.close()


@pytest.fixture
def store(make_store: MakeStore) -> RedisSessionStore:
    return make_store()


def attempt(
    store: RedisSessionStore,
    now: datetime,
    request: GenerationRequest,
    *,
    capacity: int = 100,
    policy: CapacityPolicy = CapacityPolicy.EVICT_OLDEST,
    expiry: tuple[ExpiryRule, ...] = (),
    session_id: str | None = None,
) -> CreateOutcome:
    """One create at `now` with the memory manager's eviction order."""
    return store.create(
        session_id or str(uuid.uuid4()),
        request,
        to_micros(now),
        capacity=capacity,
        policy=policy,
        eviction_order=ORDER,
        expiry=expiry,
    )


def create(
    store: RedisSessionStore, clock: ManualClock, request: GenerationRequest, **kwargs: Any
) -> GenerationSession:
    outcome = attempt(store, clock.now(), request, **kwargs)
    assert outcome.session is not None
    return outcome.session


def move(store: RedisSessionStore, clock: ManualClock, sid: str, *path: GenerationStatus) -> None:
    sources = {R: (P,), C: (R,), F: (P, R)}
    for status in path:
        store.update(sid, to_micros(clock.now()), status=status, leave_from=sources[status])


def test_a_created_session_reads_back_equal(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    assert store.get(session.session_id) == session
    assert len(store) == 1


def test_updates_round_trip_every_field(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    clock.advance(5)
    scenes = (ScenePrompt(scene_number=1, prompt="A fox.", duration_seconds=0.1),)
    progress = ProgressUpdate(current_step=1, total_steps=3, description='é "quoted"')
    previous, new = store.update(
        sid,
        to_micros(clock.now()),
        status=R,
        leave_from=(P,),
        work_statuses=(P, R),
        progress=progress,
        scenes=scenes,
        error_message="ünïcode",
    )
    assert previous is P
    assert (new.status, new.progress, new.scenes, new.error_message) == (
        R,
        progress,
        scenes,
        "ünïcode",
    )
    assert new.updated_at == new.last_accessed == clock.now()
    assert store.get(sid) == new


def test_a_transition_from_a_status_not_allowed_raises_and_changes_nothing(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    before = store.get(sid)
    with pytest.raises(InvalidTransitionError) as caught:
        store.update(sid, to_micros(clock.now()), status=C, leave_from=(R,))
    assert (caught.value.current, caught.value.requested) == ("pending", "completed")
    move(store, clock, sid, F)
    with pytest.raises(InvalidTransitionError) as work:
        store.update(sid, to_micros(clock.now()), work_statuses=(P, R), progress=None)
    assert work.value.requested == "progress"
    assert store.get(sid) != before
    with pytest.raises(SessionNotFoundError):
        store.update("nope", 0, status=R, leave_from=(P,))


def test_recovery_forces_failed_from_any_status(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, R, C)
    previous, new = store.update(sid, 1, status=F, force=True, error_message="recovered")
    assert (previous, new.status, new.error_message) == (C, F, "recovered")


def test_stale_scenes_are_refused(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    one = (ScenePrompt(scene_number=1, prompt="one"),)
    store.update(sid, 1, work_statuses=(P,), scenes=one, expect_scenes=())
    with pytest.raises(StaleScenesError):
        store.update(sid, 2, work_statuses=(P,), scenes=(), expect_scenes=())
    assert store.get(sid).scenes == one  # type: ignore[union-attr]


def test_reject_at_capacity_creates_nothing(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for _ in range(2):
        create(store, clock, request_data, capacity=2, policy=CapacityPolicy.REJECT)
    outcome = attempt(
        store, clock.now(), request_data, capacity=2, policy=CapacityPolicy.REJECT, session_id="x"
    )
    assert outcome.session is None
    assert len(store) == 2
    assert store.get("x") is None


def test_eviction_takes_the_oldest_finished_then_pending_then_processing(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    ids = {}
    for status, path in ((R, (R,)), (P, ()), (F, (F,)), (C, (R, C))):
        ids[status] = create(store, clock, request_data).session_id
        move(store, clock, ids[status], *path)
        clock.advance(1)
    evicted = []
    for _ in range(3):
        outcome = attempt(store, clock.now(), request_data, capacity=4)
        evicted += [s.session_id for s in outcome.evicted]
        assert len(store) == 4
    # failed and completed are one group: the older of the two goes first
    assert evicted == [ids[F], ids[C], ids[P]]
    outcome = attempt(store, clock.now(), request_data, capacity=4)
    # a pending session (one made above) goes before the older processing one
    assert [s.status for s in outcome.evicted] == [P]
    assert store.get(ids[R]) is not None


def test_a_full_create_expires_before_it_evicts(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    old = create(store, clock, request_data).session_id
    clock.advance(10)
    young = create(store, clock, request_data).session_id
    cutoff = to_micros(clock.now() - timedelta(seconds=5))
    outcome = attempt(
        store,
        clock.now(),
        request_data,
        capacity=2,
        policy=CapacityPolicy.REJECT,
        expiry=(ExpiryRule(None, cutoff),),
    )
    assert [s.session_id for s in outcome.expired] == [old]
    assert outcome.session is not None
    assert store.get(young) is not None


def test_expiry_runs_in_bounded_batches_by_rule(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    failed = [create(store, clock, request_data).session_id for _ in range(3)]
    for sid in failed:
        move(store, clock, sid, F)
    kept = create(store, clock, request_data).session_id
    rules = (ExpiryRule(F, to_micros(clock.now()) + 1),)
    assert len(store.expire(rules, batch=2)) == 2
    assert len(store.expire(rules, batch=2)) == 1
    assert store.expire(rules, batch=2) == []
    assert len(store) == 1
    assert store.get(kept) is not None


def test_purge_all_and_remove(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sids = [create(store, clock, request_data).session_id for _ in range(3)]
    removed = store.remove(sids[0])
    assert removed is not None
    assert removed.session_id == sids[0]
    assert store.remove(sids[0]) is None
    assert {s.session_id for s in store.purge(None, None)} == set(sids[1:])
    assert len(store) == 0


def test_pages_follow_creation_order_across_ties(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    made = [create(store, clock, request_data) for _ in range(5)]  # one instant: ties by id
    clock.advance(1)
    made += [create(store, clock, request_data) for _ in range(2)]
    expected = sorted(made, key=lambda s: (s.created_at, s.session_id))
    seen: list[GenerationSession] = []
    after = None
    while page := store.page(None, after, 2):
        seen += page
        after = (to_micros(page[-1].created_at), page[-1].session_id)
    assert seen == expected


def test_figures_equal_the_memory_stores_for_the_same_sessions(
    store: RedisSessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    memory = InMemorySessionStore()
    for i in range(12):
        sid = create(store, clock, request_data).session_id
        move(store, clock, sid, *[(), (R,), (R, C), (F,)][i % 4])
        clock.advance(minutes=37 * i)
        if i % 3 == 0:
            store.update(sid, to_micros(clock.now()), error_message="touched")
    for session in store.page(None, None, 100):
        memory.put(session)
    now = to_micros(clock.now())
    cutoffs = [now - 3600 * 10**6, now - 6 * 3600 * 10**6, now]
    figures = store.figures(cutoffs, now - 1800 * 10**6)
    assert figures.total == len(memory)
    assert figures.by_status == dict(memory.count_by_status())
    assert figures.created_before == [memory.count_created_before(c) for c in cutoffs]
    assert figures.stuck == memory.count_updated_before(R, now - 1800 * 10**6)
    assert figures.created_range_us == memory.created_micros_range()
    assert figures.created_sum_us == memory.created_micros_sum()
    assert figures.oldest_created_us == {
        s: to_micros(o.created_at) for s in (P, R, C, F) if (o := memory.oldest(s))
    }


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
            previous, _ = replica.update(sid, 1, status=target, leave_from=(P,))  # type: ignore[arg-type]
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
