"""The session manager: a facade over a store that owns atomicity.

Each change is one store operation (`sidecar.store.base.SessionStore`), handed the rules of
`sidecar.core.rules` as data; the store makes it atomic (the memory store under its own lock,
Redis in one script). The manager adds what belongs to this process: the clock, the settings,
the event counters, the eviction report and the callbacks, which run after the store call
returns, outside any lock, in the process that made the change. It holds no lock over the
store; the seed's lock-holding calls live in `sidecar.compat`, the cleanup thread in
`sidecar.worker`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sidecar.core.changes import BulkUpdateResult, Changes
from sidecar.core.checks import (
    check_status,
    new_config,
)
from sidecar.core.clock import Clock, from_micros, to_micros
from sidecar.core.config import ManagerConfig
from sidecar.core.counters import EVICTION_REPORT_SECONDS, CounterValues
from sidecar.core.errors import (
    SessionManagerError,
    SessionValidationError,
)
from sidecar.core.events import EventType, RemovalReason, SessionEvent
from sidecar.core.figures import (
    AGE_BUCKETS,
    ManagerSnapshot,
    by_age,
    health_of,
    health_report,
    performance_stats,
)
from sidecar.core.models import GenerationSession, GenerationStatus
from sidecar.core.retention import Retention
from sidecar.core.rules import (
    ALLOWED_TRANSITIONS,
    KNOWN_TRANSITIONS,
    MICROS,
    RECOVERED_MESSAGE,
    STUCK_STATUS,
    UPDATABLE_FIELDS,
    age_cutoffs,
    micros,
)
from sidecar.core.state import Worker
from sidecar.store import (
    BATCH,
    Cursor,
)
from sidecar.store.errors import StoreUnavailableError

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
    "Worker",
]

logger = logging.getLogger(__name__)


class SessionManager(Retention, Changes):
    """Generation sessions with capacity, expiry, stuck and health rules; thread-safe."""

    @classmethod
    def create_with_config(
        cls, config: Mapping[str, Any], *, clock: Clock | None = None
    ) -> SessionManager:
        """Build a manager from a mapping of settings (seed names `cleanup_interval` accepted)."""
        return cls(new_config(config), clock=clock)

    @property
    def worker_alive(self) -> bool:
        """True while an attached background cleanup worker runs."""
        worker = self._worker
        return worker is not None and worker.alive

    def attach_worker(self, worker: Worker) -> None:
        """Let `worker` be told of interval changes and stopped by shutdown (one at a time)."""
        with self._lock:
            if self._closed:
                raise SessionManagerError("the session manager has been shut down")
            if self._worker is not None and self._worker.alive:
                raise SessionManagerError("a cleanup worker is already attached")
            self._worker = worker

    def shutdown(self, timeout: float = 30, keep: Callable[[], int] | None = None) -> bool:
        """Stop the worker, then drop all sessions from memory; safe to repeat.

        `keep`, if given, runs after the worker stopped and before the sessions are dropped
        (a snapshot): it returns how many sessions it kept, and the log says how many were
        really lost. Unreported evictions are logged. Returns False only if the worker did
        not stop within `timeout` seconds (the sessions are then kept but not dropped).
        """
        with self._lock:
            self._closed = True
            worker = self._worker
        stopped = worker is None or worker.stop(timeout)
        self._evictions.flush(self._config.max_sessions)
        if self._store.shared:
            if not stopped:
                logger.warning("cleanup worker did not stop within %ss", timeout)
            return stopped  # other replicas go on with these sessions
        kept = 0 if keep is None else keep()
        if not stopped:
            logger.warning("cleanup worker did not stop within %ss", timeout)
            return False
        held = self._store.clear()
        lost = max(held - kept, 0)
        if lost:
            logger.info("shutdown dropped %d sessions held in memory", lost)
        elif held:
            logger.info("shutdown: all %d sessions held in memory were kept", held)
        return True

    def __enter__(self) -> SessionManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def run_cleanup(self) -> int:
        """One periodic cleanup run, as the worker does it; errors are counted, not raised."""
        removed, failed = 0, False
        try:
            removed = self.cleanup_expired_sessions()
            held = len(self._store)
        except StoreUnavailableError as exc:
            # A store outage is not a bug: one line, no traceback; the next run tries again.
            logger.warning("cleanup run failed: the session store is unavailable (%s)", exc)
            failed = True
        except Exception:
            logger.exception("cleanup run failed")
            failed = True
        self._counters.count_cleanup(self._now(), failed=failed)
        if not failed:
            logger.info(
                "cleanup run removed %d sessions; %d/%d held",
                removed,
                held,
                self._config.max_sessions,
            )
        return removed

    def reconfigure(self, **changes: Any) -> ManagerConfig:
        """Change live settings (validated, all or nothing); returns the settings now in force.

        Lowering `max_sessions` drops expired sessions at once; any excess is evicted by the
        next create. The seed's name `cleanup_interval` is accepted.
        """
        with self._lock:
            old = self._config
            new = self._config = new_config(changes, base=old)
            worker = self._worker
        if new.max_sessions < old.max_sessions:
            self._expire(None)
        if worker is not None and new.cleanup_interval_seconds != old.cleanup_interval_seconds:
            worker.reschedule()
        before = old.as_dict()
        logger.info("reconfigured: %s", {k: v for k, v in new.as_dict().items() if v != before[k]})
        return new

    # ------------------------------------------------------------------ reads

    def get_session(self, session_id: str) -> GenerationSession | None:
        """The session (last_accessed touched), or None if there is none with this id."""
        return self._store.touch(session_id, to_micros(self._now()))

    def peek_session(self, session_id: str) -> GenerationSession | None:
        """The session without touching last_accessed."""
        return self._store.get(session_id)

    def get_session_count(self) -> int:
        """How many sessions are held."""
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
        page = self._store.page(status, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        last = page[-1] if more else None
        return page, None if last is None else (to_micros(last.created_at), last.session_id)

    def list_stuck_sessions(
        self, after: Cursor | None = None, limit: int = 100
    ) -> tuple[list[GenerationSession], Cursor | None]:
        """A page of stuck sessions (in STUCK_STATUS, last updated more than
        stuck_after_seconds ago, strictly, as the stuck gauge counts), oldest update first,
        and the cursor (updated_us, id) of the next page (None at the end)."""
        if limit < 1:
            raise SessionValidationError(
                [{"loc": ["limit"], "msg": "must be at least 1", "type": "greater_than_equal"}]
            )
        cutoff = to_micros(self._now()) - micros(self._config.stuck_after_seconds)
        page = self._store.page_stuck(STUCK_STATUS, cutoff, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        last = page[-1] if more else None
        return page, None if last is None else (to_micros(last.updated_at), last.session_id)

    def _every(self, status: GenerationStatus | None) -> list[GenerationSession]:
        out: list[GenerationSession] = []
        after: Cursor | None = None
        while page := self._store.page(status, after, BATCH):
            out += page
            after = (to_micros(page[-1].created_at), page[-1].session_id)
        return out

    def get_all_sessions_info(self) -> list[dict[str, Any]]:
        """The seed's summary of every session; O(n), prefer list_sessions for large stores."""
        sessions = self._every(None)
        now = self._now()
        return [s.summary(now) for s in sessions]

    def get_sessions_by_status(self, status: GenerationStatus | str) -> list[GenerationSession]:
        """Every session in `status`, oldest first (immutable, so safe to keep)."""
        return self._every(check_status(status))

    # ------------------------------------------------------------------ figures

    def snapshot(self) -> ManagerSnapshot:
        """All aggregate figures at one instant: one store read, O(log n)."""
        cfg = self._config
        now = self._now()
        now_us = to_micros(now)
        stuck_cutoff = now_us - micros(cfg.stuck_after_seconds)
        f = self._store.figures(age_cutoffs(now_us), STUCK_STATUS, stuck_cutoff)
        c = self._counters.values()
        utilization = f.total / cfg.max_sessions
        if f.created_range_us is None or not f.total:
            average = oldest_age = newest_age = 0.0
        else:
            average = (now_us - f.created_sum_us / f.total) / MICROS
            oldest_age = (now_us - f.created_range_us[0]) / MICROS
            newest_age = (now_us - f.created_range_us[1]) / MICROS
        return ManagerSnapshot(
            taken_at=now,
            total=f.total,
            capacity=cfg.max_sessions,
            utilization=utilization,
            health=health_of(utilization, cfg.warning_utilization, cfg.critical_utilization),
            by_status=f.by_status,
            by_age=by_age(f.total, f.created_before),
            stuck=f.stuck,
            stuck_after_seconds=cfg.stuck_after_seconds,
            oldest_created={s: from_micros(us) for s, us in f.oldest_created_us.items()},
            average_age_seconds=average,
            oldest_age_seconds=oldest_age,
            newest_age_seconds=newest_age,
            created_total=c.created,
            removed_total=c.removed,
            rejected_total=c.rejected,
            transitions_total=c.transitions,
            cleanup_runs_total=c.cleanup_runs,
            cleanup_errors_total=c.cleanup_errors,
            cleanup_last_run=c.cleanup_last_run,
            worker_alive=self.worker_alive,
            closed=self._closed,
        )

    def event_counts(self) -> CounterValues:
        """What this process did (event counters), without reading the store."""
        return self._counters.values()

    def get_performance_stats(self) -> dict[str, Any]:
        """The seed's statistics: counts, utilization, status breakdown, age distribution."""
        return performance_stats(self.snapshot())

    def get_health_status(self) -> dict[str, Any]:
        """The seed's health report, in real types (ints, floats, bools)."""
        return health_report(self.snapshot())
