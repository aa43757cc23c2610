"""session sidecar: generation sessions as a JSON API and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidecar.clock import Clock, ManualClock, SystemClock
from sidecar.config import CapacityPolicy, ManagerConfig
from sidecar.errors import (
    InvalidTransitionError,
    SessionCapacityError,
    SessionLockError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.manager import SessionManager
from sidecar.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    MediaType,
    ProgressUpdate,
    ScenePrompt,
)

if TYPE_CHECKING:
    from sidecar.app import create_app

__version__ = "0.1.0"

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
        from sidecar.app import create_app

        return create_app
    raise AttributeError(f"module 'sidecar' has no attribute {name!r}")
