"""The API says what it does: recovery, finished sessions, counts, bounds, OPTIONS, echoes."""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sidecar.core.clock import ManualClock
from sidecar.core.manager import RECOVERED_MESSAGE, SessionManager
from sidecar.core.models import MAX_SCENES, MAX_STEPS
from sidecar.web.routes import OPERATIONS

if TYPE_CHECKING:
    from conftest import MakeApp, MakeSession

S = "/api/v1/sessions"
STUCK = 1800.0  # the default stuck_after_seconds


def problem(response: Any) -> dict[str, Any]:
    assert response.content_type == "application/problem+json", response.get_data(as_text=True)
    body: dict[str, Any] = json.loads(response.get_data())
    return body


# ---------------------------------------------------------------------- recover


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_recover_fails_a_session_not_updated_for_longer_than_the_stuck_threshold(
    client: FlaskClient,
    manager: SessionManager,
    make_session: MakeSession,
    clock: ManualClock,
    status: str,
) -> None:
    session = make_session(manager, status)
    clock.advance(STUCK + 1)

    response = client.post(f"{S}/{session.session_id}/recover")

    assert response.status_code == 200
    assert response.get_json()["status"] == "failed"
    assert response.get_json()["error_message"] == RECOVERED_MESSAGE


@pytest.mark.parametrize(
    ("status", "idle"),
    [
        ("pending", 0.0),
        ("processing", 0.0),
        ("processing", STUCK),  # exactly at the threshold is not stuck yet
        ("completed", STUCK + 1),
        ("failed", STUCK + 1),
    ],
)
def test_recover_refuses_a_session_that_needs_no_recovering(
    client: FlaskClient,
    manager: SessionManager,
    make_session: MakeSession,
    clock: ManualClock,
    status: str,
    idle: float,
) -> None:
    session = make_session(manager, status)
    clock.advance(idle)

    response = client.post(f"{S}/{session.session_id}/recover")

    assert response.status_code == 409
    body = problem(response)
    assert body["type"] == "urn:sidecar:problem:invalid-transition"
    assert body["current_status"] == status
    assert body["requested"] == "recover"
    assert "stuck_after_seconds" in body["detail"]
    assert manager.peek_session(session.session_id) == session


# ---------------------------------------------------------------------- finished sessions


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_finished_session_refuses_a_new_error_message(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession, status: str
) -> None:
    session = make_session(manager, status)

    patched = client.patch(f"{S}/{session.session_id}", json={"error_message": "rewritten"})
    same_status = client.put(
        f"{S}/{session.session_id}/status", json={"status": status, "error_message": "rewritten"}
    )

    for response in (patched, same_status):
        assert response.status_code == 409
        assert problem(response)["requested"] == "error_message"
    assert manager.peek_session(session.session_id) == session


def test_the_same_status_with_a_message_applies_it_while_the_work_goes_on(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession, clock: ManualClock
) -> None:
    session = make_session(manager, "processing")
    clock.advance(5)

    response = client.put(
        f"{S}/{session.session_id}/status",
        json={"status": "processing", "error_message": "retry 2"},
    )

    assert response.status_code == 200
    assert response.get_json()["error_message"] == "retry 2"
    assert response.get_json()["updated_at"] == "2026-01-01T00:00:05Z"


def test_sending_a_failed_session_its_status_and_message_again_changes_nothing(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession, clock: ManualClock
) -> None:
    session = make_session(manager, "processing")
    body = {"status": "failed", "error_message": "model timed out"}
    first = client.put(f"{S}/{session.session_id}/status", json=body)
    clock.advance(5)

    again = client.put(f"{S}/{session.session_id}/status", json=body)

    assert again.status_code == 200
    assert again.get_json() == first.get_json()


