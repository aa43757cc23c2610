"""One contract for every store: each operation and each rule, over the memory store and a
Redis store on a real redis-server. The rules come from sidecar.core.rules, as in production."""

from __future__ import annotations

import dataclasses
from datetime import UTC, timedelta

import pytest
from conftest import C, F, MakeStore, P, R
from store_helpers import attempt, create, move, to

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.errors import InvalidTransitionError, SessionNotFoundError
from sidecar.core.models import (
    SESSION,
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.core.rules import WORK_STATUSES, ExpiryRule
from sidecar.store import Change, SessionStore, StaleScenesError


def all_sessions(store: SessionStore) -> list[GenerationSession]:
    return store.page(None, None, 10**6)


# ----------------------------------------------------------------------- create, get, touch


def test_a_created_session_reads_back_equal(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    assert (session.status, session.created_at, session.updated_at) == (P, clock.now(), clock.now())
    assert store.get(session.session_id) == session
    assert len(store) == 1
    assert store.get("nope") is None


def test_touch_sets_the_last_access_only(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    clock.advance(7)
    touched = store.touch(session.session_id, to_micros(clock.now()))
    assert touched is not None
    assert touched.last_accessed == clock.now()
    assert touched.updated_at == session.updated_at
    assert store.get(session.session_id) == touched
    assert store.touch("nope", 0) is None


# ----------------------------------------------------------------------- update and its rules


def test_updates_round_trip_every_field(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    clock.advance(5)
    scenes = (ScenePrompt(scene_number=1, prompt="A fox.", duration_seconds=0.1),)
    progress = ProgressUpdate(current_step=1, total_steps=3, description='é "quoted"')
    change = to(R, progress=progress, scenes=scenes, error_message="ünïcode")
    previous, new = store.update(sid, to_micros(clock.now()), change)
    assert previous is P
    assert (new.status, new.progress, new.scenes, new.error_message) == (
        R,
        progress,
        scenes,
        "ünïcode",
    )
    assert new.updated_at == new.last_accessed == clock.now()
    assert store.get(sid) == new


def test_every_session_a_store_builds_is_one_the_edge_accepts_as_it_is(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    # The store builds sessions without validating them again (GenerationSession is validated
    # at the edge): what it builds must pass the edge's rules unchanged.
    sid = create(store, clock, request_data).session_id
    clock.advance(3)
    scenes = tuple(ScenePrompt(scene_number=n, prompt=f"Scene {n}.") for n in (1, 2))
    store.update(sid, to_micros(clock.now()), to(R, scenes=scenes))
    store.update(sid, to_micros(clock.now()), to(F, error_message="boom"))
    clock.advance(1)
    store.touch(sid, to_micros(clock.now()))
    session = store.get(sid)
    assert session is not None
    assert SESSION.validate_python(dataclasses.asdict(session)) == session
    for moment in (session.created_at, session.updated_at, session.last_accessed):
        assert moment.tzinfo is UTC


def test_a_transition_from_a_status_not_allowed_raises_and_changes_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    before = store.get(sid)
    with pytest.raises(InvalidTransitionError) as caught:
        store.update(sid, to_micros(clock.now()), to(C, error_message="x"))
    assert (caught.value.current, caught.value.requested) == ("pending", "completed")
    assert store.get(sid) == before
    with pytest.raises(SessionNotFoundError):
        store.update("nope", 0, to(R))


WORK_VALUES = {
    "progress": ProgressUpdate(current_step=1, total_steps=2),
    "scenes": (ScenePrompt(scene_number=1, prompt="A fox."),),
    "error_message": "root cause",
}


@pytest.mark.parametrize("what", list(WORK_VALUES))
def test_a_finished_session_refuses_work_and_messages(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest, what: str
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, F)
    before = store.get(sid)
    work = Change(work_statuses=WORK_STATUSES, **{what: WORK_VALUES[what]})  # type: ignore[arg-type]
    with pytest.raises(InvalidTransitionError) as caught:
        store.update(sid, to_micros(clock.now()), work)
    assert (caught.value.current, caught.value.requested) == ("failed", what)
    assert store.get(sid) == before


def test_a_refusal_names_the_first_work_field_that_would_change(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, R, C)
    change = Change(work_statuses=WORK_STATUSES, **WORK_VALUES)  # type: ignore[arg-type]
    with pytest.raises(InvalidTransitionError) as caught:
        store.update(sid, to_micros(clock.now()), change)
    assert caught.value.requested == "progress"
    message_only = Change(work_statuses=WORK_STATUSES, error_message="root cause")
    with pytest.raises(InvalidTransitionError) as caught:
        store.update(sid, to_micros(clock.now()), message_only)
    assert caught.value.requested == "error_message"


def test_a_message_with_a_transition_is_judged_by_the_status_left(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, R)
    previous, new = store.update(sid, 1, to(F, error_message="model timed out"))
    assert (previous, new.status, new.error_message) == (R, F, "model timed out")


def test_a_message_equal_to_the_stored_one_is_no_change(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, F)
    clock.advance(1)
    failed = store.get(sid)
    # a retry of the message already stored changes nothing and is not refused
    same = to(F, error_message=None)
    assert store.update(sid, to_micros(clock.now()), same) == (F, failed)
    assert store.get(sid) == failed
    with pytest.raises(InvalidTransitionError):  # other fields are always a change
        store.update(sid, to_micros(clock.now()), to(F, scenes=()))


def test_the_same_status_is_no_transition(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, R)
    before = store.get(sid)
    clock.advance(1)
    assert store.update(sid, to_micros(clock.now()), to(R)) == (R, before)
    assert store.get(sid) == before
    previous, new = store.update(sid, to_micros(clock.now()), to(R, error_message="x"))
    assert (previous, new.status, new.error_message, new.updated_at) == (R, R, "x", clock.now())
    clock.advance(1)
    assert store.update(sid, to_micros(clock.now()), to(R, error_message="x")) == (R, new)


def test_a_change_of_nothing_changes_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = create(store, clock, request_data)
    clock.advance(1)
    assert store.update(session.session_id, to_micros(clock.now()), Change()) == (P, session)


def test_updated_before_applies_only_to_a_session_idle_since(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    move(store, clock, sid, R)
    updated = to_micros(clock.now())
    recover = Change(
        status=F, leave_from=(P, R), work_statuses=(P, R), error_message="recovered",
        updated_before_us=updated,
    )  # fmt: skip
    before = store.get(sid)
    with pytest.raises(InvalidTransitionError) as caught:
        store.update(sid, updated + 10, recover)  # updated exactly at the bound: not idle
    assert (caught.value.current, caught.value.requested) == ("processing", "failed")
    assert store.get(sid) == before
    later = Change(
        status=F, leave_from=(P, R), work_statuses=(P, R), error_message="recovered",
        updated_before_us=updated + 1,
    )  # fmt: skip
    previous, new = store.update(sid, updated + 10, later)
    assert (previous, new.status, new.error_message) == (R, F, "recovered")


def test_stale_scenes_are_refused(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sid = create(store, clock, request_data).session_id
    one = (ScenePrompt(scene_number=1, prompt="one"),)
    store.update(sid, 1, Change(work_statuses=(P,), scenes=one, expect_scenes=()))
    with pytest.raises(StaleScenesError):
        store.update(sid, 2, Change(work_statuses=(P,), scenes=(), expect_scenes=()))
    assert store.get(sid).scenes == one  # type: ignore[union-attr]
    _, new = store.update(sid, 3, Change(work_statuses=(P,), scenes=(), expect_scenes=one))
    assert new.scenes == ()


# ----------------------------------------------------------------------- capacity


def test_reject_at_capacity_creates_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for _ in range(2):
        create(store, clock, request_data, capacity=2, policy=CapacityPolicy.REJECT)
    outcome = attempt(
        store, clock.now(), request_data, capacity=2, policy=CapacityPolicy.REJECT, session_id="x"
    )
    assert (outcome.session, outcome.expired, outcome.evicted) == (None, [], [])
    assert len(store) == 2
    assert store.get("x") is None


def test_eviction_takes_the_oldest_finished_then_pending_then_processing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
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


def test_eviction_among_equal_ages_takes_the_smallest_id(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for sid in ("b", "a", "c"):
        create(store, clock, request_data, session_id=sid)
    outcome = attempt(store, clock.now(), request_data, capacity=3)
    assert [s.session_id for s in outcome.evicted] == ["a"]


def test_a_full_create_expires_before_it_evicts(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
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


def test_a_create_below_capacity_expires_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    create(store, clock, request_data)
    rules = (ExpiryRule(None, to_micros(clock.now()) + 1),)
    outcome = attempt(store, clock.now(), request_data, capacity=3, expiry=rules)
    assert outcome.expired == []
    assert len(store) == 2


# ----------------------------------------------------------------------- removal


def test_expiry_runs_in_bounded_batches_by_rule(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
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


def test_expiry_cutoffs_are_strict_and_rules_apply_in_order(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    first = create(store, clock, request_data)
    clock.advance(1)
    second = create(store, clock, request_data)
    move(store, clock, second.session_id, F)
    at_second = to_micros(second.created_at)
    rules = (ExpiryRule(None, at_second), ExpiryRule(F, at_second + 1))
    removed = store.expire(rules)
    assert [s.session_id for s in removed] == [first.session_id, second.session_id]
    assert removed[1].status is F  # what was removed, as it was


def test_purge_by_status_and_age_and_remove(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    sids = [create(store, clock, request_data).session_id for _ in range(3)]
    clock.advance(10)
    late = create(store, clock, request_data).session_id
    move(store, clock, sids[2], F)
    removed = store.remove(sids[0])
    assert removed is not None
    assert removed.session_id == sids[0]
    assert store.remove(sids[0]) is None
    assert [s.session_id for s in store.purge(F, None)] == [sids[2]]
    assert [s.session_id for s in store.purge(None, to_micros(clock.now()))] == [sids[1]]
    assert [s.session_id for s in store.purge(None, None)] == [late]
    assert len(store) == 0


def test_clear_removes_everything_and_says_how_many(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for _ in range(3):
        create(store, clock, request_data)
    assert store.clear() == 3
    assert len(store) == 0
    assert store.figures([0], R, 0).created_range_us is None
    create(store, clock, request_data)  # the store is usable afterwards
    assert len(store) == 1


def test_close_keeps_the_sessions_and_a_later_call_works(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    store = make_store()
    session = create(store, clock, request_data)
    store.close()
    assert store.get(session.session_id) == session  # opened again for the call
    assert make_store().get(session.session_id) == session
    store.close()  # safe to repeat


# ----------------------------------------------------------------------- reads


def test_a_limit_or_batch_below_one_reads_and_removes_nothing(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for _ in range(3):
        create(store, clock, request_data)
    clock.advance(3600)

    assert store.page(None, None, -1) == []
    assert store.page_stuck(P, to_micros(clock.now()), None, -1) == []
    assert store.purge(None, None, -1) == []
    assert store.expire((ExpiryRule(None, to_micros(clock.now())),), -1) == []
    assert len(store) == 3


def test_pages_follow_creation_order_across_ties(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    made = [create(store, clock, request_data) for _ in range(5)]  # one instant: ties by id
    clock.advance(1)
    made += [create(store, clock, request_data) for _ in range(2)]
    move(store, clock, made[1].session_id, R)
    expected = sorted(
        (store.get(s.session_id) for s in made), key=lambda s: (s.created_at, s.session_id)
    )  # type: ignore[arg-type,return-value]
    seen: list[GenerationSession] = []
    after = None
    while page := store.page(None, after, 2):
        seen += page
        after = (to_micros(page[-1].created_at), page[-1].session_id)
    assert seen == expected
    assert store.page(R, None, 10) == [store.get(made[1].session_id)]


def test_figures_equal_a_brute_force_recount(
    store: SessionStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    for i in range(13):  # one more pending than any other status
        sid = create(store, clock, request_data).session_id
        move(store, clock, sid, *[(), (R,), (R, C), (F,)][i % 4])
        clock.advance(minutes=37 * i)
        if i % 3 == 0:
            # every status allowed here: the point is a later last update in each status
            touch = Change(work_statuses=tuple(GenerationStatus), error_message=f"touched {i}")
            store.update(sid, to_micros(clock.now()), touch)
    sessions = all_sessions(store)
    now = to_micros(clock.now())
    cutoffs = [now - 3600 * 10**6, now - 6 * 3600 * 10**6, now]
    stuck_cutoff = now - 1800 * 10**6
    created = sorted(to_micros(s.created_at) for s in sessions)
    figures = store.figures(cutoffs, R, stuck_cutoff)
    assert figures.total == len(sessions) == 13
    assert figures.by_status == {s: sum(x.status is s for x in sessions) for s in GenerationStatus}
    assert figures.created_before == [sum(c < cut for c in created) for cut in cutoffs]
    assert figures.stuck == sum(
        x.status is R and to_micros(x.updated_at) < stuck_cutoff for x in sessions
    )
    assert figures.stuck > 0
    assert figures.created_range_us == (created[0], created[-1])
    assert figures.created_sum_us == sum(created)
    assert figures.oldest_created_us == {
        s: min(to_micros(x.created_at) for x in sessions if x.status is s)
        for s in GenerationStatus
        if any(x.status is s for x in sessions)
    }
    # another status's stuck count reads that status's last updates
    assert store.figures([], P, now + 1).stuck == figures.by_status[P] == 4


def test_every_store_shares_its_sessions(
    make_store: MakeStore, clock: ManualClock, request_data: GenerationRequest
) -> None:
    one, two = make_store(), make_store()
    sid = create(one, clock, request_data).session_id
    move(two, clock, sid, R)
    assert one.get(sid).status is R  # type: ignore[union-attr]
