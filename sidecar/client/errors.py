"""What the client raises: one tree under the core's SessionManagerError.

A problem+json answer becomes the exception of the same meaning in the core, so code that
catches `SessionNotFoundError` around the in-process manager catches it around the client too.
Each of those is a client-side subclass that also carries the problem's fields (`status`,
`type`, `title`, `detail`, `problem`), and `retry_after` where the server sent one.

SessionManagerError                              (sidecar.core.errors)
└── SidecarClientError                           everything the client raises
    ├── TransportError                           no answer: connect, read, write, timeout;
    │                                              or not sent: a header not valid HTTP
    ├── UnexpectedAnswerError                    a success answer not of the route's shape
    ├── NotRemotableError  (NotImplementedError) a seed call that needs the manager in-process
    └── ProblemError                             an error answer: .status .type .title .detail
        ├── RemoteSessionNotFoundError           404   also SessionNotFoundError .session_id
        ├── RemoteInvalidTransitionError         409   also InvalidTransitionError
        │                                              .current .requested
        ├── RemoteCapacityError                  429   also SessionCapacityError
        │                                              .max_sessions .retry_after
        ├── RemoteValidationError                422   also SessionValidationError .errors
        ├── RemoteIdempotencyKeyReusedError      422   also IdempotencyKeyReusedError .key
        ├── RemoteIdempotencyKeySpentError       409   also IdempotencyKeySpentError .key
        │                                              .session_id (the key's, removed)
        ├── AuthError                            401, 403
        │   ├── UnauthorizedError                401   no token, or not a valid one
        │   └── ForbiddenError                   403   the API token on an admin route
        └── UnavailableError                     503   draining, not ready, store busy
                                                       .retry_after
A problem of any other kind (400, 404 for an unknown path, 405, 413, 415, 500, or a proxy's
non-JSON error page) is raised as ProblemError itself.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from sidecar.core.errors import (
    IdempotencyKeyReusedError,
    IdempotencyKeySpentError,
    InvalidTransitionError,
    SessionCapacityError,
    SessionManagerError,
    SessionNotFoundError,
    SessionValidationError,
)

__all__ = [
    "AuthError",
    "ForbiddenError",
    "NotRemotableError",
    "ProblemError",
    "RemoteCapacityError",
    "RemoteIdempotencyKeyReusedError",
    "RemoteIdempotencyKeySpentError",
    "RemoteInvalidTransitionError",
    "RemoteSessionNotFoundError",
    "RemoteValidationError",
    "SidecarClientError",
    "TransportError",
    "UnauthorizedError",
    "UnavailableError",
    "UnexpectedAnswerError",
    "error_from_response",
    "local_problem",
    "retry_after_seconds",
]

_TYPE_PREFIX = "urn:sidecar:problem:"
_HELD = re.compile(r"^(\d+) sessions are held")


class SidecarClientError(SessionManagerError):
    """Base class of everything the client raises."""


class TransportError(SidecarClientError):
    """The request got no answer (refused, reset, closed early, timed out), or could not be
    sent at all (httpx.LocalProtocolError: a header that is not valid HTTP; never retried)."""

    def __init__(self, method: str, url: str, cause: Exception) -> None:
        if isinstance(cause, httpx.LocalProtocolError):
            # h11 quotes the offending header, which may be the bearer token: never repeat it.
            why = "not sent, a header is not valid HTTP (LocalProtocolError; value not shown)"
        else:
            why = f"no answer ({type(cause).__name__}: {cause})"
        super().__init__(f"{method} {url}: {why}")
        self.method = method
        self.url = url
        self.cause = cause


class UnexpectedAnswerError(SidecarClientError):
    """A 2xx answer whose body is not what the route answers (another service on the port?)."""

    def __init__(self, method: str, url: str, status: int, cause: Exception) -> None:
        super().__init__(f"{method} {url}: {status} answer not of the expected shape: {cause}")
        self.method = method
        self.url = url
        self.status = status
        self.cause = cause


class NotRemotableError(SidecarClientError, NotImplementedError):
    """A seed call that runs a Python callable under the manager's lock: it cannot be remote."""

    def __init__(self, call: str, instead: str) -> None:
        super().__init__(f"{call} cannot run over HTTP; use {instead} instead")
        self.call = call
        self.instead = instead


class ProblemError(SidecarClientError):
    """An RFC 9457 problem the server answered; `problem` holds every member it sent.

    `status` is always the answer's HTTP status: a body counts as a problem document only if
    its `status` member is an integer, and that member is advisory (RFC 9457).
    """

    def __init__(self, problem: dict[str, Any], message: str | None = None) -> None:
        self.problem = problem
        self.status: int = int(problem.get("status", 0))
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        SidecarClientError.__init__(self, message or f"{self.status} {self.title}: {self.detail}")

    @property
    def slug(self) -> str:
        """The problem type without the urn:sidecar:problem: prefix."""
        return self.type.removeprefix(_TYPE_PREFIX)


