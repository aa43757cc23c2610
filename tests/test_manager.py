"""SessionManager: every operation of the seed, the state machine, atomic and bulk updates,
callbacks, locking, configuration and lifecycle.

Capacity, expiry and cleanup are in test_manager_cleanup.py; the figures (stats, health,
age buckets, stuck) in test_manager_figures.py.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
from conftest import HOUR, MICRO, C, F, P, R, poll, started

import sidecar
import sidecar.core.manager
from sidecar.core.clock import ManualClock
from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.errors import (
    InvalidTransitionError,
    SessionCapacityError,
    SessionLockError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.manager import (
    ALLOWED_TRANSITIONS,
    KNOWN_TRANSITIONS,
    RECOVERED_MESSAGE,
    EventType,
    RemovalReason,
    SessionEvent,
    SessionManager,
)
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.worker import CleanupWorker, start_worker

if TYPE_CHECKING:
    from conftest import MakeManager, MakeSession

ALL_PAIRS = [(a, b) for a in GenerationStatus for b in GenerationStatus if a is not b]
VALID_PAIRS = [(P, R), (P, F), (R, C), (R, F)]
INVALID_PAIRS = [pair for pair in ALL_PAIRS if pair not in VALID_PAIRS]


def scene(n: int, prompt: str | None = None) -> ScenePrompt:
    return ScenePrompt(scene_number=n, prompt=prompt or f"scene {n}")


class Recorder:
    """Collects every event of the given types (thread-safe)."""

    def __init__(self, manager: SessionManager, *types: EventType) -> None:
        self.events: list[SessionEvent] = []
        self._lock = threading.Lock()
        for kind in types or tuple(EventType):
            manager.register_session_callback(kind.value, self)

    def __call__(self, event: SessionEvent) -> None:
        with self._lock:
            self.events.append(event)

    def kinds(self) -> list[tuple[EventType, RemovalReason | None]]:
        return [(e.type, e.reason) for e in self.events]


# ----------------------------------------------------------------------- exceptions


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (SessionNotFoundError, (SessionManagerError, LookupError)),
        (SessionCapacityError, (SessionManagerError,)),
        (SessionLockError, (SessionManagerError,)),
        (InvalidTransitionError, (SessionManagerError,)),
        (SessionValidationError, (SessionManagerError, ValueError)),
        (SessionManagerError, (Exception,)),
    ],
)
def test_exception_tree(error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    assert all(issubclass(error, base) for base in bases)


def test_exceptions_carry_what_a_caller_needs() -> None:
    assert SessionNotFoundError("abc").session_id == "abc"
    assert SessionCapacityError(7).max_sessions == 7
    assert SessionLockError(0.5).timeout == 0.5
    err = InvalidTransitionError("abc", "completed", "pending")
    assert (err.session_id, err.current, err.requested) == ("abc", "completed", "pending")
    errors = [{"loc": ["progress", "total_steps"], "msg": "too small", "type": "x"}]
    validation = SessionValidationError(errors)
    assert validation.errors == errors
    assert str(validation) == "progress.total_steps: too small"


# ----------------------------------------------------------------------- create and read


def test_create_session_stores_a_pending_session(
    manager: SessionManager, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = manager.create_session(request_data)
    assert session.status is P
    assert session.request_data == request_data
    assert session.created_at == session.last_accessed == session.updated_at == clock.now()
    assert session.scenes == ()
    assert session.progress is None
    assert session.error_message is None
    assert manager.get_session_count() == 1
    assert manager.peek_session(session.session_id) == session
    assert manager.snapshot().created_total == 1


def test_session_id_is_a_uuid4_string(
    manager: SessionManager, request_data: GenerationRequest
) -> None:
    ids = {manager.create_session(request_data).session_id for _ in range(5)}
    assert len(ids) == 5
    for sid in ids:
        parsed = uuid.UUID(sid)
        assert parsed.version == 4
        assert str(parsed) == sid


def test_session_timestamps_are_aware_utc(
    manager: SessionManager, request_data: GenerationRequest
) -> None:
    session = manager.create_session(request_data)
    for moment in (session.created_at, session.last_accessed, session.updated_at):
        assert moment.tzinfo is not None
        assert moment.utcoffset() == timedelta(0)


def test_create_session_accepts_a_mapping(manager: SessionManager) -> None:
    session = manager.create_session({"story_text": "A crow.", "num_scenes": 2})  # type: ignore[arg-type]
    assert session.request_data == GenerationRequest(story_text="A crow.", num_scenes=2)


@pytest.mark.parametrize(
    "bad",
    [{"story_text": ""}, {"story_text": "x", "num_scenes": 0}, {"story_text": "x", "y": 1}],
)
def test_create_session_rejects_a_bad_mapping(manager: SessionManager, bad: dict[str, Any]) -> None:
    with pytest.raises(SessionValidationError) as info:
        manager.create_session(bad)  # type: ignore[arg-type]
    assert info.value.errors[0]["loc"][0] == "request"
    assert manager.get_session_count() == 0


def test_get_session_touches_last_accessed_only(
    manager: SessionManager, clock: ManualClock, request_data: GenerationRequest
) -> None:
    created = manager.create_session(request_data)
    clock.advance(90)
    seen = manager.get_session(created.session_id)
    assert seen is not None
    assert seen.last_accessed == clock.now()
    assert seen.updated_at == created.updated_at
    assert seen.created_at == created.created_at
    assert manager.peek_session(created.session_id) == seen


def test_get_session_of_unknown_id_is_none(manager: SessionManager) -> None:
    assert manager.get_session("no-such-id") is None
    assert manager.peek_session("no-such-id") is None


def test_peek_session_does_not_touch(
    manager: SessionManager, clock: ManualClock, request_data: GenerationRequest
) -> None:
    created = manager.create_session(request_data)
    clock.advance(90)
    assert manager.peek_session(created.session_id) == created


def test_get_session_count_follows_creates_and_removes(
    manager: SessionManager, request_data: GenerationRequest
) -> None:
    assert manager.get_session_count() == 0
    ids = [manager.create_session(request_data).session_id for _ in range(3)]
    assert manager.get_session_count() == 3
    manager.remove_session(ids[1])
    assert manager.get_session_count() == 2


def test_get_all_sessions_info_has_the_seed_fields(
    manager: SessionManager, clock: ManualClock, request_data: GenerationRequest
) -> None:
    first = manager.create_session(request_data)
    clock.advance(hours=3)
    second = manager.create_session(request_data)
    manager.update_session_progress(second.session_id, 1, 2, "half")
    manager.add_scene_to_session(second.session_id, scene(1))
    info = manager.get_all_sessions_info()
    assert [i["session_id"] for i in info] == [first.session_id, second.session_id]
    assert info[0] == {
        "session_id": first.session_id,
        "status": "pending",
        "created_at": "2026-01-01T00:00:00Z",
        "last_accessed": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "age_hours": 3.0,
        "scenes_stored": 0,
        "scenes_requested": 3,
        "progress": None,
    }
    assert info[1]["age_hours"] == 0.0
    assert info[1]["scenes_stored"] == 1
    assert info[1]["progress"] == {
        "current_step": 1,
        "total_steps": 2,
        "description": "half",
        "percentage": 50.0,
    }


def test_list_sessions_pages_in_creation_order(
    manager: SessionManager, clock: ManualClock, request_data: GenerationRequest
) -> None:
    ids = []
    for _ in range(5):
        ids.append(manager.create_session(request_data).session_id)
        clock.advance(1)
    page, cursor = manager.list_sessions(limit=3)
    assert [s.session_id for s in page] == ids[:3]
    assert cursor is not None
    rest, end = manager.list_sessions(after=cursor, limit=3)
    assert [s.session_id for s in rest] == ids[3:]
    assert end is None


@pytest.mark.parametrize("limit", [0, -1])
def test_list_sessions_rejects_a_limit_below_1(
    manager: SessionManager, request_data: GenerationRequest, limit: int
) -> None:
    manager.create_session(request_data)
    with pytest.raises(SessionValidationError) as info:
        manager.list_sessions(limit=limit)
    assert info.value.errors[0]["loc"] == ["limit"]


# ----------------------------------------------------------------------- get_sessions_by_status


def test_get_sessions_by_status_returns_only_that_status_oldest_first(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    made = []
    for status in [R, P, R, F, R]:
        made.append(make_session(manager, status))
        clock.advance(1)
    found = manager.get_sessions_by_status("processing")
    assert [s.session_id for s in found] == [made[i].session_id for i in (0, 2, 4)]
    assert all(s.status is R for s in found)
    assert manager.get_sessions_by_status(C) == []


def test_get_sessions_by_status_hands_out_immutable_sessions(
    manager: SessionManager, make_session: MakeSession
) -> None:
    make_session(manager, R)
    (session,) = manager.get_sessions_by_status(R)
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.status = C  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.error_message = "boom"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        session.scenes.append(scene(1))  # type: ignore[attr-defined]
    assert manager.peek_session(session.session_id) == session


def test_get_sessions_by_status_result_does_not_see_later_changes(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    sid = make_session(manager, R).session_id
    before = manager.get_sessions_by_status(R)
    snapshot_of_before = [dataclasses.asdict(s) for s in before]
    clock.advance(5)
    manager.add_scene_to_session(sid, scene(2))
    manager.update_session_progress(sid, 2, 3)
    manager.update_session_status(sid, C)
    assert [dataclasses.asdict(s) for s in before] == snapshot_of_before
    assert before[0].status is R
    assert before[0].scenes == ()
    assert before[0].progress is None
    assert manager.get_sessions_by_status(R) == []


def test_get_sessions_by_status_rejects_an_unknown_status(manager: SessionManager) -> None:
    with pytest.raises(SessionValidationError):
        manager.get_sessions_by_status("paused")


# ----------------------------------------------------------------------- state machine


def test_the_allowed_transitions_are_exactly_the_four_edges() -> None:
    assert sorted((a.value, b.value) for a, dsts in ALLOWED_TRANSITIONS.items() for b in dsts) == (
        sorted((a.value, b.value) for a, b in VALID_PAIRS)
    )
    assert set(KNOWN_TRANSITIONS) == set(VALID_PAIRS)


@pytest.mark.parametrize(("source", "target"), VALID_PAIRS)
def test_valid_transition_changes_status_and_updated_at(
    manager: SessionManager,
    clock: ManualClock,
    make_session: MakeSession,
    source: GenerationStatus,
    target: GenerationStatus,
) -> None:
    session = make_session(manager, source)
    clock.advance(7)
    changed = manager.update_session_status(session.session_id, target.value)
    assert changed.status is target
    assert changed.updated_at == changed.last_accessed == clock.now()
    assert changed.created_at == session.created_at
    assert manager.peek_session(session.session_id) == changed
    assert manager.snapshot().transitions_total[(source, target)] == 1


@pytest.mark.parametrize(("source", "target"), INVALID_PAIRS)
def test_invalid_transition_raises_and_changes_nothing(
    manager: SessionManager,
    clock: ManualClock,
    make_session: MakeSession,
    source: GenerationStatus,
    target: GenerationStatus,
) -> None:
    session = make_session(manager, source)
    transitions = dict(manager.snapshot().transitions_total)
    clock.advance(7)
    with pytest.raises(InvalidTransitionError) as info:
        manager.update_session_status(session.session_id, target, "why not")
    assert (info.value.session_id, info.value.current, info.value.requested) == (
        session.session_id,
        source,
        target,
    )
    assert manager.peek_session(session.session_id) == session
    assert manager.snapshot().transitions_total == transitions


@pytest.mark.parametrize("status", list(GenerationStatus))
def test_same_status_again_is_a_no_op(
    manager: SessionManager,
    clock: ManualClock,
    make_session: MakeSession,
    status: GenerationStatus,
) -> None:
    session = make_session(manager, status)
    recorder = Recorder(manager, EventType.STATUS_CHANGED)
    clock.advance(7)
    assert manager.update_session_status(session.session_id, status) == session
    assert manager.peek_session(session.session_id) == session
    assert recorder.events == []


def test_failing_a_session_records_the_error_message(
    manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager, R)
    failed = manager.update_session_status(session.session_id, F, "model timed out")
    assert failed.status is F
    assert failed.error_message == "model timed out"


@pytest.mark.parametrize("status", ["paused", "", "PENDING", 3, None])
def test_update_status_rejects_an_unknown_status(
    manager: SessionManager, make_session: MakeSession, status: Any
) -> None:
    session = make_session(manager)
    with pytest.raises(SessionValidationError):
        manager.update_session_status(session.session_id, status)
    assert manager.peek_session(session.session_id) == session


def test_update_status_rejects_an_overlong_error_message(
    manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager, R)
    with pytest.raises(SessionValidationError):
        manager.update_session_status(session.session_id, F, "e" * 2001)
    assert manager.peek_session(session.session_id) == session


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.update_session_status("nope", "processing"),
        lambda m: m.update_session_progress("nope", 1, 2),
        lambda m: m.add_scene_to_session("nope", scene(1)),
        lambda m: m.set_session_scenes("nope", [scene(1)]),
        lambda m: m.atomic_session_update("nope", {"error_message": "x"}),
        lambda m: m.recover_corrupted_session("nope"),
    ],
)
def test_changes_to_an_unknown_session_raise_not_found(manager: SessionManager, call: Any) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        call(manager)
    assert info.value.session_id == "nope"


# ----------------------------------------------------------------------- progress


def test_update_progress_stores_progress_and_percentage(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    session = make_session(manager, R)
    clock.advance(3)
    updated = manager.update_session_progress(session.session_id, 2, 3, "inking")
    assert updated.progress == ProgressUpdate(current_step=2, total_steps=3, description="inking")
    assert updated.progress is not None
    assert updated.progress.percentage == 66.7
    assert updated.updated_at == clock.now()
    assert updated.status is R


def test_progress_is_allowed_while_pending(
    manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager, P)
    assert manager.update_session_progress(session.session_id, 0, 4).progress is not None


@pytest.mark.parametrize(
    ("current", "total", "description"),
    [(-1, 3, ""), (4, 3, ""), (0, 0, ""), (1, 3, "d" * 501), (1.5, 3, ""), ("1", 3, "")],
)
def test_update_progress_rejects_bad_progress(
    manager: SessionManager, make_session: MakeSession, current: Any, total: Any, description: str
) -> None:
    session = make_session(manager, R)
    with pytest.raises(SessionValidationError) as info:
        manager.update_session_progress(session.session_id, current, total, description)
    assert info.value.errors[0]["loc"][0] == "progress"
    assert manager.peek_session(session.session_id) == session


@pytest.mark.parametrize("status", [C, F])
def test_progress_on_a_finished_session_is_an_invalid_transition(
    manager: SessionManager, make_session: MakeSession, status: GenerationStatus
) -> None:
    session = make_session(manager, status)
    with pytest.raises(InvalidTransitionError) as info:
        manager.update_session_progress(session.session_id, 1, 2)
    assert info.value.requested == "progress"
    assert manager.peek_session(session.session_id) == session


# ----------------------------------------------------------------------- scenes


def test_add_scene_inserts_in_number_order_and_reports_added(
    manager: SessionManager, make_session: MakeSession, request_data: GenerationRequest
) -> None:
    sid = make_session(manager, R).session_id
    results = [manager.add_scene_to_session(sid, scene(n)) for n in (3, 1, 2)]
    assert [added for _, added in results] == [True, True, True]
    final = results[-1][0]
    assert [s.scene_number for s in final.scenes] == [1, 2, 3]
    assert request_data.num_scenes == 3


def test_add_scene_replaces_the_scene_with_the_same_number(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    sid = make_session(manager, R).session_id
    manager.add_scene_to_session(sid, scene(1, "first"))
    manager.add_scene_to_session(sid, scene(2, "second"))
    clock.advance(4)
    session, added = manager.add_scene_to_session(sid, scene(1, "first, redrawn"))
    assert added is False
    assert [(s.scene_number, s.prompt) for s in session.scenes] == [
        (1, "first, redrawn"),
        (2, "second"),
    ]
    assert session.updated_at == clock.now()


def test_add_scene_accepts_a_mapping(manager: SessionManager, make_session: MakeSession) -> None:
    sid = make_session(manager).session_id
    session, added = manager.add_scene_to_session(
        sid,
        {"scene_number": 2, "prompt": "a gate", "title": "Gate"},  # type: ignore[arg-type]
    )
    assert added is True
    assert session.scenes == (ScenePrompt(scene_number=2, prompt="a gate", title="Gate"),)


@pytest.mark.parametrize(
    "bad",
    [
        {"scene_number": 4, "prompt": "beyond num_scenes (3)"},
        {"scene_number": 0, "prompt": "zero"},
        {"scene_number": 1, "prompt": ""},
        {"scene_number": 1, "prompt": "x", "seed": 1},
    ],
)
def test_add_scene_rejects_a_bad_scene(
    manager: SessionManager, make_session: MakeSession, bad: dict[str, Any]
) -> None:
    session = make_session(manager, R)
    with pytest.raises(SessionValidationError):
        manager.add_scene_to_session(session.session_id, bad)  # type: ignore[arg-type]
    assert manager.peek_session(session.session_id) == session


@pytest.mark.parametrize("status", [C, F])
def test_scene_changes_on_a_finished_session_are_invalid_transitions(
    manager: SessionManager, make_session: MakeSession, status: GenerationStatus
) -> None:
    session = make_session(manager, status)
    with pytest.raises(InvalidTransitionError):
        manager.add_scene_to_session(session.session_id, scene(1))
    with pytest.raises(InvalidTransitionError):
        manager.set_session_scenes(session.session_id, [scene(1)])
    assert manager.peek_session(session.session_id) == session


def test_set_scenes_replaces_all_and_orders_them(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    sid = make_session(manager, R).session_id
    manager.add_scene_to_session(sid, scene(1, "old"))
    clock.advance(2)
    session = manager.set_session_scenes(sid, [scene(3), {"scene_number": 2, "prompt": "two"}])
    assert [(s.scene_number, s.prompt) for s in session.scenes] == [(2, "two"), (3, "scene 3")]
    assert session.updated_at == clock.now()
    assert manager.set_session_scenes(sid, []).scenes == ()


@pytest.mark.parametrize(
    ("scenes", "error_type"),
    [
        ([scene(1), scene(1, "again")], "duplicate"),
        ([scene(2), scene(4)], "out_of_range"),
        ([{"scene_number": 1, "prompt": ""}], "string_too_short"),
    ],
)
def test_set_scenes_rejects_bad_lists_and_keeps_the_old_scenes(
    manager: SessionManager, make_session: MakeSession, scenes: list[Any], error_type: str
) -> None:
    sid = make_session(manager, R).session_id
    before, _ = manager.add_scene_to_session(sid, scene(1, "keep me"))
    with pytest.raises(SessionValidationError) as info:
        manager.set_session_scenes(sid, scenes)
    assert info.value.errors[0]["type"] == error_type
    assert manager.peek_session(sid) == before


# ----------------------------------------------------------------------- remove


def test_remove_session_removes_once(manager: SessionManager, make_session: MakeSession) -> None:
    sid = make_session(manager).session_id
    assert manager.remove_session(sid) is True
    assert manager.remove_session(sid) is False
    assert manager.get_session(sid) is None
    assert manager.snapshot().removed_total[RemovalReason.DELETED] == 1


# ----------------------------------------------------------------------- recovery


@pytest.mark.parametrize("status", [P, R])
def test_recover_moves_a_session_idle_past_the_stuck_threshold_to_failed(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession, status: GenerationStatus
) -> None:
    session = make_session(manager, status)
    clock.advance(manager.config.stuck_after_seconds + MICRO)
    recovered = manager.recover_corrupted_session(session.session_id)
    assert recovered.status is F
    assert recovered.error_message == "Session recovered from corrupted state" == RECOVERED_MESSAGE
    assert recovered.updated_at == clock.now()
    assert manager.peek_session(session.session_id) == recovered
    assert manager.snapshot().transitions_total[(status, F)] == 1


@pytest.mark.parametrize(
    ("status", "idle"), [(P, 0.0), (R, 0.0), (R, 1800.0), (C, HOUR), (F, HOUR)]
)
def test_recover_refuses_a_session_whose_work_has_not_stopped_or_is_finished(
    manager: SessionManager,
    clock: ManualClock,
    make_session: MakeSession,
    status: GenerationStatus,
    idle: float,
) -> None:
    session = make_session(manager, status)
    clock.advance(idle)  # the threshold is 1800 s: exactly at it is not stuck yet
    with pytest.raises(InvalidTransitionError) as refused:
        manager.recover_corrupted_session(session.session_id)
    assert (refused.value.current, refused.value.requested) == (status, "recover")
    assert manager.peek_session(session.session_id) == session


# ----------------------------------------------------------------------- atomic updates


def test_atomic_update_applies_several_fields_together(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    sid = make_session(manager, R).session_id
    clock.advance(9)
    session = manager.atomic_session_update(
        sid,
        {
            "status": "completed",
            "error_message": None,
            "progress": {"current_step": 3, "total_steps": 3, "description": "done"},
            "scenes": [scene(2), scene(1)],
        },
    )
    assert session.status is C
    assert session.progress == ProgressUpdate(current_step=3, total_steps=3, description="done")
    assert [s.scene_number for s in session.scenes] == [1, 2]
    assert session.updated_at == clock.now()
    assert manager.peek_session(sid) == session


def test_atomic_update_with_nothing_changes_nothing(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    session = make_session(manager, R)
    clock.advance(9)
    assert manager.atomic_session_update(session.session_id, {}) == session
    assert manager.atomic_session_update(session.session_id, {"status": R}) == session
    assert manager.peek_session(session.session_id) == session


@pytest.mark.parametrize(
    "name",
    [
        "session_id",
        "created_at",
        "updated_at",
        "last_accessed",
        "request_data",
        "__class__",
        "__dict__",
        "age_seconds",
        "owner",
    ],
)
def test_atomic_update_refuses_any_other_field(
    manager: SessionManager, make_session: MakeSession, name: str
) -> None:
    session = make_session(manager, R)
    with pytest.raises(SessionValidationError) as info:
        manager.atomic_session_update(session.session_id, {"error_message": "ok", name: "x"})
    assert info.value.errors == [
        {"loc": [name], "msg": "field cannot be updated", "type": "forbidden"}
    ]
    stored = manager.peek_session(session.session_id)
    assert stored == session
    assert type(stored) is GenerationSession


GOOD_UPDATES: dict[str, Any] = {
    "status": "completed",
    "error_message": "fine",
    "progress": {"current_step": 2, "total_steps": 2},
    "scenes": [{"scene_number": 1, "prompt": "one"}],
}


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"status": "pending"}, InvalidTransitionError),
        ({"status": "paused"}, SessionValidationError),
        ({"error_message": "e" * 2001}, SessionValidationError),
        ({"error_message": 42}, SessionValidationError),
        ({"progress": {"current_step": 3, "total_steps": 2}}, SessionValidationError),
        ({"progress": "half"}, SessionValidationError),
        ({"scenes": [{"scene_number": 9, "prompt": "out of range"}]}, SessionValidationError),
        ({"scenes": [scene(1), scene(1)]}, SessionValidationError),
        ({"scenes": "not a list"}, SessionValidationError),
        ({"owner": "me"}, SessionValidationError),
    ],
)
def test_atomic_update_is_all_or_nothing(
    manager: SessionManager,
    clock: ManualClock,
    make_session: MakeSession,
    bad: dict[str, Any],
    error: type[Exception],
) -> None:
    sid = make_session(manager, R).session_id
    before, _ = manager.add_scene_to_session(sid, scene(2, "keep"))
    recorder = Recorder(manager)
    counters = manager.snapshot()
    clock.advance(9)
    with pytest.raises(error):
        manager.atomic_session_update(sid, {**GOOD_UPDATES, **bad})
    assert manager.peek_session(sid) == before
    assert recorder.events == []
    after = manager.snapshot()
    assert after.transitions_total == counters.transitions_total
    assert after.by_status == counters.by_status


def test_atomic_update_refuses_work_on_a_finished_session(
    manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager, F)
    with pytest.raises(InvalidTransitionError):
        manager.atomic_session_update(
            session.session_id, {"progress": {"current_step": 1, "total_steps": 2}}
        )
    # nor its message: a finished session never changes
    with pytest.raises(InvalidTransitionError):
        manager.atomic_session_update(session.session_id, {"error_message": "root cause"})
    assert manager.peek_session(session.session_id) == session


# ----------------------------------------------------------------------- bulk updates


def test_bulk_update_status_sets_one_status_on_many(
    manager: SessionManager, make_session: MakeSession
) -> None:
    ids = [make_session(manager, R).session_id for _ in range(2)]
    done = make_session(manager, C).session_id
    result = manager.bulk_update_status([*ids, done], "failed", "worker lost")
    assert (result.updated, result.conflicts) == (ids, [done])
    for sid in ids:
        session = manager.peek_session(sid)
        assert session is not None
        assert (session.status, session.error_message) == (F, "worker lost")
    with pytest.raises(SessionValidationError):
        manager.bulk_update_status(ids, "paused")


# ----------------------------------------------------------------------- callbacks


def test_register_callback_refuses_an_unknown_event_type(manager: SessionManager) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        manager.register_session_callback("exploded", lambda event: None)


def test_callbacks_fire_for_every_kind_of_change(
    make_manager: MakeManager, clock: ManualClock, make_session: MakeSession
) -> None:
    mgr = make_manager(max_sessions=2)
    recorder = Recorder(mgr)
    a = mgr.create_session(GenerationRequest(story_text="a", num_scenes=2))
    mgr.update_session_status(a.session_id, "processing")
    mgr.update_session_progress(a.session_id, 1, 2)
    mgr.add_scene_to_session(a.session_id, scene(1))
    mgr.set_session_scenes(a.session_id, [scene(2)])
    mgr.update_session_status(a.session_id, "failed", "gpu")
    b = mgr.create_session(GenerationRequest(story_text="b"))
    c = mgr.create_session(GenerationRequest(story_text="c"))  # evicts failed a
    mgr.remove_session(b.session_id)
    clock.advance(hours=25)
    mgr.cleanup_expired_sessions()  # expires c
    d = make_session(mgr, F)
    mgr.cleanup_failed_sessions()  # purges d
    e = mgr.create_session(GenerationRequest(story_text="e"))
    clock.advance(mgr.config.stuck_after_seconds + 1)
    mgr.recover_corrupted_session(e.session_id)
    E, Rm = EventType, RemovalReason
    assert recorder.kinds() == [
        (E.CREATED, None),
        (E.STATUS_CHANGED, None),
        (E.PROGRESS, None),
        (E.SCENE_ADDED, None),
        (E.SCENES_REPLACED, None),
        (E.STATUS_CHANGED, None),
        (E.CREATED, None),
        (E.REMOVED, Rm.EVICTED),
        (E.CREATED, None),
        (E.REMOVED, Rm.DELETED),
        (E.REMOVED, Rm.EXPIRED),
        (E.CREATED, None),
        (E.STATUS_CHANGED, None),
        (E.REMOVED, Rm.PURGED),
        (E.CREATED, None),
        (E.STATUS_CHANGED, None),
    ]
    ev = recorder.events
    assert [e.session_id for e in ev[:6]] == [a.session_id] * 6
    assert (ev[1].previous_status, ev[1].session.status) == (P, R)
    assert (ev[5].previous_status, ev[5].session.status) == (R, F)
    assert ev[2].session.progress == ProgressUpdate(current_step=1, total_steps=2)
    assert ev[3].session.scenes == (scene(1),)
    # a removal carries the session as it was
    assert (ev[7].session_id, ev[7].session.status) == (a.session_id, F)
    assert ev[9].session_id == b.session_id
    assert ev[10].session_id == c.session_id
    assert ev[13].session_id == d.session_id
    assert ev[-1].session.error_message == RECOVERED_MESSAGE


def test_force_cleanup_and_completed_cleanup_report_purged(
    manager: SessionManager, clock: ManualClock, make_session: MakeSession
) -> None:
    make_session(manager, C)
    clock.advance(hours=7)
    make_session(manager, P)
    recorder = Recorder(manager, EventType.REMOVED)
    assert manager.cleanup_completed_sessions() == 1
    assert manager.force_cleanup_all() == 1
    assert recorder.kinds() == [(EventType.REMOVED, RemovalReason.PURGED)] * 2


def test_removed_callback_runs_outside_the_lock(
    manager: SessionManager, make_session: MakeSession
) -> None:
    outcomes: list[int] = []

    def count_from_another_thread(event: SessionEvent) -> None:
        thread = threading.Thread(target=lambda: outcomes.append(manager.get_session_count()))
        thread.start()
        thread.join(5)

    manager.register_session_callback("removed", count_from_another_thread)
    sid = make_session(manager).session_id
    manager.remove_session(sid)
    assert outcomes == [0]


def test_a_callback_may_call_back_into_the_manager(
    manager: SessionManager, make_session: MakeSession
) -> None:
    progress_seen: list[int] = []

    def start_work(event: SessionEvent) -> None:
        if event.session.status is R:
            manager.update_session_progress(event.session_id, 0, 5, "started")

    manager.register_session_callback("status_changed", start_work)
    manager.register_session_callback(
        "progress",
        lambda e: progress_seen.append(e.session.progress.current_step),  # type: ignore[union-attr]
    )
    sid = make_session(manager).session_id
    worker = threading.Thread(target=manager.update_session_status, args=(sid, "processing"))
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    assert progress_seen == [0]
    assert manager.peek_session(sid).progress.description == "started"  # type: ignore[union-attr]


def test_a_failing_callback_is_logged_and_does_not_break_the_operation(
    manager: SessionManager, request_data: GenerationRequest, caplog: pytest.LogCaptureFixture
) -> None:
    later: list[str] = []

    def broken(event: SessionEvent) -> None:
        raise RuntimeError("callback bug")

    manager.register_session_callback("created", broken)
    manager.register_session_callback("created", lambda e: later.append(e.session_id))
    with caplog.at_level(logging.ERROR, logger="sidecar.core.manager"):
        session = manager.create_session(request_data)
    assert manager.peek_session(session.session_id) == session
    assert later == [session.session_id]
    failures = [r for r in caplog.records if "callback for created event failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is RuntimeError


# ----------------------------------------------------------------------- config and lifecycle


def test_create_with_config_takes_the_seed_names(clock: ManualClock) -> None:
    mgr = SessionManager.create_with_config(
        {"max_sessions": 5, "cleanup_interval": 60}, clock=clock
    )
    try:
        assert mgr.config.max_sessions == 5
        assert mgr.config.cleanup_interval_seconds == 60.0
        assert mgr.clock is clock
        assert mgr.worker_alive is False
    finally:
        mgr.shutdown()


def test_create_with_config_defaults_are_the_seeds() -> None:
    mgr = SessionManager.create_with_config({})
    try:
        assert mgr.config == ManagerConfig()
        assert (mgr.config.max_sessions, mgr.config.cleanup_interval_seconds) == (100, 3600.0)
    finally:
        mgr.shutdown()


@pytest.mark.parametrize(
    "config", [{"max_sessions": 0}, {"cleanup_interval": -1}, {"max_session": 5}]
)
def test_create_with_config_rejects_bad_settings(config: dict[str, Any]) -> None:
    # the same error type as reconfigure, naming the setting
    with pytest.raises(SessionValidationError) as refused:
        SessionManager.create_with_config(config)
    assert refused.value.errors[0]["loc"][0] in {
        "max_sessions",
        "cleanup_interval_seconds",
        "max_session",
    }


def test_default_config_is_the_seeds() -> None:
    cfg = ManagerConfig()
    assert cfg.max_sessions == 100
    assert cfg.cleanup_interval_seconds == 3600
    assert cfg.session_max_age_seconds == 24 * 3600
    assert cfg.failed_max_age_seconds == 3600
    assert cfg.completed_max_age_seconds == 6 * 3600
    assert cfg.stuck_after_seconds == 1800
    assert cfg.capacity_policy is CapacityPolicy.EVICT_OLDEST
    assert (cfg.warning_utilization, cfg.critical_utilization) == (0.7, 0.9)


def test_reconfigure_changes_live_settings(manager: SessionManager) -> None:
    new = manager.reconfigure(max_sessions=50, capacity_policy="reject", cleanup_interval=120)
    assert new is manager.config
    assert new.max_sessions == 50
    assert new.capacity_policy is CapacityPolicy.REJECT
    assert new.cleanup_interval_seconds == 120.0


@pytest.mark.parametrize(
    "changes",
    [
        {"max_sessions": 0},
        {"max_sessions": "many"},
        {"cleanup_interval_seconds": 0},
        {"capacity_policy": "drop_newest"},
        {"warning_utilization": 0.95},
        {"stuck_after_seconds": -5},
        {"max_sessions": 20, "verbose": True},
    ],
)
def test_reconfigure_rejects_bad_settings_and_keeps_the_old(
    manager: SessionManager, changes: dict[str, Any]
) -> None:
    before = manager.config
    with pytest.raises(SessionValidationError):
        manager.reconfigure(**changes)
    assert manager.config is before


def test_constructing_a_manager_starts_no_thread() -> None:
    before = set(threading.enumerate())
    mgr = SessionManager(ManagerConfig(cleanup_interval_seconds=1))
    try:
        assert set(threading.enumerate()) == before
        assert mgr.worker_alive is False
        assert mgr.get_health_status()["cleanup_active"] is False
    finally:
        mgr.shutdown()


def test_start_runs_one_worker_however_often_called(make_manager: MakeManager) -> None:
    mgr = make_manager(cleanup_interval_seconds=3600)
    worker = start_worker(mgr)
    assert start_worker(mgr) is worker
    assert mgr.worker is worker
    workers = [t for t in threading.enumerate() if t.name == "sidecar-session-cleanup"]
    assert len(workers) == 1
    assert workers[0].daemon is True
    assert mgr.worker_alive is True
    assert mgr.get_health_status()["cleanup_active"] is True


def test_shutdown_stops_an_idle_worker_promptly(make_manager: MakeManager) -> None:
    mgr = started(make_manager(cleanup_interval_seconds=3600))
    began = time.monotonic()
    assert mgr.shutdown() is True
    assert time.monotonic() - began < 5  # the worker waits on a condition, not a sleep
    assert mgr.worker_alive is False
    assert mgr.snapshot().worker_alive is False


def test_shutdown_is_idempotent_and_drops_the_sessions(
    manager: SessionManager, make_session: MakeSession
) -> None:
    make_session(manager)
    make_session(manager, R)
    assert manager.shutdown() is True
    assert manager.closed is True
    assert manager.get_session_count() == 0
    assert manager.shutdown() is True
    assert manager.closed is True
    assert manager.snapshot().closed is True


def test_a_shut_down_manager_cannot_be_started_again(manager: SessionManager) -> None:
    manager.shutdown()
    with pytest.raises(SessionManagerError, match="shut down"):
        start_worker(manager)
    assert manager.worker_alive is False


def test_a_shut_down_manager_refuses_new_sessions(
    manager: SessionManager, request_data: GenerationRequest
) -> None:
    manager.shutdown()
    with pytest.raises(SessionManagerError, match="shut down"):
        manager.create_session(request_data)
    assert manager.get_session_count() == 0
    assert manager.snapshot().created_total == 0


class _FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def test_a_clock_in_another_zone_is_read_as_utc(request_data: GenerationRequest) -> None:
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    manager = SessionManager(clock=_FixedClock(moment))
    session = manager.create_session(request_data)
    assert session.created_at == moment
    assert session.created_at.utcoffset() == timedelta(0)


def test_a_naive_clock_is_refused_before_anything_changes(
    request_data: GenerationRequest,
) -> None:
    manager = SessionManager(clock=_FixedClock(datetime(2026, 3, 1, 12, 0)))
    with pytest.raises(SessionManagerError, match="naive datetime"):
        manager.create_session(request_data)
    assert manager.get_session_count() == 0


def test_context_manager_shuts_down_the_manager_and_its_worker(
    make_manager: MakeManager, make_session: MakeSession
) -> None:
    with make_manager(cleanup_interval_seconds=3600) as mgr:
        start_worker(mgr)
        assert mgr.worker_alive is True
        make_session(mgr)
        assert mgr.get_session_count() == 1
    assert mgr.closed is True
    assert mgr.worker_alive is False
    assert mgr.get_session_count() == 0


def test_reconfiguring_the_interval_wakes_the_worker(
    make_manager: MakeManager,
    clock: ManualClock,
    make_session: MakeSession,
) -> None:
    mgr = started(make_manager(cleanup_interval_seconds=3600))
    make_session(mgr)
    clock.advance(hours=25)
    mgr.reconfigure(cleanup_interval=1)  # the shortest interval allowed
    poll(lambda: mgr.snapshot().cleanup_runs_total >= 1 or None, timeout=15, what="a run")
    assert mgr.get_session_count() == 0
    assert mgr.snapshot().removed_total[RemovalReason.EXPIRED] == 1


# ----------------------------------------------------------------------- no globals


def test_no_module_holds_a_manager_instance() -> None:
    for module in (sidecar, sidecar.core.manager):
        held = [name for name, v in vars(module).items() if isinstance(v, SessionManager)]
        assert held == []
    assert not hasattr(sidecar.core.manager, "session_manager")


def test_importing_the_core_starts_no_thread() -> None:
    code = """
