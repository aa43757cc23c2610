"""The seed's lock-holding calls (sidecar.compat): with_session_lock, bulk_update_sessions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from conftest import C, F, P, R
from test_manager import Recorder, scene

from sidecar.compat import SeedSessionManager
from sidecar.core.clock import ManualClock
from sidecar.core.config import ManagerConfig
from sidecar.core.errors import SessionLockError, SessionNotFoundError
from sidecar.core.events import EventType, SessionEvent
from sidecar.core.models import GenerationSession

if TYPE_CHECKING:
    from conftest import MakeSession


@pytest.fixture
def manager(clock: ManualClock) -> Iterator[SeedSessionManager]:
    """The seed layer over a core manager (ManualClock, max_sessions=10)."""
    mgr = SeedSessionManager(ManagerConfig(max_sessions=10), clock=clock)
    yield mgr
    mgr.shutdown()


def test_with_session_lock_on_an_unknown_session_raises_not_found(
    manager: SeedSessionManager,
) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        manager.with_session_lock("nope", lambda s: s)
    assert info.value.session_id == "nope"


def test_bulk_update_reports_updated_missing_and_conflicts(
    manager: SeedSessionManager, make_session: MakeSession
) -> None:
    a = make_session(manager, P).session_id
    b = make_session(manager, P).session_id
    c = make_session(manager, C).session_id
    result = manager.bulk_update_sessions(
        [a, "missing", c, b, a], lambda s: {"status": "processing"}
    )
    assert result.updated == [a, b]
    assert result.missing == ["missing"]
    assert result.conflicts == [c]
    assert [manager.peek_session(x).status for x in (a, b, c)] == [R, R, C]  # type: ignore[union-attr]


def test_bulk_update_passes_each_current_session_to_the_operation(
    manager: SeedSessionManager, make_session: MakeSession
) -> None:
    ids = [make_session(manager, R).session_id for _ in range(3)]
    seen: list[GenerationSession] = []

    def operation(session: GenerationSession) -> dict[str, Any] | None:
        seen.append(session)
        return None if session.session_id == ids[1] else {"error_message": session.session_id}

    result = manager.bulk_update_sessions(ids, operation)
    assert [s.session_id for s in seen] == ids
    assert result.updated == ids
    assert [manager.peek_session(x).error_message for x in ids] == [ids[0], None, ids[2]]  # type: ignore[union-attr]


def test_bulk_update_logs_an_operation_that_raises_and_goes_on(
    manager: SeedSessionManager, make_session: MakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_session(manager, P).session_id
    b = make_session(manager, P).session_id

    def operation(session: GenerationSession) -> dict[str, Any]:
        if session.session_id == a:
            raise RuntimeError("operation broke")
        return {"status": "failed"}

    with caplog.at_level(logging.ERROR, logger="sidecar.compat"):
        result = manager.bulk_update_sessions([a, b], operation)
    assert (result.updated, result.conflicts) == ([b], [a])
    assert manager.peek_session(a).status is P  # type: ignore[union-attr]
    assert manager.peek_session(b).status is F  # type: ignore[union-attr]
    assert any(
        a in r.getMessage() and r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records
    )


def test_with_session_lock_runs_the_operation_on_the_current_session(
    manager: SeedSessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager, R)
    assert manager.with_session_lock(session.session_id, lambda s: s) == session
    # re-entrant: the operation may call the manager
    result = manager.with_session_lock(
        session.session_id,
        lambda s: manager.update_session_status(s.session_id, "completed").status,
    )
    assert result is C


def test_with_session_lock_logs_and_reraises_a_failing_operation(
    manager: SeedSessionManager, make_session: MakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    sid = make_session(manager).session_id

    def boom(session: GenerationSession) -> None:
        raise KeyError("inner")

    with caplog.at_level(logging.ERROR, logger="sidecar.compat"), pytest.raises(KeyError):
        manager.with_session_lock(sid, boom)
    assert any(sid in r.getMessage() and r.exc_info for r in caplog.records)
    assert manager.get_session_count() == 1  # the lock was released


def test_with_session_lock_times_out_while_another_thread_holds_the_lock(
    manager: SeedSessionManager, make_session: MakeSession
) -> None:
    sid = make_session(manager).session_id
    held, release = threading.Event(), threading.Event()
    results: list[str] = []

    def hold(session: GenerationSession) -> str:
        held.set()
        release.wait(10)
        return "held"

    holder = threading.Thread(target=lambda: results.append(manager.with_session_lock(sid, hold)))
    holder.start()
    try:
        assert held.wait(5)
        with pytest.raises(SessionLockError) as info:
            manager.with_session_lock(sid, lambda s: "never", timeout=0.05)
        assert info.value.timeout == 0.05
    finally:
        release.set()
        holder.join(5)
    assert not holder.is_alive()
    assert results == ["held"]
    assert manager.with_session_lock(sid, lambda s: "free again", timeout=5) == "free again"


def test_callbacks_run_outside_the_lock(
    manager: SeedSessionManager, make_session: MakeSession
) -> None:
    outcomes: list[str] = []

    def from_another_thread(event: SessionEvent) -> None:
        # If the event were delivered under the lock, this thread would time out.
        def other() -> None:
            try:
                outcomes.append(
                    manager.with_session_lock(event.session_id, lambda s: "locked", timeout=2)
                )
            except SessionLockError:
                outcomes.append("lock was held during the callback")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)
        if thread.is_alive():
            outcomes.append("still waiting")

    for kind in ("created", "status_changed", "progress", "scene_added"):
        manager.register_session_callback(kind, from_another_thread)
    session = make_session(manager, R)
    manager.update_session_progress(session.session_id, 1, 3)
    manager.add_scene_to_session(session.session_id, scene(1))
    assert outcomes == ["locked"] * 4


def test_events_raised_under_with_session_lock_wait_for_the_outer_release(
    manager: SeedSessionManager, make_session: MakeSession
) -> None:
    sid = make_session(manager).session_id
    recorder = Recorder(manager, EventType.STATUS_CHANGED)
    seen_inside: list[int] = []

    def operation(session: GenerationSession) -> None:
        manager.update_session_status(sid, "processing")
        seen_inside.append(len(recorder.events))

    manager.with_session_lock(sid, operation)
    assert seen_inside == [0]
    assert len(recorder.events) == 1
