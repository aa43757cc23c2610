"""What the app works with, kept in `app.extensions["sidecar"]`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from sidecar.core.manager import SessionManager
from sidecar.durability import SnapshotKeeper
from sidecar.live import SettingsSync
from sidecar.metrics import SidecarMetrics
from sidecar.settings import Settings
from sidecar.store.errors import StoreUnavailableError
from sidecar.web.auth import TokenGuard

__all__ = ["EXTENSION", "Sidecar", "get_sidecar"]

EXTENSION = "sidecar"


@dataclass(eq=False)
class Sidecar:
    """What the app works with: settings, the session manager, metrics, the token guard."""

    settings: Settings
    manager: SessionManager
    metrics: SidecarMetrics
    guard: TokenGuard
    owns_manager: bool
    draining: bool = False
    # Live settings shared with the other replicas of a Redis store; None in memory mode.
    settings_sync: SettingsSync | None = None
    # The memory store's snapshot (SIDECAR_SNAPSHOT_PATH); None without one.
    snapshots: SnapshotKeeper | None = None

    @property
    def accepting(self) -> bool:
        """True while API requests are served (not draining, manager not shut down)."""
        return not self.draining and not self.manager.closed

    def readiness(self) -> dict[str, bool]:
        """Each readiness condition; ready when all hold."""
        return {
            "accepting": not self.draining,
            "manager_open": not self.manager.closed,
            "cleanup_worker_alive": self.manager.worker_alive,
            "store": self.store_answers(),
        }

    def store_answers(self) -> bool:
        """True when the store answers a count (one O(1) round trip to Redis)."""
        try:
            len(self.manager.store)
        except StoreUnavailableError:
            return False
        return True

    def begin_drain(self) -> None:
        """From now on /readyz and the API answer 503."""
        self.draining = True

    def close(self) -> None:
        """Drain, and shut the manager down if the app created it (writing the snapshot, if
        there is one, after the cleanup worker stopped and before the sessions are dropped),
        then close its store's connections."""
        self.begin_drain()
        if self.owns_manager:
            keeper = self.snapshots
            self.manager.shutdown(keep=None if keeper is None else keeper.write_at_shutdown)
            self.manager.store.close()


def get_sidecar(app: Flask) -> Sidecar:
    """The Sidecar of an app made by create_app."""
    sidecar: Sidecar = app.extensions[EXTENSION]
    return sidecar