import json, threading
before = [t.name for t in threading.enumerate()]
count = threading.active_count()
import sidecar, sidecar.core.manager, sidecar.store
import sidecar.core.models, sidecar.core.config, sidecar.core.clock
after = [t.name for t in threading.enumerate()]
managers = [
    f"{m.__name__}.{name}"
    for m in (
        sidecar, sidecar.core.manager, sidecar.store, sidecar.core.models, sidecar.core.config
    )
    for name, value in vars(m).items()
    if isinstance(value, sidecar.core.manager.SessionManager)
]
print(json.dumps([before, after, count, threading.active_count(), managers]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, after, count_before, count_after, managers = __import__("json").loads(out.stdout)
    assert before == after == ["MainThread"]
    assert count_before == count_after == 1
    assert managers == []


def test_the_worker_goes_on_when_what_runs_before_each_cleanup_fails(
    make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = make_manager(cleanup_interval_seconds=1)
    runs: list[int] = []
    real = mgr.run_cleanup

    def counted() -> int:
        runs.append(1)
        return real()

    def boom() -> None:
        raise RuntimeError("shared settings unreadable")

    mgr.run_cleanup = counted  # type: ignore[method-assign]
    worker = start_worker(mgr, before_run=boom)
    try:
        poll(lambda: True if len(runs) >= 2 else None, timeout=10, what="two cleanup runs")
        assert worker.alive
        assert "before the cleanup run" in caplog.text
    finally:
        mgr.shutdown()


def test_a_changed_interval_counts_from_the_last_run_and_never_puts_it_off(
    make_manager: MakeManager,
) -> None:
    """Before: each change restarted a full wait, so a lowered interval came late and changes
    more often than the interval stopped the runs altogether."""
    mgr = make_manager(cleanup_interval_seconds=3600)
    now = [0.0]
    runs: list[float] = []
    real = mgr.run_cleanup

    def counted() -> int:
        runs.append(now[0])
        return real()

    mgr.run_cleanup = counted  # type: ignore[method-assign]
    worker = CleanupWorker(mgr, clock=lambda: now[0]).start()
    try:
        now[0] = 100.0
        mgr.reconfigure(cleanup_interval_seconds=60)  # 100 s since the start: due at once
        poll(lambda: True if runs else None, timeout=10, what="the run the change made due")
        assert runs == [100.0]

        for step in range(1, 6):  # changes every 50 s, the interval 60 or 70 s
            now[0] = 100.0 + 50 * step
            mgr.reconfigure(cleanup_interval_seconds=60 + 10 * (step % 2))
            if now[0] - runs[-1] >= mgr.config.cleanup_interval_seconds:
                count = len(runs)
                poll(lambda c=count: True if len(runs) > c else None, timeout=10, what="a run")
        assert len(runs) >= 3  # before: none after the first change
    finally:
        mgr.shutdown()
        assert not worker.alive
