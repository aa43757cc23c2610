"""A typed client of the sidecar's API for the generation service (needs the `client` extra).

`SidecarClient` and `AsyncSidecarClient` have a method per API route, taking and returning the
models the server uses; `RemoteSessionManager` offers the seed's SessionManager calls over
them. Errors are one tree (see sidecar.client.errors); retries follow a RetryPolicy.
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401
except ImportError as exc:  # the core does not need httpx; only this package does
    raise ImportError("sidecar.client needs httpx: pip install 'session-sidecar[client]'") from exc

from sidecar.client.aio import AsyncSidecarClient
from sidecar.client.errors import (
    AuthError,
    ForbiddenError,
    NotRemotableError,
    ProblemError,
    RemoteCapacityError,
    RemoteIdempotencyKeyReusedError,
    RemoteIdempotencyKeySpentError,
    RemoteInvalidTransitionError,
    RemoteSessionNotFoundError,
    RemoteValidationError,
    SidecarClientError,
    TransportError,
    UnauthorizedError,
    UnavailableError,
    UnexpectedAnswerError,
)
from sidecar.client.remote import RemoteSessionManager
from sidecar.client.retry import NO_RETRY, RetryPolicy
from sidecar.client.sync import SidecarClient

__all__ = [
    "NO_RETRY",
    "AsyncSidecarClient",
    "AuthError",
    "ForbiddenError",
    "NotRemotableError",
    "ProblemError",
    "RemoteCapacityError",
    "RemoteIdempotencyKeyReusedError",
    "RemoteIdempotencyKeySpentError",
    "RemoteInvalidTransitionError",
    "RemoteSessionManager",
    "RemoteSessionNotFoundError",
    "RemoteValidationError",
    "RetryPolicy",
    "SidecarClient",
    "SidecarClientError",
    "TransportError",
    "UnauthorizedError",
    "UnavailableError",
    "UnexpectedAnswerError",
]
