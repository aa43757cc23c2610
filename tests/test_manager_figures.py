"""Figures for stats, health and metrics: kept incrementally, read without walking the sessions;
and storage as one swappable piece."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from conftest import HOUR, MICRO, C, F, NoScanStore, P, R

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import ManagerConfig
from sidecar.core.manager import AGE_BUCKETS, KNOWN_TRANSITIONS, RemovalReason, SessionManager
from sidecar.core.models import GenerationSession, GenerationStatus
from sidecar.core.rules import ExpiryRule
from sidecar.store import (
    Change,
    CreateOutcome,
    Cursor,
    InMemorySessionStore,
    SessionStore,
    StoreFigures,
)

if TYPE_CHECKING:
    from conftest import MakeManager, MakeSession

BUCKETS = ["under_1h", "1h_to_6h", "6h_to_24h", "over_24h"]


def only(bucket: str) -> dict[str, int]:
    return {name: int(name == bucket) for name in BUCKETS}


# ----------------------------------------------------------------------- an empty manager


def test_snapshot_of_an_empty_manager(manager: SessionManager, clock: ManualClock) -> None:
    snap = manager.snapshot()
    assert snap.taken_at == clock.now()
    assert (snap.total, snap.capacity, snap.utilization, snap.health) == (0, 10, 0.0, "healthy")
    assert snap.by_status == {P: 0, R: 0, C: 0, F: 0}
    assert snap.by_age == dict.fromkeys(BUCKETS, 0)
    assert snap.stuck == 0
    assert snap.stuck_after_seconds == 1800
    assert snap.oldest_created == {}
    assert (snap.average_age_seconds, snap.oldest_age_seconds, snap.newest_age_seconds) == (0, 0, 0)
    assert snap.created_total == 0
    assert snap.removed_total == dict.fromkeys(RemovalReason, 0)
    assert snap.rejected_total == {"capacity": 0}
    assert snap.transitions_total == dict.fromkeys(KNOWN_TRANSITIONS, 0)
    assert (snap.cleanup_runs_total, snap.cleanup_errors_total, snap.cleanup_last_run) == (
        0,
        0,
        None,
    )
    assert (snap.worker_alive, snap.closed) == (False, False)


def test_age_buckets_are_the_seeds() -> None:
    assert [name for name, _, _ in AGE_BUCKETS] == BUCKETS
    assert [(low, high) for _, low, high in AGE_BUCKETS] == [
        (0, HOUR),
        (HOUR, 6 * HOUR),
        (6 * HOUR, 24 * HOUR),
        (24 * HOUR, float("inf")),
    ]


def test_performance_stats_of_an_empty_manager(manager: SessionManager) -> None:
    assert manager.get_performance_stats() == {
        "total_sessions": 0,
        "max_capacity": 10,
        "utilization_percent": 0.0,
        "status_breakdown": {"pending": 0, "processing": 0, "completed": 0, "failed": 0},
        "age_distribution": dict.fromkeys(BUCKETS, 0),
        "average_age_hours": 0.0,
        "oldest_session_hours": 0.0,
        "newest_session_hours": 0.0,
        "stuck_sessions": 0,
    }


# ----------------------------------------------------------------------- counts and ages


def test_counts_per_status_follow_every_change(
    manager: SessionManager, make_session: MakeSession, clock: ManualClock
) -> None:
    made = {status: make_session(manager, status) for status in (P, R, C, F)}
    make_session(manager, R)
    assert manager.snapshot().by_status == {P: 1, R: 2, C: 1, F: 1}
    manager.update_session_status(made[P].session_id, R)
    manager.remove_session(made[C].session_id)
    clock.advance(manager.config.stuck_after_seconds + 1)
    manager.recover_corrupted_session(made[R].session_id)
    assert manager.snapshot().by_status == {P: 0, R: 2, C: 0, F: 2}
    stats = manager.get_performance_stats()
    assert stats["status_breakdown"] == {"pending": 0, "processing": 2, "completed": 0, "failed": 2}
    assert stats["total_sessions"] == 4


@pytest.mark.parametrize(
    ("boundary_hours", "below", "at"),
    [(1, "under_1h", "1h_to_6h"), (6, "1h_to_6h", "6h_to_24h"), (24, "6h_to_24h", "over_24h")],
)
def test_age_buckets_move_at_their_exact_boundaries(
    manager: SessionManager,
    clock: ManualClock,
    make_session: MakeSession,
    boundary_hours: int,
    below: str,
    at: str,
) -> None:
    make_session(manager, P)
    clock.advance(hours=boundary_hours, microseconds=-1)
    assert manager.snapshot().by_age == only(below)
    assert manager.get_performance_stats()["age_distribution"] == only(below)
    clock.advance(microseconds=1)
    assert manager.snapshot().by_age == only(at)
    assert manager.get_performance_stats()["age_distribution"] == only(at)


def test_a_new_session_is_under_1h(manager: SessionManager, make_session: MakeSession) -> None:
    make_session(manager)
    assert manager.snapshot().by_age == only("under_1h")


def test_age_buckets_split_many_sessions(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    # ages at the end, 25 h after the first two
    for _ in range(2):
        make_session(manager, R)  # 25 h
    clock.advance(hours=19)
    make_session(manager, P)  # 6 h
    clock.advance(hours=3)
    make_session(manager, C)  # 3 h
    clock.advance(hours=2, microseconds=1)
    make_session(manager, P)  # 1 h - 1 us
    clock.advance(hours=1, microseconds=-1)
    assert manager.snapshot().by_age == {
        "under_1h": 1,
        "1h_to_6h": 1,
        "6h_to_24h": 1,
        "over_24h": 2,
    }


def test_average_oldest_and_newest_ages(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    make_session(manager)
    clock.advance(hours=1)
    make_session(manager, C)
    clock.advance(hours=2)
    make_session(manager, F)
    clock.advance(hours=1)  # ages 4 h, 3 h, 1 h
    snap = manager.snapshot()
    assert snap.average_age_seconds == pytest.approx(8 * HOUR / 3)
    assert (snap.oldest_age_seconds, snap.newest_age_seconds) == (4 * HOUR, HOUR)
    stats = manager.get_performance_stats()
    assert (
        stats["average_age_hours"],
        stats["oldest_session_hours"],
        stats["newest_session_hours"],
    ) == (2.67, 4.0, 1.0)


def test_oldest_session_per_status(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    t0 = clock.now()
    first_r = make_session(manager, R)
    clock.advance(10)
    make_session(manager, R)
    make_session(manager, C)
    t1 = clock.now()
    clock.advance(10)
    make_session(manager, C)
    assert manager.snapshot().oldest_created == {R: t0, C: t1}
    manager.update_session_status(first_r.session_id, F)
    assert manager.snapshot().oldest_created == {R: t1, C: t1, F: t0}
    manager.remove_session(first_r.session_id)
    assert manager.snapshot().oldest_created == {R: t1, C: t1}


def test_transitions_are_counted_per_edge(
    manager: SessionManager, make_session: MakeSession
) -> None:
    make_session(manager, C)
    make_session(manager, C)
    make_session(manager, F)
    transitions = manager.snapshot().transitions_total
    assert transitions[(P, R)] == 2
    assert transitions[(R, C)] == 2
    assert transitions[(P, F)] == 1
    assert transitions[(R, F)] == 0
    assert sum(transitions.values()) == 5


def test_created_and_removed_totals_balance_the_count(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    sessions = [make_session(mgr, s) for s in (P, F, C, R, P)]  # two evictions
    mgr.remove_session(sessions[-1].session_id)
    clock.advance(25 * HOUR)
    mgr.cleanup_expired_sessions()
    make_session(mgr, F)
    mgr.cleanup_failed_sessions()
    snap = mgr.snapshot()
    assert snap.created_total == 6
    assert snap.removed_total == {
        RemovalReason.DELETED: 1,
        RemovalReason.EXPIRED: 2,
        RemovalReason.EVICTED: 2,
        RemovalReason.PURGED: 1,
    }
    assert snap.created_total - sum(snap.removed_total.values()) == snap.total == 0


# ----------------------------------------------------------------------- stuck sessions


def test_a_processing_session_is_stuck_after_30_minutes_without_update(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    make_session(manager, R)
    clock.advance(1800)
    assert manager.snapshot().stuck == 0
    clock.advance(MICRO)
    assert manager.snapshot().stuck == 1
    assert manager.get_health_status()["stuck_sessions"] == 1
    assert manager.get_performance_stats()["stuck_sessions"] == 1


def test_reading_a_session_does_not_unstick_it(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    sid = make_session(manager, R).session_id
    clock.advance(1000)
    assert manager.get_session(sid) is not None
    manager.get_all_sessions_info()
    manager.get_sessions_by_status(R)
    clock.advance(800 + MICRO)
    assert manager.snapshot().stuck == 1


@pytest.mark.parametrize(
    "touch",
    [
        lambda m, sid: m.update_session_progress(sid, 1, 3),
        lambda m, sid: m.add_scene_to_session(sid, {"scene_number": 1, "prompt": "p"}),
        lambda m, sid: m.set_session_scenes(sid, []),
        lambda m, sid: m.atomic_session_update(sid, {"error_message": "retrying"}),
    ],
)
def test_an_update_unsticks_a_session(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession, touch: Any
) -> None:
    sid = make_session(manager, R).session_id
    clock.advance(1801)
    assert manager.snapshot().stuck == 1
    touch(manager, sid)
    assert manager.snapshot().stuck == 0
    clock.advance(1801)
    assert manager.snapshot().stuck == 1


def test_stuck_counts_from_entering_processing_not_from_creation(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    sid = make_session(manager, P).session_id
    clock.advance(2 * HOUR)
    manager.update_session_status(sid, R)
    assert manager.snapshot().stuck == 0


def test_only_processing_sessions_can_be_stuck(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    for status in (P, C, F):
        make_session(manager, status)
    clock.advance(5 * HOUR)
    assert manager.snapshot().stuck == 0


def test_the_stuck_threshold_is_configurable(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(stuck_after_seconds=60)
    make_session(mgr, R)
    clock.advance(61)
    assert mgr.snapshot().stuck == 1
    mgr.reconfigure(stuck_after_seconds=120)
    assert mgr.snapshot().stuck == 0
    assert mgr.snapshot().stuck_after_seconds == 120


# ----------------------------------------------------------------------- health


@pytest.mark.parametrize(
    ("count", "health"),
    [(0, "healthy"), (69, "healthy"), (70, "warning"), (89, "warning"), (90, "critical")],
)
def test_health_thresholds_at_the_default_capacity(
    make_manager: MakeManager, make_session: MakeSession, count: int, health: str
) -> None:
    mgr = make_manager()
    for _ in range(count):
        make_session(mgr)
    assert mgr.snapshot().utilization == count / 100
    assert mgr.get_health_status() == {
        "overall_health": health,
        "session_count": count,
        "utilization_percent": float(count),
        "stuck_sessions": 0,
        "cleanup_active": False,
    }


@pytest.mark.parametrize(
    ("count", "health"),
    [(6, "healthy"), (7, "warning"), (8, "warning"), (9, "critical"), (10, "critical")],
)
def test_health_thresholds_at_a_small_capacity(
    manager: SessionManager, make_session: MakeSession, count: int, health: str
) -> None:
    for _ in range(count):
        make_session(manager)
    assert manager.snapshot().health == health
    assert manager.get_performance_stats()["utilization_percent"] == count * 10.0


def test_health_follows_a_capacity_change(
    manager: SessionManager, make_session: MakeSession
) -> None:
    for _ in range(5):
        make_session(manager)
    assert manager.get_health_status()["overall_health"] == "healthy"
    manager.reconfigure(max_sessions=5)
    health = manager.get_health_status()
    assert (health["overall_health"], health["utilization_percent"]) == ("critical", 100.0)
    manager.reconfigure(warning_utilization=0.2, critical_utilization=0.3, max_sessions=50)
    assert manager.get_health_status()["overall_health"] == "healthy"
    manager.reconfigure(max_sessions=20)
    assert manager.get_health_status()["overall_health"] == "warning"


def test_utilization_percent_is_rounded_to_one_decimal(
    make_manager: MakeManager, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=3)
    make_session(mgr)
    assert mgr.get_health_status()["utilization_percent"] == 33.3
    assert mgr.get_performance_stats()["utilization_percent"] == 33.3


# ----------------------------------------------------------------------- O(1) / O(log n)


def test_figures_are_read_from_indexes_without_walking_the_sessions(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
    no_scan_store: NoScanStore,
) -> None:
    mgr = make_manager(max_sessions=500, store=no_scan_store)
    statuses = [P, R, C, F, R]
    for i in range(300):
        make_session(mgr, statuses[i % 5])
        clock.advance(seconds=317)  # spreads the sessions over every age bucket
    sessions = list(no_scan_store.values())
    no_scan_store.scans_allowed = False
    with pytest.raises(pytest.fail.Exception, match="full scan"):
        list(no_scan_store.values())
    with pytest.raises(pytest.fail.Exception, match="iteration"):
        iter(no_scan_store)

    now = to_micros(clock.now())
    snap = mgr.snapshot()
    health = mgr.get_health_status()
    stats = mgr.get_performance_stats()

    ages = [now - to_micros(s.created_at) for s in sessions]
    expected_by_age = {
        name: sum(low * 1e6 <= age < high * 1e6 for age in ages) for name, low, high in AGE_BUCKETS
    }
    stuck = sum(
        s.status is R and now - to_micros(s.updated_at) > 1800 * 1_000_000 for s in sessions
    )
    assert snap.by_status == dict(Counter(s.status for s in sessions))
    assert snap.by_age == expected_by_age
    assert all(count > 0 for count in expected_by_age.values())
    assert snap.stuck == stuck > 0
    assert snap.oldest_created == {
        status: min(s.created_at for s in sessions if s.status is status) for status in statuses
    }
    assert health["session_count"] == stats["total_sessions"] == 300
    assert health["stuck_sessions"] == stats["stuck_sessions"] == stuck
    assert stats["age_distribution"] == expected_by_age


@pytest.mark.parametrize("n", [5, 500])
def test_a_snapshot_reads_no_session_whatever_the_size(
    make_manager: MakeManager, make_session: MakeSession, n: int
) -> None:
    store = NoScanStore()
    mgr = make_manager(max_sessions=1000, store=store)
    for i in range(n):
        make_session(mgr, (P, R, C, F)[i % 4])
    store.watched.touched.clear()
    store.scans_allowed = store.listing_allowed = False
    mgr.snapshot()
    mgr.get_health_status()
    mgr.get_performance_stats()
    mgr.get_session_count()
    assert sum(store.watched.touched.values()) == 0


# ----------------------------------------------------------------------- swappable storage


class DelegatingStore:
    """Not an InMemorySessionStore: wraps any SessionStore and logs the writes it forwards."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.shared = inner.shared
        self.writes: Counter[str] = Counter()

    def _removed(self, sessions: list[GenerationSession]) -> list[GenerationSession]:
        self.writes["removed"] += len(sessions)
        return sessions

    def create(self, *args: Any, **kwargs: Any) -> CreateOutcome:
        self.writes["create"] += 1
        outcome = self.inner.create(*args, **kwargs)
        self._removed([*outcome.expired, *outcome.evicted])
        return outcome

    def update(
        self, session_id: str, now_us: int, change: Change
    ) -> tuple[GenerationStatus, GenerationSession]:
        self.writes["update"] += 1
        return self.inner.update(session_id, now_us, change)

    def touch(self, session_id: str, now_us: int) -> GenerationSession | None:
        self.writes["touch"] += 1
        return self.inner.touch(session_id, now_us)

    def remove(self, session_id: str) -> GenerationSession | None:
        old = self.inner.remove(session_id)
        self._removed([old] if old else [])
        return old

    def expire(self, rules: Sequence[ExpiryRule], batch: int = 1000) -> list[GenerationSession]:
        return self._removed(self.inner.expire(rules, batch))

    def purge(
        self, status: GenerationStatus | None, cutoff_us: int | None, batch: int = 1000
    ) -> list[GenerationSession]:
        return self._removed(self.inner.purge(status, cutoff_us, batch))

    def figures(
        self, cutoffs_us: Sequence[int], stuck_status: GenerationStatus, stuck_cutoff_us: int
    ) -> StoreFigures:
        return self.inner.figures(cutoffs_us, stuck_status, stuck_cutoff_us)

    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]:
        return self.inner.page(status, after, limit)

    def get(self, session_id: str) -> GenerationSession | None:
        return self.inner.get(session_id)

    def __len__(self) -> int:
        return len(self.inner)

    def clear(self) -> int:
        self.writes["clear"] += 1
        return self.inner.clear()