class RemoteSessionNotFoundError(ProblemError, SessionNotFoundError):
    """404 session-not-found."""

    def __init__(self, problem: dict[str, Any], session_id: str) -> None:
        ProblemError.__init__(self, problem, f"session not found: {session_id}")
        self.session_id = session_id


class RemoteInvalidTransitionError(ProblemError, InvalidTransitionError):
    """409 invalid-transition, with the session's status and the change asked for."""

    def __init__(self, problem: dict[str, Any], session_id: str) -> None:
        self.session_id = session_id
        self.current = str(problem.get("current_status", ""))
        self.requested = str(problem.get("requested", ""))
        ProblemError.__init__(
            self,
            problem,
            f"session {session_id}: cannot go from {self.current} to {self.requested}",
        )


class RemoteCapacityError(ProblemError, SessionCapacityError):
    """429 capacity-exceeded: the sidecar is full and rejects creates; retry after a while."""

    def __init__(self, problem: dict[str, Any], retry_after: float | None) -> None:
        ProblemError.__init__(self, problem)
        held = _HELD.match(self.detail)  # the problem has no member of its own for the capacity
        self.max_sessions = int(held.group(1)) if held else 0
        self.retry_after = retry_after


class RemoteValidationError(ProblemError, SessionValidationError):
    """422 validation-error: `errors` lists each bad field as {loc, msg, type}."""

    def __init__(self, problem: dict[str, Any]) -> None:
        ProblemError.__init__(self, problem)
        errors = problem.get("errors")
        self.errors: list[dict[str, Any]] = errors if isinstance(errors, list) else []


class RemoteIdempotencyKeyReusedError(ProblemError, IdempotencyKeyReusedError):
    """422 idempotency-key-reused: the key came first with another request; nothing created.

    `key` is the Idempotency-Key header as sent; `session_id` is empty (the server does not say
    which session the key made).
    """

    def __init__(self, problem: dict[str, Any], key: str) -> None:
        ProblemError.__init__(self, problem)
        self.key = key
        self.session_id = ""


class RemoteIdempotencyKeySpentError(ProblemError, IdempotencyKeySpentError):
    """409 idempotency-key-spent: the key's session has been removed; nothing created.

    `key` is the Idempotency-Key header as sent; `session_id` the removed session's.
    """

    def __init__(self, problem: dict[str, Any], key: str) -> None:
        ProblemError.__init__(self, problem)
        self.key = key
        self.session_id = str(problem.get("session_id", ""))


class AuthError(ProblemError):
    """401 or 403: the token is missing, wrong, or lacks the scope."""


class UnauthorizedError(AuthError):
    """401: no bearer token, or one the server does not know."""


class ForbiddenError(AuthError):
    """403: a valid token without the scope (the API token on an admin route)."""


class UnavailableError(ProblemError):
    """503: the sidecar is draining, not ready, or its store is busy; `retry_after` seconds."""

    def __init__(self, problem: dict[str, Any], retry_after: float | None) -> None:
        ProblemError.__init__(self, problem)
        self.retry_after = retry_after


def local_problem(slug: str, status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem the server would answer, for a call the client refuses without sending."""
    return {
        "type": _TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The answer's Retry-After in seconds (delay-seconds or an HTTP-date), None if absent."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    if isinstance(status, int) and not isinstance(status, bool):
        # RFC 9457: the member is advisory, the answer's own status is the one that counts.
        return body if status == response.status_code else {**body, "status": response.status_code}
    # Not a problem document (a proxy's error page, say): keep the status and some text.
    return {
        "type": "about:blank",
        "title": response.reason_phrase,
        "status": response.status_code,
        "detail": response.text[:200],
    }


def error_from_response(
    response: httpx.Response, session_id: str | None = None, idempotency_key: str | None = None
) -> ProblemError:
    """The exception for an error answer; `session_id` names the session the call was about,
    `idempotency_key` the Idempotency-Key it sent."""
    problem = _problem_of(response)
    slug = str(problem.get("type", "")).removeprefix(_TYPE_PREFIX)
    status = response.status_code
    if slug == "session-not-found":
        return RemoteSessionNotFoundError(problem, session_id or "")
    if slug == "invalid-transition":
        return RemoteInvalidTransitionError(problem, session_id or "")
    if slug == "validation-error":
        return RemoteValidationError(problem)
    if slug == "idempotency-key-reused":
        return RemoteIdempotencyKeyReusedError(problem, idempotency_key or "")
    if slug == "idempotency-key-spent":
        return RemoteIdempotencyKeySpentError(problem, idempotency_key or "")
    if status == 429:
        return RemoteCapacityError(problem, retry_after_seconds(response))
    if status == 503:
        return UnavailableError(problem, retry_after_seconds(response))
    if status == 401:
        return UnauthorizedError(problem)
    if status == 403:
        return ForbiddenError(problem)
    return ProblemError(problem)
