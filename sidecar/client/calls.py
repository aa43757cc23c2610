"""Each API route as a `Call`: the request to send and how to read its answer.

Both clients build their requests here and differ only in how they send them, so a route's
path, body and answer type are written once. Bodies are sent as given (plain JSON, not checked
here): the server validates them, and its 422 becomes a SessionValidationError as it would in
the in-process manager. The one exception is a scene's number, which also goes into the path:
unless it is an int, the same 422 is raised here, without a request. Answers are read into
the models the server serializes from.

A session id is always sent as one path segment ('.' escaped, so '.' and '..' are ids, not
steps up the path); the empty id, whose path would be the listing's, is the not-found error
the server gives an unknown id, raised without a request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter
from pydantic_core import from_json, to_json

from sidecar.client.errors import (
    RemoteSessionNotFoundError,
    RemoteValidationError,
    local_problem,
)
from sidecar.core.config import ManagerConfig
from sidecar.core.idempotency import IDEMPOTENCY_KEY, KeyFormatError, parse_key
from sidecar.core.models import (
    REQUEST,
    SCENE,
    SESSION,
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.web.schemas import (
    BulkStatusResult,
    CleanupResult,
    HealthReport,
    Liveness,
    PerformanceStats,
    Readiness,
    SessionPage,
    SessionPatch,
)

__all__ = ["Call", "CallBuilder"]

T = TypeVar("T")
API = "/api/v1"
JSON_HEADERS = {"Content-Type": "application/json"}

_config = TypeAdapter(ManagerConfig)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and the reader of its success answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: bytes | None = None
    params: Mapping[str, str | int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    session_id: str | None = None  # named in a 404 or 409 raised for this call

    @property
    def idempotency_key(self) -> str | None:
        """The Idempotency-Key this call sends, if any."""
        return self.headers.get(IDEMPOTENCY_KEY)


def _json(value: Any) -> bytes:
    return to_json(value)


def _session_path(session_id: str) -> str:
    """The session's path; its id is always one segment, which the server reads as the id."""
    if not session_id:
        # The path would be the listing's: no session has the empty id, so nothing is sent.
        problem = local_problem("session-not-found", 404, "Session not found", "no session ''")
        raise RemoteSessionNotFoundError(problem, session_id)
    # quote() keeps '.', and httpx removes '.' and '..' segments (RFC 3986): %2E survives.
    return f"{API}/sessions/{quote(session_id, safe='').replace('.', '%2E')}"


def _session_call(
    method: str, session_id: str, suffix: str = "", body: Any = None
) -> Call[GenerationSession]:
    return Call(
        method,
        _session_path(session_id) + suffix,
        _read_session,
        None if body is None else _json(body),
        headers=JSON_HEADERS if body is not None else {},
        session_id=session_id,
    )


def _object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; a ValueError (UnexpectedAnswerError) for anything else."""
    value = from_json(response.content)
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return value


def _drop_percentage(item: Any) -> Any:
    # ProgressUpdate computes its percentage and forbids it as an input field. Anything but an
    # object is left for the model's validation to refuse.
    progress = item.get("progress") if isinstance(item, dict) else None
    if isinstance(progress, dict):
        progress.pop("percentage", None)
    return item


def _read_session(response: httpx.Response) -> GenerationSession:
    return SESSION.validate_python(_drop_percentage(_object(response)))


def _read_page(response: httpx.Response) -> SessionPage:
    page = _object(response)
    items = page.get("items")
    for item in items if isinstance(items, list) else ():
        _drop_percentage(item)
    return SessionPage.model_validate(page)


def _progress_body(progress: ProgressUpdate | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(progress, ProgressUpdate):
        return {
            "current_step": progress.current_step,
            "total_steps": progress.total_steps,
            "description": progress.description,
        }
    return dict(progress)


def _scene_body(scene: ScenePrompt | Mapping[str, Any]) -> Any:
    if isinstance(scene, ScenePrompt):
        return SCENE.dump_python(scene, mode="json", exclude_none=True)
    return dict(scene)


def _plain(value: Any) -> Any:
    """A PATCH field's value in JSON types (the models' own shapes, without computed fields)."""
    if isinstance(value, ProgressUpdate):
        return _progress_body(value)
    if isinstance(value, ScenePrompt):
        return _scene_body(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, GenerationStatus):
        return value.value
    return value


def _scene_number(body: Any) -> int:
    """The scene's number, which goes into the path: a RemoteValidationError unless an int."""
    number = body.get("scene_number") if isinstance(body, dict) else None
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    if isinstance(body, dict) and "scene_number" in body:
        msg, kind = "Input should be a valid integer", "int_type"  # as the server words it
    else:
        msg, kind = "Field required", "missing"
    raise _invalid(["body", "scene_number"], msg, kind)


def _checked_key(value: str) -> str:
    """An Idempotency-Key header value the server would take: a RemoteValidationError, as
    its 422 would be, before anything is sent (a non-ASCII one could not even be sent)."""
    try:
        parse_key(value)
    except KeyFormatError as exc:
        raise _invalid(["header", IDEMPOTENCY_KEY], exc.msg, exc.kind) from None
    return value


def _invalid(loc: list[str], msg: str, kind: str) -> RemoteValidationError:
    """The 422 the server would answer for the one issue at `loc`, made here."""
    issue = {"loc": loc, "msg": msg, "type": kind}
    detail = f"{'.'.join(loc)}: {msg}"
    return RemoteValidationError(
        local_problem("validation-error", 422, "Validation failed", detail, errors=[issue])
    )


