"""The OpenAPI 3.1 document, built from the route table and the pydantic models.

Request bodies use each model's validation schema, answers its serialization schema (so a
session's `progress.percentage` is there); every error is documented as problem+json.
"""

from __future__ import annotations

import copy
import functools
import re
from http import HTTPStatus
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from pydantic_core import to_json

from sidecar.core.idempotency import IDEMPOTENCY_KEY
from sidecar.core.models import MAX_SCENES, GenerationStatus
from sidecar.version import __version__
from sidecar.web.auth import Scope, scope_of
from sidecar.web.problems import PROBLEM_MEDIA_TYPE
from sidecar.web.routes import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    OPERATIONS,
    SCENE_CONVERTER,
    Operation,
)
from sidecar.web.schemas import ProblemDetails

__all__ = ["build_openapi", "openapi_json"]

_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_PROBLEM = {"$ref": _REF.format(model="ProblemDetails")}
_STRING_HEADER = {"schema": {"type": "string"}, "required": True}
_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
    "required": True,
}
_SECURITY: dict[Scope, list[dict[str, list[str]]]] = {
    Scope.OPEN: [],
    # The admin token is taken on every /api/v1 route too (sidecar.web.auth.TokenGuard).
    Scope.API: [{"apiToken": []}, {"adminToken": []}],
    Scope.ADMIN: [{"adminToken": []}, {"apiToken": []}],
    Scope.METRICS: [{"metricsToken": []}],
}
_SCOPE_ERRORS = {
    Scope.OPEN: (),
    Scope.API: (401, 503),
    Scope.ADMIN: (401, 403, 503),
    Scope.METRICS: (401,),
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {**_STRING_HEADER, "description": "Bearer"}},
    429: {"Retry-After": _RETRY_AFTER},
}


class _Generator(GenerateJsonSchema):
    """Answers always carry every field, so in serialization mode each one is required."""

    def field_is_required(self, field: Any, total: bool) -> bool:
        if self.mode == "serialization":
            return not field.get("serialization_exclude")
        return super().field_is_required(field, total)


def _path(rule: str) -> str:
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", rule)


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        if converter == SCENE_CONVERTER:
            schema: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_SCENES}
        else:
            schema = {"type": "string", "minLength": 1}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _page_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "status",
            "in": "query",
            "description": "Only sessions in this status.",
            "schema": {"$ref": _REF.format(model="GenerationStatus")},
        },
        {
            "name": "limit",
            "in": "query",
            "description": "Page size.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE_SIZE,
                "default": DEFAULT_PAGE_SIZE,
            },
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "next_cursor of the previous page.",
            "schema": {"type": "string", "maxLength": 512},
        },
        {
            "name": "stuck",
            "in": "query",
            "description": (
                "Only stuck sessions (processing, not updated for longer than "
                "stuck_after_seconds), oldest last update first."
            ),
            "schema": {"type": "boolean", "default": False},
        },
    ]


_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": (
        "A key that makes a retried create safe: at most one session per key. An RFC 8941 "
        'quoted string, such as "8e03978e-40d5-43e8-bc93-6894a57f9324".'
    ),
    "schema": {"type": "string", "pattern": r'^"([ !#-\[\]-~]|\\[\\"])+"$'},
}


def _error_response(status: int, scope: Scope) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM}},
    }
    headers = dict(_ERROR_HEADERS.get(status, {}))
    if status == 503 and scope is not Scope.OPEN:  # shutting down (readyz's 503 has none)
        headers["Retry-After"] = _RETRY_AFTER
    if headers:
        response["headers"] = headers
    return response


def _success_response(op: Operation, schemas: dict[Any, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": op.summary}
    if op.response is str:
        text = {"schema": {"type": "string"}}
        response["content"] = {"text/plain": text, "application/openmetrics-text": text}
    elif op.response is dict:
        response["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif op.response is not None:
        schema = schemas[(op.endpoint, "serialization")]
        response["content"] = {"application/json": {"schema": schema}}
    if op.headers:
        response["headers"] = dict.fromkeys(op.headers, _STRING_HEADER)
    return response


def _operation(
    op: Operation, schemas: dict[Any, Any], components: dict[str, Any]
) -> dict[str, Any]:
    scope = scope_of(op.rule)
    doc: dict[str, Any] = {
        "operationId": op.endpoint,
        "summary": op.summary,
        **({"description": op.description} if op.description else {}),
        "tags": [op.tag],
        "security": _SECURITY[scope],
    }
    params = _path_parameters(op.rule)
    if op.paged:
        params += _page_parameters()
    if op.idempotent:
        params.append(_IDEMPOTENCY_KEY)
    if params:
        doc["parameters"] = params
    if op.body is not None:
        schema = schemas[(op.endpoint, "validation")]
        if op.path_wins:
            schema = _path_wins(schema, op, components)
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    success = _success_response(op, schemas)
    responses = {str(status): success for status in (op.status, *op.also)}
    for status in sorted({*_SCOPE_ERRORS[scope], *op.errors}):
        responses[str(status)] = _error_response(status, scope)
    doc["responses"] = responses
    return doc


def _path_wins(ref: dict[str, Any], op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    # The body's model, with the fields the path overrides made optional, as its own component.
    model = ref["$ref"].rsplit("/", 1)[1]
    name = f"{model.removesuffix('-Input')}Upsert"
    schema: dict[str, Any] = copy.deepcopy(components[model])
    schema["required"] = [f for f in schema.get("required", []) if f not in op.path_wins]
    schema["title"] = name
    wins = ", ".join(op.path_wins)
    schema["description"] = f"{schema.get('description', '')} The path's value of {wins} wins."
    components[name] = schema
    return {"$ref": _REF.format(model=name)}


def build_openapi() -> dict[str, Any]:
    """The document, as a dict."""
    inputs: list[tuple[Any, JsonSchemaMode, Any]] = []
    for op in OPERATIONS:
        if op.body is not None:
            inputs.append(((op.endpoint, "validation"), "validation", _core(op.body)))
        if op.response not in (None, str, dict):
            inputs.append(((op.endpoint, "serialization"), "serialization", _core(op.response)))
    # Validation mode: a problem's extension members are optional.
    inputs.append((("problem", "validation"), "validation", _core(ProblemDetails)))
    # ?status= refers to it, whichever models happen to use it.
    inputs.append((("status", "validation"), "validation", _core(GenerationStatus)))
    generator = _Generator(ref_template=_REF)
    by_key, definitions = generator.generate_definitions(inputs)
    schemas = {key: value for (key, _mode), value in by_key.items()}
    components: dict[str, Any] = {str(name): schema for name, schema in definitions.items()}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        operation = _operation(op, schemas, components)
        paths.setdefault(_path(op.rule), {})[op.method.lower()] = operation
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "session sidecar",
            "version": __version__,
            "description": (
                "Generation sessions held in memory, changed through JSON, exported as "
                "Prometheus metrics. Errors are RFC 9457 problem details."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiToken": {**bearer, "description": "SIDECAR_API_TOKEN, when set."},
                "adminToken": {**bearer, "description": "SIDECAR_ADMIN_TOKEN, when set."},
                "metricsToken": {**bearer, "description": "SIDECAR_METRICS_TOKEN, when set."},
            },
        },
    }


def _core(tp: Any) -> Any:
    return TypeAdapter(tp).core_schema


@functools.cache
def openapi_json() -> bytes:
    """The document as JSON bytes, built once per process."""
    return to_json(build_openapi())
