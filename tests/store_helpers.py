"""Helpers the store tests share: a create at a clock's time, a walk along the state machine."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import CapacityPolicy
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus
from sidecar.core.rules import EVICTION_ORDER, WORK_STATUSES, ExpiryRule, sources_of
from sidecar.store import Change, CreateOutcome, IdempotencyKey, SessionStore


def attempt(
    store: SessionStore,
    now: datetime,
    request: GenerationRequest,
    *,
    capacity: int = 100,
    policy: CapacityPolicy = CapacityPolicy.EVICT_OLDEST,
    expiry: tuple[ExpiryRule, ...] = (),
    session_id: str | None = None,
    batch: int = 1000,
    idempotency: IdempotencyKey | None = None,
) -> CreateOutcome:
    """One create at `now` with the core's eviction order."""
    return store.create(
        session_id or str(uuid.uuid4()),
        request,
        to_micros(now),
        capacity=capacity,
        policy=policy,
        eviction_order=EVICTION_ORDER,
        expiry=expiry,
        batch=batch,
        idempotency=idempotency,
    )


def create(
    store: SessionStore, clock: ManualClock, request: GenerationRequest, **kwargs: Any
) -> GenerationSession:
    outcome = attempt(store, clock.now(), request, **kwargs)
    assert outcome.session is not None
    return outcome.session


def to(status: GenerationStatus, **fields: Any) -> Change:
    """A transition to `status` with the core's rules."""
    return Change(
        status=status, leave_from=sources_of(status), work_statuses=WORK_STATUSES, **fields
    )


def move(store: SessionStore, clock: ManualClock, sid: str, *path: GenerationStatus) -> None:
    for status in path:
        store.update(sid, to_micros(clock.now()), to(status))
