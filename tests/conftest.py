"""Shared fixtures: an injected clock and a manager that never starts threads unless asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.clock import ManualClock
from sidecar.config import ManagerConfig
from sidecar.manager import SessionManager
from sidecar.models import GenerationRequest


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
