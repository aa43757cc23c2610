"""schemathesis against the app's own OpenAPI document: no 5xx, every answer as documented."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import schemathesis
from conftest import started
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest
from sidecar.web.openapi import build_openapi

if TYPE_CHECKING:
    from conftest import MakeApp

TOKEN = "fuzz-t0ken-0123456"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def fuzzed_app(make_app: MakeApp, manager: SessionManager) -> Flask:
    started(manager)  # so /readyz can answer 200 as well
    return make_app(api_token=TOKEN, metrics_token=TOKEN)


# Loaded at import from the same builder /openapi.json serves (test_openapi checks they agree):
# schemathesis's fixture-based loader does not run under this pytest.
schema = schemathesis.openapi.from_dict(
    build_openapi(),
    # A body over the size limit is refused with 413, which is a rejection too.
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 415, 422, 429]
                }
            }
        }
    ),
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_documented(
    case: schemathesis.Case, fuzzed_app: Flask, manager: SessionManager
) -> None:
    if "session_id" in case.path_parameters:
        # Half the ids are live sessions, so the session routes are exercised beyond 404.
        live = manager.create_session(GenerationRequest(story_text="A fuzzed fox.", num_scenes=3))
        if len(case.path_parameters["session_id"]) % 2:
            case.path_parameters["session_id"] = live.session_id
    case.call_and_validate(
        app=fuzzed_app, headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS
    )