def new_idempotency_key() -> str:
    """A fresh key, as the Idempotency-Key draft's sf-string: a quoted random UUID."""
    return f'"{uuid.uuid4()}"'


class CallBuilder:
    """The calls of every route in sidecar.web.routes.OPERATIONS, named after their endpoints."""

    @staticmethod
    def create_session(
        request: GenerationRequest, idempotency_key: str | None
    ) -> Call[GenerationSession]:
        key = new_idempotency_key() if idempotency_key is None else _checked_key(idempotency_key)
        return Call(
            "POST",
            f"{API}/sessions",
            _read_session,
            REQUEST.dump_json(request),
            headers={**JSON_HEADERS, IDEMPOTENCY_KEY: key},
        )

    @staticmethod
    def list_sessions(
        status: GenerationStatus | str | None,
        limit: int | None,
        cursor: str | None,
        stuck: bool = False,
    ) -> Call[SessionPage]:
        params: dict[str, str | int] = {"stuck": "true"} if stuck else {}
        if status is not None:
            params["status"] = str(status)
        if limit is not None:
            params["limit"] = limit
        if cursor is not None:
            params["cursor"] = cursor
        return Call("GET", f"{API}/sessions", _read_page, params=params)

    @staticmethod
    def bulk_status(
        session_ids: Sequence[str], status: GenerationStatus | str, error_message: str | None
    ) -> Call[BulkStatusResult]:
        body: dict[str, Any] = {"session_ids": list(session_ids), "status": str(status)}
        if error_message is not None:
            body["error_message"] = error_message
        return Call(
            "POST",
            f"{API}/sessions/bulk/status",
            lambda r: BulkStatusResult.model_validate_json(r.content),
            body=_json(body),
            headers=JSON_HEADERS,
        )

    @staticmethod
    def get_session(session_id: str) -> Call[GenerationSession]:
        return _session_call("GET", session_id)

    @staticmethod
    def delete_session(session_id: str) -> Call[None]:
        return Call("DELETE", _session_path(session_id), lambda r: None, session_id=session_id)

    @staticmethod
    def patch_session(
        session_id: str, patch: SessionPatch | Mapping[str, Any]
    ) -> Call[GenerationSession]:
        given = patch.given() if isinstance(patch, SessionPatch) else dict(patch)
        return _session_call("PATCH", session_id, body={k: _plain(v) for k, v in given.items()})

    @staticmethod
    def put_status(
        session_id: str, status: GenerationStatus | str, error_message: str | None
    ) -> Call[GenerationSession]:
        body: dict[str, Any] = {"status": str(status)}
        if error_message is not None:
            body["error_message"] = error_message
        return _session_call("PUT", session_id, "/status", body)

    @staticmethod
    def put_progress(
        session_id: str, progress: ProgressUpdate | Mapping[str, Any]
    ) -> Call[GenerationSession]:
        return _session_call("PUT", session_id, "/progress", _progress_body(progress))

    @staticmethod
    def put_scene(
        session_id: str, scene: ScenePrompt | Mapping[str, Any]
    ) -> Call[tuple[GenerationSession, bool]]:
        body = _scene_body(scene)
        number = _scene_number(body)
        call = _session_call("PUT", session_id, f"/scenes/{number}", body)

        def read(response: httpx.Response) -> tuple[GenerationSession, bool]:
            return _read_session(response), response.status_code == 201

        return Call(
            call.method, call.path, read, call.body, headers=call.headers, session_id=session_id
        )

    @staticmethod
    def put_scenes(
        session_id: str, scenes: Sequence[ScenePrompt | Mapping[str, Any]]
    ) -> Call[GenerationSession]:
        return _session_call(
            "PUT", session_id, "/scenes", {"scenes": [_scene_body(s) for s in scenes]}
        )

    @staticmethod
    def recover_session(session_id: str) -> Call[GenerationSession]:
        return _session_call("POST", session_id, "/recover")

    @staticmethod
    def stats() -> Call[PerformanceStats]:
        return Call(
            "GET", f"{API}/stats", lambda r: PerformanceStats.model_validate_json(r.content)
        )

    @staticmethod
    def health() -> Call[HealthReport]:
        return Call("GET", f"{API}/health", lambda r: HealthReport.model_validate_json(r.content))

    @staticmethod
    def cleanup(scope: str, max_age_seconds: float | None) -> Call[CleanupResult]:
        body: dict[str, Any] = {"scope": scope}
        if max_age_seconds is not None:
            body["max_age_seconds"] = max_age_seconds
        return Call(
            "POST",
            f"{API}/admin/cleanup",
            lambda r: CleanupResult.model_validate_json(r.content),
            body=_json(body),
            headers=JSON_HEADERS,
        )

    @staticmethod
    def get_config() -> Call[ManagerConfig]:
        return Call("GET", f"{API}/admin/config", lambda r: _config.validate_json(r.content))

    @staticmethod
    def patch_config(changes: Mapping[str, Any]) -> Call[ManagerConfig]:
        return Call(
            "PATCH",
            f"{API}/admin/config",
            lambda r: _config.validate_json(r.content),
            body=_json(dict(changes)),
            headers=JSON_HEADERS,
        )

    @staticmethod
    def livez() -> Call[Liveness]:
        return Call("GET", "/livez", lambda r: Liveness.model_validate_json(r.content))

    @staticmethod
    def readyz() -> Call[Readiness]:
        return Call("GET", "/readyz", lambda r: Readiness.model_validate_json(r.content))

    @staticmethod
    def openapi() -> Call[dict[str, Any]]:
        return Call("GET", "/openapi.json", _object)

    @staticmethod
    def metrics() -> Call[str]:
        return Call("GET", "/metrics", lambda r: r.text)
