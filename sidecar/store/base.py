"""The storage seam: the operations that carry a rule, each one atomic step in the store.

A store receives every rule as plain data (statuses, integer microseconds, tuples) from
`sidecar.core.rules`, so two stores cannot disagree about one. The memory store runs each
operation under its own lock; a shared store runs each as one script on the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from sidecar.core.config import CapacityPolicy
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus, ScenePrompt
from sidecar.core.rules import ExpiryRule

__all__ = [
    "BATCH",
    "KEEP",
    "Change",
    "CreateOutcome",
    "Cursor",
    "ExpiryRule",
    "IdempotencyKey",
    "KeyOutcome",
    "SessionStore",
    "StaleScenesError",
    "StoreFigures",
]

# A position in creation order, (created_at in Unix microseconds, session_id); in the stuck
# listing, a position in last-update order, (updated_at, session_id).
Cursor = tuple[int, str]
BATCH = 1000  # sessions one expire or purge call removes at most: no call holds a store long


class _Keep:
    """The marker for a field a change leaves as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


class StaleScenesError(Exception):
    """The scenes changed between the caller's read and its write: read again and retry."""


class Change(NamedTuple):
    """One update of a session, with the rules that decide whether it may happen.

    `status` may be entered only from `leave_from`; `status` equal to the one in force is no
    transition. A message equal to the stored one is no change (a retry sends it again);
    progress, scenes and the error message may change only while the status is in
    `work_statuses` (the refusal names the first of them that would change). With
    `updated_before_us` the change applies only to a session last updated strictly before then
    (recovery). With `expect_scenes` the write happens only if the stored scenes are still
    those (compare-and-set for a read-modify-write of the scenes; else StaleScenesError).
    Fields left at KEEP are not touched. All or nothing; a change that would change nothing
    returns the stored session untouched.

    Change and CreateOutcome are NamedTuples, not frozen dataclasses: one of them is built on
    every update and create, and a frozen dataclass's __init__ (one object.__setattr__ per
    field) cost 1.0 us for a Change against 0.5 (timeit, 2026-12-03).
    """

    status: GenerationStatus | None = None
    leave_from: tuple[GenerationStatus, ...] = ()
    work_statuses: tuple[GenerationStatus, ...] = ()
    updated_before_us: int | None = None
    expect_scenes: tuple[ScenePrompt, ...] | None = None
    progress: object = KEEP
    scenes: object = KEEP
    error_message: object = KEEP


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A create's Idempotency-Key, the fingerprint of its request, and how long and how many
    keys the store remembers (the rule data comes from `sidecar.core.idempotency`).

    A key recorded strictly before `forget_before_us` is forgotten; past `max_keys` keys the
    oldest are forgotten first (at most a batch per call).
    """

    key: str
    fingerprint: str
    forget_before_us: int
    max_keys: int


class KeyOutcome(StrEnum):
    """What a create with an Idempotency-Key found."""

    NEW = "new"  # the key was not remembered: recorded with the new session (unless rejected)
    REPLAYED = "replayed"  # same key, same request: the session it created, nothing new
    REUSED = "reused"  # same key, another request: nothing created
    SPENT = "spent"  # same key, same request, but its session has since been removed


class CreateOutcome(NamedTuple):
    """What a create did: the new session (None when rejected) and whom it removed first.

    With an Idempotency-Key, `key` says what the store found; on a replay `session` is the
    session the key created (as stored now), and `original_id` names it on every outcome but
    NEW.
    """

    session: GenerationSession | None
    expired: list[GenerationSession]
    evicted: list[GenerationSession]
    key: KeyOutcome | None = None
    original_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """The store's figures at one instant, read in one step."""

    total: int
    by_status: dict[GenerationStatus, int]
    created_before: list[int]  # per cutoff asked for, in order
    stuck: int
    oldest_created_us: dict[GenerationStatus, int]
    created_range_us: tuple[int, int] | None
    created_sum_us: int


class SessionStore(Protocol):
    """Sessions and the ordered indexes their figures are read from; every call is atomic.

    `shared` is True for a store other processes use too (Redis): this process must not empty
    it when it stops.
    """

    shared: bool

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
        """Insert a pending session; when full, expire first (up to `batch`), then evict the
        oldest of the first group of `eviction_order` that holds one, or reject.

        With `idempotency`, the key is looked up first, in the same atomic step: a remembered
        key creates nothing (REPLAYED, REUSED or SPENT); a new one is recorded with the session
        it creates, and not at all when the create is rejected.
        """
        ...

    def update(
        self, session_id: str, now_us: int, change: Change
    ) -> tuple[GenerationStatus, GenerationSession]:
        """Apply `change` if the rules in it allow all of it; (previous status, new session).

        Raises SessionNotFoundError, InvalidTransitionError (requested: the status, or
        "progress"/"scenes") or StaleScenesError, and then changes nothing.
        """
        ...

    def touch(self, session_id: str, now_us: int) -> GenerationSession | None:
        """The session with its last access set to `now_us`, or None."""
        ...

    def remove(self, session_id: str) -> GenerationSession | None:
        """Remove one session; what was removed (only this caller gets it), or None."""
        ...

    def expire(self, rules: Sequence[ExpiryRule], batch: int = BATCH) -> list[GenerationSession]:
        """Remove up to `batch` sessions that one of `rules` says have expired, rule by rule."""
        ...

    def purge(
        self, status: GenerationStatus | None, cutoff_us: int | None, batch: int = BATCH
    ) -> list[GenerationSession]:
        """Remove up to `batch` sessions in `status` (None: any) created before `cutoff_us`
        (None: any age), oldest first."""
        ...

    def figures(
        self,
        cutoffs_us: Sequence[int],
        stuck_status: GenerationStatus,
        stuck_cutoff_us: int,
    ) -> StoreFigures:
        """Counts per status, created-before counts per cutoff, how many in `stuck_status` were
        last updated before `stuck_cutoff_us`, oldest per status, creation range and sum: one
        consistent read, O(log n)."""
        ...

    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in creation order, starting just after `after`."""
        ...

    def page_stuck(
        self,
        status: GenerationStatus,
        updated_before_us: int,
        after: Cursor | None,
        limit: int,
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in `status` last updated strictly before `updated_before_us`,
        oldest update first, starting just after `after` (updated_us, id): O(log n + limit)."""
        ...

    def get(self, session_id: str) -> GenerationSession | None:
        """The session as stored (last access untouched), or None."""
        ...

    def __len__(self) -> int: ...

    def clear(self) -> int:
        """Remove every session; how many."""
        ...

    def close(self) -> None:
        """Let go of what the store holds open (a client's connections); the sessions stay.
        A call after it may open them again."""
        ...
