"""SidecarClient: the sidecar's API over one pooled httpx.Client, a method per route."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from sidecar.client.calls import Call, CallBuilder
from sidecar.client.errors import (
    SidecarClientError,
    TransportError,
    UnexpectedAnswerError,
    error_from_response,
)
from sidecar.client.retry import Attempts, RetryPolicy, may_retry
from sidecar.core.config import ManagerConfig
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
)
from sidecar.core.models import ScenePrompt as Scene
from sidecar.tokens import TOKEN_CHARACTERS, sendable_token
from sidecar.web.schemas import (
    BulkStatusResult,
    CleanupResult,
    HealthReport,
    Liveness,
    PerformanceStats,
    Readiness,
    SessionPage,
    SessionPatch,
    SessionSummary,
)

__all__ = ["DEFAULT_URL", "SidecarClient", "check_base_url", "client_headers"]

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
_calls = CallBuilder


def client_headers(token: str | None) -> dict[str, str]:
    """Headers every request carries: the bearer token, if any.

    A ValueError if the token is not visible ASCII without spaces, the rule the server holds
    its own tokens to (sidecar.settings); the message never repeats the token, a secret.
    """
    if not token:
        return {}
    if not sendable_token(token):
        raise ValueError(
            f"the token must be {TOKEN_CHARACTERS}"
            " (read from a file with its trailing newline?); the token is not shown"
        )
    return {"Authorization": f"Bearer {token}"}


def check_base_url(base_url: str | httpx.URL) -> None:
    """A ValueError, a programming error, unless `base_url` is an http(s) URL with a host.

    httpx would only refuse it at the first request, with exceptions outside the client's
    tree. The message is one line and does not quote the URL, which may hold a password.
    """
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"base_url is not a valid URL: {' '.join(str(exc).split())}") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(
            f"base_url must be an http:// or https:// URL with a host, like {DEFAULT_URL}"
        )
    if url.port is not None and not 1 <= url.port <= 65535:
        # httpx takes any number, and the socket layer keeps its low 16 bits: 99999 would
        # connect to port 34463.
        raise ValueError(f"base_url's port must be between 1 and 65535, not {url.port}")


class SidecarClient:
    """A synchronous client of one sidecar; use it as a context manager to close its pool.

    `retry` decides which failures are tried again (see sidecar.client.retry); `sleep`,
    `clock` and `draw` (the jitter's random numbers) are injectable so tests never wait.
    `transport` replaces httpx's (for example an httpx.MockTransport). A `base_url` that is not
    an http(s) URL with a host, or a token that is not visible ASCII, is a ValueError.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        check_base_url(base_url)
        self._http = httpx.Client(
            base_url=base_url,
            headers=client_headers(token),
            timeout=timeout,
            transport=transport,
            limits=limits or httpx.Limits(),
        )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._draw = draw

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send `call`, retrying as the policy allows; its answer read, or the error raised."""
        attempts = Attempts(
            self.retry, may_retry(call.method, call.idempotency_key), self._clock, self._draw
        )
        while True:
            cause: Exception | None = None
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    content=call.body,
                    params=call.params,
                    headers=call.headers,
                )
            except httpx.UnsupportedProtocol:
                raise
            except httpx.LocalProtocolError as exc:
                # Not sent: a header is not valid HTTP, and a repeat cannot cure that. Its text
                # quotes the header, so it is not chained either.
                raise TransportError(call.method, call.path, exc) from None
            except httpx.TransportError as exc:
                cause = exc
                error: SidecarClientError = TransportError(call.method, call.path, exc)
            else:
                if response.is_success:
                    try:
                        return call.read(response)
                    except ValueError as exc:  # pydantic's ValidationError is a ValueError
                        raise UnexpectedAnswerError(
                            call.method, call.path, response.status_code, exc
                        ) from exc
                error = error_from_response(response, call.session_id, call.idempotency_key)
            wait = attempts.wait_after(error)
            if wait is None:
                raise error from cause
            self._sleep(wait)

    # ------------------------------------------------------------------ sessions

    def create_session(
        self, request: GenerationRequest, *, idempotency_key: str | None = None
    ) -> GenerationSession:
        """POST /sessions with an Idempotency-Key (a fresh one unless given)."""
        return self.send(_calls.create_session(request, idempotency_key))

    def list_sessions(
        self,
        status: GenerationStatus | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        *,
        stuck: bool = False,
    ) -> SessionPage:
        """One page of summaries in creation order; pass next_cursor back for the next.

        With `stuck`, only stuck sessions (processing, not updated for longer than
        stuck_after_seconds), oldest last update first.
        """
        return self.send(_calls.list_sessions(status, limit, cursor, stuck))

    def iter_sessions(
        self,
        status: GenerationStatus | str | None = None,
        page_size: int = 1000,
        *,
        stuck: bool = False,
    ) -> Iterator[SessionSummary]:
        """Every session's summary (with `stuck`, every stuck one's), walking the pages."""
        cursor: str | None = None
        while True:
            page = self.list_sessions(status, page_size, cursor, stuck=stuck)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def bulk_status(
        self,
        session_ids: Sequence[str],
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> BulkStatusResult:
        """Set one status on many sessions (never retried: it is a POST without a key)."""
        return self.send(_calls.bulk_status(session_ids, status, error_message))

    def get_session(self, session_id: str) -> GenerationSession:
        """One session (touches last_accessed)."""
        return self.send(_calls.get_session(session_id))

    def delete_session(self, session_id: str) -> None:
        """Remove a session."""
        self.send(_calls.delete_session(session_id))

    def patch_session(
        self, session_id: str, patch: SessionPatch | Mapping[str, Any]
    ) -> GenerationSession:
        """Change status, error_message, progress and scenes together, or nothing."""
        return self.send(_calls.patch_session(session_id, patch))

    def put_status(
        self, session_id: str, status: GenerationStatus | str, error_message: str | None = None
    ) -> GenerationSession:
        """Move a session to another status."""
        return self.send(_calls.put_status(session_id, status, error_message))

    def put_progress(
        self, session_id: str, progress: ProgressUpdate | Mapping[str, Any]
    ) -> GenerationSession:
        """Record progress of a pending or processing session."""
        return self.send(_calls.put_progress(session_id, progress))

    def put_scene(
        self, session_id: str, scene: Scene | Mapping[str, Any]
    ) -> tuple[GenerationSession, bool]:
        """Add or replace the scene with its number; True if it was added.

        A PUT is retried when its answer is lost, and the retry finds the scene the first try
        added: after a retried call, `added` can be False although this call added the scene.
        """
        return self.send(_calls.put_scene(session_id, scene))

    def put_scenes(
        self, session_id: str, scenes: Sequence[Scene | Mapping[str, Any]]
    ) -> GenerationSession:
        """Replace all scenes."""
        return self.send(_calls.put_scenes(session_id, scenes))

    def recover_session(self, session_id: str) -> GenerationSession:
        """Force a session into failed with the recovery message."""
        return self.send(_calls.recover_session(session_id))

    # ------------------------------------------------------------------ figures and admin

    def stats(self) -> PerformanceStats:
        """The manager's performance statistics."""
        return self.send(_calls.stats())

    def health(self) -> HealthReport:
        """Health by utilization."""
        return self.send(_calls.health())

    def cleanup(self, scope: str, max_age_seconds: float | None = None) -> CleanupResult:
        """Remove sessions now: scope expired, failed, completed or all (admin)."""
        return self.send(_calls.cleanup(scope, max_age_seconds))

    def get_config(self) -> ManagerConfig:
        """The live manager settings (admin)."""
        return self.send(_calls.get_config())

    def patch_config(self, **changes: Any) -> ManagerConfig:
        """Change live manager settings, all or nothing (admin)."""
        return self.send(_calls.patch_config(changes))

    def livez(self) -> Liveness:
        """The process answers."""
        return self.send(_calls.livez())

    def readyz(self) -> Readiness:
        """Ready for traffic; UnavailableError if not."""
        return self.send(_calls.readyz())

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document."""
        return self.send(_calls.openapi())

    def metrics(self) -> str:
        """The Prometheus exposition text."""
        return self.send(_calls.metrics())
