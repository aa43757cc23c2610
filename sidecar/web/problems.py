"""Every error the API answers, as RFC 9457 problem details (application/problem+json).

All mapping from exceptions to responses happens here: `Problem` for errors the web layer
raises itself, handlers for werkzeug's HTTP errors and the session core's exceptions, and a
last handler that turns anything unexpected into a 500 without a stack trace in the body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flask import Flask, Response, request
from pydantic import ValidationError
from pydantic_core import ErrorDetails, to_json
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from sidecar.core.errors import (
    IdempotencyKeyReusedError,
    IdempotencyKeySpentError,
    InvalidTransitionError,
    SessionCapacityError,
    SessionLockError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.rules import RECOVER, RECOVER_RULE
from sidecar.logs import Throttle
from sidecar.store.errors import StoreUnavailableError, UnreadableSessionError
from sidecar.web.schemas import MAX_ISSUES

__all__ = [
    "ECHO_LIMIT",
    "UNMATCHED_ROUTE",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPES",
    "RETRY_AFTER_SECONDS",
    "STORE_RETRY_AFTER_SECONDS",
    "Problem",
    "from_pydantic",
    "register_error_handlers",
    "short",
    "shutting_down",
    "validation_problem",
]

logger = logging.getLogger(__name__)

# The route label of a request no URL rule matched (metrics and logs never carry raw paths).
UNMATCHED_ROUTE = "<unmatched>"
PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:sidecar:problem:"
# A problem quotes at most this many characters of anything the client sent (a path, a method,
# a field name, a session id), so a 60 KB path does not come back whole.
ECHO_LIMIT = 64
# pydantic's dataclasses (the core's models) word an unknown field differently from its models
# (the API's bodies); the API speaks of it one way.
_UNKNOWN_FIELD = {"type": "extra_forbidden", "msg": "Extra inputs are not permitted"}
# Capacity frees up as generations finish and sessions expire; a few seconds is a fair wait.
RETRY_AFTER_SECONDS = 5
# A store outage is usually a Redis restart or failover: ask again soon.
STORE_RETRY_AFTER_SECONDS = 1

# slug -> (status, title); the title is fixed per type, the detail says what happened.
PROBLEM_TYPES: Mapping[str, tuple[int, str]] = {
    "malformed-json": (400, "Malformed JSON"),
    "bad-request": (400, "Bad request"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not found"),
    "session-not-found": (404, "Session not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "invalid-transition": (409, "Invalid transition"),
    "idempotency-key-spent": (409, "Idempotency-Key spent"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "Validation failed"),
    "idempotency-key-reused": (422, "Idempotency-Key reused"),
    "capacity-exceeded": (429, "Session capacity reached"),
    "internal-error": (500, "Internal server error"),
    "shutting-down": (503, "Shutting down"),
    "not-ready": (503, "Not ready"),
    "busy": (503, "Busy"),
    "store-unavailable": (503, "Session store unavailable"),
}
_BY_STATUS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "body-too-large",
    415: "unsupported-media-type",
}


class Problem(Exception):
    """An error response: one of PROBLEM_TYPES, a detail, optional headers and extra members."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.title = PROBLEM_TYPES[slug]
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def to_response(self) -> Response:
        """The problem+json response."""
        body = {
            "type": TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return Response(to_json(body), self.status, self.headers, mimetype=PROBLEM_MEDIA_TYPE)


def short(text: str) -> str:
    """`text` if it is short; else its first ECHO_LIMIT characters, marked as truncated."""
    if len(text) <= ECHO_LIMIT:
        return text
    return f"{text[:ECHO_LIMIT]}... ({len(text)} characters, truncated)"


def _issue(loc: Sequence[str | int], msg: str, kind: str) -> dict[str, Any]:
    if kind == "unexpected_keyword_argument":
        kind, msg = _UNKNOWN_FIELD["type"], _UNKNOWN_FIELD["msg"]
    where = [part if isinstance(part, int) else short(str(part)) for part in loc]
    return {"loc": where, "msg": msg, "type": kind}


def validation_problem(
    errors: Iterable[Mapping[str, Any] | ErrorDetails], prefix: Sequence[str | int] = ("body",)
) -> Problem:
    """A 422 listing each bad field, up to MAX_ISSUES; `prefix` says where the fields are
    (body, query, path). The detail names the first and counts all the others."""
    issues: list[dict[str, Any]] = []
    total = 0
    for e in errors:
        total += 1
        if total <= MAX_ISSUES:
            issues.append(_issue([*prefix, *e["loc"]], str(e["msg"]), str(e["type"])))
    first = issues[0] if issues else {"loc": list(prefix), "msg": "invalid"}
    where = ".".join(map(str, first["loc"]))
    more = f" (and {total - 1} more)" if total > 1 else ""
    return Problem("validation-error", f"{where}: {first['msg']}{more}", errors=issues)


def from_pydantic(exc: ValidationError, prefix: Sequence[str | int] = ("body",)) -> Problem:
    """A 422 from pydantic's errors, without echoing the input back."""
    return validation_problem(
        exc.errors(include_url=False, include_context=False, include_input=False), prefix
    )


def _retry_later(slug: str, detail: str) -> Problem:
    return Problem(slug, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _http_error(exc: HTTPException) -> BaseResponse:
    code = exc.code or 500
    if code < 400:  # a routing redirect is not an error
        return exc.get_response()
    slug = _BY_STATUS.get(code)
    headers: dict[str, str] = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return Problem(
            "body-too-large", f"the request body is larger than {limit} bytes", headers=headers
        ).to_response()
    if slug is None:
        # A status with no type of our own: RFC 9457's about:blank with the HTTP phrase.
        body = {"type": "about:blank", "title": exc.name, "status": code, "detail": exc.name}
        return Response(to_json(body), code, mimetype=PROBLEM_MEDIA_TYPE)
    detail = {
        404: f"nothing at {short(request.path)}",
        405: f"{short(request.method)} is not allowed on {short(request.path)}",
        415: "the request body must be JSON (Content-Type: application/json)",
    }.get(code, exc.description or exc.name)
    return Problem(slug, detail, headers=headers).to_response()


def register_error_handlers(app: Flask) -> None:
    """Map every exception to a problem+json response."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return exc.to_response()

    app.register_error_handler(HTTPException, _http_error)

    @app.errorhandler(SessionNotFoundError)
    def _not_found(exc: SessionNotFoundError) -> Response:
        return Problem("session-not-found", f"no session {short(exc.session_id)}").to_response()

    @app.errorhandler(InvalidTransitionError)
    def _transition(exc: InvalidTransitionError) -> Response:
        why = (
            RECOVER_RULE
            if exc.requested == RECOVER
            else f"{exc.requested} is not allowed from there"
        )
        return Problem(
            "invalid-transition",
            f"session is {exc.current}; {why}",
            current_status=str(exc.current),
            requested=str(exc.requested),
        ).to_response()

    @app.errorhandler(SessionValidationError)
    def _invalid(exc: SessionValidationError) -> Response:
        # The core validates values that came from the request body.
        return validation_problem(exc.errors).to_response()

    @app.errorhandler(IdempotencyKeyReusedError)
    def _key_reused(exc: IdempotencyKeyReusedError) -> Response:
        return Problem(
            "idempotency-key-reused",
            "this Idempotency-Key was first sent with another request body; "
            "send a new key for a new session",
        ).to_response()

    @app.errorhandler(IdempotencyKeySpentError)
    def _key_spent(exc: IdempotencyKeySpentError) -> Response:
        return Problem(
            "idempotency-key-spent",
            f"this Idempotency-Key created session {short(exc.session_id)}, which has since "
            "been removed; send a new key for a new session",
            session_id=exc.session_id,
        ).to_response()

    @app.errorhandler(SessionCapacityError)
    def _full(exc: SessionCapacityError) -> Response:
        return _retry_later(
            "capacity-exceeded",
            f"{exc.max_sessions} sessions are held and capacity_policy is reject",
        ).to_response()

    @app.errorhandler(SessionLockError)
    def _busy(exc: SessionLockError) -> Response:
        return _retry_later("busy", "the session store is busy; try again").to_response()

    store_down_lines = Throttle()  # any client can cause one per request while it lasts

    @app.errorhandler(StoreUnavailableError)
    def _store_down(exc: StoreUnavailableError) -> Response:
        # The cause (host, port, timeout) goes to the log; never a URL with its password.
        answered = store_down_lines.due()
        if answered is not None:
            logger.warning(
                "session store unavailable: %s (%d request(s) answered 503 since the last such "
                "line; at most one a minute)",
                exc,
                answered,
            )
        return Problem(
            "store-unavailable",
            "the session store did not answer in time; try again",
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        ).to_response()

    unreadable_lines = Throttle()  # each read of such a session would log one

    @app.errorhandler(UnreadableSessionError)
    def _unreadable(exc: UnreadableSessionError) -> Response:
        # Stored data this code did not write (edited by hand, another version's layout): the
        # log names the session and the reason, as one line; the client gets no internals.
        answered = unreadable_lines.due()
        if answered is not None:
            logger.error(
                "%s (%d request(s) met an unreadable session since the last such line)",
                exc,
                answered,
            )
        return Problem(
            "internal-error", "a stored session cannot be read; the sidecar's log names it"
        ).to_response()

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The traceback goes to the log only; the client gets no internals.
        rule = request.url_rule.rule if request.url_rule else UNMATCHED_ROUTE
        logger.error(
            "unhandled %s on %s %s", type(exc).__name__, request.method, rule, exc_info=exc
        )
        return Problem("internal-error", "the server failed to handle this request").to_response()


def shutting_down() -> Problem:
    """The 503 every API route answers while the process drains."""
    return _retry_later("shutting-down", "the sidecar is shutting down")
