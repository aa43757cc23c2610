"""RemoteSessionManager: the seed's SessionManager calls, answered by a sidecar over HTTP.

Code written against the seed switches by changing one constructor:

    manager = SessionManager(max_sessions=100)                 # before
    manager = RemoteSessionManager("http://127.0.0.1:8000")    # after

The seed's conventions hold: create_session returns the new id, get_session returns None for an
unknown id, the update and remove calls return False for one. Changes the sidecar refuses raise
the core's exceptions (InvalidTransitionError, SessionValidationError, ...), as its in-process
manager does. Calls that run a Python callable under the manager's lock cannot cross the
network and raise NotRemotableError, naming the route that does the job instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from sidecar.client.errors import NotRemotableError, RemoteSessionNotFoundError
from sidecar.client.sync import DEFAULT_URL, SidecarClient
from sidecar.core.config import ManagerConfig
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ScenePrompt,
)
from sidecar.web.schemas import BulkStatusResult

__all__ = ["RemoteSessionManager"]

T = TypeVar("T")
_HOUR = 3600.0


def _hours(max_age_hours: float | None) -> float | None:
    return None if max_age_hours is None else max_age_hours * _HOUR


class RemoteSessionManager:
    """The seed's SessionManager API over a SidecarClient; a context manager closing it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        client: SidecarClient | None = None,
        page_size: int = 1000,
        **client_options: Any,
    ) -> None:
        self.client = client or SidecarClient(base_url, token, **client_options)
        self.page_size = page_size  # sessions per listing request

    def __enter__(self) -> RemoteSessionManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def shutdown(self, timeout: float = 30) -> bool:
        """Close the connection pool (the sidecar and its sessions live on); always True."""
        self.client.close()
        return True

    @staticmethod
    def _found(call: Callable[[], object]) -> bool:
        try:
            call()
        except RemoteSessionNotFoundError:
            return False
        return True

    # ------------------------------------------------------------------ sessions

    def create_session(self, request: GenerationRequest) -> str:
        """Create a pending session; its id."""
        return self.client.create_session(request).session_id

    def get_session(self, session_id: str) -> GenerationSession | None:
        """The session (last_accessed touched), or None if there is none with this id."""
        try:
            return self.client.get_session(session_id)
        except RemoteSessionNotFoundError:
            return None

    def update_session_status(
        self,
        session_id: str,
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> bool:
        """Move a session to `status`; False if there is no such session."""
        return self._found(lambda: self.client.put_status(session_id, status, error_message))

    def update_session_progress(
        self, session_id: str, current_step: int, total_steps: int, description: str = ""
    ) -> bool:
        """Record progress; False if there is no such session."""
        progress = {
            "current_step": current_step,
            "total_steps": total_steps,
            "description": description,
        }
        return self._found(lambda: self.client.put_progress(session_id, progress))

    def add_scene_to_session(self, session_id: str, scene: ScenePrompt | Mapping[str, Any]) -> bool:
        """Add or replace the scene with its number; False if there is no such session.

        True whether the scene was added or replaced: the answer cannot tell reliably, since a
        PUT retried after its answer was lost finds the scene its first try added.
        """
        return self._found(lambda: self.client.put_scene(session_id, scene))

    def set_session_scenes(
        self, session_id: str, scenes: Sequence[ScenePrompt | Mapping[str, Any]]
    ) -> bool:
        """Replace all scenes; False if there is no such session."""
        return self._found(lambda: self.client.put_scenes(session_id, scenes))

    def atomic_session_update(self, session_id: str, updates: Mapping[str, Any]) -> bool:
        """Apply status, error_message, progress and scenes together or not at all."""
        return self._found(lambda: self.client.patch_session(session_id, updates))

    def remove_session(self, session_id: str) -> bool:
        """Remove a session; False if there was none with this id."""
        return self._found(lambda: self.client.delete_session(session_id))

    def recover_corrupted_session(self, session_id: str) -> bool:
        """Force a session into failed with the recovery message; False if there is none."""
        return self._found(lambda: self.client.recover_session(session_id))

    # ------------------------------------------------------------------ reads

    def get_session_count(self) -> int:
        """How many sessions the sidecar holds."""
        return self.client.stats().total_sessions

    def _summaries(self, status: GenerationStatus | str | None = None) -> Iterator[Any]:
        return self.client.iter_sessions(status, self.page_size)

    def get_all_sessions_info(self) -> list[dict[str, Any]]:
        """The summary of every session, walking the listing's pages."""
        return [summary.model_dump(mode="json") for summary in self._summaries()]

    def get_sessions_by_status(self, status: GenerationStatus | str) -> list[GenerationSession]:
        """Every session in `status`, oldest first.

        The listing has summaries only, so each session is then read by id: one request per
        session, each touching its last_accessed. One removed meanwhile is left out.
        """
        sessions = []
        for summary in self._summaries(status):
            session = self.get_session(summary.session_id)
            if session is not None:
                sessions.append(session)
        return sessions

    def get_performance_stats(self) -> dict[str, Any]:
        """Counts, utilization, status breakdown and age distribution, as the seed's dict."""
        return self.client.stats().model_dump(mode="json")

    def get_health_status(self) -> dict[str, Any]:
        """Health by utilization, as the in-process manager's dict."""
        return self.client.health().model_dump(mode="json")

    # ------------------------------------------------------------------ cleanup and settings

    def cleanup_expired_sessions(self, max_age_hours: float | None = None) -> int:
        """Remove sessions past their age limit (the server's, or `max_age_hours`)."""
        return self.client.cleanup("expired", _hours(max_age_hours)).removed

    def cleanup_failed_sessions(self, max_age_hours: float | None = None) -> int:
        """Remove failed sessions: all of them, or those older than `max_age_hours`."""
        return self.client.cleanup("failed", _hours(max_age_hours)).removed

    def cleanup_completed_sessions(self, max_age_hours: float | None = None) -> int:
        """Remove completed sessions older than `max_age_hours` (default: the server's limit)."""
        return self.client.cleanup("completed", _hours(max_age_hours)).removed

    def force_cleanup_all(self) -> int:
        """Remove every session; how many were removed."""
        return self.client.cleanup("all").removed

    def reconfigure(
        self,
        max_sessions: int | None = None,
        cleanup_interval: float | None = None,
        **changes: Any,
    ) -> ManagerConfig:
        """Change live settings (the seed's two by name, or any ManagerConfig field)."""
        if max_sessions is not None:
            changes["max_sessions"] = max_sessions
        if cleanup_interval is not None:
            changes["cleanup_interval_seconds"] = float(cleanup_interval)
        return self.client.patch_config(**changes)

    def bulk_update_status(
        self,
        session_ids: Sequence[str],
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> BulkStatusResult:
        """Set one status on many sessions in one request."""
        return self.client.bulk_status(session_ids, status, error_message)

    # ------------------------------------------------------------------ not remotable

    def with_session_lock(self, session_id: str, operation: Callable[..., T]) -> NoReturn:
        """Not remotable: a callable cannot run under the sidecar's lock."""
        raise NotRemotableError(
            "with_session_lock", "atomic_session_update (PATCH /api/v1/sessions/{id})"
        )

    def bulk_update_sessions(
        self, session_ids: Sequence[str], operation: Callable[..., Any]
    ) -> NoReturn:
        """Not remotable: a callable cannot run under the sidecar's lock."""
        raise NotRemotableError(
            "bulk_update_sessions", "bulk_update_status (POST /api/v1/sessions/bulk/status)"
        )

    def register_session_callback(self, event_type: str, callback: Callable[..., Any]) -> NoReturn:
        """Not remotable: events happen in the sidecar's process."""
        raise NotRemotableError(
            "register_session_callback",
            "the sidecar's metrics (sidecar_session_transitions_total) or get_session polling",
        )
