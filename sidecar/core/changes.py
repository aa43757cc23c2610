"""Changes to a session: each one store update carrying the state machine's rules as data."""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.core.checks import (
    check_scene,
    check_scene_fits,
    check_scenes_fit,
    check_updates,
)
from sidecar.core.clock import to_micros
from sidecar.core.errors import (
    InvalidTransitionError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.events import EventType, SessionEvent
from sidecar.core.models import GenerationSession, GenerationStatus, ScenePrompt
from sidecar.core.rules import (
    RECOVER,
    RECOVERABLE_STATUSES,
    RECOVERED_MESSAGE,
    WORK_STATUSES,
    recovery_cutoff,
    sources_of,
)
from sidecar.core.state import ManagerState
from sidecar.store import (
    KEEP,
    Change,
    StaleScenesError,
)

__all__ = ["BulkUpdateResult", "Changes"]

logger = logging.getLogger("sidecar.core.manager")
_S = GenerationStatus


@dataclasses.dataclass(frozen=True, slots=True)
class BulkUpdateResult:
    """Outcome of a bulk update: which ids changed, which do not exist, which were refused."""

    updated: list[str]
    missing: list[str]
    conflicts: list[str]


def _refuse_by_state(
    session: GenerationSession, status: GenerationStatus | None, work: str
) -> None:
    """Raise InvalidTransitionError if the session's state (as read) refuses the change: a
    change both invalid and refused is reported as refused, as the store would."""
    if (
        status is not None
        and status is not session.status
        and session.status not in sources_of(status)
    ):
        raise InvalidTransitionError(session.session_id, session.status, status)
    if session.status not in WORK_STATUSES:
        raise InvalidTransitionError(session.session_id, session.status, work)


class Changes(ManagerState):
    """Status, progress, scenes and message changes; recovery."""

    def _update(
        self, session_id: str, change: Change, kind: EventType | None = None
    ) -> GenerationSession:
        """One store update; counts a transition and fires the events of what changed."""
        previous, new = self._store.update(session_id, to_micros(self._now()), change)
        events: list[SessionEvent] = []
        if new.status is not previous:
            self._counters.count_transition((previous, new.status))
            self._emit(events, EventType.STATUS_CHANGED, new, previous_status=previous)
        if kind is not None:
            self._emit(events, kind, new)
        else:
            if change.progress is not KEEP:
                self._emit(events, EventType.PROGRESS, new)
            if change.scenes is not KEEP:
                self._emit(events, EventType.SCENES_REPLACED, new)
        self._dispatch(events)
        return new

    def _apply(self, session_id: str, checked: Mapping[str, Any]) -> GenerationSession:
        """Apply updates that passed check_updates, if the session's state allows all of them."""
        fields: dict[str, Any] = {}
        status = checked.get("status")
        if "scenes" in checked:
            # The request (num_scenes) never changes, so reading it first is safe.
            session = self._store.get(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            try:
                fields["scenes"] = check_scenes_fit(
                    checked["scenes"], session.request_data.num_scenes
                )
            except SessionValidationError:
                _refuse_by_state(session, status, "progress" if "progress" in checked else "scenes")
                raise
        for name in ("progress", "error_message"):
            if name in checked:
                fields[name] = checked[name]
        change = Change(
            status=status,
            leave_from=() if status is None else sources_of(status),
            work_statuses=WORK_STATUSES,
            **fields,
        )
        return self._update(session_id, change)

    def atomic_session_update(
        self, session_id: str, updates: Mapping[str, Any]
    ) -> GenerationSession:
        """Apply several of status, error_message, progress, scenes together: all or none."""
        return self._apply(session_id, check_updates(updates))

    def update_session_status(
        self,
        session_id: str,
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> GenerationSession:
        """Move a session along the state machine. The status already in force is no transition:
        only a new message is applied, and a finished session refuses one (409)."""
        updates: dict[str, Any] = {"status": status}
        if error_message is not None:
            updates["error_message"] = error_message
        return self._apply(session_id, check_updates(updates))

    def update_session_progress(
        self, session_id: str, current_step: int, total_steps: int, description: str = ""
    ) -> GenerationSession:
        """Record progress of a pending or processing session."""
        progress = {
            "current_step": current_step,
            "total_steps": total_steps,
            "description": description,
        }
        return self.atomic_session_update(session_id, {"progress": progress})

    def set_session_scenes(
        self, session_id: str, scenes: Sequence[ScenePrompt | Mapping[str, Any]]
    ) -> GenerationSession:
        """Replace all scenes (numbers unique, 1 to num_scenes); kept ordered by number."""
        return self.atomic_session_update(session_id, {"scenes": list(scenes)})

    def add_scene_to_session(
        self, session_id: str, scene: ScenePrompt | Mapping[str, Any]
    ) -> tuple[GenerationSession, bool]:
        """Insert or replace the scene with this number; returns (session, True if added)."""
        scene = check_scene(scene)
        while True:  # compare-and-set: another writer may change the scenes meanwhile
            session = self._store.get(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            if session.status not in WORK_STATUSES:
                raise InvalidTransitionError(session_id, session.status, "scenes")
            check_scene_fits(scene, session.request_data.num_scenes)
            scenes = list(session.scenes)
            numbers = [s.scene_number for s in scenes]
            at = bisect.bisect_left(numbers, scene.scene_number)
            added = at == len(numbers) or numbers[at] != scene.scene_number
            scenes[at : at + (not added)] = [scene]
            change = Change(
                work_statuses=WORK_STATUSES, expect_scenes=session.scenes, scenes=tuple(scenes)
            )
            try:
                return self._update(session_id, change, EventType.SCENE_ADDED), added
            except StaleScenesError:
                continue

    def bulk_update_status(
        self,
        session_ids: Sequence[str],
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> BulkUpdateResult:
        """Set one status (and message) on many sessions; each one on its own, all or none."""
        updates: dict[str, Any] = {"status": status}
        if error_message is not None:
            updates["error_message"] = error_message
        checked = check_updates(updates)  # once for all sessions
        result = BulkUpdateResult([], [], [])
        for session_id in dict.fromkeys(session_ids):
            try:
                self._apply(session_id, checked)
            except SessionNotFoundError:
                result.missing.append(session_id)
            except SessionManagerError:
                result.conflicts.append(session_id)
            else:
                result.updated.append(session_id)
        return result

    def recover_corrupted_session(self, session_id: str) -> GenerationSession:
        """Force a pending or processing session not updated for longer than the stuck
        threshold into failed with the seed's message; any other session: 409 (RECOVER_RULE)."""
        now_us = to_micros(self._now())
        change = Change(
            status=_S.FAILED,
            leave_from=RECOVERABLE_STATUSES,
            work_statuses=RECOVERABLE_STATUSES,
            updated_before_us=recovery_cutoff(now_us, self._config.stuck_after_seconds),
            error_message=RECOVERED_MESSAGE,
        )
        try:
            previous, new = self._store.update(session_id, now_us, change)
        except InvalidTransitionError as refused:
            raise InvalidTransitionError(session_id, refused.current, RECOVER) from None
        if previous not in RECOVERABLE_STATUSES:  # failed already, with this message: no change
            raise InvalidTransitionError(session_id, previous, RECOVER)
        events: list[SessionEvent] = []
        self._counters.count_transition((previous, _S.FAILED))
        self._emit(events, EventType.STATUS_CHANGED, new, previous_status=previous)
        self._dispatch(events)
        logger.info("recovered session %s (was %s)", session_id, previous.value)
        return new
