"""The client's decisions without a server: backoff, when to retry, Idempotency-Key reuse.

Only the tests that need answers no real sidecar gives on demand use httpx.MockTransport: a 503
to the first create and a 201 to its retry, recording the headers of each (Idempotency-Key),
and the answers of something else in front of the sidecar (a proxy's JSON error page).
Everything else about the client runs against a real server in tests/test_client*.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from sidecar.client import (
    AsyncSidecarClient,
    ProblemError,
    RemoteCapacityError,
    RemoteSessionManager,
    RetryPolicy,
    SidecarClient,
    TransportError,
    UnavailableError,
    UnexpectedAnswerError,
)
from sidecar.client.errors import error_from_response, retry_after_seconds
from sidecar.client.retry import Attempts, may_retry
from sidecar.core.models import GenerationRequest

REQUEST = GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)


class FakeClock:
    """Monotonic seconds that only move when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unavailable(retry_after: str | None = None) -> UnavailableError:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    body = {"type": "urn:sidecar:problem:shutting-down", "title": "t", "status": 503, "detail": "d"}
    error = error_from_response(httpx.Response(503, json=body, headers=headers))
    assert isinstance(error, UnavailableError)
    return error


NO_ANSWER = TransportError("GET", "/x", httpx.ConnectError("refused"))


@pytest.mark.parametrize(
    ("retry", "draw", "expected"),
    [
        (1, 0.0, 0.05),  # half of 0.1 is fixed, the other half is jitter
        (1, 0.999, 0.09995),
        (2, 0.5, 0.15),  # 0.2 * (0.5 + 0.5 * 0.5)
        (3, 1.0, 0.4),
        (10, 1.0, 5.0),  # capped at max_backoff
    ],
)
def test_backoff_grows_exponentially_with_jitter_and_a_cap(
    retry: int, draw: float, expected: float
) -> None:
    assert RetryPolicy().backoff_for(retry, draw) == pytest.approx(expected)


def test_attempts_stop_at_the_policy_count_with_the_backoff_of_each_retry() -> None:
    clock = FakeClock()
    attempts = Attempts(RetryPolicy(attempts=4, jitter=0), True, clock, lambda: 0.5)
    waits = []
    while (wait := attempts.wait_after(NO_ANSWER)) is not None:
        waits.append(wait)
        clock.now += wait
    assert waits == pytest.approx([0.1, 0.2, 0.4])
    assert attempts.tries == 4


def test_retry_after_replaces_a_shorter_backoff() -> None:
    attempts = Attempts(RetryPolicy(jitter=0), True, FakeClock(), lambda: 0.0)
    assert attempts.wait_after(unavailable("5")) == 5.0
    assert attempts.wait_after(unavailable()) == pytest.approx(0.2)


def test_no_wait_may_end_past_the_deadline() -> None:
    clock = FakeClock()
    attempts = Attempts(RetryPolicy(attempts=10, deadline=6.0), True, clock, lambda: 0.0)
    assert attempts.wait_after(unavailable("5")) == 5.0
    clock.now += 5.0
    assert attempts.wait_after(unavailable("5")) is None  # 10 s would be past 6 s
    assert attempts.tries == 2


@pytest.mark.parametrize(
    ("status", "retried"), [(503, True), (429, True), (500, False), (404, False), (409, False)]
)
def test_only_503_429_and_no_answer_are_retried(status: int, retried: bool) -> None:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": "d"}
    error = error_from_response(httpx.Response(status, json=body))
    attempts = Attempts(RetryPolicy(), True, FakeClock(), lambda: 0.0)
    assert (attempts.wait_after(error) is not None) is retried
    assert Attempts(RetryPolicy(), True, FakeClock(), lambda: 0.0).wait_after(NO_ANSWER)


@pytest.mark.parametrize(
    ("method", "key", "safe"),
    [
        ("GET", None, True),
        ("PUT", None, True),
        ("DELETE", None, True),
        ("POST", '"k"', True),
        ("POST", None, False),
        ("PATCH", None, False),
    ],
)
def test_only_idempotent_calls_may_be_retried(method: str, key: str | None, safe: bool) -> None:
    assert may_retry(method, key) is safe
    attempts = Attempts(RetryPolicy(), may_retry(method, key), FakeClock(), lambda: 0.0)
    assert (attempts.wait_after(NO_ANSWER) is not None) is safe


def test_retry_after_as_an_http_date() -> None:
    from datetime import UTC, datetime

    response = httpx.Response(503, headers={"Retry-After": "Wed, 02 Dec 2026 10:00:07 GMT"})
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(response, now) == 7.0
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "soon"})) is None


def test_a_non_problem_error_page_is_a_problem_error_with_its_status() -> None:
    error = error_from_response(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert type(error) is ProblemError
    assert (error.status, error.type) == (502, "about:blank")
    assert "Bad gateway" in error.detail


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "message": "bad gateway"},  # a proxy's JSON, not a problem
        {"status": None},
        {"status": "404"},  # a string, and not even the answer's
        {"status": True},
        {"type": "urn:sidecar:problem:busy", "title": "Busy", "status": 200, "detail": "d"},
    ],
)
def test_the_status_is_the_answers_whatever_the_body_says(body: dict[str, object]) -> None:
    error = error_from_response(httpx.Response(502, json=body))
    assert type(error) is ProblemError
    assert error.status == 502
    assert str(error).startswith("502 ")
    problem = isinstance(body["status"], int) and not isinstance(body["status"], bool)
    assert error.type == (body["type"] if problem else "about:blank")


