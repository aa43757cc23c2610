"""Idempotency-Key on POST /api/v1/sessions and the stuck listing, through Flask's test client
with an injected clock (issue 14 item 4, issue 13 item 7). Both stores run the same rules:
tests/test_store_idempotency.py; a real server and the client: tests/test_client_idempotency.py."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from sidecar.core.clock import ManualClock
from sidecar.core.config import CapacityPolicy
from sidecar.core.idempotency import MAX_KEY_LENGTH
from sidecar.core.manager import SessionManager

S = "/api/v1/sessions"
STORY = {"story_text": "A fox finds a lantern in the snow.", "media_type": "anime", "num_scenes": 3}
KEY = '"8e03978e-40d5-43e8-bc93-6894a57f9324"'


def post(client: FlaskClient, body: Any = None, key: str | None = KEY, **headers: str) -> Any:
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(S, json=STORY if body is None else body, headers=headers)


def test_a_repeat_answers_as_the_first_did_and_creates_nothing(
    client: FlaskClient, manager: SessionManager
) -> None:
    first = post(client)
    client.put(first.headers["Location"] + "/status", json={"status": "processing"})
    again = post(client)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Location"] == first.headers["Location"]
    body = again.get_json()
    assert body["session_id"] == first.get_json()["session_id"]
    assert body["status"] == "processing"  # the session as it is now
    assert manager.get_session_count() == 1
    assert manager.snapshot().created_total == 1  # a replay is not a create


def test_the_same_request_spelled_differently_is_the_same_request(client: FlaskClient) -> None:
    first = post(client)
    spelled = (
        '{ "num_scenes": 3, "media_type": "anime",\n'
        ' "story_text": "A fox finds a lantern in the snow." }'
    )
    again = client.post(
        S, data=spelled, headers={"Idempotency-Key": KEY, "Content-Type": "application/json"}
    )
    assert again.status_code == 201
    assert again.headers["Location"] == first.headers["Location"]


def test_the_key_with_another_body_is_422_and_creates_nothing(
    client: FlaskClient, manager: SessionManager
) -> None:
    post(client)
    other = post(client, {**STORY, "num_scenes": 4})
    assert other.status_code == 422
    assert other.content_type == "application/problem+json"
    problem = other.get_json()
    assert problem["type"] == "urn:sidecar:problem:idempotency-key-reused"
    assert problem["title"] == "Idempotency-Key reused"
    assert manager.get_session_count() == 1


def test_creates_without_a_key_or_with_two_keys_make_two_sessions(
    client: FlaskClient, manager: SessionManager
) -> None:
    post(client, key=None)
    post(client, key=None)
    post(client, key='"a"')
    post(client, key='"b"')
    assert manager.get_session_count() == 4


def test_a_key_whose_session_was_removed_is_409_spent(
    client: FlaskClient, manager: SessionManager
) -> None:
    first = post(client)
    assert client.delete(first.headers["Location"]).status_code == 204
    again = post(client)
    assert again.status_code == 409
    problem = again.get_json()
    assert problem["type"] == "urn:sidecar:problem:idempotency-key-spent"
    assert problem["session_id"] == first.get_json()["session_id"]
    assert manager.get_session_count() == 0


def test_a_create_refused_for_capacity_does_not_use_up_its_key(
    client: FlaskClient, manager: SessionManager
) -> None:
    manager.reconfigure(max_sessions=1, capacity_policy=CapacityPolicy.REJECT)
    held = post(client, key=None)
    assert post(client).status_code == 429
    client.delete(held.headers["Location"])
    made = post(client)
    assert made.status_code == 201
    assert post(client).headers["Location"] == made.headers["Location"]


def test_a_key_is_remembered_as_long_as_a_session_may_live(
    client: FlaskClient, manager: SessionManager, clock: ManualClock
) -> None:
    first = post(client)
    clock.advance(manager.config.session_max_age_seconds)
    assert post(client).headers["Location"] == first.headers["Location"]
    clock.advance(0.000001)  # the session has expired, and the key is forgotten with it
    manager.cleanup_expired_sessions()
    again = post(client)
    assert again.status_code == 201
    assert again.headers["Location"] != first.headers["Location"]


def test_keys_are_bounded_by_twice_the_capacity(
    client: FlaskClient, manager: SessionManager
) -> None:
    first = post(client, key='"first"')
    client.delete(first.headers["Location"])
    for n in range(2 * manager.config.max_sessions):
        created = post(client, key=f'"k{n}"')
        client.delete(created.headers["Location"])
    assert post(client, key='"first"').status_code == 201  # forgotten: created again
    assert post(client, key=f'"k{2 * manager.config.max_sessions - 1}"').status_code == 409


def test_an_escaped_quote_is_part_of_the_key(client: FlaskClient) -> None:
    first = post(client, key=r'"a\"b"')
    assert post(client, key=r'"a\"b"').headers["Location"] == first.headers["Location"]
    assert post(client, key='"a b"').headers["Location"] != first.headers["Location"]


BAD_KEYS = {
    "empty quoted": '""',
    "not quoted": "8e03978e-40d5-43e8-bc93-6894a57f9324",
    "empty": "",
    "too long": '"' + "k" * (MAX_KEY_LENGTH + 1) + '"',
    "a tab": '"a\tb"',
    "an unescaped quote": '"a"b"',
    "a bad escape": r'"a\nb"',
    "a list": '"a", "b"',
}


@pytest.mark.parametrize("value", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_malformed_key_is_422_naming_the_header(
    client: FlaskClient, manager: SessionManager, value: str
) -> None:
    answer = post(client, key=value)
    assert answer.status_code == 422
    assert answer.content_type == "application/problem+json"
    [issue] = answer.get_json()["errors"]
    assert issue["loc"] == ["header", "Idempotency-Key"]
    assert manager.get_session_count() == 0


def test_the_longest_key_is_taken(client: FlaskClient) -> None:
    assert post(client, key='"' + "k" * MAX_KEY_LENGTH + '"').status_code == 201


def test_a_key_sent_twice_is_422(client: FlaskClient, manager: SessionManager) -> None:
    answer = client.post(S, json=STORY, headers=[("Idempotency-Key", KEY)] * 2)
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert manager.get_session_count() == 0


# ---------------------------------------------------------------------- ?stuck=true


def ids(page: dict[str, Any]) -> list[str]:
    return [item["session_id"] for item in page["items"]]


def test_stuck_lists_processing_sessions_not_updated_for_longer_than_the_threshold(
    client: FlaskClient, manager: SessionManager, clock: ManualClock
) -> None:
    made = {}
    for name in ("second", "first", "boundary", "pending"):
        made[name] = post(client, key=None).get_json()["session_id"]
        clock.advance(0.000001)
    order = ("first", "second")
    for name in order:
        client.put(f"{S}/{made[name]}/status", json={"status": "processing"})
        clock.advance(1)
    client.put(f"{S}/{made['boundary']}/status", json={"status": "processing"})
    clock.advance(manager.config.stuck_after_seconds)  # "boundary": exactly the threshold
    page = client.get(f"{S}?stuck=true").get_json()
    assert ids(page) == [made["first"], made["second"]]
    assert page["next_cursor"] is None
    assert manager.snapshot().stuck == 2  # the gauge counts the same sessions
    clock.advance(0.000001)
    assert ids(client.get(f"{S}?stuck=true&status=processing").get_json())[-1] == made["boundary"]
    assert ids(client.get(f"{S}?stuck=false").get_json()) == list(made.values())


def test_stuck_pages_with_the_cursor_and_feeds_bulk_status(
    client: FlaskClient, manager: SessionManager, clock: ManualClock
) -> None:
    made = []
    for _ in range(5):
        sid = post(client, key=None).get_json()["session_id"]
        client.put(f"{S}/{sid}/status", json={"status": "processing"})
        made.append(sid)
        clock.advance(1)
    clock.advance(manager.config.stuck_after_seconds)
    seen: list[str] = []
    query = f"{S}?stuck=true&limit=2"
    for _ in range(3):  # bounded: a cursor that did not advance must fail, not hang
        page = client.get(query).get_json()
        assert len(page["items"]) <= 2
        seen += ids(page)
        if page["next_cursor"] is None:
            break
        query = f"{S}?stuck=true&limit=2&cursor={page['next_cursor']}"
    assert seen == made
    failed = client.post(
        f"{S}/bulk/status", json={"session_ids": seen, "status": "failed", "error_message": "stuck"}
    ).get_json()
    assert failed == {"updated": 5, "missing": [], "conflicts": []}
    assert client.get(f"{S}?stuck=true").get_json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "where"),
    [("stuck=yes", "stuck"), ("stuck=1", "stuck"), ("stuck=true&status=pending", "status"),
     ("stuck=true&stuck=true", "stuck")],
)  # fmt: skip
def test_a_bad_stuck_query_is_422(client: FlaskClient, query: str, where: str) -> None:
    answer = client.get(f"{S}?{query}")
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["loc"] == ["query", where]
