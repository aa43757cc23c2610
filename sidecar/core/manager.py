"""The thread-safe session manager: the seed's behaviour, with its defects fixed.

One lock guards the store. Everything done under it is O(1) or O(log n) in the number of
sessions (the store keeps sorted indexes), except the explicit bulk reads
(`get_all_sessions_info`, `get_sessions_by_status`), which are O(n) by nature.
Callbacks and logging happen after the lock is released. Stored sessions are immutable, so
what the manager hands out cannot be changed behind its back.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from sidecar.core.clock import Clock, SystemClock, to_micros
from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.errors import (
    InvalidTransitionError,
    SessionCapacityError,
    SessionLockError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.events import REJECTED_CAPACITY, EventType, RemovalReason, SessionEvent
from sidecar.core.figures import AGE_BUCKETS, ManagerSnapshot, health_of
from sidecar.core.ids import new_session_id
from sidecar.core.models import (
    FINISHED,
    ErrorMessage,
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
    evolve,
)
from sidecar.core.rules import (
    ALLOWED_TRANSITIONS,
    KNOWN_TRANSITIONS,
    RECOVER,
    RECOVERED_MESSAGE,
    UPDATABLE_FIELDS,
    finished_refuses,
    needs_recovery,
)
from sidecar.store import Cursor, InMemorySessionStore, SessionStore

__all__ = [
    "AGE_BUCKETS",
    "ALLOWED_TRANSITIONS",
    "EVICTION_REPORT_SECONDS",
    "KNOWN_TRANSITIONS",
    "RECOVERED_MESSAGE",
    "UPDATABLE_FIELDS",
    "BulkUpdateResult",
    "EventType",
    "ManagerSnapshot",
    "RemovalReason",
    "SessionEvent",
    "SessionManager",
]

logger = logging.getLogger(__name__)

_S = GenerationStatus

_MICROS = 1_000_000
# At capacity under evict_oldest every create evicts: one warning per eviction would be a line
# per create. Each eviction is logged at debug; a warning sums them up at most this often.
EVICTION_REPORT_SECONDS = 60.0
_EVICTION_REPORT = timedelta(seconds=EVICTION_REPORT_SECONDS)


@dataclass(frozen=True, slots=True)
class BulkUpdateResult:
    """Outcome of a bulk update: which ids changed, which do not exist, which were refused."""

    updated: list[str]
    missing: list[str]
    conflicts: list[str]


@dataclass(slots=True)
class _Counters:
    created: int = 0
    removed: Counter[RemovalReason] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[GenerationStatus, GenerationStatus]] = field(default_factory=Counter)
    cleanup_runs: int = 0
    cleanup_errors: int = 0
    cleanup_last_run: datetime | None = None


Callback = Callable[[SessionEvent], None]
T = TypeVar("T")

_progress_adapter = TypeAdapter(ProgressUpdate | None)
_scenes_adapter = TypeAdapter(tuple[ScenePrompt, ...])
_status_adapter = TypeAdapter(GenerationStatus)
_request_adapter = TypeAdapter(GenerationRequest)
_scene_adapter = TypeAdapter(ScenePrompt)
_error_message_adapter: TypeAdapter[str | None] = TypeAdapter(ErrorMessage | None)


def _validation_error(exc: ValidationError, *loc: str) -> SessionValidationError:
    """pydantic's error as the core's own, each location prefixed with `loc`."""
    return SessionValidationError(
        [
            {"loc": [*loc, *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False)
        ]
    )


def _check(adapter: TypeAdapter[T], value: Any, loc: str) -> T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise _validation_error(exc, loc) from None


def _new_config(values: Mapping[str, Any], base: ManagerConfig | None = None) -> ManagerConfig:
    """A validated ManagerConfig (seed name `cleanup_interval` accepted); SessionValidationError."""
    values = dict(values)
    if "cleanup_interval" in values:
        values["cleanup_interval_seconds"] = values.pop("cleanup_interval")
    try:
        return ManagerConfig(**values) if base is None else base.replace(**values)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _check_error_message(value: Any) -> str | None:
    return _check(_error_message_adapter, value, "error_message")


def _micros(seconds: float) -> int:
    return round(seconds * _MICROS)


class _Held:
    """Context manager for SessionManager's lock (a class: cheaper than a generator per call)."""

    __slots__ = ("_manager", "_timeout")

    def __init__(self, manager: SessionManager, timeout: float | None = None) -> None:
        self._manager = manager
        self._timeout = timeout

    def __enter__(self) -> None:
        manager, timeout = self._manager, self._timeout
        if not manager._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SessionLockError(timeout or 0.0)
        manager._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        self._manager._release()


