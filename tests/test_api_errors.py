"""Bad input: each case answers its problem+json with the right status and changes nothing."""

# ruff: noqa: E501 - the case table reads best with one case per line

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from flask.testing import FlaskClient
from pydantic import TypeAdapter

from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationSession
from sidecar.web.app import get_sidecar
from sidecar.web.problems import PROBLEM_TYPES
from sidecar.web.schemas import MAX_ISSUES

if TYPE_CHECKING:
    from conftest import MakeApp, MakeSession

_dump = TypeAdapter(GenerationSession).dump_python

API = {"api_token": "s3cret-api-t0ken-1"}
ADMIN = {"api_token": "s3cret-api-t0ken-1", "admin_token": "adm1n-t0ken-2-long"}
METRICS = {"metrics_token": "m3trics-t0ken-3-long"}
BEARER = {"Authorization": "Bearer s3cret-api-t0ken-1"}
PROGRESS = {"current_step": 1, "total_steps": 2}
CURSOR_OF_WRONG_SHAPE = base64.urlsafe_b64encode(b'{"a": 1}').decode().rstrip("=")
# [1, "\ud800"]: JSON can spell a lone surrogate, which no UTF-8 (and no Redis key) can hold
CURSOR_OF_A_LONE_SURROGATE = base64.urlsafe_b64encode(b'[1, "\\ud800"]').decode().rstrip("=")


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # {P}, {R}, {C}: ids of a pending, a processing and a completed session
    status: int
    slug: str
    json: Any = None
    data: Any = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    locs: list[list[str | int]] | None = None  # 422: the exact locations reported
    answer_headers: dict[str, str] = field(default_factory=dict)
    reconfigure: dict[str, Any] = field(default_factory=dict)
    drain: bool = False


def bad(id: str, method: str, path: str, body: Any, *locs: list[str | int]) -> Case:
    return Case(id, method, path, 422, "validation-error", json=body, locs=list(locs))