def test_bulk_status_does_not_rewrite_the_message_of_a_failed_session(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    failed = make_session(manager, "failed")

    response = client.post(
        f"{S}/bulk/status",
        json={"session_ids": [failed.session_id], "status": "failed", "error_message": "again"},
    )

    assert response.get_json()["conflicts"] == [failed.session_id]
    assert manager.peek_session(failed.session_id) == failed


# ---------------------------------------------------------------------- list summary


def test_the_summary_names_stored_and_requested_scenes(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager)  # num_scenes=3
    client.put(f"{S}/{session.session_id}/scenes/2", json={"prompt": "two"})

    (item,) = client.get(S).get_json()["items"]

    assert item["scenes_stored"] == 1
    assert item["scenes_requested"] == 3
    assert "num_scenes" not in item


# ---------------------------------------------------------------------- unknown fields


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", S, {"story_text": "x", "color": "red"}),
        ("PUT", S + "/{id}/progress", {"current_step": 1, "total_steps": 2, "eta": 3}),
        ("PUT", S + "/{id}/scenes/1", {"prompt": "p", "color": "red"}),
        ("PUT", S + "/{id}/scenes", {"scenes": [{"scene_number": 1, "prompt": "p", "color": 1}]}),
        ("PATCH", S + "/{id}", {"color": "red"}),
        ("PUT", S + "/{id}/status", {"status": "processing", "color": "red"}),
    ],
)
def test_an_unknown_field_has_one_wording_everywhere(
    client: FlaskClient,
    manager: SessionManager,
    make_session: MakeSession,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    session = make_session(manager)

    response = client.open(path.format(id=session.session_id), method=method, json=body)

    assert response.status_code == 422
    (issue,) = problem(response)["errors"]
    assert issue["loc"][-1] == "color" or issue["loc"][-1] == "eta"
    assert issue["type"] == "extra_forbidden"
    assert issue["msg"] == "Extra inputs are not permitted"


# ---------------------------------------------------------------------- numbers


# Arabic-Indic 1, Arabic-Indic 12, full-width 1, superscript 2, double-struck 1
@pytest.mark.parametrize("n", ["\u0661", "\u0661\u0662", "\uff11", "\u00b2", "\U0001d7d9"])
def test_a_scene_number_is_ascii_digits_only(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession, n: str
) -> None:
    session = make_session(manager)

    response = client.put(f"{S}/{session.session_id}/scenes/{n}", json={"prompt": "p"})

    assert response.status_code == 404
    assert problem(response)["type"] == "urn:sidecar:problem:not-found"
    assert manager.peek_session(session.session_id) == session


@pytest.mark.parametrize(
    ("tail", "body", "loc"),
    [
        ("/progress", {"current_step": 0, "total_steps": 2**70}, ["body", "total_steps"]),
        ("/progress", {"current_step": 2**70, "total_steps": 2**70}, ["body", "current_step"]),
        ("/progress", {"current_step": 0, "total_steps": MAX_STEPS + 1}, ["body", "total_steps"]),
        ("/scenes/" + str(2**70), {"prompt": "p"}, ["path", "n"]),
        ("/scenes", {"scenes": [{"scene_number": 2**70, "prompt": "p"}]}, None),
    ],
)
def test_numbers_past_their_documented_maximum_are_refused(
    client: FlaskClient,
    manager: SessionManager,
    make_session: MakeSession,
    tail: str,
    body: dict[str, Any],
    loc: list[str] | None,
) -> None:
    session = make_session(manager, "processing")

    response = client.put(f"{S}/{session.session_id}{tail}", json=body)

    assert response.status_code == 422
    if loc is not None:
        assert problem(response)["errors"][0]["loc"] == loc
    assert manager.peek_session(session.session_id) == session


def test_the_largest_documented_numbers_are_accepted(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    created = client.post(S, json={"story_text": "x", "num_scenes": MAX_SCENES}).get_json()
    path = f"{S}/{created['session_id']}"

    progress = client.put(
        path + "/progress", json={"current_step": MAX_STEPS, "total_steps": MAX_STEPS}
    )
    scene = client.put(path + f"/scenes/{MAX_SCENES}", json={"prompt": "p"})

    assert progress.status_code == 200
    assert scene.status_code == 201


# ---------------------------------------------------------------------- OPTIONS


def _allowed(rule: str) -> set[str]:
    methods = {op.method for op in OPERATIONS if op.rule == rule}
    if "GET" in methods:
        methods.add("HEAD")
    return methods | {"OPTIONS"}


@pytest.mark.parametrize("rule", sorted({op.rule for op in OPERATIONS}))
def test_options_answers_204_with_allow_on_every_route(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession, rule: str
) -> None:
    session = make_session(manager)
    path = rule.replace("<session_id>", session.session_id).replace("<scene:n>", "1")

    response = client.options(path)

    assert response.status_code == 204
    assert response.get_data() == b""
    assert "Content-Type" not in response.headers
    assert set(response.headers["Allow"].split(", ")) == _allowed(rule)


def test_options_on_an_unknown_path_is_a_404_problem(client: FlaskClient) -> None:
    response = client.options("/nothing-here")

    assert response.status_code == 404
    assert problem(response)["type"] == "urn:sidecar:problem:not-found"


def test_options_needs_the_token_its_route_needs(make_app: MakeApp) -> None:
    client = make_app(api_token="s3cret-0123456789").test_client()

    assert client.options(S).status_code == 401
    assert (
        client.options(S, headers={"Authorization": "Bearer s3cret-0123456789"}).status_code == 204
    )
    assert client.options("/livez").status_code == 204


# ---------------------------------------------------------------------- echoes


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nothing/" + "x" * 60_000),
        ("GET", S + "/" + "y" * 60_000),
        ("DELETE", S + "/" + "y" * 60_000),
        ("X" * 10_000, "/livez"),
        ("X" * 10_000, "/z" * 30_000),
    ],
)
def test_a_problem_echoes_at_most_a_short_piece_of_the_request(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method)

    assert 400 <= response.status_code < 500
    body = problem(response)
    assert len(response.get_data()) < 600
    assert "truncated" in body["detail"]


