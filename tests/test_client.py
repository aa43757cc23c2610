"""SidecarClient and AsyncSidecarClient against a real `sidecar serve`: every route, every error."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import httpx
import pytest
from conftest import C, F, P, R, SidecarProcess, SidecarSpawner, poll

from sidecar.client import (
    NO_RETRY,
    AsyncSidecarClient,
    ForbiddenError,
    ProblemError,
    RemoteCapacityError,
    RemoteInvalidTransitionError,
    RemoteSessionNotFoundError,
    RemoteValidationError,
    RetryPolicy,
    SidecarClient,
    TransportError,
    UnauthorizedError,
    UnexpectedAnswerError,
)
from sidecar.client.calls import Call, CallBuilder
from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.errors import (
    InvalidTransitionError,
    SessionCapacityError,
    SessionNotFoundError,
    SessionValidationError,
)
from sidecar.core.models import (
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.core.rules import RECOVERED_MESSAGE
from sidecar.web.routes import OPERATIONS
from sidecar.web.schemas import SessionPatch

pytestmark = pytest.mark.process

REQUEST = GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)
REQUEST_JSON = b'{"story_text": "A fox finds a lantern in the snow.", "num_scenes": 3}'
API_TOKEN = "api-secret-0123456789"
ADMIN_TOKEN = "admin-secret-0123456789"


@pytest.fixture(scope="module")
def server(spawn_sidecar: SidecarSpawner) -> SidecarProcess:
    return spawn_sidecar(max_sessions=50)


@pytest.fixture
def client(server: SidecarProcess) -> Iterator[SidecarClient]:
    with SidecarClient(server.url, retry=NO_RETRY) as c:
        c.cleanup("all")
        yield c


def test_every_route_has_a_method_on_both_clients() -> None:
    endpoints = {op.endpoint for op in OPERATIONS}
    assert endpoints <= set(dir(SidecarClient))
    assert endpoints <= set(dir(AsyncSidecarClient))


def test_a_session_through_its_whole_life(client: SidecarClient) -> None:
    created = client.create_session(REQUEST)
    assert (created.status, created.request_data) == (P, REQUEST)
    sid = created.session_id
    assert client.get_session(sid).session_id == sid
    assert client.put_status(sid, R).status is R
    progress = client.put_progress(sid, ProgressUpdate(current_step=1, total_steps=4)).progress
    assert progress == ProgressUpdate(current_step=1, total_steps=4)
    session, added = client.put_scene(sid, ScenePrompt(scene_number=2, prompt="the lantern"))
    assert added
    assert [s.scene_number for s in session.scenes] == [2]
    session, added = client.put_scene(sid, {"scene_number": 2, "prompt": "the lantern, lit"})
    assert not added
    assert session.scenes[0].prompt == "the lantern, lit"
    scenes = [ScenePrompt(scene_number=n, prompt=f"scene {n}", title="t") for n in (3, 1)]
    assert [s.scene_number for s in client.put_scenes(sid, scenes).scenes] == [1, 3]
    assert client.patch_session(sid, {"progress": None}).progress is None
    patched = client.patch_session(
        sid, SessionPatch(status=C, progress=ProgressUpdate(current_step=4, total_steps=4))
    )
    assert patched.status is C
    assert patched.progress is not None
    with pytest.raises(RemoteInvalidTransitionError) as refused:  # finished: nothing to recover
        client.recover_session(sid)
    assert (refused.value.current, refused.value.requested) == ("completed", "recover")
    client.delete_session(sid)
    with pytest.raises(RemoteSessionNotFoundError):
        client.get_session(sid)


def test_listing_pages_by_cursor_and_filters_by_status(client: SidecarClient) -> None:
    ids = [client.create_session(REQUEST).session_id for _ in range(5)]
    client.put_status(ids[1], R)
    page = client.list_sessions(limit=2)
    assert [s.session_id for s in page.items] == ids[:2]
    assert page.next_cursor
    assert [s.session_id for s in client.iter_sessions(page_size=2)] == ids
    assert [s.session_id for s in client.iter_sessions(R, page_size=1)] == [ids[1]]
    result = client.bulk_status([ids[0], ids[1], "nope"], F, "gave up")
    assert (result.updated, result.missing, result.conflicts) == (2, ["nope"], [])
    assert client.get_session(ids[0]).error_message == "gave up"


def test_figures_admin_and_operations_routes(client: SidecarClient) -> None:
    for _ in range(3):
        client.create_session(REQUEST)
    stats = client.stats()
    assert (stats.total_sessions, stats.max_capacity) == (3, 50)
    assert stats.status_breakdown[GenerationStatus.PENDING] == 3
    health = client.health()
    assert (health.overall_health, health.session_count) == ("healthy", 3)
    assert client.get_config().max_sessions == 50
    assert client.patch_config(max_sessions=40).max_sessions == 40
    assert client.patch_config(max_sessions=50) == ManagerConfig(max_sessions=50)
    assert client.cleanup("failed").removed == 0
    assert client.cleanup("all").removed == 3
    assert client.livez().status == "alive"
    assert client.readyz().checks.cleanup_worker_alive
    assert client.openapi()["openapi"].startswith("3.")
    assert "sidecar_sessions" in client.metrics()


def test_the_async_client_covers_the_same_routes(server: SidecarProcess) -> None:
    async def run() -> None:
        async with AsyncSidecarClient(server.url, retry=NO_RETRY) as c:
            await c.cleanup("all")
            sid = (await c.create_session(REQUEST)).session_id
            assert (await c.get_session(sid)).status is P
            await c.put_status(sid, R)
            await c.put_progress(sid, {"current_step": 1, "total_steps": 2})
            assert (await c.put_scene(sid, ScenePrompt(scene_number=1, prompt="p")))[1]
            await c.put_scenes(sid, [ScenePrompt(scene_number=2, prompt="q")])
            assert (await c.patch_session(sid, {"status": "completed"})).status is C
            with pytest.raises(RemoteInvalidTransitionError):
                await c.recover_session(sid)
            second = (await c.create_session(REQUEST)).session_id
            assert (await c.list_sessions(limit=1)).next_cursor is not None
            assert [s.session_id async for s in c.iter_sessions(page_size=1)] == [sid, second]
            assert (await c.bulk_status([second], F)).updated == 1
            assert (await c.stats()).total_sessions == 2
            assert (await c.health()).session_count == 2
            assert (await c.get_config()).max_sessions == 50
            assert (await c.patch_config(max_sessions=50)).max_sessions == 50
            await c.delete_session(second)
            with pytest.raises(RemoteSessionNotFoundError):
                await c.delete_session(second)
            assert (await c.cleanup("all")).removed == 1
            assert (await c.livez()).status == "alive"
            assert (await c.readyz()).status == "ready"
            assert "paths" in await c.openapi()
            assert "sidecar_" in await c.metrics()

    asyncio.run(run())


# ---------------------------------------------------------------------- errors from real answers


def test_an_unknown_session_is_the_cores_not_found(client: SidecarClient) -> None:
    with pytest.raises(SessionNotFoundError) as caught:
        client.put_status("no-such-session", R)
    error = caught.value
    assert isinstance(error, RemoteSessionNotFoundError)
    assert isinstance(error, LookupError)
    assert (error.session_id, error.status, error.slug) == (
        "no-such-session",
        404,
        "session-not-found",
    )


def test_a_refused_transition_carries_current_and_requested(client: SidecarClient) -> None:
    sid = client.create_session(REQUEST).session_id
    with pytest.raises(InvalidTransitionError) as caught:
        client.put_status(sid, C)
    error = caught.value
    assert isinstance(error, RemoteInvalidTransitionError)
    assert (error.session_id, error.current, error.requested, error.status) == (
        sid,
        "pending",
        "completed",
        409,
    )


def test_a_bad_value_is_the_cores_validation_error_with_each_field(client: SidecarClient) -> None:
    sid = client.create_session(REQUEST).session_id
    with pytest.raises(SessionValidationError) as caught:
        client.put_progress(sid, {"current_step": 5, "total_steps": "x"})
    error = caught.value
    assert isinstance(error, RemoteValidationError)
    assert isinstance(error, ValueError)
    assert [e["loc"] for e in error.errors] == [["body", "total_steps"]]
    with pytest.raises(RemoteValidationError) as scene:
        client.put_scene(sid, ScenePrompt(scene_number=9, prompt="past num_scenes"))
    assert scene.value.errors[0]["loc"] == ["path", "n"]


BAD_KEYS = [
    "mine",  # not a quoted string
    '""',  # empty
    '"' + "k" * 256 + '"',  # longer than the server keeps
    '"clé"',  # not ASCII: httpx could not even send it
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_the_server_would_refuse_is_its_422_and_nothing_is_sent(
    server: SidecarProcess, client: SidecarClient, key: str
) -> None:
    # What the server itself answers to this header, sent as raw bytes.
    with httpx.Client() as raw:
        answer = raw.post(
            f"{server.url}/api/v1/sessions",
            content=REQUEST_JSON,
            headers={"Content-Type": "application/json", "Idempotency-Key": key.encode()},
        )
    assert answer.status_code == 422, answer.text
    held = client.stats().total_sessions
    sent: list[httpx.Request] = []

    class Counted(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return super().handle_request(request)

    class AsyncCounted(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return await super().handle_async_request(request)

    with (
        SidecarClient(server.url, retry=NO_RETRY, transport=Counted()) as c,
        pytest.raises(RemoteValidationError) as caught,
    ):
        c.create_session(REQUEST, idempotency_key=key)

    async def create() -> None:
        async with AsyncSidecarClient(server.url, retry=NO_RETRY, transport=AsyncCounted()) as c:
            await c.create_session(REQUEST, idempotency_key=key)

    with pytest.raises(RemoteValidationError) as caught_async:
        asyncio.run(create())
    assert sent == []
    for error in (caught.value, caught_async.value):
        assert error.status == 422
        assert error.errors == answer.json()["errors"]
        assert error.problem["detail"] == answer.json()["detail"]
    assert client.stats().total_sessions == held


def test_an_unknown_path_is_a_plain_problem(server: SidecarProcess) -> None:
    with (
        SidecarClient(server.url + "/nowhere", retry=NO_RETRY) as c,
        pytest.raises(ProblemError) as caught,
    ):
        c.stats()
    assert type(caught.value) is ProblemError
    assert caught.value.status == 404


def test_capacity_under_reject_is_the_cores_capacity_error(sidecars: SidecarSpawner) -> None:
    server = sidecars(max_sessions=1, capacity_policy=CapacityPolicy.REJECT.value)
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, deadline=60)
    with SidecarClient(server.url, retry=policy, sleep=sleeps.append) as c:
        c.create_session(REQUEST)
        with pytest.raises(SessionCapacityError) as caught:
            c.create_session(REQUEST)
    error = caught.value
    assert isinstance(error, RemoteCapacityError)
    assert (error.max_sessions, error.retry_after, error.status) == (1, 5.0, 429)
    assert sleeps == [5.0, 5.0]  # a keyed create is retried, honouring Retry-After


def test_tokens_missing_wrong_or_without_the_admin_scope(sidecars: SidecarSpawner) -> None:
    server = sidecars(api_token=API_TOKEN, admin_token=ADMIN_TOKEN)
    with (
        SidecarClient(server.url, retry=NO_RETRY) as anonymous,
        pytest.raises(UnauthorizedError) as none,
    ):
        anonymous.stats()
    with (
        SidecarClient(server.url, "wrong", retry=NO_RETRY) as wrong,
        pytest.raises(UnauthorizedError) as bad,
    ):
        wrong.stats()
    assert (none.value.status, bad.value.status) == (401, 401)
    with SidecarClient(server.url, API_TOKEN, retry=NO_RETRY) as api:
        assert api.stats().total_sessions == 0
        with pytest.raises(ForbiddenError) as forbidden:
            api.get_config()
    assert (forbidden.value.status, forbidden.value.slug) == (403, "forbidden")
    with SidecarClient(server.url, ADMIN_TOKEN, retry=NO_RETRY) as admin:
        assert admin.get_config().max_sessions > 0


@pytest.mark.parametrize(
    "token", [API_TOKEN + "\n", API_TOKEN + "\u20ac", API_TOKEN.replace("-", " ")]
)
def test_a_token_that_is_not_visible_ascii_is_refused_without_repeating_it(token: str) -> None:
    # A token read from a file keeps its newline; httpx would send it on to h11, which refuses
    # it with the whole header in its message.
    for make in (SidecarClient, AsyncSidecarClient):
        with pytest.raises(ValueError, match="visible ASCII") as caught:
            make("http://127.0.0.1:8000", token)
        assert "secret" not in str(caught.value)


def test_a_header_that_is_not_valid_http_is_neither_retried_nor_repeated(
    server: SidecarProcess, client: SidecarClient
) -> None:
    # create_session refuses such a key itself (the test above); a Call built by hand still
    # reaches httpx, and h11 refuses it before a byte is sent.
    key = '"k"\r\nX-Injected: 1'
    keyed = CallBuilder.create_session(REQUEST, None)
    call = dataclasses.replace(keyed, headers={**keyed.headers, "Idempotency-Key": key})
    sleeps: list[float] = []
    with (
        SidecarClient(server.url, sleep=sleeps.append) as c,
        pytest.raises(TransportError) as caught,
    ):
        c.send(call)

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def create() -> None:
        async with AsyncSidecarClient(server.url, sleep=no_sleep) as c:
            await c.send(call)

    with pytest.raises(TransportError) as caught_async:
        asyncio.run(create())
    assert sleeps == []  # a keyed create is retried on no answer, but this one was never sent
    for error in (caught.value, caught_async.value):
        assert "X-Injected" not in str(error)
        assert "not sent" in str(error)
        assert error.__cause__ is None  # the chained cause would quote the header
    assert client.stats().total_sessions == 0


def test_no_server_is_a_transport_error_after_the_retries(sidecars: SidecarSpawner) -> None:
    server = sidecars()
    server.stop()  # nothing listens on its port now
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3)
    with (
        SidecarClient(server.url, retry=policy, sleep=sleeps.append) as c,
        pytest.raises(TransportError) as caught,
    ):
        c.stats()
    assert len(sleeps) == 2
    assert caught.value.method == "GET"


def test_a_success_answer_of_another_shape_is_an_unexpected_answer(client: SidecarClient) -> None:
    wrong = CallBuilder.get_session("x")  # read a session from what /livez answers
    with pytest.raises(UnexpectedAnswerError) as caught:
        client.send(Call("GET", "/livez", wrong.read))
    assert (caught.value.status, caught.value.url) == (200, "/livez")


def test_recover_fails_a_session_idle_past_the_stuck_threshold(sidecars: SidecarSpawner) -> None:
    server = sidecars(stuck_after_seconds=1)
    with SidecarClient(server.url) as client:
        sid = client.create_session(REQUEST).session_id
        client.put_status(sid, R)

        def recover() -> GenerationSession | None:
            try:
                return client.recover_session(sid)
            except RemoteInvalidTransitionError:
                return None  # updated less than a second ago

        recovered = poll(recover, timeout=15, what="a recoverable session")
    assert (recovered.status, recovered.error_message) == (F, RECOVERED_MESSAGE)
