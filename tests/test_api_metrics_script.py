"""Metrics after a scripted series of API calls: each value is the one the calls imply.

Driven only through the HTTP API (Flask's test client) with the injected ManualClock; the
capacity, policy and stuck threshold change through PATCH /api/v1/admin/config.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import transition_counts, with_store
from flask import Flask
from flask.testing import FlaskClient

from sidecar.core.clock import ManualClock
from sidecar.web.app import get_sidecar

S = "/api/v1/sessions"
STORY = {"story_text": "A kite maker's daughter crosses the desert.", "num_scenes": 2}


def sample(app: Flask, name: str, **labels: str) -> float | None:
    metrics = get_sidecar(app).metrics
    return metrics.registry.get_sample_value(
        name, with_store(name, labels, metrics.store_name.value)
    )


def create(client: FlaskClient) -> str:
    response = client.post(S, json=STORY)
    assert response.status_code == 201, response.get_json()
    session_id: str = response.get_json()["session_id"]
    return session_id


def put(client: FlaskClient, path: str, body: dict[str, Any], status: int = 200) -> None:
    response = client.put(path, json=body)
    assert response.status_code == status, response.get_json()


def configure(client: FlaskClient, **changes: Any) -> None:
    response = client.patch("/api/v1/admin/config", json=changes)
    assert response.status_code == 200, response.get_json()


def statuses(app: Flask) -> list[float | None]:
    return [
        sample(app, "sidecar_sessions", status=s)
        for s in ("pending", "processing", "completed", "failed")
    ]


def health(app: Flask) -> list[float | None]:
    return [
        sample(app, "sidecar_health_state", state=s) for s in ("healthy", "warning", "critical")
    ]


def test_a_scripted_day_gives_exact_metric_values(
    app: Flask, client: FlaskClient, clock: ManualClock
) -> None:
    # capacity 10 (the manager fixture); four sessions, one of each fate. `done` is created a
    # second before the others, so it is the oldest finished session when eviction comes.
    done = create(client)
    clock.advance(1)
    broken, waiting, working = (create(client) for _ in range(3))
    put(client, f"{S}/{done}/status", {"status": "processing"})
    put(client, f"{S}/{done}/progress", {"current_step": 1, "total_steps": 2})
    put(client, f"{S}/{done}/scenes/1", {"prompt": "Dunes at dawn."}, status=201)
    clock.advance(42)
    put(client, f"{S}/{done}/status", {"status": "completed"})
    put(client, f"{S}/{broken}/status", {"status": "failed", "error_message": "model error"})
    put(client, f"{S}/{working}/status", {"status": "processing"})
    # a refused transition changes no counter
    put(client, f"{S}/{done}/status", {"status": "pending"}, status=409)

    assert statuses(app) == [1, 1, 1, 1]
    assert sample(app, "sidecar_sessions_created_total") == 4
    assert transition_counts(get_sidecar(app).metrics.registry) == {
        ("pending", "processing"): 2,
        ("pending", "failed"): 1,
        ("processing", "completed"): 1,
        ("processing", "failed"): 0,
    }
    assert sample(app, "sidecar_session_duration_seconds_sum", outcome="completed") == 43
    assert sample(app, "sidecar_session_duration_seconds_count", outcome="failed") == 1
    assert sample(app, "sidecar_sessions_utilization_ratio") == pytest.approx(0.4)
    assert health(app) == [1, 0, 0]

    # stuck: the processing session has not been updated for 1,000 s
    clock.advance(1000 - 42)
    assert sample(app, "sidecar_sessions_stuck") == 0
    configure(client, stuck_after_seconds=900)
    assert sample(app, "sidecar_stuck_after_seconds") == 900
    assert sample(app, "sidecar_sessions_stuck") == 1
    assert client.get(f"{S}/{working}").status_code == 200  # a read is not progress
    assert sample(app, "sidecar_sessions_stuck") == 1
    put(client, f"{S}/{working}/progress", {"current_step": 1, "total_steps": 3})
    assert sample(app, "sidecar_sessions_stuck") == 0

    # capacity lowered through the admin API: utilization and health follow
    configure(client, max_sessions=5)
    assert sample(app, "sidecar_sessions_capacity") == 5
    assert sample(app, "sidecar_sessions_utilization_ratio") == pytest.approx(0.8)
    assert health(app) == [0, 1, 0]
    create(client)
    assert sample(app, "sidecar_sessions_utilization_ratio") == pytest.approx(1.0)
    assert health(app) == [0, 0, 1]

    # full under evict_oldest: the oldest finished session (the completed one) is evicted
    create(client)
    assert sample(app, "sidecar_sessions_removed_total", reason="evicted") == 1
    assert client.get(f"{S}/{done}").status_code == 404

    # full under reject: 429, counted, nothing created or evicted
    configure(client, capacity_policy="reject")
    assert client.post(S, json=STORY).status_code == 429
    assert client.post(S, json=STORY).status_code == 429
    assert sample(app, "sidecar_sessions_rejected_total", reason="capacity") == 2
    assert sample(app, "sidecar_sessions_created_total") == 6
    assert sample(app, "sidecar_sessions_removed_total", reason="evicted") == 1

    # the failed session expires after an hour; deleted and purged are counted apart
    clock.advance(3600)
    response = client.post("/api/v1/admin/cleanup", json={"scope": "expired"})
    assert response.get_json() == {"removed": 1}
    assert client.delete(f"{S}/{waiting}").status_code == 204
    response = client.post("/api/v1/admin/cleanup", json={"scope": "all"})
    assert response.get_json() == {"removed": 3}
    removed = {
        r: sample(app, "sidecar_sessions_removed_total", reason=r)
        for r in ("deleted", "expired", "evicted", "purged")
    }
    assert removed == {"deleted": 1, "expired": 1, "evicted": 1, "purged": 3}
    assert statuses(app) == [0, 0, 0, 0]
    assert [
        sample(app, "sidecar_sessions_by_age", age_bucket=b)
        for b in ("under_1h", "1h_to_6h", "6h_to_24h", "over_24h")
    ] == [0, 0, 0, 0]
    assert health(app) == [1, 0, 0]


@pytest.mark.parametrize(
    ("age_seconds", "bucket"),
    [(3599, "under_1h"), (3600, "1h_to_6h"), (6 * 3600, "6h_to_24h"), (24 * 3600, "over_24h")],
)
def test_age_buckets_of_sessions_created_through_the_api(
    app: Flask, client: FlaskClient, clock: ManualClock, age_seconds: int, bucket: str
) -> None:
    configure(client, session_max_age_seconds=7 * 86400)
    create(client)
    clock.advance(age_seconds)
    buckets = ("under_1h", "1h_to_6h", "6h_to_24h", "over_24h")
    assert {b: sample(app, "sidecar_sessions_by_age", age_bucket=b) for b in buckets} == {
        b: (1 if b == bucket else 0) for b in buckets
    }