def redis_store(request: pytest.FixtureRequest) -> SessionStore:
    """A Redis store on the run's real redis-server, under a fresh prefix."""
    import redis

    from sidecar.store.redis import RedisSessionStore

    server = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    request.addfinalizer(client.close)
    return RedisSessionStore(client, f"t{uuid.uuid4().hex[:12]}")


def run_scenario(mgr: SessionManager, clock: ManualClock) -> list[Any]:
    """The same operations on any store; returns what an observer would see."""
    from sidecar.core.models import GenerationRequest

    story = GenerationRequest(story_text="A clockmaker's apprentice.", num_scenes=2)
    seen: list[Any] = []
    made = []
    for step in range(6):
        made.append(mgr.create_session(story).session_id)
        clock.advance(minutes=20 * step + 1)  # no two sessions share a creation time
    mgr.update_session_status(made[0], "processing")
    mgr.update_session_status(made[1], "failed", "bad prompt")
    mgr.update_session_status(made[2], "processing")
    mgr.update_session_progress(made[2], 1, 2)
    mgr.add_scene_to_session(made[2], {"scene_number": 2, "prompt": "a gear"})  # type: ignore[arg-type]
    mgr.update_session_status(made[2], "completed")
    mgr.get_session(made[3])
    clock.advance(hours=2)
    seen.append(mgr.snapshot())
    # full (6): the failed and the completed one have expired and go; no eviction
    made.append(mgr.create_session(story).session_id)
    clock.advance(1)
    made.append(mgr.create_session(story).session_id)
    clock.advance(1)
    made.append(mgr.create_session(story).session_id)  # full again: evicts the oldest pending
    seen.append(mgr.snapshot())
    seen.append(mgr.list_sessions(limit=3))
    seen.append([s.session_id for s in mgr.get_sessions_by_status("processing")])
    clock.advance(hours=7)
    seen.append(mgr.cleanup_expired_sessions())
    seen.append(mgr.get_all_sessions_info())
    seen.append(mgr.snapshot())
    seen.append(mgr.force_cleanup_all())
    seen.append(mgr.snapshot())
    # session ids are random: compare by position in `made`
    index = {sid: f"#{i}" for i, sid in enumerate(made)}
    return [_anonymise(item, index) for item in seen]