class SessionManager:
    """Thread-safe store of generation sessions with capacity, expiry, stuck and health rules."""

    def __init__(
        self,
        config: ManagerConfig | None = None,
        *,
        clock: Clock | None = None,
        store: SessionStore | None = None,
    ) -> None:
        self._config = config or ManagerConfig()
        self._clock: Clock = clock or SystemClock()
        self._store: SessionStore = store if store is not None else InMemorySessionStore()
        self._lock = threading.RLock()
        self._depth = 0  # lock nesting of the holding thread; events go out at depth 0
        self._held = _Held(self)  # stateless, so one instance serves every thread
        self._pending: list[SessionEvent] = []
        self._callbacks: dict[EventType, list[Callback]] = {kind: [] for kind in EventType}
        self._counters = _Counters()
        self._wakeup = threading.Condition(threading.Lock())
        self._stopping = False
        self._interval_changed = False
        self._worker: threading.Thread | None = None
        self._closed = False
        self._evictions_unreported = 0
        self._next_eviction_report: datetime | None = None  # None: report the next one at once

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create_with_config(
        cls, config: Mapping[str, Any], *, clock: Clock | None = None
    ) -> SessionManager:
        """Build a manager from a mapping of settings (seed names `cleanup_interval` accepted)."""
        return cls(_new_config(config), clock=clock)

    @property
    def config(self) -> ManagerConfig:
        """The settings in force."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The time source every timestamp comes from."""
        return self._clock

    @property
    def closed(self) -> bool:
        """True once shutdown has begun."""
        return self._closed

    @property
    def worker_alive(self) -> bool:
        """True while the background cleanup thread runs."""
        return self._worker is not None and self._worker.is_alive()

    def start(self) -> SessionManager:
        """Start the background cleanup worker (once); returns self."""
        with self._wakeup:
            if self._closed:
                raise SessionManagerError("the session manager has been shut down")
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="sidecar-session-cleanup", daemon=True
                )
                self._worker.start()
        return self

    def shutdown(self, timeout: float = 30) -> bool:
        """Stop the cleanup worker and drop all sessions; safe to call more than once.

        Returns False only if the worker did not stop within `timeout` seconds.
        """
        with self._wakeup:
            self._closed = True
            self._stopping = True
            self._wakeup.notify_all()
            worker = self._worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                logger.warning("cleanup worker did not stop within %ss", timeout)
                return False
        with self._locked():
            held = len(self._store)
            self._store.clear()
        if held:
            logger.info("shutdown dropped %d sessions held in memory", held)
        return True

    def __enter__(self) -> SessionManager:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _work(self) -> None:
        while True:
            with self._wakeup:
                self._wakeup.wait_for(
                    lambda: self._stopping or self._interval_changed,
                    timeout=self._config.cleanup_interval_seconds,
                )
                if self._stopping:
                    return
                if self._interval_changed:  # start a fresh wait with the new interval
                    self._interval_changed = False
                    continue
            self.run_cleanup()

    def run_cleanup(self) -> int:
        """One periodic cleanup run, as the worker does it; errors are counted, not raised."""
        removed = 0
        try:
            removed = self.cleanup_expired_sessions()
        except Exception:
            logger.exception("cleanup run failed")
            with self._locked():
                self._counters.cleanup_errors += 1
        with self._locked():
            self._counters.cleanup_runs += 1
            self._counters.cleanup_last_run = self._now()
            held, capacity = len(self._store), self._config.max_sessions
        logger.info("cleanup run removed %d sessions; %d/%d held", removed, held, capacity)
        return removed

    def reconfigure(self, **changes: Any) -> ManagerConfig:
        """Change live settings (validated, all or nothing); returns the settings now in force.

        Lowering `max_sessions` drops expired sessions at once; any excess is evicted by the
        next create. The seed's name `cleanup_interval` is accepted.
        """
        with self._locked():
            old = self._config
            new = _new_config(changes, base=old)
            self._config = new
            if new.max_sessions < old.max_sessions:
                self._expire(self._now(), None)
        if new.cleanup_interval_seconds != old.cleanup_interval_seconds:
            with self._wakeup:
                self._interval_changed = True
                self._wakeup.notify_all()
        before = old.as_dict()
        logger.info("reconfigured: %s", {k: v for k, v in new.as_dict().items() if v != before[k]})
        return new

    # ------------------------------------------------------------------ locking and events

    def _now(self) -> datetime:
        """The clock's time; a custom clock must give aware UTC datetimes (checked: cheap)."""
        now = self._clock.now()
        if now.tzinfo is not UTC:
            if now.tzinfo is None or now.utcoffset() is None:
                raise SessionManagerError(f"the clock gave a naive datetime: {now!r}")
            now = now.astimezone(UTC)
        return now

    def _locked(self, timeout: float | None = None) -> _Held:
        """Hold the manager's lock; events raised meanwhile go out once the outermost hold ends."""
        return self._held if timeout is None else _Held(self, timeout)

    def _release(self) -> None:
        self._depth -= 1
        events: list[SessionEvent] = []
        if self._depth == 0:
            events, self._pending = self._pending, []
        self._lock.release()
        if events:
            self._dispatch(events)

    def _emit(
        self,
        kind: EventType,
        session: GenerationSession,
        previous_status: GenerationStatus | None = None,
        reason: RemovalReason | None = None,
    ) -> None:
        # The event is only built when someone listens: most mutations have no callback.
        if self._callbacks[kind]:
            self._pending.append(
                SessionEvent(kind, session.session_id, session, previous_status, reason)
            )

    def _dispatch(self, events: list[SessionEvent]) -> None:
        for event in events:
            for callback in tuple(self._callbacks[event.type]):
                try:
                    callback(event)
                except Exception:
                    logger.exception("callback for %s event failed", event.type.value)

    def register_session_callback(self, event_type: str, callback: Callback) -> None:
        """Call `callback(event)` after every event of this type, outside the lock."""
        try:
            kind = EventType(event_type)
        except ValueError:
            allowed = ", ".join(k.value for k in EventType)
            raise ValueError(f"unknown event type {event_type!r}; one of {allowed}") from None
        with self._locked():
            self._callbacks[kind].append(callback)

    # ------------------------------------------------------------------ reads

    def _require(self, session_id: str) -> GenerationSession:
        session = self._store.get(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        return session

    def get_session(self, session_id: str) -> GenerationSession | None:
        """The session (last_accessed touched), or None if there is none with this id."""
        with self._locked():
            session = self._store.get(session_id)
            if session is None:
                return None
            session = evolve(session, last_accessed=self._now())
            self._store.put(session)
            return session

    def peek_session(self, session_id: str) -> GenerationSession | None:
        """The session without touching last_accessed."""
        with self._locked():
            return self._store.get(session_id)

    def get_session_count(self) -> int:
        """How many sessions are held."""
        with self._locked():
            return len(self._store)

    def list_sessions(
        self,
        status: GenerationStatus | None = None,
        after: Cursor | None = None,
        limit: int = 100,
    ) -> tuple[list[GenerationSession], Cursor | None]:
        """A page in creation order and the cursor of the next page (None at the end)."""
        if limit < 1:
            raise SessionValidationError(
                [{"loc": ["limit"], "msg": "must be at least 1", "type": "greater_than_equal"}]
            )
        with self._locked():
            page = self._store.page(status, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        last = page[-1] if more else None
        return page, None if last is None else (to_micros(last.created_at), last.session_id)

    def get_all_sessions_info(self) -> list[dict[str, Any]]:
        """The seed's summary of every session; O(n), prefer list_sessions for large stores."""
        with self._locked():
            now = self._now()
            return [s.summary(now) for s in self._store.values()]

    def get_sessions_by_status(self, status: GenerationStatus | str) -> list[GenerationSession]:
        """Every session in `status`, oldest first (immutable, so safe to keep)."""
        wanted = _check(_status_adapter, status, "status")
        with self._locked():
            return list(self._store.values(wanted))

    def with_session_lock(
        self,
        session_id: str,
        operation: Callable[[GenerationSession], T],
        timeout: float | None = None,
    ) -> T:
        """Run `operation(session)` while holding the lock, so nothing changes meanwhile.

        Raises SessionLockError if the lock is not had within `timeout` seconds.
        """
        with self._locked(timeout):
            session = self._require(session_id)
            try:
                return operation(session)
            except Exception:
                logger.exception("operation under the lock failed for session %s", session_id)
                raise

    # ------------------------------------------------------------------ creation and removal

    def create_session(self, request: GenerationRequest) -> GenerationSession:
        """Store a new pending session, making room first if the manager is full."""
        if not isinstance(request, GenerationRequest):
            request = _check(_request_adapter, request, "request")
        evicted: list[str] = []
        report = 0  # evictions to sum up in a warning once the lock is released
        session_id = new_session_id()  # before the lock: it may call os.urandom
        with self._locked():
            if self._closed:
                raise SessionManagerError("the session manager has been shut down")
            now = self._now()
            if len(self._store) >= self._config.max_sessions:
                self._expire(now, None)
            while len(self._store) >= self._config.max_sessions:
                if self._config.capacity_policy is CapacityPolicy.REJECT:
                    self._counters.rejected[REJECTED_CAPACITY] += 1
                    raise SessionCapacityError(self._config.max_sessions)
                evicted.append(self._evict_one())
            session = GenerationSession(
                session_id=session_id,
                status=GenerationStatus.PENDING,
                request_data=request,
                created_at=now,
                last_accessed=now,
                updated_at=now,
            )
            self._store.put(session)
            self._counters.created += 1
            self._emit(EventType.CREATED, session)
            if evicted:
                report = self._eviction_report(len(evicted), now)
        for victim in evicted:
            logger.debug("evicted session %s to make room (capacity limit)", victim)
        if report:
            logger.warning(
                "evicted %d session(s) to make room since the last report (max_sessions=%d, "
                "capacity_policy=evict_oldest); latest: %s",
                report,
                self._config.max_sessions,
                evicted[-1],
            )
        return session

    def _eviction_report(self, count: int, now: datetime) -> int:
        """Count `count` new evictions; how many to report now (0: not yet). Under the lock."""
        self._evictions_unreported += count
        due = self._next_eviction_report
        if due is not None and now < due and due - now <= _EVICTION_REPORT:  # else: clock set back
            return 0
        report, self._evictions_unreported = self._evictions_unreported, 0
        self._next_eviction_report = now + _EVICTION_REPORT
        return report

    def _eviction_victim(self) -> GenerationSession | None:
        finished = [s for s in map(self._store.oldest, (_S.COMPLETED, _S.FAILED)) if s]
        if finished:
            return min(finished, key=lambda s: (s.created_at, s.session_id))
        return self._store.oldest(_S.PENDING) or self._store.oldest(_S.PROCESSING)

    def _evict_one(self) -> str:
        victim = self._eviction_victim()
        assert victim is not None, "eviction from an empty store"
        self._drop(victim.session_id, RemovalReason.EVICTED)
        return victim.session_id

    def _drop(self, session_id: str, reason: RemovalReason) -> None:
        old = self._store.delete(session_id)
        if old is not None:
            self._counters.removed[reason] += 1
            self._emit(EventType.REMOVED, old, reason=reason)

    def remove_session(self, session_id: str) -> bool:
        """Remove one session; False if there was none with this id."""
        with self._locked():
            if session_id not in self._store:
                return False
            self._drop(session_id, RemovalReason.DELETED)
            return True

    def _expire(self, now: datetime, max_age_seconds: float | None) -> int:
        cfg = self._config
        now_us = to_micros(now)
        rules: list[tuple[float, GenerationStatus | None]] = [
            (cfg.session_max_age_seconds if max_age_seconds is None else max_age_seconds, None),
            (cfg.failed_max_age_seconds, _S.FAILED),
            (cfg.completed_max_age_seconds, _S.COMPLETED),
        ]
        removed = 0
        for max_age, status in rules:
            for session_id in self._store.created_before(now_us - _micros(max_age), status):
                if session_id in self._store:
                    self._drop(session_id, RemovalReason.EXPIRED)
                    removed += 1
        return removed

    def cleanup_expired_sessions(self, max_age_seconds: float | None = None) -> int:
        """Remove expired sessions now; returns how many.

        Expired: older than `session_max_age_seconds` (or `max_age_seconds` if given), a failed
        one older than `failed_max_age_seconds`, a completed one older than
        `completed_max_age_seconds`. Costs O(log n) per session removed.
        """
        with self._locked():
            return self._expire(self._now(), max_age_seconds)

    def _purge(self, status: GenerationStatus | None, max_age_seconds: float | None) -> int:
        with self._locked():
            now_us = to_micros(self._now())
            if max_age_seconds is None:
                ids = [s.session_id for s in self._store.values(status)]
            else:
                ids = self._store.created_before(now_us - _micros(max_age_seconds), status)
            for session_id in ids:
                self._drop(session_id, RemovalReason.PURGED)
        if ids:
            logger.info("purged %d sessions (%s)", len(ids), status or "all")
        return len(ids)

    def cleanup_failed_sessions(self, max_age_seconds: float | None = None) -> int:
        """Remove failed sessions (all of them, or those older than `max_age_seconds`)."""
        return self._purge(_S.FAILED, max_age_seconds)

    def cleanup_completed_sessions(self, max_age_seconds: float | None = None) -> int:
        """Remove completed sessions older than `max_age_seconds` (default: completed expiry)."""
        age = self._config.completed_max_age_seconds if max_age_seconds is None else max_age_seconds
        return self._purge(_S.COMPLETED, age)

    def force_cleanup_all(self) -> int:
        """Remove every session (emergency cleanup)."""
        removed = self._purge(None, None)
        logger.warning("force cleanup removed all %d sessions", removed)
        return removed

    # ------------------------------------------------------------------ changes

    @staticmethod
    def _checked(updates: Mapping[str, Any]) -> dict[str, Any]:
        """Every update checked on its own (no session needed), so callers can do it before
        taking the lock: unknown fields, types and values."""
        if not UPDATABLE_FIELDS.issuperset(updates):
            unknown = sorted(set(updates) - UPDATABLE_FIELDS)
            raise SessionValidationError(
                [
                    {"loc": [k], "msg": "field cannot be updated", "type": "forbidden"}
                    for k in unknown
                ]
            )
        checked: dict[str, Any] = {}
        if "status" in updates:
            checked["status"] = _check(_status_adapter, updates["status"], "status")
        if "error_message" in updates:
            checked["error_message"] = _check_error_message(updates["error_message"])
        if "progress" in updates:
            checked["progress"] = _check(_progress_adapter, updates["progress"], "progress")
        if "scenes" in updates:
            checked["scenes"] = _check(_scenes_adapter, updates["scenes"], "scenes")
        return checked

    def _apply(
        self, session: GenerationSession, checked: Mapping[str, Any], now: datetime
    ) -> GenerationSession:
        """Apply updates that passed `_checked` to `session` if its state allows all of them;
        store all, or raise and store none."""
        changes: dict[str, Any] = {}
        if "status" in checked:
            status = checked["status"]
            if status is not session.status:
                if status not in ALLOWED_TRANSITIONS[session.status]:
                    raise InvalidTransitionError(session.session_id, session.status, status)
                changes["status"] = status
        if "error_message" in checked:
            changes["error_message"] = checked["error_message"]
        refused = finished_refuses(session.status, checked)
        if refused is not None:
            raise InvalidTransitionError(session.session_id, session.status, refused)
        if "progress" in checked:
            changes["progress"] = checked["progress"]
        if "scenes" in checked:
            changes["scenes"] = self._checked_scenes(session, checked["scenes"])
        if not changes:
            return session
        new = evolve(session, **changes, updated_at=now, last_accessed=now)
        self._store.put(new)
        if "status" in changes:
            self._counters.transitions[(session.status, new.status)] += 1
            self._emit(EventType.STATUS_CHANGED, new, previous_status=session.status)
        if "progress" in changes:
            self._emit(EventType.PROGRESS, new)
        if "scenes" in changes:
            self._emit(EventType.SCENES_REPLACED, new)
        return new

    @staticmethod
    def _checked_scenes(
        session: GenerationSession, scenes: Sequence[ScenePrompt]
    ) -> tuple[ScenePrompt, ...]:
        limit = session.request_data.num_scenes
        errors: list[dict[str, Any]] = []
        seen: set[int] = set()
        for i, scene in enumerate(scenes):
            if scene.scene_number > limit:
                errors.append(
                    {
                        "loc": ["scenes", i, "scene_number"],
                        "msg": f"must be between 1 and num_scenes ({limit})",
                        "type": "out_of_range",
                    }
                )
            if scene.scene_number in seen:
                errors.append(
                    {
                        "loc": ["scenes", i, "scene_number"],
                        "msg": "duplicate scene_number",
                        "type": "duplicate",
                    }
                )
            seen.add(scene.scene_number)
        if errors:
            raise SessionValidationError(errors)
        return tuple(sorted(scenes, key=lambda s: s.scene_number))

    def atomic_session_update(
        self, session_id: str, updates: Mapping[str, Any]
    ) -> GenerationSession:
        """Apply several of status, error_message, progress, scenes together: all or none."""
        checked = self._checked(updates)  # before the lock: it needs no session
        with self._locked():
            return self._apply(self._require(session_id), checked, self._now())

    def update_session_status(
        self,
        session_id: str,
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> GenerationSession:
        """Move a session along the state machine; the same status (and message) again changes
        nothing, the same status with another message sets it (409 on a finished session)."""
        updates: dict[str, Any] = {"status": status}
        if error_message is not None:
            updates["error_message"] = error_message
        checked = self._checked(updates)  # once, before taking the lock
        with self._locked():
            session = self._require(session_id)
            message = checked.get("error_message", session.error_message)
            if checked["status"] is session.status and message == session.error_message:
                return session
            return self._apply(session, checked, self._now())

    def update_session_progress(
        self, session_id: str, current_step: int, total_steps: int, description: str = ""
    ) -> GenerationSession:
        """Record progress of a pending or processing session."""
        progress = {
            "current_step": current_step,
            "total_steps": total_steps,
            "description": description,
        }
        return self.atomic_session_update(session_id, {"progress": progress})

    def set_session_scenes(
        self, session_id: str, scenes: Sequence[ScenePrompt | Mapping[str, Any]]
    ) -> GenerationSession:
        """Replace all scenes (numbers unique, 1 to num_scenes); kept ordered by number."""
        return self.atomic_session_update(session_id, {"scenes": list(scenes)})

    def add_scene_to_session(
        self, session_id: str, scene: ScenePrompt | Mapping[str, Any]
    ) -> tuple[GenerationSession, bool]:
        """Insert or replace the scene with this number; returns (session, True if added)."""
        if not isinstance(scene, ScenePrompt):
            scene = _check(_scene_adapter, scene, "scene")
        with self._locked():
            session = self._require(session_id)
            if session.status in FINISHED:
                raise InvalidTransitionError(session_id, session.status, "scenes")
            limit = session.request_data.num_scenes
            if scene.scene_number > limit:
                raise SessionValidationError(
                    [
                        {
                            "loc": ["scene_number"],
                            "msg": f"must be between 1 and num_scenes ({limit})",
                            "type": "out_of_range",
                        }
                    ]
                )
            scenes = list(session.scenes)
            numbers = [s.scene_number for s in scenes]
            at = bisect.bisect_left(numbers, scene.scene_number)
            added = at == len(numbers) or numbers[at] != scene.scene_number
            if added:
                scenes.insert(at, scene)
            else:
                scenes[at] = scene
            now = self._now()
            new = evolve(session, scenes=tuple(scenes), updated_at=now, last_accessed=now)
            self._store.put(new)
            self._emit(EventType.SCENE_ADDED, new)
            return new, added

    def bulk_update_sessions(
        self,
        session_ids: Sequence[str],
        operation: Callable[[GenerationSession], Mapping[str, Any] | None],
    ) -> BulkUpdateResult:
        """For each id, apply the updates `operation(session)` returns, under one lock.

        A refused update (bad value or transition, or an operation that raised) leaves that
        session unchanged and is listed in `conflicts`; the others still apply.
        """

        def checked_for(session: GenerationSession) -> Mapping[str, Any] | None:
            updates = operation(session)
            return self._checked(updates) if updates else None

        return self._bulk_apply(session_ids, checked_for)

    def bulk_update_status(
        self,
        session_ids: Sequence[str],
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> BulkUpdateResult:
        """Set one status (and message) on many sessions; see bulk_update_sessions."""
        updates: dict[str, Any] = {"status": status}
        if error_message is not None:
            updates["error_message"] = error_message
        checked = self._checked(updates)  # once for all sessions, before the lock
        return self._bulk_apply(session_ids, lambda _session: checked)

    def _bulk_apply(
        self,
        session_ids: Sequence[str],
        checked_for: Callable[[GenerationSession], Mapping[str, Any] | None],
    ) -> BulkUpdateResult:
        """Apply `checked_for(session)` (updates that passed `_checked`) to each id."""
        updated: list[str] = []
        missing: list[str] = []
        conflicts: list[str] = []
        with self._locked():
            now = self._now()
            for session_id in dict.fromkeys(session_ids):
                session = self._store.get(session_id)
                if session is None:
                    missing.append(session_id)
                    continue
                try:
                    checked = checked_for(session)
                    if checked:
                        self._apply(session, checked, now)
                    updated.append(session_id)
                except SessionManagerError:
                    conflicts.append(session_id)
                except Exception:
                    logger.exception("bulk operation failed for session %s", session_id)
                    conflicts.append(session_id)
        return BulkUpdateResult(updated, missing, conflicts)

    def recover_corrupted_session(self, session_id: str) -> GenerationSession:
        """Force a session whose work stopped into failed with the seed's message (see
        rules.RECOVER_RULE); InvalidTransitionError for any other session."""
        with self._locked():
            session = self._require(session_id)
            now = self._now()
            if not needs_recovery(session, now, self._config.stuck_after_seconds):
                raise InvalidTransitionError(session_id, session.status, RECOVER)
            new = evolve(
                session,
                status=_S.FAILED,
                error_message=RECOVERED_MESSAGE,
                updated_at=now,
                last_accessed=now,
            )
            self._store.put(new)
            if session.status is not _S.FAILED:
                self._counters.transitions[(session.status, _S.FAILED)] += 1
                self._emit(EventType.STATUS_CHANGED, new, previous_status=session.status)
        logger.info("recovered session %s (was %s)", session_id, session.status.value)
        return new

    # ------------------------------------------------------------------ figures

    def snapshot(self) -> ManagerSnapshot:
        """All aggregate figures at one instant; O(log n) under the lock."""
        with self._locked():
            cfg = self._config  # read under the lock: capacity and thresholds match the counts
            now = self._now()
            now_us = to_micros(now)
            store = self._store
            total = len(store)
            # sessions with age >= bound, i.e. created at or before now - bound
            at_least = [
                store.count_created_before(now_us - _micros(low) + 1) if low else total
                for _, low, _ in AGE_BUCKETS
            ]
            by_age = {
                name: at_least[i] - (at_least[i + 1] if i + 1 < len(at_least) else 0)
                for i, (name, _, _) in enumerate(AGE_BUCKETS)
            }
            stuck = store.count_updated_before(
                _S.PROCESSING, now_us - _micros(cfg.stuck_after_seconds)
            )
            oldest = {s: o.created_at for s in _S if (o := store.oldest(s)) is not None}
            span = store.created_micros_range()
            created_sum = store.created_micros_sum()
            by_status = dict(store.count_by_status())
            c = self._counters
            removed = {r: c.removed[r] for r in RemovalReason}
            rejected = {REJECTED_CAPACITY: c.rejected[REJECTED_CAPACITY]}
            transitions = {t: c.transitions[t] for t in KNOWN_TRANSITIONS}
            counters = (c.created, c.cleanup_runs, c.cleanup_errors, c.cleanup_last_run)
        utilization = total / cfg.max_sessions
        health = health_of(utilization, cfg.warning_utilization, cfg.critical_utilization)
        if span is None:
            average = oldest_age = newest_age = 0.0
        else:
            average = (now_us - created_sum / total) / _MICROS
            oldest_age = (now_us - span[0]) / _MICROS
            newest_age = (now_us - span[1]) / _MICROS
        return ManagerSnapshot(
            taken_at=now,
            total=total,
            capacity=cfg.max_sessions,
            utilization=utilization,
            health=health,
            by_status=by_status,
            by_age=by_age,
            stuck=stuck,
            stuck_after_seconds=cfg.stuck_after_seconds,
            oldest_created=oldest,
            average_age_seconds=average,
            oldest_age_seconds=oldest_age,
            newest_age_seconds=newest_age,
            created_total=counters[0],
            removed_total=removed,
            rejected_total=rejected,
            transitions_total=transitions,
            cleanup_runs_total=counters[1],
            cleanup_errors_total=counters[2],
            cleanup_last_run=counters[3],
            worker_alive=self.worker_alive,
            closed=self._closed,
        )

    def get_performance_stats(self) -> dict[str, Any]:
        """The seed's statistics: counts, utilization, status breakdown, age distribution."""
        snap = self.snapshot()
        return {
            "total_sessions": snap.total,
            "max_capacity": snap.capacity,
            "utilization_percent": round(snap.utilization * 100, 1),
            "status_breakdown": {s.value: n for s, n in snap.by_status.items()},
            "age_distribution": dict(snap.by_age),
            "average_age_hours": round(snap.average_age_seconds / 3600, 2),
            "oldest_session_hours": round(snap.oldest_age_seconds / 3600, 2),
            "newest_session_hours": round(snap.newest_age_seconds / 3600, 2),
            "stuck_sessions": snap.stuck,
        }

    def get_health_status(self) -> dict[str, Any]:
        """The seed's health report, in real types (ints, floats, bools)."""
        snap = self.snapshot()
        return {
            "overall_health": snap.health.value,
            "session_count": snap.total,
            "utilization_percent": round(snap.utilization * 100, 1),
            "stuck_sessions": snap.stuck,
            "cleanup_active": snap.worker_alive,
        }
