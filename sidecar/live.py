"""Live settings shared by the replicas of one store.

A PATCH of /api/v1/admin/config through any replica is saved in the shared store and is in
force on every replica from its next request: before each API request, scrape and cleanup
run, a replica compares the store's settings version with the one it applied (one O(1) read)
and applies the saved values when it moved. Saved values are laid over each replica's own
start-up settings; settings no PATCH changed stay as each replica was started.
In memory mode there is nothing to share and none of this runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from sidecar.core.checks import new_config
from sidecar.core.config import ManagerConfig
from sidecar.core.errors import SessionValidationError
from sidecar.core.manager import SessionManager
from sidecar.store.errors import StoreUnavailableError

__all__ = ["SettingsSync", "SharedSettings"]

logger = logging.getLogger(__name__)


class SharedSettings(Protocol):
    """Where replicas keep the settings a PATCH changed (sidecar.store.redis.config)."""

    def version(self) -> int: ...
    def load(self) -> tuple[int, dict[str, Any]]: ...
    def save(self, changes: Mapping[str, Any]) -> int: ...


class SettingsSync:
    """Keeps one manager's live settings in step with the shared ones."""

    def __init__(self, manager: SessionManager, shared: SharedSettings) -> None:
        self._manager = manager
        self._shared = shared
        self._applied = -1  # nothing read yet: the first refresh loads
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Apply the shared settings if they changed since the last call.

        Never raises for an unreachable store: the caller's own store call answers for that
        (503), and a scrape or cleanup run goes on with the settings it has.
        """
        try:
            if self._shared.version() == self._applied:
                return
            with self._lock:
                version, values = self._shared.load()
                if version == self._applied:
                    return
                try:
                    if values:
                        self._manager.reconfigure(**values)
                except SessionValidationError as exc:
                    # Two PATCHes through different replicas can combine into values that do
                    # not hold together (warning above critical), and a newer version may
                    # have saved a setting this one does not know: keep what is in force and
                    # say so, once for this version (not on every request until the next).
                    logger.warning("shared settings version %d not applied: %s", version, exc)
                self._applied = version
        except StoreUnavailableError:
            return

    def patch(self, changes: Mapping[str, Any]) -> ManagerConfig:
        """Validate `changes`, save them for every replica, apply them here; the new settings.

        SessionValidationError (nothing saved) or StoreUnavailableError (nothing changed).
        """
        self.refresh()
        checked = new_config(changes, base=self._manager.config).as_dict()
        self._shared.save({name: checked[name] for name in changes})
        return self._manager.reconfigure(**changes)