def test_a_long_unknown_field_name_is_truncated_in_the_problem(client: FlaskClient) -> None:
    response = client.post(S, json={"story_text": "x", "k" * 50_000: 1})

    assert response.status_code == 422
    assert len(response.get_data()) < 1000
    (issue,) = problem(response)["errors"]
    assert issue["loc"][1].startswith("kkkk")
    assert "truncated" in issue["loc"][1]


# ---------------------------------------------------------------------- Content-Encoding


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip", "x" * 5000])
def test_a_body_in_a_content_encoding_the_sidecar_does_not_decode_is_415(
    client: FlaskClient, manager: SessionManager, encoding: str
) -> None:
    response = client.post(
        S,
        data=gzip.compress(b'{"story_text": "x"}'),
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )

    assert response.status_code == 415
    assert problem(response)["type"] == "urn:sidecar:problem:unsupported-media-type"
    assert response.headers["Accept-Encoding"] == "identity"
    assert len(response.get_data()) < 600
    assert manager.get_session_count() == 0


@pytest.mark.parametrize("encoding", ["identity", "IDENTITY", ""])
def test_an_identity_content_encoding_is_read_as_plain(client: FlaskClient, encoding: str) -> None:
    response = client.post(
        S,
        data=b'{"story_text": "x"}',
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )

    assert response.status_code == 201


def test_openapi_describes_recover_and_the_bounds(app: Flask) -> None:
    doc = json.loads(app.test_client().get("/openapi.json").get_data())
    recover = doc["paths"]["/api/v1/sessions/{session_id}/recover"]["post"]
    progress = doc["components"]["schemas"]["ProgressUpdate-Input"]["properties"]

    assert "stuck_after_seconds" in recover["description"]
    assert "409" in recover["responses"]
    assert progress["total_steps"]["maximum"] == MAX_STEPS
    assert progress["current_step"]["maximum"] == MAX_STEPS
