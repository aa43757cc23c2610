"""Creation and removal: capacity, eviction, expiry and purge, each one store operation."""

from __future__ import annotations

import logging

from sidecar.core.checks import (
    check_request,
)
from sidecar.core.clock import to_micros
from sidecar.core.errors import (
    IdempotencyKeyReusedError,
    IdempotencyKeySpentError,
    SessionCapacityError,
    SessionManagerError,
)
from sidecar.core.events import EventType, RemovalReason
from sidecar.core.idempotency import idempotency_rule
from sidecar.core.ids import new_session_id
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus
from sidecar.core.rules import (
    EVICTION_ORDER,
    micros,
)
from sidecar.core.state import ManagerState
from sidecar.store import (
    BATCH,
    CreateOutcome,
    KeyOutcome,
)

__all__ = ["Retention"]

logger = logging.getLogger("sidecar.core.manager")
_S = GenerationStatus


class Retention(ManagerState):
    """Create sessions within capacity; remove, expire and purge them in bounded batches."""

    def create_session(
        self, request: GenerationRequest, idempotency_key: str | None = None
    ) -> GenerationSession:
        """Store a new pending session, making room first if the manager is full.

        With `idempotency_key`, at most one session per key: a repeat of the same request
        returns the session the key created (as it is now) and creates nothing; the key with
        another request raises IdempotencyKeyReusedError, and a key whose session has since
        been removed IdempotencyKeySpentError. A rejected create (full) records no key.
        """
        request = check_request(request)
        session_id = new_session_id()  # may call os.urandom: before the store call
        if self._closed:
            raise SessionManagerError("the session manager has been shut down")
        cfg = self._config
        now = self._now()
        now_us = to_micros(now)
        outcome = self._store.create(
            session_id,
            request,
            now_us,
            capacity=cfg.max_sessions,
            policy=cfg.capacity_policy,
            eviction_order=EVICTION_ORDER,
            expiry=self._expiry(now_us, None),
            idempotency=(
                None
                if idempotency_key is None
                else idempotency_rule(idempotency_key, request, now_us, cfg)
            ),
        )
        if outcome.key not in (None, KeyOutcome.NEW):
            return self._remembered(outcome, idempotency_key or "")
        events = self._removed(outcome.expired, RemovalReason.EXPIRED)
        events += self._removed(outcome.evicted, RemovalReason.EVICTED)
        session = outcome.session
        if session is None:
            self._counters.count_rejected()
            self._dispatch(events)
            raise SessionCapacityError(cfg.max_sessions)
        self._counters.count_created()
        self._emit(events, EventType.CREATED, session)
        self._dispatch(events)
        if outcome.evicted:
            self._evictions.add([s.session_id for s in outcome.evicted], now, cfg.max_sessions)
        return session

    @staticmethod
    def _remembered(outcome: CreateOutcome, key: str) -> GenerationSession:
        """The answer to a create whose key the store remembered (it changed nothing)."""
        original = outcome.original_id or ""
        if outcome.key is KeyOutcome.REUSED:
            raise IdempotencyKeyReusedError(key, original)
        if outcome.session is None:
            raise IdempotencyKeySpentError(key, original)
        return outcome.session

    def remove_session(self, session_id: str) -> bool:
        """Remove one session; False if there was none with this id."""
        old = self._store.remove(session_id)
        if old is None:
            return False
        self._dispatch(self._removed([old], RemovalReason.DELETED))
        return True

    def _expire(self, max_age_seconds: float | None) -> int:
        rules = self._expiry(to_micros(self._now()), max_age_seconds)
        removed = 0
        while batch := self._store.expire(rules, BATCH):
            removed += len(batch)
            self._dispatch(self._removed(batch, RemovalReason.EXPIRED))
            if len(batch) < BATCH:
                break
        return removed

    def cleanup_expired_sessions(self, max_age_seconds: float | None = None) -> int:
        """Remove expired sessions now, in bounded batches; returns how many.

        Expired: older than `session_max_age_seconds` (or `max_age_seconds` if given), a failed
        one older than `failed_max_age_seconds`, a completed one older than
        `completed_max_age_seconds`. Costs O(log n) per session removed.
        """
        return self._expire(max_age_seconds)

    def _purge(self, status: GenerationStatus | None, max_age_seconds: float | None) -> int:
        now_us = to_micros(self._now())
        cutoff = None if max_age_seconds is None else now_us - micros(max_age_seconds)
        removed = 0
        while batch := self._store.purge(status, cutoff, BATCH):
            removed += len(batch)
            self._dispatch(self._removed(batch, RemovalReason.PURGED))
            if len(batch) < BATCH:
                break
        if removed:
            logger.info("purged %d sessions (%s)", removed, status or "all")
        return removed

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
