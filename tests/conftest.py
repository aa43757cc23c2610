"""Shared fixtures: an injected clock and a manager that never starts threads unless asked."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sidecar.clock import ManualClock
from sidecar.config import ManagerConfig
from sidecar.manager import SessionManager
from sidecar.models import GenerationRequest, GenerationSession, GenerationStatus
from sidecar.store import InMemorySessionStore, SessionStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def manager(clock: ManualClock) -> Iterator[SessionManager]:
    mgr = SessionManager(ManagerConfig(max_sessions=10), clock=clock)
    yield mgr
    mgr.shutdown()


@pytest.fixture
def request_data() -> GenerationRequest:
    return GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)


MakeManager = Callable[..., SessionManager]


@pytest.fixture
def make_manager(clock: ManualClock) -> Iterator[MakeManager]:
    """make_manager(store=None, **config): managers on the shared clock, shut down after."""
    made: list[SessionManager] = []

    def make(*, store: SessionStore | None = None, **config: Any) -> SessionManager:
        mgr = SessionManager(ManagerConfig(**config), clock=clock, store=store)
        made.append(mgr)
        return mgr

    yield make
    for mgr in made:
        mgr.shutdown()


# The state machine's shortest path from pending to each status.
STATUS_PATHS: dict[GenerationStatus, tuple[GenerationStatus, ...]] = {
    GenerationStatus.PENDING: (),
    GenerationStatus.PROCESSING: (GenerationStatus.PROCESSING,),
    GenerationStatus.COMPLETED: (GenerationStatus.PROCESSING, GenerationStatus.COMPLETED),
    GenerationStatus.FAILED: (GenerationStatus.FAILED,),
}
MakeSession = Callable[..., GenerationSession]


@pytest.fixture
def make_session(request_data: GenerationRequest) -> MakeSession:
    """make_session(manager, status="pending", request=None): a new session driven to `status`."""

    def make(
        mgr: SessionManager,
        status: GenerationStatus | str = GenerationStatus.PENDING,
        request: GenerationRequest | None = None,
    ) -> GenerationSession:
        session = mgr.create_session(request or request_data)
        for step in STATUS_PATHS[GenerationStatus(status)]:
            session = mgr.update_session_status(session.session_id, step)
        return session

    return make


WaitUntil = Callable[..., bool]


@pytest.fixture
def wait_until() -> WaitUntil:
    """wait_until(predicate, timeout=5.0): poll until true or the deadline passes."""

    def wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        idle = threading.Event()  # never set: wait() is just a bounded pause between polls
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            idle.wait(0.002)
        return True

    return wait


class NoScanStore(InMemorySessionStore):
    """An in-memory store that fails any walk over its sessions while `scans_allowed` is False.

    Proves figures, expiry and eviction read the indexes instead of iterating every session.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scans_allowed = True

    def values(self, status: GenerationStatus | None = None) -> Iterator[GenerationSession]:
        if not self.scans_allowed:
            raise AssertionError(f"full scan of the store (status={status})")
        return super().values(status)

    def __iter__(self) -> Iterator[GenerationSession]:
        raise AssertionError("iteration over the store")


@pytest.fixture
def no_scan_store() -> NoScanStore:
    return NoScanStore()


def require_binary(name: str) -> str:
    """Path of an external tool; under CI (CI=true) a missing one fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: prometheus); .ci/run installs it"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def promtool() -> str:
    return require_binary("promtool")
