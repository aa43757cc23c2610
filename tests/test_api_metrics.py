"""The app's side of metrics: routes pre-created, requests timed by URL rule, /metrics served."""

from __future__ import annotations

import gzip
from typing import TYPE_CHECKING

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from sidecar.core.manager import SessionManager
from sidecar.settings import Settings
from sidecar.web.app import create_app, get_sidecar
from sidecar.web.routes import OPERATIONS

if TYPE_CHECKING:
    import pytest
    from conftest import MakeApp

HISTOGRAM = "sidecar_http_request_duration_seconds_count"


def count(app: Flask, method: str, route: str, status: int) -> float | None:
    registry = get_sidecar(app).metrics.registry
    labels = {"method": method, "route": route, "status": str(status)}
    return registry.get_sample_value(HISTOGRAM, labels)


def test_every_route_has_its_success_series_at_zero(app: Flask) -> None:
    for op in OPERATIONS:
        assert count(app, op.method, op.rule, op.status) == 0.0, op


def test_requests_are_counted_by_url_rule_not_path(app: Flask, client: FlaskClient) -> None:
    created = client.post("/api/v1/sessions", json={"story_text": "x"}).get_json()
    client.get(f"/api/v1/sessions/{created['session_id']}")
    client.get("/api/v1/sessions/not-there")

    assert count(app, "POST", "/api/v1/sessions", 201) == 1.0
    assert count(app, "GET", "/api/v1/sessions/<session_id>", 200) == 1.0
    assert count(app, "GET", "/api/v1/sessions/<session_id>", 404) == 1.0
    exposition = client.get("/metrics").get_data(as_text=True)
    assert created["session_id"] not in exposition
    assert "not-there" not in exposition


def test_unmatched_paths_and_odd_methods_share_bounded_labels(
    app: Flask, client: FlaskClient
) -> None:
    client.get("/no/such/page")
    client.get("/another/one")
    client.open("/livez", method="BREW")

    assert count(app, "GET", "<unmatched>", 404) == 2.0
    assert count(app, "other", "<unmatched>", 405) == 1.0


def test_rejected_requests_are_timed_too(make_app: MakeApp) -> None:
    app = make_app(api_token="t0ken-for-the-api-1")

    app.test_client().post("/api/v1/sessions", json={"story_text": "x"})

    assert count(app, "POST", "/api/v1/sessions", 401) == 1.0


def test_metrics_negotiates_format_and_gzip(app: Flask, client: FlaskClient) -> None:
    plain = client.get("/metrics")
    openmetrics = client.get(
        "/metrics",
        headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip",
        },
    )

    assert plain.status_code == 200
    assert plain.content_type.startswith("text/plain")
    store = get_sidecar(app).metrics.store_name.value
    line = f'sidecar_sessions{{status="pending",store="{store}"}} 0.0'
    assert line in plain.get_data(as_text=True)
    assert openmetrics.headers["Content-Encoding"] == "gzip"
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert gzip.decompress(openmetrics.get_data()).endswith(b"# EOF\n")


def test_create_app_uses_the_registry_it_is_given(
    clean_env: pytest.MonkeyPatch, manager: SessionManager
) -> None:
    registry = CollectorRegistry()

    app = create_app(Settings(), manager=manager, registry=registry)

    assert get_sidecar(app).metrics.registry is registry
    store = get_sidecar(app).metrics.store_name.value
    assert registry.get_sample_value("sidecar_sessions_capacity", {"store": store}) == 10.0


def test_create_app_builds_and_owns_a_manager_from_settings(clean_env: pytest.MonkeyPatch) -> None:
    app = create_app(Settings(max_sessions=42, capacity_policy="reject"))
    sidecar = get_sidecar(app)
    try:
        assert sidecar.owns_manager
        assert sidecar.manager.config.max_sessions == 42
        assert sidecar.manager.worker_alive
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        sidecar.close()
    assert sidecar.manager.closed
    assert not sidecar.manager.worker_alive