def test_a_503_whose_body_is_not_a_problem_document_is_retried() -> None:
    answers = [
        httpx.Response(503, json={"status": "DOWN"}, headers={"Retry-After": "1"}),
        httpx.Response(200, json={"status": "alive"}),
    ]
    sleeps: list[float] = []
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    with SidecarClient("http://sidecar.test", transport=transport, sleep=sleeps.append) as c:
        assert c.livez().status == "alive"
    assert (sleeps, answers) == ([1.0], [])


@pytest.mark.parametrize(
    ("route", "body"),
    [
        *[(route, body) for route in ("get_session", "openapi") for body in (b"[]", b"1", b"null")],
        ("list_sessions", b"[]"),
        ("list_sessions", b'{"items": [1], "next_cursor": null}'),  # an item not an object
    ],
)
def test_a_success_answer_that_is_not_a_json_object_is_an_unexpected_answer(
    route: str, body: bytes
) -> None:
    args = ("some-id",) if route == "get_session" else ()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with (
        SidecarClient("http://sidecar.test", transport=transport) as c,
        pytest.raises(UnexpectedAnswerError) as caught,
    ):
        getattr(c, route)(*args)
    assert caught.value.status == 200

    async def run() -> None:
        async with AsyncSidecarClient("http://sidecar.test", transport=transport) as c:
            await getattr(c, route)(*args)

    with pytest.raises(UnexpectedAnswerError):
        asyncio.run(run())


def test_a_capacity_problem_carries_the_capacity_and_retry_after() -> None:
    body = {
        "type": "urn:sidecar:problem:capacity-exceeded",
        "title": "Session capacity reached",
        "status": 429,
        "detail": "7 sessions are held and capacity_policy is reject",
    }
    error = error_from_response(httpx.Response(429, json=body, headers={"Retry-After": "5"}))
    assert isinstance(error, RemoteCapacityError)
    assert (error.max_sessions, error.retry_after) == (7, 5.0)


# ---------------------------------------------------------------------- the base URL


@pytest.mark.parametrize(
    "base_url",
    [
        "127.0.0.1:8000",  # no scheme
        "",
        "ftp://user:hunter2@127.0.0.1:8000",
        "http://[::1",  # httpx.InvalidURL
        "http://\n127.0.0.1:8000",
        "http://",  # no host
        "http://127.0.0.1:99999",  # the socket layer would take it as port 34463
        "http://127.0.0.1:65536",
        "http://127.0.0.1:0",
    ],
)
def test_a_base_url_that_is_not_an_http_url_is_a_value_error_at_once(base_url: str) -> None:
    makers: list[Callable[..., object]] = [SidecarClient, AsyncSidecarClient, RemoteSessionManager]
    for make in makers:
        with pytest.raises(ValueError, match="base_url") as caught:
            make(base_url)
        message = str(caught.value)
        assert "\n" not in message
        assert "hunter2" not in message


def test_an_http_or_https_base_url_is_taken_as_before() -> None:
    for url in (
        "http://127.0.0.1:8000",
        "HTTPS://sidecar.test/prefix",
        "http://[::1]:8000",
        "http://127.0.0.1:65535",
        "http://127.0.0.1:1",
    ):
        SidecarClient(url).close()
        asyncio.run(AsyncSidecarClient(url).aclose())


# ---------------------------------------------------------------------- Idempotency-Key


def _flaky_create() -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering 503 to every first create of a key and 201 to its repeat."""
    seen: list[httpx.Request] = []
    answered: set[str] = set()

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        key = request.headers["Idempotency-Key"]
        if key not in answered:
            answered.add(key)
            problem = {"type": "urn:sidecar:problem:busy", "title": "Busy", "status": 503}
            return httpx.Response(503, json={**problem, "detail": "busy"})
        body = json.loads(request.content)
        session = {
            "session_id": "s-" + str(len(seen)),
            "status": "pending",
            "request_data": body,
            "created_at": "2026-12-02T10:00:00Z",
            "last_accessed": "2026-12-02T10:00:00Z",
            "updated_at": "2026-12-02T10:00:00Z",
        }
        return httpx.Response(201, json=session)

    return httpx.MockTransport(handle), seen


def test_each_create_sends_a_fresh_key_and_reuses_it_on_its_retries() -> None:
    transport, seen = _flaky_create()
    sleeps: list[float] = []
    with SidecarClient(
        "http://sidecar.test", transport=transport, sleep=sleeps.append, draw=lambda: 0.0
    ) as client:
        client.create_session(REQUEST)
        client.create_session(REQUEST)
        client.create_session(REQUEST, idempotency_key='"mine"')
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert len(keys) == 6
    assert keys[0] == keys[1]
    assert keys[2] == keys[3]
    assert keys[0] != keys[2]
    assert keys[4] == keys[5] == '"mine"'
    assert keys[0].startswith('"')
    assert keys[0].endswith('"')
    assert len(sleeps) == 3


def test_the_async_client_reuses_the_key_on_its_retries() -> None:
    transport, seen = _flaky_create()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> None:
        async with AsyncSidecarClient(
            "http://sidecar.test", transport=transport, sleep=sleep
        ) as client:
            await client.create_session(REQUEST)

    asyncio.run(run())
    assert [r.headers["Idempotency-Key"] for r in seen] == [seen[0].headers["Idempotency-Key"]] * 2
    assert len(sleeps) == 1
