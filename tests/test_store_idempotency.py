"""The store's two operations for issue 14 item 4 and issue 13 item 7, over both stores: a create
with an Idempotency-Key (looked up and recorded in the create's one atomic step) and the page
of stuck sessions. Redis runs on a real redis-server; "replicas" are stores with their own
connection pools on one prefix."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from conftest import C, MakeStore, P, R
from store_helpers import attempt, create, move, to

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.models import GenerationRequest, ProgressUpdate
from sidecar.core.rules import STUCK_STATUS, ExpiryRule
from sidecar.store import Change, IdempotencyKey, KeyOutcome, SessionStore

FOREVER = 0  # forget_before_us: no key is old enough to be forgotten


def key(
    name: str = "k1", fingerprint: str = "f1", *, forget: int = FOREVER, most: int = 100
) -> IdempotencyKey:
    """An Idempotency-Key rule: remembered forever unless `forget` says otherwise."""
    return IdempotencyKey(name, fingerprint, forget, most)


# ----------------------------------------------------------------------- Idempotency-Key


def test_a_new_key_creates_and_a_repeat_returns_that_session_as_it_is_now(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    first = attempt(store, clock.now(), request_data, idempotency=key())
    assert first.key is KeyOutcome.NEW
    assert first.session is not None
    sid = first.session.session_id
    clock.advance(3)
    store.update(sid, to_micros(clock.now()), to(R))
    again = attempt(store, clock.now(), request_data, idempotency=key())
    assert (again.key, again.original_id) == (KeyOutcome.REPLAYED, sid)
    assert again.session == store.get(sid)
    assert again.session is not None
    assert again.session.status is R
    assert len(store) == 1


def test_a_create_without_a_key_says_nothing_of_keys(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    outcome = attempt(store, clock.now(), request_data)
    assert (outcome.key, outcome.original_id) == (None, None)


def test_the_key_with_another_request_creates_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data, idempotency=key()).session_id
    other = attempt(store, clock.now(), request_data, idempotency=key(fingerprint="f2"))
    assert (other.key, other.session, other.original_id) == (KeyOutcome.REUSED, None, sid)
    assert len(store) == 1
    # another key with that request is a new session
    assert attempt(store, clock.now(), request_data, idempotency=key("k2", "f2")).key == "new"
    assert len(store) == 2


def test_a_key_whose_session_was_removed_is_spent(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data, idempotency=key()).session_id
    store.remove(sid)
    again = attempt(store, clock.now(), request_data, idempotency=key())
    assert (again.key, again.session, again.original_id) == (KeyOutcome.SPENT, None, sid)
    assert len(store) == 0
    store.clear()  # clearing the sessions keeps the keys
    assert attempt(store, clock.now(), request_data, idempotency=key()).key is KeyOutcome.SPENT


def test_a_rejected_create_does_not_use_up_its_key(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    full = create(store, clock, request_data).session_id
    reject = {"capacity": 1, "policy": CapacityPolicy.REJECT}
    refused = attempt(store, clock.now(), request_data, idempotency=key(), **reject)
    assert (refused.session, refused.key) == (None, KeyOutcome.NEW)
    store.remove(full)
    made = attempt(store, clock.now(), request_data, idempotency=key(), **reject)
    assert made.key is KeyOutcome.NEW
    assert made.session is not None
    assert attempt(store, clock.now(), request_data, idempotency=key(), **reject).key == "replayed"


def test_a_replay_at_capacity_expires_and_evicts_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    create(store, clock, request_data, idempotency=key())
    create(store, clock, request_data)
    clock.advance(10)
    expiry_everything = (ExpiryRule(None, to_micros(clock.now())),)
    again = attempt(store, clock.now(), request_data, capacity=2, expiry=expiry_everything,
                    idempotency=key())  # fmt: skip
    assert (again.key, again.expired, again.evicted) == (KeyOutcome.REPLAYED, [], [])
    assert len(store) == 2


def test_a_key_is_remembered_until_strictly_before_its_forget_time(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    recorded = to_micros(clock.now())
    sid = create(store, clock, request_data, idempotency=key()).session_id
    kept = attempt(store, clock.now(), request_data, idempotency=key(forget=recorded))
    assert (kept.key, kept.original_id) == (KeyOutcome.REPLAYED, sid)
    gone = attempt(store, clock.now(), request_data, idempotency=key(forget=recorded + 1))
    assert gone.key is KeyOutcome.NEW
    assert gone.session is not None
    assert gone.session.session_id != sid
    assert len(store) == 2


def test_past_the_most_keys_the_oldest_are_forgotten_first(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for name in ("a", "b", "c"):
        create(store, clock, request_data, idempotency=key(name, most=2))
        clock.advance(1)
    outcomes = {
        name: attempt(store, clock.now(), request_data, idempotency=key(name, most=5)).key
        for name in ("b", "c", "a")
    }
    assert outcomes == {"b": "replayed", "c": "replayed", "a": "new"}


def test_a_key_is_shared_by_every_replica(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    one, two = make_store(), make_store()
    sid = create(one, clock, request_data, idempotency=key()).session_id
    again = attempt(two, clock.now(), request_data, idempotency=key())
    assert (again.key, again.original_id) == (KeyOutcome.REPLAYED, sid)
    assert attempt(two, clock.now(), request_data, idempotency=key(fingerprint="x")).key == "reused"


def test_concurrent_creates_with_one_key_on_many_replicas_create_one_session(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    replicas = [make_store() for _ in range(8)]
    start = threading.Barrier(len(replicas))
    outcomes: list[KeyOutcome | None] = []
    made: list[str] = []

    def run(replica: SessionStore) -> None:
        start.wait(timeout=30)
        outcome = attempt(replica, clock.now(), request_data, idempotency=key())
        outcomes.append(outcome.key)
        assert outcome.session is not None
        made.append(outcome.session.session_id)

    threads = [threading.Thread(target=run, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["new"] + ["replayed"] * 7
    assert len(set(made)) == 1
    assert len(replicas[0]) == 1


# ----------------------------------------------------------------------- stuck sessions


def test_stuck_sessions_page_oldest_update_first_strictly_before_the_cutoff(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    names = ("late", "early", "tie_b", "tie_a", "edge", "pending", "done", "refreshed")
    ids = {n: create(store, clock, request_data, session_id=f"{n}-{uuid.uuid4()}").session_id
           for n in names}  # fmt: skip
    move(store, clock, ids["early"], R)
    move(store, clock, ids["refreshed"], R)
    clock.advance(5)
    move(store, clock, ids["tie_b"], R)
    move(store, clock, ids["tie_a"], R)
    clock.advance(4)
    move(store, clock, ids["late"], R)
    clock.advance(1)
    move(store, clock, ids["edge"], R)
    move(store, clock, ids["done"], R, C)
    progress = Change(progress=ProgressUpdate(current_step=1, total_steps=2), work_statuses=(R,))
    store.update(ids["refreshed"], to_micros(clock.now()), progress)
    cutoff = to_micros(clock.now())  # "edge" and "refreshed" were updated exactly then
    tie = sorted([ids["tie_a"], ids["tie_b"]])
    expected = [ids["early"], *tie, ids["late"]]
    assert [s.session_id for s in store.page_stuck(STUCK_STATUS, cutoff, None, 100)] == expected
    assert store.figures([], STUCK_STATUS, cutoff).stuck == len(expected)
    later = store.page_stuck(STUCK_STATUS, cutoff + 1, None, 100)  # one microsecond later
    assert {s.session_id for s in later[-2:]} == {ids["edge"], ids["refreshed"]}
    assert [s.session_id for s in store.page_stuck(P, cutoff, None, 100)] == [ids["pending"]]


def test_stuck_pages_continue_just_after_the_cursor(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    made = []
    for _ in range(5):
        sid = create(store, clock, request_data).session_id
        move(store, clock, sid, R)
        made.append(sid)
        clock.advance(timedelta(microseconds=1).total_seconds())
    cutoff = to_micros(clock.now())
    seen: list[str] = []
    after = None
    for _ in range(4):  # bounded: a cursor that did not advance must fail, not hang
        page = store.page_stuck(STUCK_STATUS, cutoff, after, 2)
        assert len(page) <= 2
        seen += [s.session_id for s in page]
        if not page:
            break
        after = (to_micros(page[-1].updated_at), page[-1].session_id)
    assert seen == made
    assert store.page_stuck(STUCK_STATUS, cutoff, None, 0) == []
