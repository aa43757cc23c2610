"""The OpenAPI document: valid 3.1, every route in it, errors documented as problem+json."""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator

from sidecar.core.models import MAX_SCENES
from sidecar.web.openapi import build_openapi

# The issue's route table, plus /metrics.
ROUTES = {
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{session_id}"),
    ("delete", "/api/v1/sessions/{session_id}"),
    ("put", "/api/v1/sessions/{session_id}/status"),
    ("put", "/api/v1/sessions/{session_id}/progress"),
    ("put", "/api/v1/sessions/{session_id}/scenes/{n}"),
    ("put", "/api/v1/sessions/{session_id}/scenes"),
    ("patch", "/api/v1/sessions/{session_id}"),
    ("post", "/api/v1/sessions/{session_id}/recover"),
    ("post", "/api/v1/sessions/bulk/status"),
    ("get", "/api/v1/stats"),
    ("get", "/api/v1/health"),
    ("post", "/api/v1/admin/cleanup"),
    ("get", "/api/v1/admin/config"),
    ("patch", "/api/v1/admin/config"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
}
PROBLEM = {"$ref": "#/components/schemas/ProblemDetails"}


def operations() -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    doc = build_openapi()
    return {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}


def test_document_is_valid_openapi_3_1() -> None:
    doc = build_openapi()

    assert doc["openapi"] == "3.1.0"
    errors = list(OpenAPIV31SpecValidator(doc).iter_errors())
    assert errors == []


def test_document_covers_every_route_of_the_issue() -> None:
    assert set(operations()) == ROUTES


def test_document_matches_the_apps_url_map(app: Flask) -> None:
    served = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<scene:n>", "{n}").replace("<session_id>", "{session_id}")
        served |= {(m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}

    assert served == ROUTES


def test_served_document_is_the_built_one(client: FlaskClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert json.loads(response.get_data()) == build_openapi()


def test_every_api_error_is_documented_as_problem_json() -> None:
    for (method, path), op in operations().items():
        errors = {int(code): r for code, r in op["responses"].items() if int(code) >= 400}
        if path.startswith("/api/v1/"):
            assert {401, 503} <= set(errors), (method, path)
        for code, response in errors.items():
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, code


def test_bodies_document_400_413_415_and_422() -> None:
    for key, op in operations().items():
        if "requestBody" in op:
            assert {"400", "413", "415", "422"} <= set(op["responses"]), key


def test_admin_routes_document_403_and_the_admin_token() -> None:
    for (method, path), op in operations().items():
        admin = path.startswith("/api/v1/admin/")
        assert ("403" in op["responses"]) is admin, (method, path)
        if admin:
            assert op["security"] == [{"adminToken": []}, {"apiToken": []}]


def test_api_routes_take_the_api_or_the_admin_token() -> None:
    api_routes = [
        op
        for (_, path), op in operations().items()
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/admin/")
    ]
    assert api_routes
    for op in api_routes:
        assert op["security"] == [{"apiToken": []}, {"adminToken": []}]


def test_operational_routes_are_open() -> None:
    ops = operations()

    for path in ("/livez", "/readyz", "/openapi.json"):
        assert ops[("get", path)]["security"] == []
    assert ops[("get", "/metrics")]["security"] == [{"metricsToken": []}]


def test_session_answer_has_progress_percentage_and_every_field_required() -> None:
    schemas = build_openapi()["components"]["schemas"]
    session = schemas["GenerationSession"]
    progress = schemas["ProgressUpdate-Output"]

    assert set(session["required"]) == {
        "session_id", "status", "request_data", "scenes", "progress", "error_message",
        "created_at", "last_accessed", "updated_at",
    }  # fmt: skip
    assert session["properties"]["created_at"]["format"] == "date-time"
    assert "percentage" in progress["required"]
    assert "percentage" not in schemas["ProgressUpdate-Input"]["properties"]


def test_request_bodies_refuse_unknown_fields() -> None:
    schemas = build_openapi()["components"]["schemas"]

    for name in (
        "GenerationRequest-Input", "StatusChange", "ProgressUpdate-Input", "ScenePromptUpsert",
        "ScenesReplace", "SessionPatch", "BulkStatusRequest", "CleanupRequest", "ConfigPatch",
    ):  # fmt: skip
        assert schemas[name]["additionalProperties"] is False, name


def test_scene_upsert_leaves_scene_number_to_the_path() -> None:
    doc = build_openapi()
    upsert = doc["components"]["schemas"]["ScenePromptUpsert"]
    scene = doc["components"]["schemas"]["ScenePrompt-Input"]
    n = doc["paths"]["/api/v1/sessions/{session_id}/scenes/{n}"]["put"]["parameters"][1]

    assert upsert["required"] == ["prompt"]
    assert scene["required"] == ["scene_number", "prompt"]
    assert n["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_SCENES}
    assert scene["properties"]["scene_number"]["maximum"] == MAX_SCENES


def test_patch_fields_are_optional_but_not_nullable_unless_null_clears() -> None:
    props = build_openapi()["components"]["schemas"]["SessionPatch"]["properties"]

    assert props["status"] == {"$ref": "#/components/schemas/GenerationStatus"}
    assert {"type": "null"} in props["progress"]["anyOf"]
    assert {"type": "null"} in props["error_message"]["anyOf"]
    assert "anyOf" not in props["scenes"]


def test_create_documents_location_and_retry_after() -> None:
    create = operations()[("post", "/api/v1/sessions")]["responses"]

    assert create["201"]["headers"]["Location"]["required"] is True
    assert create["429"]["headers"]["Retry-After"]["required"] is True
    assert create["503"]["headers"]["Retry-After"]["required"] is True
    assert create["401"]["headers"]["WWW-Authenticate"]["required"] is True
