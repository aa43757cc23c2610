from __future__ import annotations

from sidecar.clock import ManualClock
from sidecar.manager import SessionManager
from sidecar.models import GenerationRequest, GenerationStatus


def test_session_life_updates_counts(
    manager: SessionManager, clock: ManualClock, request_data: GenerationRequest
) -> None:
    session = manager.create_session(request_data)
    manager.update_session_status(session.session_id, "processing")
    clock.advance(10)
    done = manager.update_session_status(session.session_id, "completed")
    assert done.status is GenerationStatus.COMPLETED
    assert manager.snapshot().by_status[GenerationStatus.COMPLETED] == 1
