"""The views the route table (sidecar.web.routes) names, and how they are registered.

Views validate the request at the edge (strict types, no unknown
fields), call the manager once, and serialize with adapters built at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, request
from pydantic_core import from_json, to_json

from sidecar.core.errors import SessionNotFoundError, SessionValidationError
from sidecar.core.models import (
    MAX_SCENES,
    PROGRESS,
    REQUEST,
    SCENE,
    SESSION,
    GenerationSession,
)
from sidecar.web.inputs import (
    SceneNumber,
    declared_length,
    encode_cursor,
    idempotency_key,
    is_json,
    page_query,
    path_n_problem,
    validated,
)
from sidecar.web.problems import Problem, short, validation_problem
from sidecar.web.routes import OPERATIONS, SCENE_CONVERTER, SESSIONS
from sidecar.web.schemas import (
    BulkStatusRequest,
    BulkStatusResult,
    CleanupRequest,
    CleanupResult,
    ConfigPatch,
    ScenesReplace,
    SessionPatch,
    StatusChange,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from werkzeug.datastructures import Headers

    from sidecar.web.context import Sidecar

__all__ = ["allowed_methods", "register_routes"]

JSON = "application/json"

T = TypeVar("T")


def _json(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status, content_type=JSON)


def _session_json(session: GenerationSession, status: int = 200) -> Response:
    return Response(SESSION.dump_json(session), status, content_type=JSON)


class _Created(Response):
    """A 201 answer whose Location, an ASCII path built from a UUID, is added after werkzeug's
    own header fix-ups (`get_wsgi_headers`, documented as the hook that prepares the headers
    for sending), so it skips their IRI-to-URI conversion of Location, which has nothing to
    convert here: 7.5 of the 110 us of an in-process POST (py-spy, 2026-12-03), on the route
    benchmark 3 measures against bare Flask.
    """

    def __init__(self, body: bytes, location: str) -> None:
        super().__init__(body, 201, content_type=JSON)
        self.location_path = location

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        headers = super().get_wsgi_headers(environ)
        headers["Location"] = self.location_path
        return headers


class Api:
    """The views; each one is a bound method named by an Operation's endpoint."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._manager = sidecar.manager
        self._max_body = sidecar.settings.max_body_bytes  # also the app's MAX_CONTENT_LENGTH

    def _json_body(self) -> Any:
        """The request's body, parsed as JSON: 415, 413 or 400 when it cannot be."""
        environ = request.environ
        if not is_json(environ.get("CONTENT_TYPE", "")):
            raise Problem(
                "unsupported-media-type",
                "the request body must be JSON (Content-Type: application/json)",
            )
        coding = environ.get("HTTP_CONTENT_ENCODING", "").strip()
        if coding and coding.lower() != "identity":
            # Read as plain, a gzipped body would be "malformed JSON" at best (RFC 9110 15.5.16).
            raise Problem(
                "unsupported-media-type",
                f"the sidecar does not decode Content-Encoding {short(coding)}; "
                "send the body uncompressed",
                headers={"Accept-Encoding": "identity"},
            )
        length = declared_length(environ)
        if length is not None and length <= self._max_body:
            # Exactly the declared length, straight from the server's buffer: get_data() would
            # wrap it in a LimitedStream and read it in chunks (PEP 3333 allows either).
            raw = environ["wsgi.input"].read(length)
        else:
            raw = request.get_data(cache=False)  # chunked, or 413 past MAX_CONTENT_LENGTH
        try:
            return from_json(raw, allow_inf_nan=False)
        except ValueError as exc:
            raise Problem("malformed-json", f"the body is not valid JSON: {exc}") from None

    def _body(self, validate: Callable[[Any], T]) -> T:
        """The request's JSON body, checked by `validate`."""
        return validated(validate, self._json_body())

    # ---------------------------------------------------------------- sessions

    def create_session(self) -> Response:
        # A repeat with the same key answers as the first did: 201, the same Location.
        key = idempotency_key()
        generation = self._body(REQUEST.validate_python)
        session = self._manager.create_session(generation, key)
        return _Created(SESSION.dump_json(session), f"{SESSIONS}/{session.session_id}")

    def list_sessions(self) -> Response:
        query = page_query()
        if query.stuck:
            sessions, following = self._manager.list_stuck_sessions(query.cursor, query.limit)
        else:
            sessions, following = self._manager.list_sessions(
                query.status, query.cursor, query.limit
            )
        now = self._manager.clock.now()
        page = {
            "items": [s.summary(now) for s in sessions],
            "next_cursor": None if following is None else encode_cursor(following),
        }
        return _json(to_json(page))

    def get_session(self, session_id: str) -> Response:
        session = self._manager.get_session(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        return _session_json(session)

    def delete_session(self, session_id: str) -> Response:
        if not self._manager.remove_session(session_id):
            raise SessionNotFoundError(session_id)
        response = Response(status=204)
        del response.headers["Content-Type"]
        return response

    def patch_session(self, session_id: str) -> Response:
        updates = self._body(SessionPatch.model_validate).given()
        return _session_json(self._manager.atomic_session_update(session_id, updates))

    def put_status(self, session_id: str) -> Response:
        change = self._body(StatusChange.model_validate)
        session = self._manager.update_session_status(
            session_id, change.status, change.error_message
        )
        return _session_json(session)

    def put_progress(self, session_id: str) -> Response:
        progress = self._body(PROGRESS.validate_python)
        session = self._manager.atomic_session_update(session_id, {"progress": progress})
        return _session_json(session)

    def put_scene(self, session_id: str, n: int) -> Response:
        if not 1 <= n <= MAX_SCENES:
            raise path_n_problem(f"must be between 1 and {MAX_SCENES}", "out_of_range")
        # The body is checked as sent (a scene_number in it must be valid too); then n wins.
        data = self._json_body()
        scene = validated(
            SCENE.validate_python, {"scene_number": n, **data} if isinstance(data, dict) else data
        )
        if scene.scene_number != n:
            scene = dataclasses.replace(scene, scene_number=n)
        try:
            session, added = self._manager.add_scene_to_session(session_id, scene)
        except SessionValidationError as exc:  # n is past the session's num_scenes
            raise path_n_problem(exc.errors[0]["msg"], exc.errors[0]["type"]) from None
        return _session_json(session, 201 if added else 200)

    def put_scenes(self, session_id: str) -> Response:
        body = self._body(ScenesReplace.model_validate)
        return _session_json(self._manager.set_session_scenes(session_id, body.scenes))

    def recover_session(self, session_id: str) -> Response:
        return _session_json(self._manager.recover_corrupted_session(session_id))

    def bulk_status(self) -> Response:
        body = self._body(BulkStatusRequest.model_validate)
        result = self._manager.bulk_update_status(body.session_ids, body.status, body.error_message)
        answer = BulkStatusResult(
            updated=len(result.updated), missing=result.missing, conflicts=result.conflicts
        )
        return _json(answer.model_dump_json().encode())

    # ---------------------------------------------------------------- figures

    def stats(self) -> Response:
        return _json(to_json(self._manager.get_performance_stats()))

    def health(self) -> Response:
        return _json(to_json(self._manager.get_health_status()))

    # ---------------------------------------------------------------- admin

    def cleanup(self) -> Response:
        body = self._body(CleanupRequest.model_validate)
        age = body.max_age_seconds
        manager = self._manager
        if body.scope == "all":
            if age is not None:
                raise validation_problem(
                    [
                        {
                            "loc": ["max_age_seconds"],
                            "msg": "not allowed with scope all",
                            "type": "extra_forbidden",
                        }
                    ]
                )
            removed = manager.force_cleanup_all()
        elif body.scope == "expired":
            removed = manager.cleanup_expired_sessions(age)
        elif body.scope == "failed":
            removed = manager.cleanup_failed_sessions(age)
        else:
            removed = manager.cleanup_completed_sessions(age)
        return _json(CleanupResult(removed=removed).model_dump_json().encode())

    def get_config(self) -> Response:
        return _json(to_json(self._manager.config.as_dict()))

    def patch_config(self) -> Response:
        changes = self._body(ConfigPatch.model_validate).given()
        sync = self._sidecar.settings_sync
        config = self._manager.reconfigure(**changes) if sync is None else sync.patch(changes)
        return _json(to_json(config.as_dict()))

    # ---------------------------------------------------------------- operations

    def livez(self) -> Response:
        return _json(b'{"status":"alive"}')

    def readyz(self) -> Response:
        checks = self._sidecar.readiness()
        if all(checks.values()):
            return _json(to_json({"status": "ready", "checks": checks}))
        failing = ", ".join(name for name, ok in checks.items() if not ok)
        raise Problem("not-ready", f"failing: {failing}", checks=checks)

    def openapi(self) -> Response:
        from sidecar.web.openapi import openapi_json  # built on first use, not at start-up

        return _json(openapi_json())

    def metrics(self) -> Response:
        body, headers = self._sidecar.metrics.render(
            request.headers.get("Accept"), request.headers.get("Accept-Encoding")
        )
        return Response(body, 200, headers)


def allowed_methods(rule: str) -> list[str]:
    """The methods a rule answers: its operations', HEAD with GET, and OPTIONS."""
    methods = {op.method for op in OPERATIONS if op.rule == rule} | {"OPTIONS"}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _options_view(rule: str) -> Callable[..., Response]:
    allow = ", ".join(allowed_methods(rule))

    def options(**_path: Any) -> Response:
        # Flask's automatic OPTIONS answers 200 text/html; an empty answer is a 204.
        response = Response(status=204, headers={"Allow": allow})
        del response.headers["Content-Type"]
        return response

    return options


def register_routes(app: Flask, sidecar: Sidecar) -> None:
    """Add every Operation to `app`, served by one Api bound to `sidecar`, and OPTIONS on
    each rule (204 with Allow)."""
    app.url_map.converters[SCENE_CONVERTER] = SceneNumber
    api = Api(sidecar)
    for op in OPERATIONS:
        app.add_url_rule(
            op.rule,
            endpoint=op.endpoint,
            view_func=getattr(api, op.endpoint),
            methods=[op.method],
            provide_automatic_options=False,
        )
    for rule in dict.fromkeys(op.rule for op in OPERATIONS):
        app.add_url_rule(
            rule,
            endpoint=f"options {rule}",
            view_func=_options_view(rule),
            methods=["OPTIONS"],
            provide_automatic_options=False,
        )