def _anonymise(item: Any, index: dict[str, str]) -> Any:
    text = repr(item)
    for sid, alias in index.items():
        text = text.replace(sid, alias)
    return text


@pytest.mark.parametrize(
    "make_store",
    [
        lambda request: DelegatingStore(InMemorySessionStore()),
        redis_store,
        lambda request: DelegatingStore(redis_store(request)),
    ],
    ids=["delegating", "redis", "delegating-redis"],
)
def test_the_manager_works_the_same_on_another_store(
    make_store: Callable[[pytest.FixtureRequest], SessionStore],
    clock: ManualClock,
    request: pytest.FixtureRequest,
) -> None:
    config = ManagerConfig(max_sessions=6)
    outcomes = []
    store = make_store(request)
    for candidate in (InMemorySessionStore(), store):
        own_clock = ManualClock(clock.now())
        mgr = SessionManager(config, clock=own_clock, store=candidate)
        try:
            outcomes.append(run_scenario(mgr, own_clock))
        finally:
            mgr.shutdown()
    assert outcomes[1] == outcomes[0]
    if isinstance(store, DelegatingStore):
        kinds = store.writes
        assert kinds["removed"] == 9  # 2 expired + 1 evicted + 6 purged
        # shutdown empties the process's own store, never one other replicas share
        assert kinds["clear"] == (0 if store.shared else 1)
        assert kinds["create"] == 9
        assert kinds["update"] >= 6
