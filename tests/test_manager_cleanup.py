"""Capacity, eviction and expiry: on demand, at capacity, and on the background worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest
from conftest import HOUR, MICRO, C, F, NoScanStore, P, R, poll, started

from sidecar.core.clock import ManualClock
from sidecar.core.errors import SessionCapacityError
from sidecar.core.manager import EventType, RemovalReason, SessionEvent
from sidecar.core.models import GenerationSession, GenerationStatus
from sidecar.core.rules import ExpiryRule
from sidecar.store import InMemorySessionStore

if TYPE_CHECKING:
    from conftest import MakeManager, MakeSession


def ids(sessions: list[GenerationSession]) -> list[str]:
    return [s.session_id for s in sessions]


# ----------------------------------------------------------------------- expiry rules


@pytest.mark.parametrize(
    ("status", "age_seconds", "expired"),
    [
        # any session: older than 24 h
        (P, 24 * HOUR, False),
        (P, 24 * HOUR + MICRO, True),
        (R, 24 * HOUR, False),
        (R, 24 * HOUR + MICRO, True),
        (P, 6 * HOUR + MICRO, False),
        (R, 6 * HOUR + MICRO, False),
        # failed: older than 1 h
        (F, HOUR, False),
        (F, HOUR + MICRO, True),
        # completed: older than 6 h
        (C, HOUR + MICRO, False),
        (C, 6 * HOUR, False),
        (C, 6 * HOUR + MICRO, True),
        (C, 24 * HOUR + MICRO, True),
    ],
)
def test_cleanup_expired_sessions_applies_the_seeds_age_rules(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    status: GenerationStatus,
    age_seconds: float,
    expired: bool,
) -> None:
    mgr = make_manager()
    session = make_session(mgr, status)
    clock.advance(age_seconds)
    assert mgr.cleanup_expired_sessions() == int(expired)
    assert (mgr.peek_session(session.session_id) is None) is expired
    assert mgr.snapshot().removed_total[RemovalReason.EXPIRED] == int(expired)


def test_expiry_is_measured_from_creation_not_from_the_last_update(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager()
    session = make_session(mgr, R)
    clock.advance(50 * 60)
    mgr.update_session_status(session.session_id, F)  # failed 50 minutes after creation
    clock.advance(10 * 60 + MICRO)
    assert mgr.cleanup_expired_sessions() == 1


def test_cleanup_expired_sessions_takes_a_max_age(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager()
    make_session(mgr, P)
    clock.advance(2 * HOUR)
    assert mgr.cleanup_expired_sessions(max_age_seconds=2 * HOUR) == 0
    assert mgr.cleanup_expired_sessions(max_age_seconds=2 * HOUR - MICRO) == 1
    assert mgr.get_session_count() == 0


def test_cleanup_expired_sessions_removes_every_expired_one_and_keeps_the_rest(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=20)
    old = [make_session(mgr, s) for s in (P, R, C, F)]
    clock.advance(23 * HOUR)
    young = [make_session(mgr, s) for s in (P, R, C, F)]
    clock.advance(2 * HOUR)  # old ones are 25 h old; young ones 2 h
    assert mgr.cleanup_expired_sessions() == 5  # four old + the young failed one
    left = {s.session_id for s in mgr.get_sessions_by_status(P) + mgr.get_sessions_by_status(R)}
    left |= {s.session_id for s in mgr.get_sessions_by_status(C)}
    assert left == set(ids(young[:3]))
    assert all(mgr.peek_session(s.session_id) is None for s in old)


# ----------------------------------------------------------------------- manual cleanups


def test_cleanup_failed_sessions_removes_every_failed_one(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager()
    failed = [make_session(mgr, F) for _ in range(3)]
    others = [make_session(mgr, s) for s in (P, R, C)]
    assert mgr.cleanup_failed_sessions() == 3
    assert all(mgr.peek_session(s.session_id) is None for s in failed)
    assert all(mgr.peek_session(s.session_id) is not None for s in others)
    assert mgr.snapshot().removed_total[RemovalReason.PURGED] == 3
    assert mgr.cleanup_failed_sessions() == 0


def test_cleanup_failed_sessions_takes_a_max_age(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager()
    old = make_session(mgr, F)
    clock.advance(600)
    young = make_session(mgr, F)
    assert mgr.cleanup_failed_sessions(max_age_seconds=600) == 0
    assert mgr.cleanup_failed_sessions(max_age_seconds=300) == 1
    assert mgr.peek_session(old.session_id) is None
    assert mgr.peek_session(young.session_id) is not None


def test_cleanup_completed_sessions_removes_those_older_than_6h(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager()
    old = make_session(mgr, C)
    clock.advance(MICRO)
    edge = make_session(mgr, C)
    other = make_session(mgr, F)
    clock.advance(6 * HOUR)
    assert mgr.cleanup_completed_sessions() == 1  # `edge` is exactly 6 h old: kept
    assert mgr.peek_session(old.session_id) is None
    assert mgr.peek_session(edge.session_id) is not None
    assert mgr.peek_session(other.session_id) is not None
    assert mgr.cleanup_completed_sessions(max_age_seconds=60) == 1
    assert mgr.snapshot().removed_total[RemovalReason.PURGED] == 2


def test_force_cleanup_all_removes_everything(
    make_manager: MakeManager, make_session: MakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = make_manager()
    for status in (P, R, C, F, P):
        make_session(mgr, status)
    with caplog.at_level(logging.WARNING, logger="sidecar.core.manager"):
        assert mgr.force_cleanup_all() == 5
    assert mgr.get_session_count() == 0
    assert mgr.snapshot().by_status == {P: 0, R: 0, C: 0, F: 0}
    assert mgr.snapshot().removed_total[RemovalReason.PURGED] == 5
    assert any("force cleanup removed all 5" in r.getMessage() for r in caplog.records)
    assert mgr.force_cleanup_all() == 0


# ----------------------------------------------------------------------- capacity


def test_at_capacity_expired_sessions_go_first_and_nothing_is_evicted(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    failed = make_session(mgr, F)
    keep = [make_session(mgr, P), make_session(mgr, R)]
    clock.advance(HOUR + 1)
    new = make_session(mgr)
    assert mgr.peek_session(failed.session_id) is None
    assert all(mgr.peek_session(s.session_id) is not None for s in [*keep, new])
    removed = mgr.snapshot().removed_total
    assert (removed[RemovalReason.EXPIRED], removed[RemovalReason.EVICTED]) == (1, 0)


def test_at_capacity_all_expired_sessions_are_dropped(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    for status in (F, C, P):
        make_session(mgr, status)
    clock.advance(25 * HOUR)
    make_session(mgr)
    assert mgr.get_session_count() == 1
    assert mgr.snapshot().removed_total[RemovalReason.EXPIRED] == 3


def test_below_capacity_nothing_expires_on_create(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    make_session(mgr, F)
    clock.advance(25 * HOUR)
    make_session(mgr)
    assert mgr.get_session_count() == 2  # expiry on create happens only when full


@pytest.mark.parametrize(
    ("statuses", "victim"),
    [
        ([P, R, C, F], 2),  # oldest finished, though older pending/processing exist
        ([P, R, F, C], 2),
        ([F, C, P], 0),
        ([C, F, P], 0),
        ([P, C], 1),
        ([R, P, P], 1),  # no finished: oldest pending
        ([R, R, P], 2),
        ([R, R, R], 0),  # only processing left: the oldest of them
        ([P], 0),
    ],
)
def test_eviction_order_finished_then_pending_then_processing(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    statuses: list[GenerationStatus],
    victim: int,
) -> None:
    mgr = make_manager(max_sessions=len(statuses))
    made = []
    for status in statuses:
        made.append(make_session(mgr, status))
        clock.advance(1)
    evicted: list[SessionEvent] = []
    mgr.register_session_callback("removed", evicted.append)
    new = make_session(mgr)
    assert [(e.session_id, e.reason) for e in evicted] == [
        (made[victim].session_id, RemovalReason.EVICTED)
    ]
    survivors = [s for i, s in enumerate(made) if i != victim]
    assert all(mgr.peek_session(s.session_id) is not None for s in [*survivors, new])
    assert mgr.get_session_count() == len(statuses)


def eviction_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sidecar.core.manager" and r.levelno == logging.WARNING
    ]


def test_evictions_are_summed_up_in_a_warning_at_most_once_a_minute(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr = make_manager(max_sessions=2)
    make_session(mgr, "completed")
    make_session(mgr, "completed")
    caplog.set_level(logging.DEBUG, logger="sidecar.core.manager")

    first = make_session(mgr)  # the first eviction: reported at once
    for _ in range(4):  # four more within the minute: debug lines only
        clock.advance(10)
        make_session(mgr)
    clock.advance(20)  # a minute after the first report
    last = make_session(mgr)
    wanted = "capacity_policy=evict_oldest); latest: "

    evicted = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len([m for m in evicted if m.startswith("evicted session ")]) == 6
    warnings = eviction_warnings(caplog)
    assert len(warnings) == 2
    assert warnings[0].startswith("evicted 1 session(s) to make room since the last report")
    assert warnings[1].startswith("evicted 5 session(s) to make room since the last report")
    assert "(max_sessions=2, " in warnings[1]
    assert warnings[0].split(wanted)[1] != first.session_id  # the victim, not the new one
    assert warnings[1].split(wanted)[1] not in {first.session_id, last.session_id}
    assert mgr.peek_session(warnings[1].split(wanted)[1]) is None


def test_an_eviction_after_a_quiet_minute_is_reported_at_once(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr = make_manager(max_sessions=1)
    make_session(mgr)
    caplog.set_level(logging.WARNING, logger="sidecar.core.manager")

    make_session(mgr)
    clock.advance(3600)
    make_session(mgr)

    assert [w.split(" to make")[0] for w in eviction_warnings(caplog)] == [
        "evicted 1 session(s)"
    ] * 2


def test_shutdown_reports_the_evictions_held_back_so_each_is_logged_once(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr = make_manager(max_sessions=1)
    make_session(mgr)
    caplog.set_level(logging.WARNING, logger="sidecar.core.manager")
    make_session(mgr)  # the first eviction: reported at once
    for _ in range(2):  # two more within the minute: held back
        clock.advance(10)
        make_session(mgr)
    assert [w.split(" to make")[0] for w in eviction_warnings(caplog)] == ["evicted 1 session(s)"]
    assert mgr.shutdown() is True
    assert mgr.shutdown() is True  # nothing is left to report the second time
    assert [w.split(" to make")[0] for w in eviction_warnings(caplog)] == [
        "evicted 1 session(s)",
        "evicted 2 session(s)",
    ]


def test_eviction_among_equal_ages_is_deterministic(
    make_manager: MakeManager, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    made = [make_session(mgr, C) for _ in range(3)]  # same created_at
    evicted: list[str] = []
    mgr.register_session_callback("removed", lambda e: evicted.append(e.session_id))
    make_session(mgr)
    assert evicted == [min(ids(made))]


def test_processing_sessions_survive_while_any_other_can_go(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    working = [make_session(mgr, R) for _ in range(2)]
    for _ in range(5):
        clock.advance(1)
        make_session(mgr)  # each evicts the previous pending one
    assert all(mgr.peek_session(s.session_id) is not None for s in working)
    assert mgr.snapshot().removed_total[RemovalReason.EVICTED] == 4


def test_reject_policy_raises_instead_of_evicting(
    make_manager: MakeManager, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=2, capacity_policy="reject")
    made = [make_session(mgr, C), make_session(mgr, P)]
    for attempt in (1, 2):
        with pytest.raises(SessionCapacityError) as info:
            make_session(mgr)
        assert info.value.max_sessions == 2
        assert mgr.snapshot().rejected_total == {"capacity": attempt}
    assert all(mgr.peek_session(s.session_id) is not None for s in made)
    snap = mgr.snapshot()
    assert snap.total == 2
    assert snap.created_total == 2
    assert sum(snap.removed_total.values()) == 0


def test_reject_policy_still_drops_expired_sessions_first(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=2, capacity_policy="reject")
    make_session(mgr, F)
    make_session(mgr, P)
    clock.advance(HOUR + 1)
    make_session(mgr)
    snap = mgr.snapshot()
    assert snap.total == 2
    assert snap.rejected_total == {"capacity": 0}
    assert snap.removed_total[RemovalReason.EXPIRED] == 1


def test_capacity_policy_can_be_switched_live(
    make_manager: MakeManager, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=1)
    make_session(mgr)
    mgr.reconfigure(capacity_policy="reject")
    with pytest.raises(SessionCapacityError):
        make_session(mgr)
    mgr.reconfigure(capacity_policy="evict_oldest")
    make_session(mgr)
    assert mgr.snapshot().removed_total[RemovalReason.EVICTED] == 1


def test_lowering_max_sessions_drops_expired_at_once_and_the_rest_on_next_create(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=6)
    make_session(mgr, F)
    clock.advance(HOUR + 1)
    for status in (P, P, R, C, P):
        make_session(mgr, status)
    mgr.reconfigure(max_sessions=2)
    assert mgr.get_session_count() == 5  # only the expired failed one went
    assert mgr.snapshot().removed_total[RemovalReason.EXPIRED] == 1
    new = make_session(mgr)
    assert mgr.get_session_count() == 2
    assert mgr.snapshot().removed_total[RemovalReason.EVICTED] == 4
    (processing,) = mgr.get_sessions_by_status(R)  # the processing one is kept longest
    assert {s.session_id for s in mgr.get_sessions_by_status(P)} == {new.session_id}
    assert processing.status is R


def test_raising_max_sessions_removes_nothing(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=2)
    make_session(mgr, F)
    clock.advance(2 * HOUR)
    mgr.reconfigure(max_sessions=3)
    assert mgr.get_session_count() == 1


# ----------------------------------------------------------------------- no full scans


def test_expiry_and_eviction_never_walk_the_store(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    no_scan_store: NoScanStore,
) -> None:
    mgr = make_manager(max_sessions=8, store=no_scan_store)
    for status in (F, C, P, R, P, R, C, F):
        make_session(mgr, status)
    clock.advance(7 * HOUR)
    no_scan_store.scans_allowed = False
    assert mgr.cleanup_expired_sessions() == 4
    for _ in range(6):
        make_session(mgr)  # fills up, then evicts
    mgr.reconfigure(max_sessions=4)
    make_session(mgr)
    clock.advance(25 * HOUR)
    assert mgr.cleanup_completed_sessions() == 0
    assert mgr.run_cleanup() == 4
    assert mgr.get_session_count() == 0


@pytest.mark.parametrize("fresh", [10, 200])
def test_expiry_and_eviction_touch_only_the_sessions_they_remove(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession, fresh: int
) -> None:
    store = NoScanStore()
    touched = store.watched.touched
    mgr = make_manager(max_sessions=fresh + 3, store=store)
    expired = [make_session(mgr, F) for _ in range(3)]
    clock.advance(HOUR + 1)
    for _ in range(fresh):
        mgr.create_session(expired[0].request_data)
    store.scans_allowed = False
    touched.clear()
    assert mgr.cleanup_expired_sessions() == 3
    # whatever the store holds, expiry removes the 3 expired sessions and looks at no other
    assert touched["removed"] == 3
    assert touched["get"] == 0
    assert touched["contains"] == 0
    for _ in range(3):
        mgr.create_session(expired[0].request_data)
    touched.clear()
    mgr.create_session(expired[0].request_data)  # full: expire (nothing) then evict one
    assert touched["removed"] == 1
    assert touched["get"] <= 1  # the victim, read once to report it
    assert touched["contains"] <= 1  # the new id


# ----------------------------------------------------------------------- the worker


def test_the_background_worker_removes_expired_sessions(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
) -> None:
    mgr = make_manager(cleanup_interval_seconds=1)  # the shortest interval allowed
    both_gone = threading.Event()
    removed: list[tuple[str, RemovalReason | None]] = []

    def on_removed(event: SessionEvent) -> None:
        removed.append((event.session_id, event.reason))
        if len(removed) == 2:
            both_gone.set()

    mgr.register_session_callback(EventType.REMOVED.value, on_removed)
    old = [make_session(mgr, P), make_session(mgr, F)]
    clock.advance(25 * HOUR)
    young = make_session(mgr, P)
    started(mgr)
    assert both_gone.wait(15), "the worker did not run a cleanup within 15 s"
    assert sorted(removed) == sorted((s.session_id, RemovalReason.EXPIRED) for s in old)
    assert mgr.peek_session(young.session_id) is not None
    poll(lambda: mgr.snapshot().cleanup_runs_total >= 1 or None, timeout=5, what="a run")
    snap = mgr.snapshot()
    assert snap.cleanup_last_run == clock.now()
    assert snap.cleanup_errors_total == 0
    assert snap.worker_alive is True


class FlakyStore(InMemorySessionStore):
    """A store whose expiry fails the first `failures` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def expire(self, rules: Sequence[ExpiryRule], batch: int = 1000) -> list[GenerationSession]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("storage hiccup")
        return super().expire(rules, batch)


