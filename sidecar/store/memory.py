"""InMemorySessionStore: the store's operations on a dict and sorted indexes, each under a lock.

Each operation lines up with one Lua script of the Redis store (sidecar/store/redis/lua/) and,
like it, is one atomic step: it takes the store's plain lock once and does O(1) or O(log n)
work per session it touches. The indexes (by creation, overall and per status; by last update,
per status) make every figure a bisection, so a scrape never walks the sessions.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

from sortedcontainers import SortedList

from sidecar.core.clock import from_micros, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.errors import InvalidTransitionError, SessionNotFoundError
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    evolve,
)
from sidecar.core.rules import WORK_FIELDS, ExpiryRule
from sidecar.store.base import (
    BATCH,
    KEEP,
    Change,
    CreateOutcome,
    Cursor,
    IdempotencyKey,
    KeyOutcome,
    StaleScenesError,
    StoreFigures,
)

__all__ = ["InMemorySessionStore"]


class InMemorySessionStore:
    """Sessions of one process, with sorted indexes; safe to share between threads."""

    shared = False  # this process's own: shutdown empties it

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, GenerationSession] = {}
        self._by_created: SortedList = SortedList()
        self._by_status_created: dict[GenerationStatus, SortedList] = {
            status: SortedList() for status in GenerationStatus
        }
        self._by_status_updated: dict[GenerationStatus, SortedList] = {
            status: SortedList() for status in GenerationStatus
        }
        self._created_sum = 0
        # Idempotency-Keys: key -> (recorded at, fingerprint, session id), and by record time.
        self._keys: dict[str, tuple[int, str, str]] = {}
        self._keys_by_time: SortedList = SortedList()

    # ------------------------------------------------------------------ index upkeep (locked)

    def _index(self, session: GenerationSession, created_us: int, updated_us: int) -> None:
        """Index `session`; the callers pass its times in microseconds, which they have at
        hand (to_micros costs 0.4 us each)."""
        created = (created_us, session.session_id)
        self._by_created.add(created)
        self._by_status_created[session.status].add(created)
        self._by_status_updated[session.status].add((updated_us, session.session_id))
        self._created_sum += created_us

    def _unindex(self, session: GenerationSession) -> None:
        created = (to_micros(session.created_at), session.session_id)
        self._by_created.remove(created)
        self._by_status_created[session.status].remove(created)
        self._by_status_updated[session.status].remove(
            (to_micros(session.updated_at), session.session_id)
        )
        self._created_sum -= created[0]

    def _replace(self, old: GenerationSession, new: GenerationSession, now_us: int) -> None:
        """Put `new`, updated at `now_us`, in place of `old`."""
        self._sessions[new.session_id] = new
        if old.status is not new.status:
            self._unindex(old)
            self._index(new, to_micros(new.created_at), now_us)
        elif old.updated_at != new.updated_at:
            # The common case (progress, scenes): only the last-update index moves.
            by_updated = self._by_status_updated[new.status]
            by_updated.remove((to_micros(old.updated_at), old.session_id))
            by_updated.add((now_us, new.session_id))

    def _drop(self, session_id: str) -> GenerationSession | None:
        old = self._sessions.pop(session_id, None)
        if old is not None:
            self._unindex(old)
        return old

    def _created_index(self, status: GenerationStatus | None) -> SortedList:
        return self._by_created if status is None else self._by_status_created[status]

    def _drop_created_before(
        self, status: GenerationStatus | None, cutoff_us: int | None, limit: int
    ) -> list[GenerationSession]:
        """Remove up to `limit` sessions in `status` created before `cutoff_us`, oldest first."""
        index = self._created_index(status)
        keys = index if cutoff_us is None else index.irange(maximum=(cutoff_us,))
        ids = [sid for _, sid in itertools.islice(keys, max(limit, 0))]
        return [old for sid in ids if (old := self._drop(sid)) is not None]

    def _expire(self, rules: Sequence[ExpiryRule], batch: int) -> list[GenerationSession]:
        removed: list[GenerationSession] = []
        for rule in rules:
            if len(removed) >= batch:
                break
            removed += self._drop_created_before(rule.status, rule.cutoff_us, batch - len(removed))
        return removed

    def _victim(self, order: Sequence[Sequence[GenerationStatus]]) -> str | None:
        for group in order:
            heads = [index[0] for s in group if (index := self._by_status_created[s])]
            if heads:
                return str(min(heads)[1])
        return None

    def _forget_key(self, key: str) -> None:
        recorded, _, _ = self._keys.pop(key)
        self._keys_by_time.remove((recorded, key))

    def _find_key(self, rule: IdempotencyKey, batch: int) -> tuple[int, str, str] | None:
        """Forget up to `batch` keys past their time, then look `rule.key` up."""
        old = self._keys_by_time.irange(maximum=(rule.forget_before_us,))
        for _, key in list(itertools.islice(old, batch)):
            self._forget_key(key)
        found = self._keys.get(rule.key)
        if found is not None and found[0] < rule.forget_before_us:  # left by the batch bound
            self._forget_key(rule.key)
            return None
        return found

    def _record_key(self, rule: IdempotencyKey, now_us: int, session_id: str, batch: int) -> None:
        self._keys[rule.key] = (now_us, rule.fingerprint, session_id)
        self._keys_by_time.add((now_us, rule.key))
        over = min(len(self._keys) - rule.max_keys, batch)
        for _, key in list(self._keys_by_time[: max(over, 0)]):
            self._forget_key(key)

    # ------------------------------------------------------------------ rule-bearing operations

    def create(
        self,
        session_id: str,
        request: GenerationRequest,
        now_us: int,
        *,
        capacity: int,
        policy: CapacityPolicy,
        eviction_order: Sequence[Sequence[GenerationStatus]],
        expiry: Sequence[ExpiryRule],
        batch: int = BATCH,
        idempotency: IdempotencyKey | None = None,
    ) -> CreateOutcome:
        """Insert a pending session; at capacity expire first, then evict or reject.

        A remembered Idempotency-Key creates nothing; a new one is recorded with the session.
        """
        now = from_micros(now_us)
        session = GenerationSession(
            session_id=session_id,
            status=GenerationStatus.PENDING,
            request_data=request,
            created_at=now,
            last_accessed=now,
            updated_at=now,
        )
        expired: list[GenerationSession] = []
        evicted: list[GenerationSession] = []
        key = None if idempotency is None else KeyOutcome.NEW
        with self._lock:
            if (
                idempotency is not None
                and (found := self._find_key(idempotency, batch)) is not None
            ):
                _, fingerprint, original = found
                if fingerprint != idempotency.fingerprint:
                    return CreateOutcome(None, [], [], KeyOutcome.REUSED, original)
                stored = self._sessions.get(original)
                outcome = KeyOutcome.SPENT if stored is None else KeyOutcome.REPLAYED
                return CreateOutcome(stored, [], [], outcome, original)
            if len(self._sessions) >= capacity:
                expired = self._expire(expiry, batch)
            while len(self._sessions) >= capacity:
                if policy is CapacityPolicy.REJECT:
                    return CreateOutcome(None, expired, evicted, key)
                victim = self._victim(eviction_order)
                if victim is None:
                    raise ValueError("eviction order names no status that holds a session")
                evicted.append(self._sessions[victim])
                self._drop(victim)
            if session_id in self._sessions:
                raise ValueError(f"session id already stored: {session_id}")
            self._sessions[session_id] = session
            self._index(session, now_us, now_us)
            if idempotency is not None:
                self._record_key(idempotency, now_us, session_id, batch)
        return CreateOutcome(session, expired, evicted, key)

    def update(
        self, session_id: str, now_us: int, change: Change
    ) -> tuple[GenerationStatus, GenerationSession]:
        """Apply `change` if the session's status allows all of it; (previous status, new)."""
        with self._lock:
            old = self._sessions.get(session_id)
            if old is None:
                raise SessionNotFoundError(session_id)
            status = old.status
            to = change.status
            if to is not None and to is not status and status not in change.leave_from:
                raise InvalidTransitionError(session_id, status, to)
            before = change.updated_before_us
            if before is not None and to_micros(old.updated_at) >= before:
                raise InvalidTransitionError(session_id, status, to or status)
            changes: dict[str, Any] = {}
            for name in WORK_FIELDS:
                value = getattr(change, name)
                # the message a retry sends again is no change (and no refusal)
                if value is not KEEP and not (
                    name == "error_message" and value == old.error_message
                ):
                    changes[name] = value
            if (to is None or to is status) and not changes:
                return status, old
            if changes and status not in change.work_statuses:
                raise InvalidTransitionError(session_id, status, next(iter(changes)))
            if change.expect_scenes is not None and old.scenes != change.expect_scenes:
                raise StaleScenesError(session_id)
            if to is not None and to is not status:
                changes["status"] = to
            now = from_micros(now_us)
            new = evolve(old, **changes, updated_at=now, last_accessed=now)
            self._replace(old, new, now_us)
            return status, new

    def touch(self, session_id: str, now_us: int) -> GenerationSession | None:
        """The session with its last access set to `now_us`, or None."""
        with self._lock:
            old = self._sessions.get(session_id)
            if old is None:
                return None
            new = evolve(old, last_accessed=from_micros(now_us))
            self._sessions[session_id] = new  # no index holds the last access
            return new

    def remove(self, session_id: str) -> GenerationSession | None:
        """Remove one session; what was removed (only this caller gets it), or None."""
        with self._lock:
            return self._drop(session_id)

    def expire(self, rules: Sequence[ExpiryRule], batch: int = BATCH) -> list[GenerationSession]:
        """Remove up to `batch` expired sessions, rule by rule, oldest first."""
        with self._lock:
            return self._expire(rules, batch)

    def purge(
        self, status: GenerationStatus | None, cutoff_us: int | None, batch: int = BATCH
    ) -> list[GenerationSession]:
        """Remove up to `batch` sessions in `status` (None: any) created before `cutoff_us`."""
        with self._lock:
            return self._drop_created_before(status, cutoff_us, batch)

    # ------------------------------------------------------------------ reads

    def figures(
        self,
        cutoffs_us: Sequence[int],
        stuck_status: GenerationStatus,
        stuck_cutoff_us: int,
    ) -> StoreFigures:
        """Every figure of a snapshot from the indexes, under one lock hold: O(log n)."""
        with self._lock:
            by_created = self._by_created
            return StoreFigures(
                total=len(self._sessions),
                by_status={s: len(index) for s, index in self._by_status_created.items()},
                created_before=[int(by_created.bisect_left((c,))) for c in cutoffs_us],
                stuck=int(self._by_status_updated[stuck_status].bisect_left((stuck_cutoff_us,))),
                oldest_created_us={
                    s: index[0][0] for s, index in self._by_status_created.items() if index
                },
                created_range_us=(by_created[0][0], by_created[-1][0]) if by_created else None,
                created_sum_us=self._created_sum,
            )

    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in creation order, starting just after `after`."""
        with self._lock:
            index = self._created_index(status)
            keys = index.irange(minimum=after, inclusive=(False, True)) if after else iter(index)
            return [self._sessions[sid] for _, sid in itertools.islice(keys, max(limit, 0))]

    def page_stuck(
        self,
        status: GenerationStatus,
        updated_before_us: int,
        after: Cursor | None,
        limit: int,
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in `status` last updated strictly before `updated_before_us`,
        oldest update first, just after `after`: a range of the last-update index."""
        with self._lock:
            keys = self._by_status_updated[status].irange(
                minimum=after, maximum=(updated_before_us,), inclusive=(False, False)
            )
            return [self._sessions[sid] for _, sid in itertools.islice(keys, max(limit, 0))]

    def get(self, session_id: str) -> GenerationSession | None:
        """The session as stored, or None."""
        return self._sessions.get(session_id)  # one dict read: atomic under the GIL

    def __len__(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------------ snapshots

    def export(self) -> tuple[list[GenerationSession], list[tuple[str, int, str, str]]]:
        """Every session and every Idempotency-Key (key, recorded at in Unix microseconds,
        fingerprint, session id), read in one step.

        Only references are copied under the lock (sessions are immutable): the caller
        serializes them outside it, so a snapshot never holds requests up for long.
        """
        with self._lock:
            sessions = list(self._sessions.values())
            keys = list(self._keys.items())
        return sessions, [(key, *record) for key, record in keys]

    def load(
        self,
        sessions: Sequence[GenerationSession],
        keys: Sequence[tuple[str, int, str, str]] = (),
    ) -> None:
        """Fill an empty store with `sessions` and Idempotency-Keys as export() gives them.

        Capacity and expiry are not applied here: the caller decides (the sessions are
        already validated models). ValueError if the store is not empty or an id repeats.
        """
        with self._lock:
            if self._sessions or self._keys:
                raise ValueError("load() needs an empty store")
            try:
                for session in sessions:
                    if session.session_id in self._sessions:
                        raise ValueError(f"session id repeated: {session.session_id}")
                    self._sessions[session.session_id] = session
                    self._index(
                        session, to_micros(session.created_at), to_micros(session.updated_at)
                    )
                for key, recorded_us, fingerprint, session_id in keys:
                    if key in self._keys:
                        raise ValueError(f"Idempotency-Key repeated: {key}")
                    self._keys[key] = (recorded_us, fingerprint, session_id)
                    self._keys_by_time.add((recorded_us, key))
            except ValueError:
                self._clear()
                self._keys.clear()
                self._keys_by_time.clear()
                raise

    def clear(self) -> int:
        """Remove every session; how many."""
        with self._lock:
            return self._clear()  # Idempotency-Keys stay: a repeat finds its session gone (SPENT)

    def close(self) -> None:
        """Nothing to let go of: the sessions are this process's own memory."""

    def _clear(self) -> int:
        held = len(self._sessions)
        self._sessions.clear()
        self._by_created.clear()
        for index in (*self._by_status_created.values(), *self._by_status_updated.values()):
            index.clear()
        self._created_sum = 0
        return held
