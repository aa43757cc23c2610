"""session sidecar: generation sessions as a JSON API and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidecar.core.clock import Clock, ManualClock, SystemClock
from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.errors import (
    InvalidTransitionError,
    SessionCapacityError,
    SessionLockError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.manager import SessionManager
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    MediaType,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.version import __version__

if TYPE_CHECKING:
    from sidecar.web.app import create_app


__all__ = [
    "CapacityPolicy",
    "Clock",
    "GenerationRequest",
    "GenerationSession",
    "GenerationStatus",
    "InvalidTransitionError",
    "ManagerConfig",
    "ManualClock",
    "MediaType",
    "ProgressUpdate",
    "ScenePrompt",
    "SessionCapacityError",
    "SessionLockError",
    "SessionManager",
    "SessionManagerError",
    "SessionNotFoundError",
    "SessionValidationError",
    "SystemClock",
    "__version__",
    "create_app",
]


def __getattr__(name: str) -> Any:
    # The web layer is imported on first use, so the core stays importable without Flask.
    if name == "create_app":
        from sidecar.web.app import create_app

        return create_app
    raise AttributeError(f"module 'sidecar' has no attribute {name!r}")