def test_a_failing_cleanup_run_is_counted_and_logged_not_raised(
    make_manager: MakeManager, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = make_manager(store=FlakyStore(failures=1))
    with caplog.at_level(logging.ERROR, logger="sidecar.core.manager"):
        assert mgr.run_cleanup() == 0
    snap = mgr.snapshot()
    assert (snap.cleanup_runs_total, snap.cleanup_errors_total) == (1, 1)
    assert snap.cleanup_last_run == clock.now()
    assert any(r.exc_info and r.exc_info[0] is OSError for r in caplog.records)
    assert mgr.run_cleanup() == 0
    assert (mgr.snapshot().cleanup_runs_total, mgr.snapshot().cleanup_errors_total) == (2, 1)


def test_the_worker_survives_a_failing_run(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(cleanup_interval_seconds=1, store=FlakyStore(failures=2))
    make_session(mgr, F)
    clock.advance(2 * HOUR)
    started(mgr)
    # three runs a second apart (the shortest interval allowed): two fail, the third empties
    poll(lambda: mgr.get_session_count() == 0 or None, timeout=20, what="an empty manager")
    snap = mgr.snapshot()
    assert snap.cleanup_errors_total == 2
    assert snap.cleanup_runs_total >= 3
    assert snap.worker_alive is True


def test_run_cleanup_counts_runs_and_returns_how_many_went(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager()
    assert mgr.snapshot().cleanup_last_run is None
    make_session(mgr, C)
    clock.advance(7 * HOUR)
    assert mgr.run_cleanup() == 1
    assert mgr.run_cleanup() == 0
    snap = mgr.snapshot()
    assert (snap.cleanup_runs_total, snap.cleanup_last_run) == (2, clock.now())


def test_the_worker_does_not_run_before_its_interval(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(cleanup_interval_seconds=3600)
    make_session(mgr, F)
    clock.advance(2 * HOUR)  # the manual clock does not drive the worker's wait
    started(mgr)
    assert mgr.shutdown() is True
    assert mgr.snapshot().cleanup_runs_total == 0
