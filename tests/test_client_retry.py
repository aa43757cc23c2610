"""Retries through real failures of a real `sidecar serve`: a drain, and a connection dropped.

To make the failure land on a request deterministically, the client's transport is httpx's
real HTTPTransport behind `PausingTransport`, which sends the first byte of the first body,
runs the test's hook (SIGTERM or SIGKILL the server), then sends the rest. The server has the
request half read when the hook runs: a draining server finishes reading it and answers 503,
a killed one leaves the client with a dropped connection. The client's injected `sleep` is where
the test restarts the server on the same port, so no test sleeps and every wait is recorded.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import SidecarProcess, SidecarSpawner
from drain_hold import big_session, unread_answer

from sidecar.client import (
    NO_RETRY,
    AsyncSidecarClient,
    RemoteSessionManager,
    RetryPolicy,
    SidecarClient,
    TransportError,
    UnavailableError,
)
from sidecar.core.models import GenerationRequest, ScenePrompt

pytestmark = pytest.mark.process

REQUEST = GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)
DRAINING = re.compile(r"shutting down: draining")


class PausingTransport(httpx.BaseTransport):
    """httpx's own transport; the first request with a body pauses after one byte for `hook`."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self._real = httpx.HTTPTransport()
        self._hook = hook
        self._paused = False
        self.outcomes: list[str] = []  # each try: its status, or the exception it raised

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self._paused and request.content:
            self._paused = True
            body = request.content

            def halves() -> Iterator[bytes]:
                yield body[:1]
                self._hook()
                yield body[1:]

            # The headers keep the Content-Length, so the body is sent as it was framed.
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=halves()
            )
        try:
            response = self._real.handle_request(request)
        except httpx.TransportError as exc:
            self.outcomes.append(type(exc).__name__)
            raise
        self.outcomes.append(str(response.status_code))
        return response

    def close(self) -> None:
        self._real.close()


BIG_BODY = 4 * 1024 * 1024  # room for the holding session's 2 MB of scenes