S = "/api/v1/sessions"
CASES = [
    # 400: the body is not JSON at all
    Case("truncated", "POST", S, 400, "malformed-json", data='{"story_text": ', content_type="application/json"),
    Case("nan", "POST", S, 400, "malformed-json", data='{"story_text": "x", "num_scenes": NaN}', content_type="application/json"),
    Case("empty-json-body", "POST", S, 400, "malformed-json", data="", content_type="application/json"),
    Case("form-encoded-as-json", "PUT", S + "/{P}/status", 400, "malformed-json", data="status=processing", content_type="application/json"),
    Case("trailing-garbage", "PATCH", S + "/{P}", 400, "malformed-json", data='{"status": "processing"} x', content_type="application/json"),
    Case("not-utf8", "POST", S, 400, "malformed-json", data=b'{"story_text": "\xff"}', content_type="application/json"),
    # 401: no token, a wrong one, another scheme
    Case("no-token", "GET", S, 401, "unauthorized", settings=API, answer_headers={"WWW-Authenticate": 'Bearer realm="sidecar"'}),
    Case("wrong-token", "POST", S, 401, "unauthorized", json={"story_text": "x"}, headers={"Authorization": "Bearer s3cre"}, settings=API,
         answer_headers={"WWW-Authenticate": 'Bearer realm="sidecar", error="invalid_token"'}),
    Case("basic-scheme", "GET", S, 401, "unauthorized", headers={"Authorization": "Basic czNjcmV0"}, settings=API),
    Case("empty-bearer", "GET", S, 401, "unauthorized", headers={"Authorization": "Bearer "}, settings=API),
    Case("unknown-api-path-asks-token-first", "GET", "/api/v1/nope", 401, "unauthorized", settings=API),
    Case("delete-without-token", "DELETE", S + "/{P}", 401, "unauthorized", settings=API),
    Case("metrics-without-token", "GET", "/metrics", 401, "unauthorized", settings=METRICS),
    Case("metrics-with-api-token", "GET", "/metrics", 401, "unauthorized", headers=BEARER, settings={**API, **METRICS}),
    Case("admin-without-token", "GET", "/api/v1/admin/config", 401, "unauthorized", settings=ADMIN),
    # 403: the API token on an admin route
    Case("api-token-on-admin-config", "PATCH", "/api/v1/admin/config", 403, "forbidden", json={"max_sessions": 5}, headers=BEARER, settings=ADMIN),
    Case("api-token-on-admin-cleanup", "POST", "/api/v1/admin/cleanup", 403, "forbidden", json={"scope": "all"}, headers=BEARER, settings=ADMIN),
    # 404: unknown session or route
    Case("get-unknown", "GET", S + "/nope", 404, "session-not-found"),
    Case("delete-unknown", "DELETE", S + "/nope", 404, "session-not-found"),
    Case("status-unknown", "PUT", S + "/nope/status", 404, "session-not-found", json={"status": "processing"}),
    Case("progress-unknown", "PUT", S + "/nope/progress", 404, "session-not-found", json=PROGRESS),
    Case("scene-unknown", "PUT", S + "/nope/scenes/1", 404, "session-not-found", json={"prompt": "p"}),
    Case("scenes-unknown", "PUT", S + "/nope/scenes", 404, "session-not-found", json={"scenes": []}),
    Case("patch-unknown", "PATCH", S + "/nope", 404, "session-not-found", json={}),
    Case("recover-unknown", "POST", S + "/nope/recover", 404, "session-not-found"),
    Case("unknown-api-route", "GET", "/api/v1/nope", 404, "not-found"),
    Case("unknown-route", "GET", "/nothing-here", 404, "not-found"),
    Case("double-slash-is-no-redirect", "GET", "//api/v1/sessions", 404, "not-found"),
    Case("negative-scene-number", "PUT", S + "/{P}/scenes/-1", 404, "not-found", json={"prompt": "p"}),
    # 405: wrong method
    Case("delete-collection", "DELETE", S, 405, "method-not-allowed", answer_headers={"Allow": "GET, HEAD, OPTIONS, POST"}),
    Case("post-livez", "POST", "/livez", 405, "method-not-allowed", answer_headers={"Allow": "GET, HEAD, OPTIONS"}),
    Case("put-stats", "PUT", "/api/v1/stats", 405, "method-not-allowed", json={}),
    Case("get-bulk", "GET", S + "/bulk/status", 405, "method-not-allowed"),
    # 409: invalid transition, or work on a finished session
    Case("completed-to-processing", "PUT", S + "/{C}/status", 409, "invalid-transition", json={"status": "processing"}),
    Case("pending-to-completed", "PUT", S + "/{P}/status", 409, "invalid-transition", json={"status": "completed"}),
    Case("processing-to-pending", "PATCH", S + "/{R}", 409, "invalid-transition", json={"status": "pending"}),
    Case("progress-on-completed", "PUT", S + "/{C}/progress", 409, "invalid-transition", json=PROGRESS),
    Case("scene-on-completed", "PUT", S + "/{C}/scenes/1", 409, "invalid-transition", json={"prompt": "p"}),
    Case("scenes-on-completed", "PUT", S + "/{C}/scenes", 409, "invalid-transition", json={"scenes": []}),
    Case("patch-progress-on-completed", "PATCH", S + "/{C}", 409, "invalid-transition", json={"progress": PROGRESS}),
    # 413: over the body limit
    Case("over-default-limit", "POST", S, 413, "body-too-large", json={"story_text": "x" * (1 << 20)}),
    Case("over-set-limit", "PUT", S + "/{P}/progress", 413, "body-too-large", json={**PROGRESS, "description": "d" * 80}, settings={"max_body_bytes": 64}),
    # 415: not JSON
    Case("text-plain", "POST", S, 415, "unsupported-media-type", data='{"story_text": "x"}', content_type="text/plain"),
    Case("no-content-type", "POST", S, 415, "unsupported-media-type", data='{"story_text": "x"}'),
    Case("form", "PUT", S + "/{P}/status", 415, "unsupported-media-type", data={"status": "processing"}),
    Case("no-body-at-all", "PATCH", "/api/v1/admin/config", 415, "unsupported-media-type"),
    # 422: validation, unknown fields included
    bad("unknown-field", "POST", S, {"story_text": "x", "color": "red"}, ["body", "color"]),
    bad("num-scenes-as-string", "POST", S, {"story_text": "x", "num_scenes": "5"}, ["body", "num_scenes"]),
    bad("num-scenes-as-bool", "POST", S, {"story_text": "x", "num_scenes": True}, ["body", "num_scenes"]),
    bad("num-scenes-as-float", "POST", S, {"story_text": "x", "num_scenes": 2.0}, ["body", "num_scenes"]),
    bad("num-scenes-zero", "POST", S, {"story_text": "x", "num_scenes": 0}, ["body", "num_scenes"]),
    bad("num-scenes-101", "POST", S, {"story_text": "x", "num_scenes": 101}, ["body", "num_scenes"]),
    bad("blank-story", "POST", S, {"story_text": "   "}, ["body", "story_text"]),
    bad("story-as-number", "POST", S, {"story_text": 42}, ["body", "story_text"]),
    bad("no-story", "POST", S, {"media_type": "anime"}, ["body", "story_text"]),
    bad("bad-media-type", "POST", S, {"story_text": "x", "media_type": "oil"}, ["body", "media_type"]),
    bad("body-is-a-list", "POST", S, [], ["body"]),
    bad("two-bad-fields", "POST", S, {"story_text": "", "num_scenes": -1}, ["body", "story_text"], ["body", "num_scenes"]),
    bad("bad-status", "PUT", S + "/{P}/status", {"status": "done"}, ["body", "status"]),
    bad("no-status", "PUT", S + "/{P}/status", {"error_message": "x"}, ["body", "status"]),
    bad("status-extra-field", "PUT", S + "/{P}/status", {"status": "processing", "by": "me"}, ["body", "by"]),
    bad("long-error-message", "PUT", S + "/{R}/status", {"status": "failed", "error_message": "e" * 2001}, ["body", "error_message"]),
    bad("step-past-total", "PUT", S + "/{R}/progress", {"current_step": 3, "total_steps": 2}, ["body"]),
    bad("zero-total", "PUT", S + "/{R}/progress", {"current_step": 0, "total_steps": 0}, ["body", "total_steps"]),
    bad("step-as-string", "PUT", S + "/{R}/progress", {"current_step": "1", "total_steps": 2}, ["body", "current_step"]),
    bad("step-as-float", "PUT", S + "/{R}/progress", {"current_step": 1.5, "total_steps": 2}, ["body", "current_step"]),
    bad("progress-extra-field", "PUT", S + "/{R}/progress", {**PROGRESS, "eta": 3}, ["body", "eta"]),
    bad("scene-zero", "PUT", S + "/{P}/scenes/0", {"prompt": "p"}, ["path", "n"]),
    bad("scene-past-num-scenes", "PUT", S + "/{P}/scenes/4", {"prompt": "p"}, ["path", "n"]),
    bad("scene-past-100", "PUT", S + "/{P}/scenes/101", {"prompt": "p"}, ["path", "n"]),
    bad("scene-body-number-not-an-int", "PUT", S + "/{P}/scenes/1", {"scene_number": "one", "prompt": "p"}, ["body", "scene_number"]),
    bad("scene-blank-prompt", "PUT", S + "/{P}/scenes/1", {"prompt": " "}, ["body", "prompt"]),
    bad("scene-extra-field", "PUT", S + "/{P}/scenes/1", {"prompt": "p", "seed": 7}, ["body", "seed"]),
    bad("scene-body-is-a-list", "PUT", S + "/{P}/scenes/1", [{"prompt": "p"}], ["body"]),
    bad("scene-negative-duration", "PUT", S + "/{P}/scenes/1", {"prompt": "p", "duration_seconds": -1}, ["body", "duration_seconds"]),
    bad("scene-duration-as-string", "PUT", S + "/{P}/scenes/1", {"prompt": "p", "duration_seconds": "5"}, ["body", "duration_seconds"]),
    bad("scene-duration-as-bool", "PUT", S + "/{P}/scenes/1", {"prompt": "p", "duration_seconds": True}, ["body", "duration_seconds"]),
    bad("scenes-duration-as-string", "PUT", S + "/{P}/scenes", {"scenes": [{"scene_number": 1, "prompt": "p", "duration_seconds": "5"}]},
        ["body", "scenes", 0, "duration_seconds"]),
    bad("scenes-duplicate", "PUT", S + "/{P}/scenes", {"scenes": [{"scene_number": 1, "prompt": "a"}, {"scene_number": 1, "prompt": "b"}]},
        ["body", "scenes", 1, "scene_number"]),
    bad("scenes-past-num-scenes", "PUT", S + "/{P}/scenes", {"scenes": [{"scene_number": 4, "prompt": "a"}]}, ["body", "scenes", 0, "scene_number"]),
    bad("scenes-missing", "PUT", S + "/{P}/scenes", {}, ["body", "scenes"]),
    bad("scenes-bare-list", "PUT", S + "/{P}/scenes", [{"scene_number": 1, "prompt": "a"}], ["body"]),
    bad("patch-unknown-field", "PATCH", S + "/{P}", {"status": "processing", "color": "red"}, ["body", "color"]),
    bad("patch-null-status", "PATCH", S + "/{P}", {"status": None}, ["body", "status"]),
    bad("patch-null-scenes", "PATCH", S + "/{P}", {"scenes": None}, ["body", "scenes"]),
    bad("patch-all-or-nothing", "PATCH", S + "/{P}", {"status": "processing", "progress": {"current_step": 5, "total_steps": 2}}, ["body", "progress"]),
    bad("patch-scenes-all-or-nothing", "PATCH", S + "/{P}", {"status": "processing", "scenes": [{"scene_number": 9, "prompt": "a"}]},
        ["body", "scenes", 0, "scene_number"]),
    bad("bulk-too-many", "POST", S + "/bulk/status", {"session_ids": ["x"] * 1001, "status": "failed"}, ["body", "session_ids"]),
    bad("bulk-no-status", "POST", S + "/bulk/status", {"session_ids": ["{P}"]}, ["body", "status"]),
    bad("bulk-bad-status", "POST", S + "/bulk/status", {"session_ids": ["{P}"], "status": "gone"}, ["body", "status"]),
    bad("bulk-ids-not-strings", "POST", S + "/bulk/status", {"session_ids": [1], "status": "failed"}, ["body", "session_ids", 0]),
    bad("cleanup-bad-scope", "POST", "/api/v1/admin/cleanup", {"scope": "old"}, ["body", "scope"]),
    bad("cleanup-all-with-age", "POST", "/api/v1/admin/cleanup", {"scope": "all", "max_age_seconds": 60}, ["body", "max_age_seconds"]),
    bad("cleanup-zero-age", "POST", "/api/v1/admin/cleanup", {"scope": "expired", "max_age_seconds": 0}, ["body", "max_age_seconds"]),
    bad("cleanup-age-as-string", "POST", "/api/v1/admin/cleanup", {"scope": "failed", "max_age_seconds": "60"}, ["body", "max_age_seconds"]),
    bad("config-zero-sessions", "PATCH", "/api/v1/admin/config", {"max_sessions": 0}, ["body", "max_sessions"]),
    bad("config-sessions-as-string", "PATCH", "/api/v1/admin/config", {"max_sessions": "5"}, ["body", "max_sessions"]),
    bad("config-sessions-as-bool", "PATCH", "/api/v1/admin/config", {"max_sessions": True}, ["body", "max_sessions"]),
    bad("config-null", "PATCH", "/api/v1/admin/config", {"max_sessions": None}, ["body", "max_sessions"]),
    bad("config-unknown", "PATCH", "/api/v1/admin/config", {"threads": 4}, ["body", "threads"]),
    bad("config-bad-policy", "PATCH", "/api/v1/admin/config", {"capacity_policy": "drop"}, ["body", "capacity_policy"]),
    bad("config-warning-above-critical", "PATCH", "/api/v1/admin/config", {"warning_utilization": 0.95}, ["body"]),
    bad("config-all-or-nothing", "PATCH", "/api/v1/admin/config", {"max_sessions": 50, "stuck_after_seconds": -1}, ["body", "stuck_after_seconds"]),
    Case("limit-zero", "GET", S + "?limit=0", 422, "validation-error", locs=[["query", "limit"]]),
    Case("limit-1001", "GET", S + "?limit=1001", 422, "validation-error", locs=[["query", "limit"]]),
    Case("limit-word", "GET", S + "?limit=ten", 422, "validation-error", locs=[["query", "limit"]]),
    Case("limit-float", "GET", S + "?limit=1.5", 422, "validation-error", locs=[["query", "limit"]]),
    Case("limit-twice", "GET", S + "?limit=1&limit=2", 422, "validation-error", locs=[["query", "limit"]]),
    Case("bad-status-filter", "GET", S + "?status=done", 422, "validation-error", locs=[["query", "status"]]),
    Case("garbage-cursor", "GET", S + "?cursor=!!", 422, "validation-error", locs=[["query", "cursor"]]),
    Case("cursor-of-wrong-shape", "GET", S + "?cursor=" + CURSOR_OF_WRONG_SHAPE, 422, "validation-error", locs=[["query", "cursor"]]),
    Case("cursor-id-not-text", "GET", S + "?cursor=" + CURSOR_OF_A_LONE_SURROGATE, 422, "validation-error", locs=[["query", "cursor"]]),
    Case("unknown-query", "GET", S + "?sort=age", 422, "validation-error", locs=[["query", "sort"]]),
    # 429: full under capacity_policy=reject
    Case("capacity-full", "POST", S, 429, "capacity-exceeded", json={"story_text": "x"},
         reconfigure={"max_sessions": 3, "capacity_policy": "reject"}, answer_headers={"Retry-After": "5"}),
    # 503: shutting down
    Case("create-while-draining", "POST", S, 503, "shutting-down", json={"story_text": "x"}, drain=True, answer_headers={"Retry-After": "5"}),
    Case("status-while-draining", "PUT", S + "/{P}/status", 503, "shutting-down", json={"status": "processing"}, drain=True),
    Case("cleanup-while-draining", "POST", "/api/v1/admin/cleanup", 503, "shutting-down", json={"scope": "all"}, drain=True),
]  # fmt: skip


