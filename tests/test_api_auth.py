"""Bearer tokens: who may call what, and that tokens never reach the logs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from sidecar.web.auth import Scope, TokenGuard, scope_of
from sidecar.web.problems import Problem

if TYPE_CHECKING:
    from conftest import MakeApp

API, ADMIN, METRICS = "s3cret-api-t0ken-1", "s3cret-admin-t0ken-2", "s3cret-metrics-t0ken-3"
STORY = {"story_text": "A fox finds a lantern."}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/api/v1/sessions", Scope.API),
        ("/api/v1", Scope.API),
        ("/api/v1/anything/else", Scope.API),
        ("/api/v1/admin/config", Scope.ADMIN),
        ("/api/v1/admin/", Scope.ADMIN),
        ("/metrics", Scope.METRICS),
        ("/livez", Scope.OPEN),
        ("/readyz", Scope.OPEN),
        ("/openapi.json", Scope.OPEN),
        ("/api/v10/sessions", Scope.OPEN),
        ("/metrics/extra", Scope.OPEN),
    ],
)
def test_scope_comes_from_the_path(path: str, scope: Scope) -> None:
    assert scope_of(path) is scope


def test_without_tokens_everything_is_open(make_app: MakeApp) -> None:
    client = make_app().test_client()

    assert client.post("/api/v1/sessions", json=STORY).status_code == 201
    assert client.get("/api/v1/admin/config").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_api_token_opens_the_api_and_admin_routes(make_app: MakeApp) -> None:
    client = make_app(api_token=API).test_client()

    assert client.post("/api/v1/sessions", json=STORY, headers=bearer(API)).status_code == 201
    assert client.get("/api/v1/admin/config", headers=bearer(API)).status_code == 200
    assert client.get("/api/v1/sessions").status_code == 401


def test_scheme_is_case_insensitive(make_app: MakeApp) -> None:
    client = make_app(api_token=API).test_client()

    response = client.get("/api/v1/health", headers={"Authorization": f"bearer {API}"})

    assert response.status_code == 200


def test_admin_token_is_required_on_admin_routes_and_works_everywhere(make_app: MakeApp) -> None:
    client = make_app(api_token=API, admin_token=ADMIN).test_client()

    assert client.get("/api/v1/admin/config", headers=bearer(ADMIN)).status_code == 200
    assert client.get("/api/v1/admin/config", headers=bearer(API)).status_code == 403
    assert client.get("/api/v1/admin/config").status_code == 401
    assert client.get("/api/v1/stats", headers=bearer(ADMIN)).status_code == 200


def test_admin_token_alone_leaves_the_api_open(make_app: MakeApp) -> None:
    client = make_app(admin_token=ADMIN).test_client()

    assert client.get("/api/v1/stats").status_code == 200
    assert client.get("/api/v1/admin/config").status_code == 401
    assert client.get("/api/v1/admin/config", headers=bearer(ADMIN)).status_code == 200


def test_metrics_token_guards_only_metrics(make_app: MakeApp) -> None:
    client = make_app(metrics_token=METRICS).test_client()

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS)).status_code == 200
    assert client.get("/api/v1/stats").status_code == 200


def test_liveness_readiness_and_openapi_stay_open(make_app: MakeApp) -> None:
    client = make_app(api_token=API, admin_token=ADMIN, metrics_token=METRICS).test_client()

    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 503  # open; 503 only because no worker runs
    assert client.get("/openapi.json").status_code == 200


def test_guard_compares_every_candidate_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return given == expected

    monkeypatch.setattr("sidecar.web.auth.hmac.compare_digest", spy)
    guard = TokenGuard(API, ADMIN, None)

    guard.check(Scope.API, f"Bearer {API}")
    with pytest.raises(Problem) as forbidden:
        guard.check(Scope.ADMIN, f"Bearer {API}")

    assert forbidden.value.status == 403
    assert compared == [
        (API.encode(), API.encode()),
        (API.encode(), ADMIN.encode()),
        (API.encode(), ADMIN.encode()),
        (API.encode(), API.encode()),
    ]


def test_tokens_and_story_text_never_reach_the_logs(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(api_token=API, admin_token=ADMIN).test_client()
    story = "A very private story about a lantern."
    caplog.set_level(logging.DEBUG)

    created = client.post(
        "/api/v1/sessions", json={"story_text": story, "num_scenes": 2}, headers=bearer(API)
    )
    client.get("/api/v1/sessions", headers=bearer("wrong-token"))
    client.patch("/api/v1/admin/config", json={"max_sessions": 20}, headers=bearer(ADMIN))
    client.post("/api/v1/sessions", json={"story_text": story, "x": 1}, headers=bearer(API))

    assert created.status_code == 201
    assert caplog.records, "debug logging records each request"
    logged = caplog.text
    for secret in (API, ADMIN, "wrong-token", story):
        assert secret not in logged


def _spellings(path: str) -> list[str]:
    """Other ways to write `path` that a router might accept (RFC 3986 and common tricks)."""
    parts = path.split("/")
    doubled = ["/".join(parts[:i]) + "//" + "/".join(parts[i:]) for i in range(2, len(parts))]
    dotted = ["/".join(parts[:i]) + "/./" + "/".join(parts[i:]) for i in range(2, len(parts))]
    return [
        path,
        path + "/",
        path + "//",
        path + "%2f",
        path + "%2F",
        path.replace("/", "%2f"),
        path.upper(),
        path + "/.",
        path + "?x=/",
        "/" + path,
        *doubled,
        *dotted,
        *(path[:i] + "%2f" + path[i + 1 :] for i in range(1, len(path)) if path[i] == "/"),
    ]


def _guarded_operations() -> list[tuple[str, str, Scope]]:
    from sidecar.web.routes import OPERATIONS

    concrete = {"<session_id>": "3f1c2c0e-5d7a-4b51-9a33-0f8e5b7c9d10", "<scene:n>": "1"}
    found = []
    for op in OPERATIONS:
        scope = scope_of(op.rule)
        if scope is Scope.OPEN:
            continue
        path = op.rule
        for placeholder, value in concrete.items():
            path = path.replace(placeholder, value)
        found.extend((op.method, spelled, scope) for spelled in _spellings(path))
    return found


GUARDED = _guarded_operations()


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED)
def test_every_spelling_of_a_guarded_route_needs_its_token(
    make_app: MakeApp, method: str, path: str, scope: Scope
) -> None:
    client = make_app(api_token=API, admin_token=ADMIN, metrics_token=METRICS).test_client()
    wrong = {Scope.API: METRICS, Scope.ADMIN: API, Scope.METRICS: API}[scope]

    anonymous = client.open(path, method=method, json={})
    with_wrong_token = client.open(path, method=method, json={}, headers=bearer(wrong))

    # Never served: refused for the token, or no route at all for this spelling.
    assert anonymous.status_code in (401, 404), anonymous.get_data(as_text=True)
    assert with_wrong_token.status_code in (401, 403, 404), with_wrong_token.get_data(as_text=True)


def test_spellings_the_router_serves_are_checked_by_their_route(make_app: MakeApp) -> None:
    client = make_app(metrics_token=METRICS, admin_token=ADMIN).test_client()

    for path in ("/metrics/", "/metrics%2f", "/metrics%2F"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer(METRICS)).status_code == 200, path
    # The admin scope likewise, by the route that serves the request.
    assert client.get("/api/v1/admin%2fconfig").status_code == 401
    assert client.get("/api/v1/admin%2fconfig", headers=bearer(ADMIN)).status_code == 200


def test_a_view_checks_its_token_even_without_the_gate_in_front(make_app: MakeApp) -> None:
    app = make_app(metrics_token=METRICS, api_token=API)
    gate = app.wsgi_app
    app.wsgi_app = gate._app  # type: ignore[attr-defined,method-assign]
    client = app.test_client()

    assert client.get("/metrics").status_code == 401
    assert client.get("/api/v1/stats").status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS)).status_code == 200