class DrainHold:
    """Keeps `server`'s drain open (an unread 2 MB answer) from before SIGTERM until released,
    so the paused request's body arrives while the server still answers 503."""

    def __init__(self, server: SidecarProcess) -> None:
        parts = urlsplit(server.url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._reader: socket.socket | None = unread_answer(address, big_session(server.url))

    def release(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def drainer(server: SidecarProcess, hold: DrainHold) -> Callable[[], None]:
    """A hook that SIGTERMs `server` and returns once it drains (held open by `hold`)."""

    def drain() -> None:
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_line(DRAINING, timeout=15)

    return drain


class Restarter:
    """The client's sleep: records each wait and brings the stopped server back on its port."""

    def __init__(
        self, sidecars: SidecarSpawner, server: SidecarProcess, hold: DrainHold | None = None
    ) -> None:
        self._sidecars = sidecars
        self._hold = hold
        self.server = server
        self.port = urlsplit(server.url).port
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._hold is not None:
            self._hold.release()
        if self.server.process.poll() is None:
            self.server.wait(timeout=30)  # the drain ends within its 5 s
        self.server = self._sidecars(port=self.port, max_body_bytes=BIG_BODY)


def killer(server: SidecarProcess) -> Callable[[], None]:
    """A hook that SIGKILLs `server` and waits for it to be gone: its connections drop."""

    def crash() -> None:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(15)

    return crash


def test_a_create_retries_through_a_drain_onto_the_restarted_server(
    sidecars: SidecarSpawner,
) -> None:
    server = sidecars(max_body_bytes=BIG_BODY)
    hold = DrainHold(server)
    transport = PausingTransport(drainer(server, hold))
    restart = Restarter(sidecars, server, hold)
    with SidecarClient(server.url, transport=transport, sleep=restart, draw=lambda: 0.0) as c:
        session = c.create_session(REQUEST)
        assert transport.outcomes == ["503", "201"]
        assert restart.waits == [5.0]  # the 503's Retry-After, longer than the 0.05 s backoff
        assert restart.server.url == server.url
        assert [s.session_id for s in c.iter_sessions()] == [session.session_id]


def test_a_create_retries_through_a_dropped_connection_with_its_backoff(
    sidecars: SidecarSpawner,
) -> None:
    server = sidecars()

    transport = PausingTransport(killer(server))
    restart = Restarter(sidecars, server)
    policy = RetryPolicy(backoff=0.2, jitter=0.5)
    with SidecarClient(
        server.url, transport=transport, retry=policy, sleep=restart, draw=lambda: 0.5
    ) as c:
        session = c.create_session(REQUEST)
        assert transport.outcomes[0] in {"WriteError", "RemoteProtocolError", "ReadError"}
        assert transport.outcomes[1:] == ["201"]
        assert restart.waits == [pytest.approx(0.15)]  # 0.2 * (0.5 + 0.5 * 0.5)
        assert c.stats().total_sessions == 1
        assert c.get_session(session.session_id).session_id == session.session_id


class AnswerDroppingTransport(httpx.BaseTransport):
    """httpx's own transport; the first request with a body reaches the server and is
    answered, then the answer is thrown away and the connection closed, as when a connection
    drops after the server has done the work."""

    def __init__(self) -> None:
        self._real = httpx.HTTPTransport()
        self._dropped = False
        self.outcomes: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._real.handle_request(request)
        if not self._dropped and request.content:
            self._dropped = True
            response.read()
            response.close()
            self.outcomes.append(f"{response.status_code} dropped")
            raise httpx.ReadError("connection dropped after the server answered", request=request)
        self.outcomes.append(str(response.status_code))
        return response

    def close(self) -> None:
        self._real.close()


def test_a_create_whose_first_try_reached_the_server_makes_one_session(
    sidecars: SidecarSpawner,
) -> None:
    server = sidecars()
    transport = AnswerDroppingTransport()
    waits: list[float] = []
    with SidecarClient(server.url, transport=transport, sleep=waits.append, draw=lambda: 0.0) as c:
        session = c.create_session(REQUEST)
        assert transport.outcomes == ["201 dropped", "201"]
        assert len(waits) == 1
        assert [s.session_id for s in c.iter_sessions()] == [session.session_id]
        assert c.stats().total_sessions == 1


def test_a_put_scene_retried_after_its_answer_was_lost_says_not_added(
    sidecars: SidecarSpawner,
) -> None:
    # The retry policy stands (a PUT is safe to repeat); its docstrings say what it costs.
    server = sidecars()
    with SidecarClient(server.url) as plain:
        sid = plain.create_session(REQUEST).session_id
    transport = AnswerDroppingTransport()
    waits: list[float] = []
    with SidecarClient(server.url, transport=transport, sleep=waits.append) as c:
        session, added = c.put_scene(sid, ScenePrompt(scene_number=1, prompt="the lantern"))
    assert transport.outcomes == ["201 dropped", "200"]  # the first try added it
    assert len(waits) == 1
    assert [s.scene_number for s in session.scenes] == [1]
    assert added is False
    for method in (SidecarClient.put_scene, AsyncSidecarClient.put_scene):
        assert "after a retried call, `added` can be False" in (method.__doc__ or "")
    assert "retried" in (RemoteSessionManager.add_scene_to_session.__doc__ or "")


def test_a_post_without_a_key_is_not_retried_after_a_dropped_connection(
    sidecars: SidecarSpawner,
) -> None:
    server = sidecars()

    transport = PausingTransport(killer(server))
    waits: list[float] = []
    with (
        SidecarClient(server.url, transport=transport, sleep=waits.append) as c,
        pytest.raises(TransportError) as caught,
    ):
        c.bulk_status(["a", "b"], "failed")
    assert caught.value.method == "POST"
    assert len(transport.outcomes) == 1
    assert waits == []


class AsyncPausingTransport(httpx.AsyncBaseTransport):
    """PausingTransport for AsyncSidecarClient: httpx's async transport, one body paused."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self._hook = hook
        self._paused = False
        self.outcomes: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._paused and request.content:
            self._paused = True
            body = request.content

            async def halves() -> AsyncIterator[bytes]:
                yield body[:1]
                self._hook()  # blocks the loop on purpose: nothing else runs meanwhile
                yield body[1:]

            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=halves()
            )
        response = await self._real.handle_async_request(request)
        self.outcomes.append(str(response.status_code))
        return response

    async def aclose(self) -> None:
        await self._real.aclose()


def test_the_async_client_retries_through_a_drain(sidecars: SidecarSpawner) -> None:
    server = sidecars(max_body_bytes=BIG_BODY)
    hold = DrainHold(server)
    transport = AsyncPausingTransport(drainer(server, hold))
    restart = Restarter(sidecars, server, hold)

    async def sleep(seconds: float) -> None:
        restart(seconds)

    async def run() -> list[str]:
        async with AsyncSidecarClient(server.url, transport=transport, sleep=sleep) as c:
            await c.create_session(REQUEST)
            return [s.session_id async for s in c.iter_sessions()]

    assert len(asyncio.run(run())) == 1
    assert transport.outcomes == ["503", "201", "200"]  # the create twice, then the listing
    assert restart.waits == [5.0]


def test_without_retries_a_drain_is_an_unavailable_error_with_retry_after(
    sidecars: SidecarSpawner,
) -> None:
    server = sidecars(max_body_bytes=BIG_BODY)
    hold = DrainHold(server)
    try:
        with (
            SidecarClient(
                server.url, transport=PausingTransport(drainer(server, hold)), retry=NO_RETRY
            ) as c,
            pytest.raises(UnavailableError) as caught,
        ):
            c.create_session(REQUEST)
    finally:
        hold.release()
    error = caught.value
    assert (error.status, error.slug, error.retry_after) == (503, "shutting-down", 5.0)
