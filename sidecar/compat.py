"""The seed's lock-holding calls, kept for code written against the seed.

`SeedSessionManager` is a SessionManager whose changes all take one re-entrant lock of its own,
so `with_session_lock(id, operation)` can run a caller's code while no change made through this
manager happens, and `bulk_update_sessions(ids, callable)` can decide each update from the
session it sees. Events raised while the lock is held wait until its outermost hold ends, so a
callback never runs under it. The core needs none of this: each of its changes is one atomic
store operation. Changes made by another process on a shared store do not wait for this lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sidecar.core.changes import BulkUpdateResult
from sidecar.core.config import ManagerConfig
from sidecar.core.errors import SessionLockError, SessionManagerError, SessionNotFoundError
from sidecar.core.events import SessionEvent
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus, ScenePrompt

__all__ = ["SeedSessionManager"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class _Held:
    """Holds the manager's seed lock; events raised meanwhile go out after the outermost hold."""

    __slots__ = ("_manager", "_timeout")

    def __init__(self, manager: SeedSessionManager, timeout: float | None = None) -> None:
        self._manager = manager
        self._timeout = timeout

    def __enter__(self) -> None:
        manager, timeout = self._manager, self._timeout
        if not manager._seed_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SessionLockError(timeout or 0.0)
        manager._depth += 1
        manager._holder = threading.get_ident()

    def __exit__(self, *exc_info: object) -> None:
        manager = self._manager
        manager._depth -= 1
        events: list[SessionEvent] = []
        if manager._depth == 0:
            manager._holder = None
            events, manager._held_back = manager._held_back, []
        manager._seed_lock.release()
        if events:
            SessionManager._dispatch(manager, events)


class SeedSessionManager(SessionManager):
    """A SessionManager with the seed's `with_session_lock` and `bulk_update_sessions`."""

    def __init__(self, config: ManagerConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._seed_lock = threading.RLock()
        self._depth = 0  # nesting of the holding thread's holds
        self._holder: int | None = None
        self._held_back: list[SessionEvent] = []
        self._hold = _Held(self)  # stateless, so one instance serves every thread

    def _dispatch(self, events: list[SessionEvent]) -> None:
        if self._holder == threading.get_ident():
            self._held_back += events
        else:
            super()._dispatch(events)

    def with_session_lock(
        self,
        session_id: str,
        operation: Callable[[GenerationSession], T],
        timeout: float | None = None,
    ) -> T:
        """Run `operation(session)` while no change through this manager can happen.

        Raises SessionLockError if the lock is not had within `timeout` seconds.
        """
        with self._hold if timeout is None else _Held(self, timeout):
            session = self.peek_session(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            try:
                return operation(session)
            except Exception:
                logger.exception("operation under the lock failed for session %s", session_id)
                raise

    def bulk_update_sessions(
        self,
        session_ids: Sequence[str],
        operation: Callable[[GenerationSession], Mapping[str, Any] | None],
    ) -> BulkUpdateResult:
        """For each id, apply the updates `operation(session)` returns, under one lock hold.

        A refused update (bad value or transition, or an operation that raised) leaves that
        session unchanged and is listed in `conflicts`; the others still apply.
        """
        result = BulkUpdateResult([], [], [])
        with self._hold:
            for session_id in dict.fromkeys(session_ids):
                session = self.peek_session(session_id)
                if session is None:
                    result.missing.append(session_id)
                    continue
                try:
                    updates = operation(session)
                    if updates:
                        self.atomic_session_update(session_id, updates)
                    result.updated.append(session_id)
                except SessionManagerError:
                    result.conflicts.append(session_id)
                except Exception:
                    logger.exception("bulk operation failed for session %s", session_id)
                    result.conflicts.append(session_id)
        return result

    # Every change takes the lock, so none happens while an operation holds it.

    def create_session(
        self, request: GenerationRequest, idempotency_key: str | None = None
    ) -> GenerationSession:
        with self._hold:
            return super().create_session(request, idempotency_key)

    def get_session(self, session_id: str) -> GenerationSession | None:
        with self._hold:
            return super().get_session(session_id)

    def remove_session(self, session_id: str) -> bool:
        with self._hold:
            return super().remove_session(session_id)

    def cleanup_expired_sessions(self, max_age_seconds: float | None = None) -> int:
        with self._hold:
            return super().cleanup_expired_sessions(max_age_seconds)

    def cleanup_failed_sessions(self, max_age_seconds: float | None = None) -> int:
        with self._hold:
            return super().cleanup_failed_sessions(max_age_seconds)

    def cleanup_completed_sessions(self, max_age_seconds: float | None = None) -> int:
        with self._hold:
            return super().cleanup_completed_sessions(max_age_seconds)

    def force_cleanup_all(self) -> int:
        with self._hold:
            return super().force_cleanup_all()

    def reconfigure(self, **changes: Any) -> ManagerConfig:
        with self._hold:
            return super().reconfigure(**changes)

    def atomic_session_update(
        self, session_id: str, updates: Mapping[str, Any]
    ) -> GenerationSession:
        with self._hold:
            return super().atomic_session_update(session_id, updates)

    def update_session_status(
        self, session_id: str, status: GenerationStatus | str, error_message: str | None = None
    ) -> GenerationSession:
        with self._hold:
            return super().update_session_status(session_id, status, error_message)

    def add_scene_to_session(
        self, session_id: str, scene: ScenePrompt | Mapping[str, Any]
    ) -> tuple[GenerationSession, bool]:
        with self._hold:
            return super().add_scene_to_session(session_id, scene)

    def bulk_update_status(
        self,
        session_ids: Sequence[str],
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> BulkUpdateResult:
        with self._hold:
            return super().bulk_update_status(session_ids, status, error_message)

    def recover_corrupted_session(self, session_id: str) -> GenerationSession:
        with self._hold:
            return super().recover_corrupted_session(session_id)
