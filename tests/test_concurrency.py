"""Many threads at once: mixed operations, then every figure recounted by brute force."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from sidecar.compat import SeedSessionManager
from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import ManagerConfig
from sidecar.core.errors import SessionManagerError
from sidecar.core.manager import AGE_BUCKETS, RemovalReason, SessionEvent, SessionManager
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus, ScenePrompt
from sidecar.store import InMemorySessionStore

THREADS = 8
ITERATIONS = 250
STATUSES = list(GenerationStatus)
MISSING = "00000000-0000-4000-8000-00000000dead"
R = GenerationStatus.PROCESSING


class YieldingStore(InMemorySessionStore):
    """Gives up the processor on every read and write, i.e. while the manager holds its lock.

    Operations here take microseconds, so without this each thread would mostly run its
    whole loop in one time slice; yielding makes the threads interleave and contend.
    """

    def get(self, session_id: str) -> GenerationSession | None:
        os.sched_yield()
        return super().get(session_id)

    def _replace(self, old: GenerationSession, new: GenerationSession, now_us: int) -> None:
        os.sched_yield()
        super()._replace(old, new, now_us)

    def _drop(self, session_id: str) -> GenerationSession | None:
        os.sched_yield()
        return super()._drop(session_id)


class Workload:
    """A manager under fire from THREADS threads, with what they saw."""

    def __init__(self, clock: ManualClock, kind: type[SessionManager] = SeedSessionManager) -> None:
        self.clock = clock
        self.store = YieldingStore()
        self.manager = kind(ManagerConfig(max_sessions=30), clock=clock, store=self.store)
        self.ids: list[str] = []  # list.append is atomic; readers take a random index
        self.unexpected: list[BaseException] = []
        self.documented: Counter[str] = Counter()
        self.events: Counter[tuple[str, str | None]] = Counter()
        self.torn: list[str] = []
        self._events_lock = threading.Lock()
        for kind in ("created", "status_changed", "progress", "scene_added", "removed"):
            self.manager.register_session_callback(kind, self.on_event)

    def on_event(self, event: SessionEvent) -> None:
        with self._events_lock:
            self.events[(event.type.value, event.reason and event.reason.value)] += 1

    def pick(self, rng: random.Random) -> str:
        """Mostly a recent id (likely still held), sometimes an old or unknown one."""
        if not self.ids or rng.random() < 0.05:
            return MISSING
        if rng.random() < 0.2:
            return self.ids[rng.randrange(len(self.ids))]
        return self.ids[-rng.randint(1, min(len(self.ids), 30))]

    # one entry per kind of operation; each takes the thread's own random generator
    def operations(self) -> list[Callable[[random.Random], object]]:
        m = self.manager

        def create(rng: random.Random) -> None:
            request = GenerationRequest(story_text="A story.", num_scenes=rng.randint(1, 3))
            self.ids.append(m.create_session(request).session_id)

        def check_snapshot(rng: random.Random) -> None:
            # one snapshot is one instant: its parts must agree with each other
            snap = m.snapshot()
            if not (
                sum(snap.by_status.values()) == snap.total == sum(snap.by_age.values())
                and snap.stuck <= snap.by_status[R]
                and snap.created_total - sum(snap.removed_total.values()) == snap.total
            ):
                self.torn.append(repr(snap))

        def reconfigure(rng: random.Random) -> None:
            m.reconfigure(
                max_sessions=rng.randint(15, 40),
                capacity_policy=rng.choice(["evict_oldest", "reject"]),
            )

        return [
            create,
            create,
            lambda rng: m.update_session_status(self.pick(rng), rng.choice(STATUSES)),
            lambda rng: m.update_session_status(self.pick(rng), rng.choice(STATUSES)),
            lambda rng: m.update_session_progress(self.pick(rng), rng.randint(0, 4), 3),
            lambda rng: m.add_scene_to_session(
                self.pick(rng), ScenePrompt(scene_number=rng.randint(1, 3), prompt="p")
            ),
            lambda rng: m.set_session_scenes(
                self.pick(rng), [ScenePrompt(scene_number=n, prompt="p") for n in (2, 1)]
            ),
            lambda rng: m.atomic_session_update(
                self.pick(rng),
                {
                    "status": rng.choice(STATUSES).value,
                    "error_message": "x" * rng.choice([5, 2001]),
                },
            ),
            lambda rng: m.remove_session(self.pick(rng)),
            lambda rng: m.get_session(self.pick(rng)),
            lambda rng: m.recover_corrupted_session(self.pick(rng)),
            lambda rng: m.bulk_update_status([self.pick(rng) for _ in range(3)], "failed"),
            *(
                [lambda rng: m.with_session_lock(self.pick(rng), lambda s: s.status, timeout=5)]
                if isinstance(m, SeedSessionManager)
                else []
            ),
            lambda rng: m.get_sessions_by_status(rng.choice(STATUSES)),
            check_snapshot,
            lambda rng: m.get_health_status(),
            lambda rng: m.get_performance_stats(),
            lambda rng: rng.choice(
                [m.run_cleanup, m.cleanup_failed_sessions, m.cleanup_completed_sessions]
            )(),
            reconfigure,
        ]

    def run(self) -> list[threading.Thread]:
        barrier = threading.Barrier(THREADS)
        operations = self.operations()

        def advance(rng: random.Random) -> None:
            self.clock.advance(minutes=rng.randint(1, 120))

        def work(index: int) -> None:
            rng = random.Random(index)
            mine = [*operations, advance] if index == 0 else operations  # one thread owns time
            barrier.wait(timeout=30)
            for i in range(ITERATIONS):
                operation = self.manager.force_cleanup_all if i == 200 and index == 7 else None
                try:
                    if operation is not None:
                        operation()
                    else:
                        rng.choice(mine)(rng)
                except SessionManagerError as exc:
                    self.documented[type(exc).__name__] += 1
                except BaseException as exc:
                    self.unexpected.append(exc)
                os.sched_yield()  # let another thread in between operations too

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        return threads


@pytest.fixture(params=[SessionManager, SeedSessionManager], ids=["core", "seed"])
def workload(clock: ManualClock, request: pytest.FixtureRequest) -> Iterator[Workload]:
    """Under the core manager each change is only the store's atomic step; under the seed
    layer every change also takes its lock."""
    load = Workload(clock, request.param)
    yield load
    load.manager.shutdown()


@pytest.fixture
def seed_workload(clock: ManualClock) -> Iterator[Workload]:
    load = Workload(clock, SeedSessionManager)
    yield load
    load.manager.shutdown()


def test_mixed_operations_from_many_threads_keep_every_invariant(workload: Workload) -> None:
    threads = workload.run()
    mgr, store = workload.manager, workload.store

    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    assert workload.unexpected == [], "only SessionManagerError subclasses may be raised"
    assert workload.torn == []
    # the operations really ran, and really conflicted
    assert workload.documented["SessionNotFoundError"] > 0
    assert workload.documented["InvalidTransitionError"] > 0
    assert workload.documented["SessionValidationError"] > 0

    sessions = store.page(None, None, 10**6)
    snap = mgr.snapshot()
    now = to_micros(snap.taken_at)

    # brute-force recount of every figure
    assert snap.total == len(sessions) == mgr.get_session_count()
    assert snap.by_status == {s: sum(x.status is s for x in sessions) for s in GenerationStatus}
    assert snap.by_age == {
        name: sum(
            low * 1_000_000 <= now - to_micros(x.created_at) < high * 1_000_000 for x in sessions
        )
        for name, low, high in AGE_BUCKETS
    }
    assert snap.stuck == sum(
        x.status is R and now - to_micros(x.updated_at) > 1800 * 1_000_000 for x in sessions
    )
    assert snap.oldest_created == {
        s: min(x.created_at for x in sessions if x.status is s)
        for s in GenerationStatus
        if any(x.status is s for x in sessions)
    }

    # the store's indexes agree with its sessions
    far = now + 1
    figures = store.figures([far], R, far)
    assert figures.created_before == [len(sessions)]
    assert figures.created_sum_us == sum(to_micros(x.created_at) for x in sessions)
    for status in GenerationStatus:
        mine = sorted(
            (to_micros(x.created_at), x.session_id) for x in sessions if x.status is status
        )
        assert [s.session_id for s in store.page(status, None, 10**6)] == [sid for _, sid in mine]
        assert store.figures([], status, far).stuck == len(mine)

    # every session is well formed
    for x in sessions:
        numbers = [s.scene_number for s in x.scenes]
        assert numbers == sorted(set(numbers))
        assert all(n <= x.request_data.num_scenes for n in numbers)
        assert x.created_at <= x.updated_at <= x.last_accessed
        assert x.error_message is None or len(x.error_message) <= 2000

    # counters balance, and every change produced exactly one callback
    assert snap.created_total - sum(snap.removed_total.values()) == snap.total
    events = workload.events
    assert events[("created", None)] == snap.created_total
    for reason in RemovalReason:
        assert events[("removed", reason.value)] == snap.removed_total[reason]
    assert events[("status_changed", None)] == sum(snap.transitions_total.values())
    assert snap.removed_total[RemovalReason.PURGED] > 0

    # capacity: within bounds once a create under the evicting policy has run
    mgr.reconfigure(capacity_policy="evict_oldest")
    mgr.create_session(GenerationRequest(story_text="last one"))
    assert mgr.get_session_count() <= mgr.config.max_sessions


def test_lock_holders_in_many_threads_never_overlap(seed_workload: Workload) -> None:
    workload = seed_workload
    mgr = workload.manager
    assert isinstance(mgr, SeedSessionManager)
    sid = mgr.create_session(GenerationRequest(story_text="shared")).session_id
    inside = 0
    overlaps: list[int] = []
    barrier = threading.Barrier(THREADS)

    def operation(session: object) -> None:
        nonlocal inside
        inside += 1
        if inside != 1:
            overlaps.append(inside)
        mgr.update_session_progress(sid, 1, 2)  # re-entrant call from under the lock
        inside -= 1

    def work() -> None:
        barrier.wait(timeout=30)
        for _ in range(100):
            mgr.with_session_lock(sid, operation, timeout=30)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == []
    assert workload.events[("progress", None)] == THREADS * 100
