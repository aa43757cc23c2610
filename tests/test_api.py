"""Every route's success path, through Flask's test client, with an injected clock."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from conftest import started
from flask import Flask
from flask.testing import FlaskClient

from sidecar.core.clock import ManualClock
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationStatus
from sidecar.web.app import get_sidecar
from sidecar.web.inputs import declared_length as _declared_length

if TYPE_CHECKING:
    from conftest import MakeApp, MakeManager, MakeSession

STORY = {"story_text": "A fox finds a lantern in the snow.", "media_type": "anime", "num_scenes": 3}
SESSION_KEYS = {
    "session_id",
    "status",
    "request_data",
    "scenes",
    "progress",
    "error_message",
    "created_at",
    "last_accessed",
    "updated_at",
}


def create(client: FlaskClient, **changes: Any) -> dict[str, Any]:
    response = client.post("/api/v1/sessions", json={**STORY, **changes})
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def url(session: dict[str, Any], tail: str = "") -> str:
    return f"/api/v1/sessions/{session['session_id']}{tail}"


def test_create_returns_201_location_and_the_session(
    client: FlaskClient, manager: SessionManager
) -> None:
    response = client.post("/api/v1/sessions", json=STORY)

    assert response.status_code == 201
    assert response.content_type == "application/json"
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/sessions/{body['session_id']}"
    assert set(body) == SESSION_KEYS
    assert body["status"] == "pending"
    assert body["request_data"] == STORY
    assert body["scenes"] == []
    assert body["progress"] is None
    assert body["error_message"] is None
    assert body["created_at"] == "2026-01-01T00:00:00Z"
    assert manager.get_session_count() == 1
    assert response.headers["Content-Length"] == str(len(response.get_data()))
    assert response.headers.getlist("Location") == [response.headers["Location"]]  # just one


@pytest.mark.parametrize("path", ["/api/v1/stats", "/api/v1/health", "/livez", "/{id}"])
def test_json_answers_carry_their_length_and_head_gets_it_without_a_body(
    client: FlaskClient, path: str
) -> None:
    session = create(client)
    path = path.replace("/{id}", url(session))

    got = client.get(path)
    head = client.head(path)

    assert got.status_code == head.status_code == 200
    assert got.headers["Content-Length"] == str(len(got.get_data()))
    assert head.get_data() == b""
    assert head.headers["Content-Type"] == "application/json"
    assert int(head.headers["Content-Length"]) > 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;charset=UTF-8",
        "application/vnd.sidecar+json",
    ],
)
def test_create_accepts_every_json_content_type(client: FlaskClient, content_type: str) -> None:
    body = json.dumps(STORY)

    response = client.post("/api/v1/sessions", data=body, content_type=content_type)

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["request_data"] == STORY


@pytest.mark.parametrize(
    "content_type", ["application/jsonx", "text/json", "application/json-patch", "json"]
)
def test_create_refuses_what_is_not_a_json_content_type(
    client: FlaskClient, manager: SessionManager, content_type: str
) -> None:
    response = client.post("/api/v1/sessions", data=json.dumps(STORY), content_type=content_type)

    assert response.status_code == 415
    assert manager.get_session_count() == 0


@pytest.mark.parametrize(
    ("environ", "length"),
    [
        ({"CONTENT_LENGTH": "42"}, 42),
        ({"CONTENT_LENGTH": "0"}, 0),
        ({}, None),
        ({"CONTENT_LENGTH": ""}, None),
        ({"CONTENT_LENGTH": "-1"}, None),
        ({"CONTENT_LENGTH": "+1"}, None),
        ({"CONTENT_LENGTH": " 1"}, None),
        ({"CONTENT_LENGTH": "1e3"}, None),
        ({"CONTENT_LENGTH": "\u0661"}, None),  # a digit, but not an ASCII one
        ({"CONTENT_LENGTH": "42", "HTTP_TRANSFER_ENCODING": "chunked"}, None),
    ],
)
def test_a_body_is_read_by_its_length_only_when_that_is_a_plain_number(
    environ: dict[str, str], length: int | None
) -> None:
    assert _declared_length(environ) == length  # None: werkzeug reads (and limits) the body


def test_create_takes_exactly_the_declared_length(client: FlaskClient) -> None:
    body = json.dumps(STORY).encode()

    response = client.post(
        "/api/v1/sessions",
        input_stream=io.BytesIO(body + b"trailing bytes past the declared length"),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(len(body)), "wsgi.input_terminated": True},
    )

    assert response.status_code == 201, response.get_json()


def test_create_fills_request_defaults(client: FlaskClient) -> None:
    body = create(client, media_type="cinematic", num_scenes=5)
    created = client.post("/api/v1/sessions", json={"story_text": "Only a story."}).get_json()

    assert body["request_data"]["num_scenes"] == 5
    assert created["request_data"] == {
        "story_text": "Only a story.",
        "media_type": "cinematic",
        "num_scenes": 5,
    }


def test_get_session_touches_last_accessed_only(client: FlaskClient, clock: ManualClock) -> None:
    session = create(client)
    clock.advance(90.5)

    body = client.get(url(session)).get_json()

    assert body["created_at"] == "2026-01-01T00:00:00Z"
    assert body["updated_at"] == "2026-01-01T00:00:00Z"
    assert body["last_accessed"] == "2026-01-01T00:01:30.500000Z"


def test_session_times_are_rfc3339_utc_after_updates(
    client: FlaskClient, clock: ManualClock
) -> None:
    session = create(client)
    clock.advance(seconds=1, microseconds=250)

    body = client.put(url(session, "/status"), json={"status": "processing"}).get_json()

    assert body["updated_at"] == "2026-01-01T00:00:01.000250Z"
    assert body["last_accessed"] == "2026-01-01T00:00:01.000250Z"


def test_delete_returns_204_and_removes(client: FlaskClient, manager: SessionManager) -> None:
    session = create(client)

    response = client.delete(url(session))

    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert manager.peek_session(session["session_id"]) is None
    assert client.get(url(session)).status_code == 404


def test_put_status_moves_the_session_and_keeps_the_message(client: FlaskClient) -> None:
    session = create(client)

    processing = client.put(url(session, "/status"), json={"status": "processing"})
    failed = client.put(
        url(session, "/status"), json={"status": "failed", "error_message": "model timed out"}
    )

    assert processing.status_code == 200
    assert processing.get_json()["status"] == "processing"
    assert failed.status_code == 200
    assert failed.get_json()["status"] == "failed"
    assert failed.get_json()["error_message"] == "model timed out"


def test_put_same_status_again_changes_nothing(client: FlaskClient, clock: ManualClock) -> None:
    session = create(client)
    clock.advance(5)

    body = client.put(url(session, "/status"), json={"status": "pending"}).get_json()

    assert body["status"] == "pending"
    assert body["updated_at"] == "2026-01-01T00:00:00Z"


def test_put_progress_records_progress_with_percentage(client: FlaskClient) -> None:
    session = create(client)
    client.put(url(session, "/status"), json={"status": "processing"})

    response = client.put(
        url(session, "/progress"),
        json={"current_step": 1, "total_steps": 3, "description": "scene 1"},
    )

    assert response.status_code == 200
    assert response.get_json()["progress"] == {
        "current_step": 1,
        "total_steps": 3,
        "description": "scene 1",
        "percentage": 33.3,
    }


def test_progress_is_accepted_while_pending(client: FlaskClient) -> None:
    session = create(client)

    response = client.put(url(session, "/progress"), json={"current_step": 0, "total_steps": 4})

    assert response.status_code == 200
    assert response.get_json()["progress"]["percentage"] == 0.0


def test_put_scene_adds_with_201_then_replaces_with_200(client: FlaskClient) -> None:
    session = create(client)

    added = client.put(url(session, "/scenes/2"), json={"prompt": "a lantern glows"})
    replaced = client.put(
        url(session, "/scenes/2"), json={"prompt": "the lantern dims", "title": "Dusk"}
    )

    assert added.status_code == 201
    assert added.get_json()["scenes"] == [
        {
            "scene_number": 2,
            "prompt": "a lantern glows",
            "title": None,
            "negative_prompt": None,
            "duration_seconds": None,
        }
    ]
    assert replaced.status_code == 200
    assert [
        (s["scene_number"], s["prompt"], s["title"]) for s in replaced.get_json()["scenes"]
    ] == [(2, "the lantern dims", "Dusk")]


def test_put_scene_path_number_wins_over_the_body(client: FlaskClient) -> None:
    session = create(client)

    response = client.put(url(session, "/scenes/3"), json={"scene_number": 1, "prompt": "snow"})

    assert response.status_code == 201
    assert [s["scene_number"] for s in response.get_json()["scenes"]] == [3]


def test_put_scenes_replaces_all_in_number_order(client: FlaskClient) -> None:
    session = create(client)
    client.put(url(session, "/scenes/1"), json={"prompt": "old"})

    response = client.put(
        url(session, "/scenes"),
        json={
            "scenes": [
                {"scene_number": 3, "prompt": "three", "duration_seconds": 2.5},
                {"scene_number": 2, "prompt": "two"},
            ]
        },
    )

    assert response.status_code == 200
    scenes = response.get_json()["scenes"]
    assert [(s["scene_number"], s["prompt"]) for s in scenes] == [(2, "two"), (3, "three")]
    assert scenes[1]["duration_seconds"] == 2.5


def test_patch_applies_every_field_together(client: FlaskClient) -> None:
    session = create(client)
    client.put(url(session, "/status"), json={"status": "processing"})

    response = client.patch(
        url(session),
        json={
            "status": "completed",
            "error_message": None,
            "progress": {"current_step": 3, "total_steps": 3},
            "scenes": [{"scene_number": 1, "prompt": "one"}],
        },
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "completed"
    assert body["progress"]["percentage"] == 100.0
    assert [s["scene_number"] for s in body["scenes"]] == [1]


def test_patch_null_progress_clears_it(client: FlaskClient) -> None:
    session = create(client)
    client.put(url(session, "/progress"), json={"current_step": 1, "total_steps": 2})

    response = client.patch(url(session), json={"progress": None})

    assert response.status_code == 200
    assert response.get_json()["progress"] is None


def test_patch_with_nothing_returns_the_session_unchanged(
    client: FlaskClient, clock: ManualClock
) -> None:
    session = create(client)
    clock.advance(3)

    response = client.patch(url(session), json={})

    assert response.status_code == 200
    assert response.get_json()["updated_at"] == "2026-01-01T00:00:00Z"


def test_bulk_status_reports_updated_missing_and_conflicts(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    pending = make_session(manager)
    processing = make_session(manager, "processing")
    completed = make_session(manager, "completed")

    response = client.post(
        "/api/v1/sessions/bulk/status",
        json={
            "session_ids": [
                pending.session_id,
                "nope",
                processing.session_id,
                completed.session_id,
            ],
            "status": "failed",
            "error_message": "batch cancelled",
        },
    )

    assert response.status_code == 200
    assert response.get_json() == {
        "updated": 2,
        "missing": ["nope"],
        "conflicts": [completed.session_id],
    }
    failed = manager.peek_session(pending.session_id)
    assert failed is not None
    assert failed.status is GenerationStatus.FAILED
    assert failed.error_message == "batch cancelled"


def test_list_returns_summaries_in_creation_order(client: FlaskClient, clock: ManualClock) -> None:
    first = create(client)
    clock.advance(1800)
    second = create(client)
    client.put(url(second, "/scenes/1"), json={"prompt": "one"})
    clock.advance(1800)

    response = client.get("/api/v1/sessions")

    assert response.status_code == 200
    body = response.get_json()
    assert body["next_cursor"] is None
    assert [item["session_id"] for item in body["items"]] == [
        first["session_id"],
        second["session_id"],
    ]
    assert body["items"][0] == {
        "session_id": first["session_id"],
        "status": "pending",
        "created_at": "2026-01-01T00:00:00Z",
        "last_accessed": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "age_hours": 1.0,
        "scenes_stored": 0,
        "scenes_requested": 3,
        "progress": None,
    }
    assert body["items"][1]["scenes_stored"] == 1
    assert body["items"][1]["age_hours"] == 0.5


def test_list_pages_through_every_session_with_the_cursor(
    client: FlaskClient, clock: ManualClock
) -> None:
    ids = []
    for _ in range(5):
        ids.append(create(client)["session_id"])
        clock.advance(1)

    seen: list[str] = []
    pages = 0
    query = "/api/v1/sessions?limit=2"
    while True:
        body = client.get(query).get_json()
        pages += 1
        seen += [item["session_id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        query = f"/api/v1/sessions?limit=2&cursor={body['next_cursor']}"

    assert seen == ids
    assert pages == 3


def test_list_filters_by_status(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    make_session(manager)
    processing = make_session(manager, "processing")
    make_session(manager, "completed")

    body = client.get("/api/v1/sessions?status=processing").get_json()

    assert [item["session_id"] for item in body["items"]] == [processing.session_id]
    assert body["items"][0]["status"] == "processing"


def test_list_defaults_to_100_per_page(
    make_app: MakeApp, make_manager: MakeManager, request_data: GenerationRequest
) -> None:
    manager = make_manager(max_sessions=150)
    client = make_app(manager).test_client()
    for _ in range(101):
        manager.create_session(request_data)

    body = client.get("/api/v1/sessions").get_json()
    rest = client.get(f"/api/v1/sessions?cursor={body['next_cursor']}").get_json()
    big = client.get("/api/v1/sessions?limit=1000").get_json()

    assert len(body["items"]) == 100
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    assert len(big["items"]) == 101


def test_stats_have_the_seed_keys(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession, clock: ManualClock
) -> None:
    make_session(manager, "processing")
    clock.advance(7200)
    make_session(manager, "completed")

    response = client.get("/api/v1/stats")

    assert response.status_code == 200
    assert response.get_json() == {
        "total_sessions": 2,
        "max_capacity": 10,
        "utilization_percent": 20.0,
        "status_breakdown": {"pending": 0, "processing": 1, "completed": 1, "failed": 0},
        "age_distribution": {"under_1h": 1, "1h_to_6h": 1, "6h_to_24h": 0, "over_24h": 0},
        "average_age_hours": 1.0,
        "oldest_session_hours": 2.0,
        "newest_session_hours": 0.0,
        "stuck_sessions": 1,
    }


def test_health_uses_real_json_types(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    for _ in range(7):
        make_session(manager)

    response = client.get("/api/v1/health")

    assert response.status_code == 200
    assert response.get_json() == {
        "overall_health": "warning",
        "session_count": 7,
        "utilization_percent": 70.0,
        "stuck_sessions": 0,
        "cleanup_active": False,
    }


@pytest.mark.parametrize(
    ("scope", "max_age", "left"),
    [
        ("expired", 1800, {"fresh-pending", "fresh-failed", "fresh-completed"}),
        ("failed", None, {"old-pending", "fresh-pending", "old-completed", "fresh-completed"}),
        ("failed", 1800, {"old-pending", "fresh-pending", "fresh-failed", "old-completed",
                          "fresh-completed"}),
        ("completed", 1800, {"old-pending", "fresh-pending", "old-failed", "fresh-failed",
                             "fresh-completed"}),
        ("all", None, set()),
    ],
)  # fmt: skip
def test_admin_cleanup_removes_by_scope(
    client: FlaskClient,
    manager: SessionManager,
    make_session: MakeSession,
    clock: ManualClock,
    scope: str,
    max_age: float | None,
    left: set[str],
) -> None:
    names: dict[str, str] = {}
    for age, then_wait in (("old", 3000), ("fresh", 600)):
        for status in ("pending", "failed", "completed"):
            names[make_session(manager, status).session_id] = f"{age}-{status}"
        clock.advance(then_wait)
    body: dict[str, Any] = {"scope": scope}
    if max_age is not None:
        body["max_age_seconds"] = max_age

    response = client.post("/api/v1/admin/cleanup", json=body)

    assert response.status_code == 200
    assert response.get_json() == {"removed": 6 - len(left)}
    remaining = {names[s.session_id] for s in manager.list_sessions(limit=100)[0]}
    assert remaining == left


def test_admin_config_reads_and_reconfigures(client: FlaskClient, manager: SessionManager) -> None:
    before = client.get("/api/v1/admin/config")

    patched = client.patch(
        "/api/v1/admin/config",
        json={"max_sessions": 50, "capacity_policy": "reject", "stuck_after_seconds": 60},
    )

    assert before.status_code == 200
    assert before.get_json() == {
        "max_sessions": 10,
        "cleanup_interval_seconds": 3600.0,
        "session_max_age_seconds": 86400.0,
        "failed_max_age_seconds": 3600.0,
        "completed_max_age_seconds": 21600.0,
        "stuck_after_seconds": 1800.0,
        "capacity_policy": "evict_oldest",
        "warning_utilization": 0.7,
        "critical_utilization": 0.9,
    }
    assert patched.status_code == 200
    assert patched.get_json() == {
        **before.get_json(),
        "max_sessions": 50,
        "capacity_policy": "reject",
        "stuck_after_seconds": 60.0,
    }
    assert manager.config.max_sessions == 50
    assert client.get("/api/v1/admin/config").get_json() == patched.get_json()


def test_livez_is_always_200(client: FlaskClient, app: Flask) -> None:
    get_sidecar(app).begin_drain()

    response = client.get("/livez")

    assert response.status_code == 200
    assert response.get_json() == {"status": "alive"}


def test_readyz_is_200_with_the_worker_running(
    client: FlaskClient, manager: SessionManager
) -> None:
    started(manager)

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {
            "accepting": True,
            "manager_open": True,
            "cleanup_worker_alive": True,
            "store": True,
        },
    }


def test_readyz_is_503_while_draining(
    client: FlaskClient, app: Flask, manager: SessionManager
) -> None:
    started(manager)
    get_sidecar(app).begin_drain()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["type"] == "urn:sidecar:problem:not-ready"
    assert body["checks"] == {
        "accepting": False,
        "manager_open": True,
        "cleanup_worker_alive": True,
        "store": True,
    }


def test_readyz_is_503_when_the_worker_is_not_running(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["detail"] == "failing: cleanup_worker_alive"


def test_readyz_is_503_after_manager_shutdown(client: FlaskClient, manager: SessionManager) -> None:
    started(manager)
    manager.shutdown()

    body = client.get("/readyz").get_json()

    assert body["checks"] == {
        "accepting": True,
        "manager_open": False,
        "cleanup_worker_alive": False,
        "store": True,
    }


def test_a_whole_session_life(client: FlaskClient, clock: ManualClock) -> None:
    session = create(client, num_scenes=2)
    steps = [
        ("put", "/status", {"status": "processing"}, 200),
        ("put", "/progress", {"current_step": 1, "total_steps": 2}, 200),
        ("put", "/scenes/1", {"prompt": "A fox in the snow."}, 201),
        ("put", "/progress", {"current_step": 2, "total_steps": 2}, 200),
        ("put", "/scenes/2", {"prompt": "The lantern lights the forest."}, 201),
        ("put", "/status", {"status": "completed"}, 200),
    ]
    for method, tail, body, status in steps:
        clock.advance(10)
        response = getattr(client, method)(url(session, tail), json=body)
        assert response.status_code == status, (tail, response.get_json())

    final = client.get(url(session)).get_json()

    assert final["status"] == "completed"
    assert final["progress"]["percentage"] == 100.0
    assert [s["scene_number"] for s in final["scenes"]] == [1, 2]
    assert final["updated_at"] == "2026-01-01T00:01:00Z"
