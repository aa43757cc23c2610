"""Shared fixtures: an injected clock and a manager that never starts threads unless asked."""

from __future__ import annotations

import os
import shutil
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
