"""What every part of the session manager shares: settings, clock, store, counters, events.

Events are collected while an operation runs and dispatched once its store call has returned,
outside any lock, by the process that made the change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sidecar.core.clock import Clock, SystemClock
from sidecar.core.config import ManagerConfig
from sidecar.core.counters import Counters, EvictionReport
from sidecar.core.errors import (
    SessionManagerError,
)
from sidecar.core.events import EventType, RemovalReason, SessionEvent
from sidecar.core.models import GenerationSession, GenerationStatus
from sidecar.core.rules import (
    ExpiryAges,
    ExpiryRules,
    expiry_ages,
    expiry_rules,
)
from sidecar.store import (
    InMemorySessionStore,
    SessionStore,
)

__all__ = ["Callback", "ManagerState", "Worker"]

logger = logging.getLogger("sidecar.core.manager")

Callback = Callable[[SessionEvent], None]


class Worker(Protocol):
    """What the manager needs of a background cleanup worker (sidecar.worker has one)."""

    @property
    def alive(self) -> bool: ...
    def stop(self, timeout: float) -> bool: ...
    def reschedule(self) -> None: ...


class ManagerState:
    """The manager's state: settings, clock, store, counters, callbacks, worker slot."""

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
        self._lock = threading.Lock()  # settings, callbacks and the worker slot; never a store call
        self._callbacks: dict[EventType, tuple[Callback, ...]] = dict.fromkeys(EventType, ())
        self._counters = Counters()
        self._evictions = EvictionReport()
        self._worker: Worker | None = None
        self._closed = False
        # The expiry ages of the settings in force, worked out once per settings object.
        self._ages: tuple[ManagerConfig | None, ExpiryAges] = (None, ())

    @property
    def config(self) -> ManagerConfig:
        """The settings in force."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The time source every timestamp comes from."""
        return self._clock

    @property
    def store(self) -> SessionStore:
        """Where the sessions live."""
        return self._store

    @property
    def closed(self) -> bool:
        """True once shutdown has begun."""
        return self._closed

    @property
    def worker(self) -> Worker | None:
        """The attached cleanup worker, if any."""
        return self._worker

    # ------------------------------------------------------------------ time and events

    def _now(self) -> datetime:
        """The clock's time; a custom clock must give aware UTC datetimes (checked: cheap)."""
        now = self._clock.now()
        if now.tzinfo is not UTC:
            if now.tzinfo is None or now.utcoffset() is None:
                raise SessionManagerError(f"the clock gave a naive datetime: {now!r}")
            now = now.astimezone(UTC)
        return now

    def _emit(
        self,
        events: list[SessionEvent],
        kind: EventType,
        session: GenerationSession,
        previous_status: GenerationStatus | None = None,
        reason: RemovalReason | None = None,
    ) -> None:
        # The event is only built when someone listens: most mutations have no callback.
        if self._callbacks[kind]:
            events.append(SessionEvent(kind, session.session_id, session, previous_status, reason))

    def _dispatch(self, events: list[SessionEvent]) -> None:
        """Run the callbacks of `events`; called after the store call, outside any lock."""
        for event in events:
            for callback in self._callbacks[event.type]:
                try:
                    callback(event)
                except Exception:
                    logger.exception("callback for %s event failed", event.type.value)

    def register_session_callback(self, event_type: str, callback: Callback) -> None:
        """Call `callback(event)` after every event of this type, outside any lock."""
        try:
            kind = EventType(event_type)
        except ValueError:
            allowed = ", ".join(k.value for k in EventType)
            raise ValueError(f"unknown event type {event_type!r}; one of {allowed}") from None
        with self._lock:  # copy on write: dispatch reads a tuple without a lock
            self._callbacks[kind] = (*self._callbacks[kind], callback)

    def _removed(
        self, sessions: Sequence[GenerationSession], reason: RemovalReason
    ) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        if not sessions:
            return events  # most creates remove nothing: no count, no loop
        self._counters.count_removed(reason, len(sessions))
        for old in sessions:
            self._emit(events, EventType.REMOVED, old, reason=reason)
        return events

    def _expiry(self, now_us: int, max_age_seconds: float | None) -> ExpiryRules:
        cfg = self._config
        worked_out_for, ages = self._ages  # one read: reconfigure may swap the settings
        if max_age_seconds is not None or worked_out_for is not cfg:
            age = cfg.session_max_age_seconds if max_age_seconds is None else max_age_seconds
            ages = expiry_ages(age, cfg.failed_max_age_seconds, cfg.completed_max_age_seconds)
            if max_age_seconds is None:
                self._ages = (cfg, ages)
        return expiry_rules(now_us, ages)
