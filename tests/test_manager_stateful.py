"""A hypothesis state machine drives the manager with random operations and checks it,
after every step, against a plain model recounted by brute force in integer microseconds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import C, F, P, R
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from redis_server import RedisServer

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.errors import (
    IdempotencyKeyReusedError,
    IdempotencyKeySpentError,
    InvalidTransitionError,
    SessionCapacityError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.manager import AGE_BUCKETS, KNOWN_TRANSITIONS, RemovalReason, SessionEvent
from sidecar.core.manager import SessionManager as Manager
from sidecar.core.models import GenerationRequest, GenerationStatus, ScenePrompt
from sidecar.store import InMemorySessionStore, SessionStore

FINISHED = {C, F}
# Written out here, not imported: the model must not share the code it checks.
ALLOWED = {(P, R), (P, F), (R, C), (R, F)}
US = 1_000_000
HOUR_US = 3600 * US
MAX_AGE_US, FAILED_AGE_US, COMPLETED_AGE_US, STUCK_US = (
    24 * HOUR_US,
    HOUR_US,
    6 * HOUR_US,
    1800 * US,
)
BUCKET_BOUNDS_US = [
    (name, int(low) * US, int(high) * US if high != float("inf") else float("inf"))
    for name, low, high in AGE_BUCKETS
]
RECOVERED = "Session recovered from corrupted state"
MISSING = "00000000-0000-4000-8000-00000000dead"

# Every threshold exactly, and 1 us either side (a create is followed by a 1 us step).
_EDGES_US = [STUCK_US, HOUR_US, 6 * HOUR_US, 24 * HOUR_US]
ADVANCES_US = st.one_of(
    st.sampled_from([1, US, 59 * US, *(edge + d for edge in _EDGES_US for d in (-1, 0, 1))]),
    st.integers(1, 30 * HOUR_US),
)


@dataclass
class Expected:
    status: GenerationStatus
    created: int
    updated: int
    num_scenes: int
    scenes: frozenset[int] = frozenset()
    progress: tuple[int, int] | None = None
    error: str | None = None


@dataclass
class Counts:
    created: int = 0
    rejected: int = 0
    removed: dict[RemovalReason, int] = field(
        default_factory=lambda: dict.fromkeys(RemovalReason, 0)
    )
    transitions: dict[tuple[GenerationStatus, GenerationStatus], int] = field(
        default_factory=lambda: dict.fromkeys(KNOWN_TRANSITIONS, 0)
    )


class ManagerMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def make_store(self) -> SessionStore:
        return InMemorySessionStore()

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.store = self.make_store()
        self.max_sessions = 5
        self.policy = CapacityPolicy.EVICT_OLDEST
        self.manager = Manager(
            ManagerConfig(max_sessions=self.max_sessions), clock=self.clock, store=self.store
        )
        self.model: dict[str, Expected] = {}
        # Idempotency-Keys the manager must remember: key -> (recorded at, num_scenes, id).
        self.keys: dict[str, tuple[int, int, str]] = {}
        self.counts = Counts()
        self.over_capacity_allowed = False  # only right after a reconfigure-down
        self.events: list[SessionEvent] = []
        for kind in ("created", "status_changed", "removed"):
            self.manager.register_session_callback(kind, self.events.append)

    def teardown(self) -> None:
        self.manager.shutdown()

    # ------------------------------------------------------------------ model helpers

    def now(self) -> int:
        return to_micros(self.clock.now())

    def expired(self, max_age_us: int = MAX_AGE_US) -> list[str]:
        now = self.now()
        return [
            sid
            for sid, e in self.model.items()
            if now - e.created > max_age_us
            or (e.status is F and now - e.created > FAILED_AGE_US)
            or (e.status is C and now - e.created > COMPLETED_AGE_US)
        ]

    def drop(self, ids: list[str], reason: RemovalReason) -> None:
        for sid in ids:
            del self.model[sid]
            self.counts.removed[reason] += 1

    def victim(self) -> str:
        def oldest(statuses: set[GenerationStatus]) -> str | None:
            keys = [(e.created, sid) for sid, e in self.model.items() if e.status in statuses]
            return min(keys)[1] if keys else None

        found = oldest(FINISHED) or oldest({P}) or oldest({R})
        assert found is not None
        return found

    def expect_unchanged(self, sid: str, error: tuple[type[Exception], ...], call: Any) -> None:
        before = self.store.get(sid)
        with pytest.raises(error):
            call()
        assert self.store.get(sid) == before

    def touch(self, sid: str) -> Expected:
        e = self.model[sid]
        e.updated = self.now()
        return e

    # ------------------------------------------------------------------ rules

    @initialize(target=sessions, sizes=st.lists(st.integers(1, 4), max_size=5))
    def start(self, sizes: list[int]) -> Any:
        assert self.manager.get_session_count() == 0
        return multiple(*self.create_all(sizes))

    def create_one(self, num_scenes: int, key: str | None = None) -> str | None:
        """Create a session as the model says the manager must; the new id, or None if refused."""
        request = GenerationRequest(story_text="A story.", num_scenes=num_scenes)
        if len(self.model) >= self.max_sessions:
            self.drop(self.expired(), RemovalReason.EXPIRED)
        if len(self.model) >= self.max_sessions and self.policy is CapacityPolicy.REJECT:
            with pytest.raises(SessionCapacityError):
                self.manager.create_session(request, key)
            self.counts.rejected += 1
            return None
        while len(self.model) >= self.max_sessions:
            self.drop([self.victim()], RemovalReason.EVICTED)
        session = self.manager.create_session(request, key)
        now = self.now()
        self.model[session.session_id] = Expected(P, now, now, num_scenes)
        if key is not None:
            self.keys[key] = (now, num_scenes, session.session_id)
            while len(self.keys) > 2 * self.max_sessions:  # the oldest are forgotten first
                del self.keys[min(self.keys, key=lambda k: (self.keys[k][0], k))]
        # Ids are random uuid4s and break ties in creation time; one microsecond between
        # creates keeps every run of an example identical (hypothesis replays examples).
        self.clock.advance(microseconds=1)
        self.counts.created += 1
        self.over_capacity_allowed = False
        assert len(self.model) <= self.max_sessions
        return session.session_id

    def create_all(self, sizes: list[int]) -> list[str]:
        return [sid for n in sizes if (sid := self.create_one(n)) is not None]

    @rule(target=sessions, num_scenes=st.integers(1, 4))
    def create(self, num_scenes: int) -> Any:
        return multiple(*self.create_all([num_scenes]))

    @rule(target=sessions, key=st.sampled_from("abcde"), num_scenes=st.integers(1, 2))
    def create_with_key(self, key: str, num_scenes: int) -> Any:
        """A create with an Idempotency-Key; the same request is the same num_scenes here."""
        now = self.now()
        self.keys = {k: v for k, v in self.keys.items() if now - v[0] <= MAX_AGE_US}
        remembered = self.keys.get(key)
        if remembered is None:
            return multiple(*[sid for sid in [self.create_one(num_scenes, key)] if sid])
        _, scenes, sid = remembered
        request = GenerationRequest(story_text="A story.", num_scenes=num_scenes)
        before = self.store.page(None, None, 10**6)
        if scenes != num_scenes:
            with pytest.raises(IdempotencyKeyReusedError):
                self.manager.create_session(request, key)
        elif sid not in self.model:
            with pytest.raises(IdempotencyKeySpentError):
                self.manager.create_session(request, key)
        else:
            assert self.manager.create_session(request, key).session_id == sid
        assert self.store.page(None, None, 10**6) == before
        return multiple()

    @rule(target=sessions, sizes=st.lists(st.integers(1, 4), min_size=2, max_size=5))
    def create_several(self, sizes: list[int]) -> Any:
        return multiple(*self.create_all(sizes))

    @rule(sid=sessions, goal=st.sampled_from([R, C, F]))
    def drive(self, sid: str, goal: GenerationStatus) -> None:
        """Walk a session along valid edges towards `goal` (finished sessions are common)."""
        path = {R: [R], C: [R, C], F: [F]}[goal]
        e = self.model.get(sid)
        if e is not None and e.status is R and goal is F:
            path = [F]
        for step in path:
            self.update_status(sid, step, None)

    @rule(
        sid=sessions,
        new_status=st.sampled_from(list(GenerationStatus)),
        message=st.sampled_from([None, "it broke"]),
    )
    def update_status(self, sid: str, new_status: GenerationStatus, message: str | None) -> None:
        e = self.model.get(sid)
        call = lambda: self.manager.update_session_status(sid, new_status.value, message)  # noqa: E731
        if e is None:
            with pytest.raises(SessionNotFoundError):
                call()
        elif new_status is e.status and message in (None, e.error):
            assert call() == self.store.get(sid)
        elif new_status is e.status and e.status in FINISHED:
            self.expect_unchanged(sid, (InvalidTransitionError,), call)
        elif new_status is e.status:
            assert call().error_message == message
            self.touch(sid).error = message
        elif (e.status, new_status) in ALLOWED:
            assert call().status is new_status
            self.counts.transitions[(e.status, new_status)] += 1
            self.touch(sid).status = new_status
            if message is not None:
                e.error = message
        else:
            self.expect_unchanged(sid, (InvalidTransitionError,), call)

    @rule(sid=sessions, current=st.integers(0, 6), total=st.integers(1, 5))
    def update_progress(self, sid: str, current: int, total: int) -> None:
        e = self.model.get(sid)
        call = lambda: self.manager.update_session_progress(sid, current, total)  # noqa: E731
        # the values are checked first, before the session is looked up
        if current > total and e is None:
            with pytest.raises(SessionValidationError):
                call()
        elif current > total:
            self.expect_unchanged(sid, (SessionValidationError,), call)
        elif e is None:
            with pytest.raises(SessionNotFoundError):
                call()
        elif e.status in FINISHED:
            self.expect_unchanged(sid, (InvalidTransitionError,), call)
        else:
            call()
            self.touch(sid).progress = (current, total)

    @rule(sid=sessions, number=st.integers(1, 5))
    def add_scene(self, sid: str, number: int) -> None:
        e = self.model.get(sid)
        scene = ScenePrompt(scene_number=number, prompt=f"scene {number}")
        call = lambda: self.manager.add_scene_to_session(sid, scene)  # noqa: E731
        if e is None:
            with pytest.raises(SessionNotFoundError):
                call()
        elif e.status in FINISHED:
            self.expect_unchanged(sid, (InvalidTransitionError,), call)
        elif number > e.num_scenes:
            self.expect_unchanged(sid, (SessionValidationError,), call)
        else:
            _, added = call()
            assert added is (number not in e.scenes)
            self.touch(sid).scenes = e.scenes | {number}

    @rule(sid=sessions, numbers=st.lists(st.integers(1, 5), max_size=4))
    def set_scenes(self, sid: str, numbers: list[int]) -> None:
        e = self.model.get(sid)
        scenes = [ScenePrompt(scene_number=n, prompt="p") for n in numbers]
        call = lambda: self.manager.set_session_scenes(sid, scenes)  # noqa: E731
        if e is None:
            with pytest.raises(SessionNotFoundError):
                call()
        elif e.status in FINISHED:
            self.expect_unchanged(sid, (InvalidTransitionError,), call)
        elif len(set(numbers)) != len(numbers) or any(n > e.num_scenes for n in numbers):
            self.expect_unchanged(sid, (SessionValidationError,), call)
        else:
            call()
            self.touch(sid).scenes = frozenset(numbers)

    @rule(
        sid=sessions,
        status=st.sampled_from([None, *GenerationStatus]),
        progress=st.sampled_from([None, (1, 2), (3, 2)]),
        error=st.sampled_from([None, "note", "2001 chars"]),
        forbidden=st.sampled_from([None, None, None, "session_id", "created_at", "__class__"]),
    )
    def atomic_update(
        self,
        sid: str,
        status: GenerationStatus | None,
        progress: tuple[int, int] | None,
        error: str | None,
        forbidden: str | None,
    ) -> None:
        updates: dict[str, Any] = {}
        if status is not None:
            updates["status"] = status.value
        if progress is not None:
            updates["progress"] = {"current_step": progress[0], "total_steps": progress[1]}
        if error == "2001 chars":
            error = "e" * 2001
        if error is not None:
            updates["error_message"] = error
        if forbidden is not None:
            updates[forbidden] = "x"
        call = lambda: self.manager.atomic_session_update(sid, updates)  # noqa: E731
        # values are checked before the session is looked up, as the API answers 422 before 404
        bad_values = (
            forbidden is not None
            or (error is not None and len(error) > 2000)
            or (progress is not None and progress[0] > progress[1])
        )
        e = self.model.get(sid)
        if e is None:
            with pytest.raises(SessionValidationError if bad_values else SessionNotFoundError):
                call()
            return
        # every reason this update must be refused; it must then change nothing
        refusals: list[type[Exception]] = []
        if forbidden is not None:
            refusals.append(SessionValidationError)
        if status is not None and status is not e.status and (e.status, status) not in ALLOWED:
            refusals.append(InvalidTransitionError)
        if error is not None and len(error) > 2000:
            refusals.append(SessionValidationError)
        # A message equal to the stored one is no change (a retry sends it again): allowed.
        new_error = error is not None and error != e.error
        if (progress is not None or new_error) and e.status in FINISHED:
            refusals.append(InvalidTransitionError)
        if progress is not None and progress[0] > progress[1]:
            refusals.append(SessionValidationError)
        if refusals:
            self.expect_unchanged(sid, tuple(refusals), call)
            return
        before = self.store.get(sid)
        result = call()
        changed = (status is not None and status is not e.status) or progress is not None
        changed = changed or new_error
        if not changed:
            assert result == before
            return
        if status is not None and status is not e.status:
            self.counts.transitions[(e.status, status)] += 1
            e.status = status
        if progress is not None:
            e.progress = progress
        if error is not None:
            e.error = error
        self.touch(sid)

    @rule(sid=sessions)
    def get(self, sid: str) -> None:
        session = self.manager.get_session(sid)
        e = self.model.get(sid)
        if e is None:
            assert session is None
        else:
            assert session is not None
            assert session.last_accessed == self.clock.now()
            assert to_micros(session.updated_at) == e.updated

    @rule(sid=st.one_of(sessions, st.just(MISSING)))
    def remove(self, sid: str) -> None:
        assert self.manager.remove_session(sid) is (sid in self.model)
        if sid in self.model:
            self.drop([sid], RemovalReason.DELETED)

    @rule(sid=sessions)
    def recover(self, sid: str) -> None:
        e = self.model.get(sid)
        if e is None:
            with pytest.raises(SessionNotFoundError):
                self.manager.recover_corrupted_session(sid)
            return
        if e.status in FINISHED or self.now() - e.updated <= STUCK_US:
            call = lambda: self.manager.recover_corrupted_session(sid)  # noqa: E731
            self.expect_unchanged(sid, (InvalidTransitionError,), call)
            return
        assert self.manager.recover_corrupted_session(sid).status is F
        self.counts.transitions[(e.status, F)] += 1
        self.touch(sid).status = F
        e.error = RECOVERED

    @rule()
    def cleanup_expired(self) -> None:
        gone = self.expired()
        assert self.manager.cleanup_expired_sessions() == len(gone)
        self.drop(gone, RemovalReason.EXPIRED)

    @rule()
    def cleanup_failed(self) -> None:
        gone = [sid for sid, e in self.model.items() if e.status is F]
        assert self.manager.cleanup_failed_sessions() == len(gone)
        self.drop(gone, RemovalReason.PURGED)

    @rule()
    def cleanup_completed(self) -> None:
        now = self.now()
        gone = [
            sid
            for sid, e in self.model.items()
            if e.status is C and now - e.created > COMPLETED_AGE_US
        ]
        assert self.manager.cleanup_completed_sessions() == len(gone)
        self.drop(gone, RemovalReason.PURGED)

    @rule()
    def force_cleanup_all(self) -> None:
        gone = list(self.model)
        assert self.manager.force_cleanup_all() == len(gone)
        self.drop(gone, RemovalReason.PURGED)

    @rule(micros=ADVANCES_US)
    def advance(self, micros: int) -> None:
        self.clock.advance(microseconds=micros)

    @rule(
        sid=sessions,
        edge=st.sampled_from(["stuck", "1h", "6h", "24h"]),
        offset=st.sampled_from([-1, 0, 1]),
    )
    def advance_to_an_edge(self, sid: str, edge: str, offset: int) -> None:
        """Move time so a session is a threshold +- 1 us old (since update, for stuck)."""
        e = self.model.get(sid)
        if e is None:
            return
        start = e.updated if edge == "stuck" else e.created
        length = {"stuck": STUCK_US, "1h": HOUR_US, "6h": 6 * HOUR_US, "24h": 24 * HOUR_US}
        step = start + length[edge] + offset - self.now()
        if step > 0:
            self.clock.advance(microseconds=step)

    @rule(key=st.sampled_from("abcde"), offset=st.sampled_from([-1, 0, 1]))
    def advance_to_a_key_edge(self, key: str, offset: int) -> None:
        """Move time so a key was recorded session_max_age_seconds +- 1 us ago."""
        if key in self.keys:
            step = self.keys[key][0] + MAX_AGE_US + offset - self.now()
            if step > 0:
                self.clock.advance(microseconds=step)

    @rule(max_sessions=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 10, 10, 10]))
    def reconfigure_capacity(self, max_sessions: int) -> None:
        lowered = max_sessions < self.max_sessions
        self.manager.reconfigure(max_sessions=max_sessions)
        self.max_sessions = max_sessions
        if lowered:
            self.drop(self.expired(), RemovalReason.EXPIRED)
            self.over_capacity_allowed = len(self.model) > max_sessions

    @rule(policy=st.sampled_from(list(CapacityPolicy)))
    def reconfigure_policy(self, policy: CapacityPolicy) -> None:
        assert self.manager.reconfigure(capacity_policy=policy.value).capacity_policy is policy
        self.policy = policy

    @rule(bad=st.sampled_from([{"max_sessions": 0}, {"capacity_policy": "x"}, {"nope": 1}]))
    def reconfigure_badly(self, bad: dict[str, Any]) -> None:
        before = self.manager.config
        with pytest.raises(SessionManagerError):
            self.manager.reconfigure(**bad)
        assert self.manager.config is before

    # ------------------------------------------------------------------ invariants

    @invariant()
    def store_matches_the_model(self) -> None:
        stored = {s.session_id: s for s in self.store.page(None, None, 10**6)}
        assert stored.keys() == self.model.keys()
        for sid, e in self.model.items():
            s = stored[sid]
            assert s.status is e.status
            assert to_micros(s.created_at) == e.created
            assert to_micros(s.updated_at) == e.updated
            assert [x.scene_number for x in s.scenes] == sorted(e.scenes)
            got = None if s.progress is None else (s.progress.current_step, s.progress.total_steps)
            assert got == e.progress
            assert s.error_message == e.error
        for status in GenerationStatus:
            expected = sorted(
                (e.created, sid) for sid, e in self.model.items() if e.status is status
            )
            found = self.manager.get_sessions_by_status(status)
            assert [s.session_id for s in found] == [sid for _, sid in expected]

    @invariant()
    def figures_equal_a_brute_force_recount(self) -> None:
        snap = self.manager.snapshot()
        now = self.now()
        assert to_micros(snap.taken_at) == now
        entries = list(self.model.values())
        count = len(entries)
        assert snap.total == self.manager.get_session_count() == count
        assert snap.capacity == self.max_sessions
        if not self.over_capacity_allowed:
            assert count <= self.max_sessions
        assert snap.by_status == {s: sum(e.status is s for e in entries) for s in GenerationStatus}
        assert snap.by_age == {
            name: sum(low <= now - e.created < high for e in entries)
            for name, low, high in BUCKET_BOUNDS_US
        }
        assert snap.stuck == sum(e.status is R and now - e.updated > STUCK_US for e in entries)
        oldest = {
            s: min(e.created for e in entries if e.status is s)
            for s in GenerationStatus
            if any(e.status is s for e in entries)
        }
        assert {s: to_micros(t) for s, t in snap.oldest_created.items()} == oldest
        if count * 10 >= 9 * self.max_sessions:
            assert snap.health == "critical"
        elif count * 10 >= 7 * self.max_sessions:
            assert snap.health == "warning"
        else:
            assert snap.health == "healthy"

    @invariant()
    def counters_and_events_add_up(self) -> None:
        snap = self.manager.snapshot()
        assert snap.created_total == self.counts.created
        assert snap.rejected_total == {"capacity": self.counts.rejected}
        assert dict(snap.removed_total) == self.counts.removed
        assert dict(snap.transitions_total) == self.counts.transitions
        assert snap.created_total - sum(snap.removed_total.values()) == snap.total
        kinds = [e.type.value for e in self.events]
        assert kinds.count("created") == self.counts.created
        assert kinds.count("removed") == sum(self.counts.removed.values())
        assert kinds.count("status_changed") == sum(self.counts.transitions.values())


ManagerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_manager_matches_the_model = ManagerMachine.TestCase


def test_manager_matches_the_model_on_redis(redis_server: RedisServer) -> None:
    """The same machine on a Redis store (a real redis-server); fewer examples: each step is
    a few round trips."""
    import redis

    from sidecar.store.redis import RedisSessionStore

    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)

    class OnRedis(ManagerMachine):
        def make_store(self) -> SessionStore:
            return RedisSessionStore(client, f"t{uuid.uuid4().hex[:12]}")  # shutdown clears it

    try:
        run_state_machine_as_test(
            OnRedis,
            settings=settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        client.close()
