"""AsyncSidecarClient: the same methods as SidecarClient, over one pooled httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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
from sidecar.client.sync import DEFAULT_URL, check_base_url, client_headers
from sidecar.core.config import ManagerConfig
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
)
from sidecar.core.models import ScenePrompt as Scene
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

__all__ = ["AsyncSidecarClient"]

T = TypeVar("T")
_calls = CallBuilder


class AsyncSidecarClient:
    """An asyncio client of one sidecar; use it as an async context manager to close its pool.

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
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        check_base_url(base_url)
        self._http = httpx.AsyncClient(
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

    async def __aenter__(self) -> AsyncSidecarClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send `call`, retrying as the policy allows; its answer read, or the error raised."""
        attempts = Attempts(
            self.retry, may_retry(call.method, call.idempotency_key), self._clock, self._draw
        )
        while True:
            cause: Exception | None = None
            try:
                response = await self._http.request(
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
            await self._sleep(wait)

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, request: GenerationRequest, *, idempotency_key: str | None = None
    ) -> GenerationSession:
        """POST /sessions with an Idempotency-Key (a fresh one unless given)."""
        return await self.send(_calls.create_session(request, idempotency_key))

    async def list_sessions(
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
        return await self.send(_calls.list_sessions(status, limit, cursor, stuck))

    async def iter_sessions(
        self,
        status: GenerationStatus | str | None = None,
        page_size: int = 1000,
        *,
        stuck: bool = False,
    ) -> AsyncIterator[SessionSummary]:
        """Every session's summary (with `stuck`, every stuck one's), walking the pages."""
        cursor: str | None = None
        while True:
            page = await self.list_sessions(status, page_size, cursor, stuck=stuck)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def bulk_status(
        self,
        session_ids: Sequence[str],
        status: GenerationStatus | str,
        error_message: str | None = None,
    ) -> BulkStatusResult:
        """Set one status on many sessions (never retried: it is a POST without a key)."""
        return await self.send(_calls.bulk_status(session_ids, status, error_message))

    async def get_session(self, session_id: str) -> GenerationSession:
        """One session (touches last_accessed)."""
        return await self.send(_calls.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        """Remove a session."""
        await self.send(_calls.delete_session(session_id))

    async def patch_session(
        self, session_id: str, patch: SessionPatch | Mapping[str, Any]
    ) -> GenerationSession:
        """Change status, error_message, progress and scenes together, or nothing."""
        return await self.send(_calls.patch_session(session_id, patch))

    async def put_status(
        self, session_id: str, status: GenerationStatus | str, error_message: str | None = None
    ) -> GenerationSession:
        """Move a session to another status."""
        return await self.send(_calls.put_status(session_id, status, error_message))

    async def put_progress(
        self, session_id: str, progress: ProgressUpdate | Mapping[str, Any]
    ) -> GenerationSession:
        """Record progress of a pending or processing session."""
        return await self.send(_calls.put_progress(session_id, progress))

    async def put_scene(
        self, session_id: str, scene: Scene | Mapping[str, Any]
    ) -> tuple[GenerationSession, bool]:
        """Add or replace the scene with its number; True if it was added.

        A PUT is retried when its answer is lost, and the retry finds the scene the first try
        added: after a retried call, `added` can be False although this call added the scene.
        """
        return await self.send(_calls.put_scene(session_id, scene))

    async def put_scenes(
        self, session_id: str, scenes: Sequence[Scene | Mapping[str, Any]]
    ) -> GenerationSession:
        """Replace all scenes."""
        return await self.send(_calls.put_scenes(session_id, scenes))

    async def recover_session(self, session_id: str) -> GenerationSession:
        """Force a session into failed with the recovery message."""
        return await self.send(_calls.recover_session(session_id))

    # ------------------------------------------------------------------ figures and admin

    async def stats(self) -> PerformanceStats:
        """The manager's performance statistics."""
        return await self.send(_calls.stats())

    async def health(self) -> HealthReport:
        """Health by utilization."""
        return await self.send(_calls.health())

    async def cleanup(self, scope: str, max_age_seconds: float | None = None) -> CleanupResult:
        """Remove sessions now: scope expired, failed, completed or all (admin)."""
        return await self.send(_calls.cleanup(scope, max_age_seconds))

    async def get_config(self) -> ManagerConfig:
        """The live manager settings (admin)."""
        return await self.send(_calls.get_config())

    async def patch_config(self, **changes: Any) -> ManagerConfig:
        """Change live manager settings, all or nothing (admin)."""
        return await self.send(_calls.patch_config(changes))

    async def livez(self) -> Liveness:
        """The process answers."""
        return await self.send(_calls.livez())

    async def readyz(self) -> Readiness:
        """Ready for traffic; UnavailableError if not."""
        return await self.send(_calls.readyz())

    async def openapi(self) -> dict[str, Any]:
        """The OpenAPI document."""
        return await self.send(_calls.openapi())

    async def metrics(self) -> str:
        """The Prometheus exposition text."""
        return await self.send(_calls.metrics())