def state(manager: SessionManager) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every stored session in full (read without touching) and the live settings."""
    sessions, _ = manager.list_sessions(limit=1000)
    return [_dump(s) for s in sessions], manager.config.as_dict()


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str) and value in ("{P}", "{R}", "{C}"):
        return ids[value[1]]
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_its_problem_and_changes_nothing(
    case: Case, make_app: MakeApp, manager: SessionManager, make_session: MakeSession
) -> None:
    ids = {
        "P": make_session(manager, "pending").session_id,
        "R": make_session(manager, "processing").session_id,
        "C": make_session(manager, "completed").session_id,
    }
    app = make_app(**case.settings)
    if case.reconfigure:
        manager.reconfigure(**case.reconfigure)
    if case.drain:
        get_sidecar(app).begin_drain()
    before = state(manager)
    kwargs: dict[str, Any] = {"headers": case.headers}
    if case.json is not None:
        kwargs["json"] = _fill(case.json, ids)
    if case.data is not None:
        kwargs["data"] = case.data
    if case.content_type is not None:
        kwargs["content_type"] = case.content_type

    response = app.test_client().open(case.path.format(**ids), method=case.method, **kwargs)

    assert response.status_code == case.status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    problem = json.loads(response.get_data())
    assert problem["type"] == f"urn:sidecar:problem:{case.slug}"
    assert problem["title"] == PROBLEM_TYPES[case.slug][1]
    assert problem["status"] == case.status
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    if case.locs is not None:
        assert [issue["loc"] for issue in problem["errors"]] == case.locs
        assert all(set(issue) == {"loc", "msg", "type"} for issue in problem["errors"])
    for name, value in case.answer_headers.items():
        assert response.headers.get(name) == value
    assert state(manager) == before


def test_every_error_status_of_the_issue_is_in_the_table() -> None:
    assert {c.status for c in CASES} == {400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503}


def test_validation_errors_do_not_echo_the_input(client: FlaskClient) -> None:
    story = "A secret story nobody else should read."

    response = client.post("/api/v1/sessions", json={"story_text": story, "num_scenes": "x"})

    assert response.status_code == 422
    assert story not in response.get_data(as_text=True)


def test_invalid_transition_names_both_statuses(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager, "completed")

    response = client.put(
        f"/api/v1/sessions/{session.session_id}/status", json={"status": "processing"}
    )

    assert response.get_json() == {
        "type": "urn:sidecar:problem:invalid-transition",
        "title": "Invalid transition",
        "status": 409,
        "detail": "session is completed; processing is not allowed from there",
        "current_status": "completed",
        "requested": "processing",
    }


def test_validation_problem_lists_message_and_type(client: FlaskClient) -> None:
    response = client.post("/api/v1/sessions", json={"story_text": "x", "num_scenes": 0})

    assert response.get_json() == {
        "type": "urn:sidecar:problem:validation-error",
        "title": "Validation failed",
        "status": 422,
        "detail": "body.num_scenes: Input should be greater than or equal to 1",
        "errors": [
            {
                "loc": ["body", "num_scenes"],
                "msg": "Input should be greater than or equal to 1",
                "type": "greater_than_equal",
            }
        ],
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", S + "?" + "&".join(f"q{i}=1" for i in range(MAX_ISSUES + 10)), None),
        ("POST", S, {"story_text": "x", **{f"f{i}": 1 for i in range(MAX_ISSUES + 10)}}),
    ],
    ids=["query", "body"],
)
def test_a_problem_lists_at_most_max_issues_and_counts_them_all(
    client: FlaskClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = client.open(path, method=method, json=body)

    problem = response.get_json()
    assert response.status_code == 422
    assert len(problem["errors"]) == MAX_ISSUES
    assert problem["detail"].endswith(f"(and {MAX_ISSUES + 9} more)")
    assert all(issue["type"] == "extra_forbidden" for issue in problem["errors"])


def test_api_is_503_once_the_manager_is_shut_down(
    client: FlaskClient, manager: SessionManager, make_session: MakeSession
) -> None:
    session = make_session(manager)
    manager.shutdown()

    response = client.get(f"/api/v1/sessions/{session.session_id}")

    assert response.status_code == 503
    assert response.get_json()["type"] == "urn:sidecar:problem:shutting-down"


def test_an_unexpected_error_is_a_500_problem_without_internals(
    client: FlaskClient, manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: Any) -> Any:
        raise RuntimeError("internal detail /etc/secret")

    monkeypatch.setattr(manager, "get_performance_stats", explode)

    response = client.get("/api/v1/stats")

    assert response.status_code == 500
    assert response.content_type == "application/problem+json"
    assert response.get_json() == {
        "type": "urn:sidecar:problem:internal-error",
        "title": "Internal server error",
        "status": 500,
        "detail": "the server failed to handle this request",
    }
    assert "Traceback" not in response.get_data(as_text=True)
