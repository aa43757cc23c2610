"""Idempotency-Key against a real `sidecar serve`: concurrent creates with one key from several
threads, and the answers the client raises for a reused or spent key (issue 14 item 4); the
client's stuck listing (issue 13 item 7)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from conftest import SidecarSpawner, poll

from sidecar.client import (
    AsyncSidecarClient,
    RemoteIdempotencyKeyReusedError,
    RemoteIdempotencyKeySpentError,
    SidecarClient,
)
from sidecar.core.errors import IdempotencyKeyReusedError, IdempotencyKeySpentError
from sidecar.core.models import GenerationRequest

pytestmark = pytest.mark.process

REQUEST = GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)


def test_concurrent_creates_with_one_key_make_one_session(spawn_sidecar: SidecarSpawner) -> None:
    server = spawn_sidecar(threads=8)
    threads_n = 8
    start = threading.Barrier(threads_n)
    answers: list[httpx.Response] = []
    body = REQUEST.__pydantic_serializer__.to_json(REQUEST)  # type: ignore[attr-defined]
    headers = {"Content-Type": "application/json", "Idempotency-Key": '"one-key-many-threads"'}

    def create() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            start.wait(timeout=30)
            answers.append(http.post("/api/v1/sessions", content=body, headers=headers))

    threads = [threading.Thread(target=create) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [a.status_code for a in answers] == [201] * threads_n
    assert len({a.headers["Location"] for a in answers}) == 1
    assert len({a.json()["session_id"] for a in answers}) == 1
    with SidecarClient(server.url) as client:
        assert client.stats().total_sessions == 1


def test_the_client_raises_the_problem_of_a_reused_or_spent_key(
    spawn_sidecar: SidecarSpawner,
) -> None:
    server = spawn_sidecar()
    with SidecarClient(server.url) as client:
        first = client.create_session(REQUEST, idempotency_key='"mine"')
        assert client.create_session(REQUEST, idempotency_key='"mine"') == first
        other = GenerationRequest(story_text="Another story.")
        with pytest.raises(IdempotencyKeyReusedError) as reused:  # the core's exception
            client.create_session(other, idempotency_key='"mine"')
        assert isinstance(reused.value, RemoteIdempotencyKeyReusedError)
        assert (reused.value.status, reused.value.slug) == (422, "idempotency-key-reused")
        assert reused.value.key == '"mine"'
        client.delete_session(first.session_id)
        with pytest.raises(IdempotencyKeySpentError) as spent:
            client.create_session(REQUEST, idempotency_key='"mine"')
        assert isinstance(spent.value, RemoteIdempotencyKeySpentError)
        assert (spent.value.status, spent.value.slug) == (409, "idempotency-key-spent")
        assert (spent.value.session_id, spent.value.key) == (first.session_id, '"mine"')

    async def create_again() -> None:
        async with AsyncSidecarClient(server.url) as c:
            await c.create_session(REQUEST, idempotency_key='"mine"')

    with pytest.raises(RemoteIdempotencyKeySpentError) as spent_async:
        asyncio.run(create_again())
    assert spent_async.value.session_id == first.session_id


def test_the_client_lists_stuck_sessions(spawn_sidecar: SidecarSpawner) -> None:
    server = spawn_sidecar(stuck_after_seconds=1)
    with SidecarClient(server.url) as client:
        made = [client.create_session(REQUEST).session_id for _ in range(3)]
        for sid in made[:2]:
            client.put_status(sid, "processing")

        def stuck() -> list[str] | None:
            found = [s.session_id for s in client.iter_sessions(page_size=1, stuck=True)]
            return found if len(found) == 2 else None

        assert poll(stuck, timeout=15, what="two stuck sessions") == made[:2]
        page = client.list_sessions(limit=1, stuck=True)
        assert [s.session_id for s in page.items] == made[:1]
        assert page.next_cursor is not None
