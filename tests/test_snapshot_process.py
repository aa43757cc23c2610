"""Snapshots across real `sidecar serve` processes: SIGTERM and restart, bad files, SIGKILL."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import SidecarSpawner, poll

from sidecar.store.snapshot import SnapshotError, read_snapshot

pytestmark = pytest.mark.process

EXIT_SECONDS = 15.0
STORY = "A lamplighter counts the stars."


def create(http: requests.Session, base: str, **body: Any) -> str:
    headers = {"Idempotency-Key": f'"{body.pop("key")}"'} if "key" in body else {}
    answer = http.post(
        f"{base}/api/v1/sessions", json={"story_text": STORY, **body}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["session_id"])


def put(http: requests.Session, base: str, sid: str, tail: str, body: dict[str, Any]) -> None:
    answer = http.put(f"{base}/api/v1/sessions/{sid}{tail}", json=body)
    assert answer.status_code in (200, 201), (tail, answer.text)


def sessions_in_every_status(http: requests.Session, base: str) -> list[str]:
    pending = create(http, base, key="retry-me")
    working = create(http, base, num_scenes=3, media_type="anime")
    put(http, base, working, "/status", {"status": "processing"})
    put(http, base, working, "/progress", {"current_step": 2, "total_steps": 9, "description": "d"})
    put(http, base, working, "/scenes/2", {"prompt": "Fog.", "title": "T", "duration_seconds": 2.5})
    done = create(http, base, num_scenes=1)
    put(http, base, done, "/status", {"status": "processing"})
    put(http, base, done, "/scenes/1", {"prompt": "Dawn."})
    put(http, base, done, "/status", {"status": "completed"})
    failed = create(http, base)
    put(http, base, failed, "/status", {"status": "failed", "error_message": "GPU lost"})
    return [pending, working, done, failed]


def peek(http: requests.Session, base: str, ids: list[str]) -> dict[str, Any]:
    """Each session as the API shows it (a GET moves last_accessed: read all, once)."""
    found = {}
    for sid in ids:
        answer = http.get(f"{base}/api/v1/sessions/{sid}")
        assert answer.status_code == 200, answer.text
        found[sid] = answer.json()
    return found


def listing(base: str) -> dict[str, Any]:
    """Each session's summary, read without touching it; age_hours moves with the clock."""
    answer = requests.get(f"{base}/api/v1/sessions", params={"limit": 100}, timeout=5)
    assert answer.status_code == 200, answer.text
    return {
        item["session_id"]: {k: v for k, v in item.items() if k != "age_hours"}
        for item in answer.json()["items"]
    }


def untouched(found: dict[str, Any]) -> dict[str, Any]:
    """Sessions as a GET shows them, without the last access the GET itself sets."""
    return {sid: {k: v for k, v in s.items() if k != "last_accessed"} for sid, s in found.items()}


def test_sessions_survive_a_sigterm_and_restart_field_for_field(
    sidecars: SidecarSpawner, tmp_path: Path
) -> None:
    path = tmp_path / "sessions.json"
    first = sidecars(snapshot_path=path)
    with requests.Session() as http:
        ids = sessions_in_every_status(http, first.url)
        before = peek(http, first.url, ids)
    listed = listing(first.url)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait(EXIT_SECONDS) == 0
    assert "shutdown dropped" not in first.output()
    assert f"snapshot: wrote 4 sessions to {path}" in first.output()

    second = sidecars(snapshot_path=path)
    relisted = listing(second.url)
    with requests.Session() as http:
        after = peek(http, second.url, ids)
        retried = http.post(
            f"{second.url}/api/v1/sessions",
            json={"story_text": STORY},
            headers={"Idempotency-Key": '"retry-me"'},
        )

    assert relisted == listed  # every timestamp, last access included
    assert untouched(after) == untouched(before)  # every field, scenes and progress included
    assert {s["status"] for s in after.values()} == {"pending", "processing", "completed", "failed"}
    assert retried.status_code == 201
    assert retried.json()["session_id"] == ids[0]  # the key's session, not a new one
    assert "restored 4 sessions and 1 Idempotency-Keys" in second.output()


def test_no_file_at_start_is_an_empty_start(sidecars: SidecarSpawner, tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    child = sidecars(snapshot_path=path)

    assert requests.get(f"{child.url}/api/v1/stats", timeout=5).json()["total_sessions"] == 0
    assert f"no snapshot at {path}: starting empty" in child.output()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"format":"sidecar-snapshot","version":1,"written_at":"2026-', "truncated"),
        (b"PK\x03\x04 not json", "not JSON (Expecting value at line 1 column 1)"),
        (b'{"format": "sidecar-snapshot", "version": 7}', "format version 7"),
    ],
)
def test_an_unusable_snapshot_stops_serve_with_one_line_and_status_2(
    sidecars: SidecarSpawner, tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "sessions.json"
    path.write_bytes(content)
    child = sidecars.start("--port", "0", snapshot_path=path)

    assert child.wait(EXIT_SECONDS) == 2
    (line,) = child.lines()
    assert line.startswith(f"sidecar: cannot restore sessions from {path}: {reason}")
    assert line.endswith(
        "set SIDECAR_SNAPSHOT_DISCARD_INVALID=true (or pass --snapshot-discard-invalid) "
        "to move it aside and start empty"
    )
    assert path.read_bytes() == content  # untouched


def test_the_discard_flag_moves_a_bad_snapshot_aside_and_starts_empty(
    sidecars: SidecarSpawner, tmp_path: Path
) -> None:
    path = tmp_path / "sessions.json"
    path.write_bytes(b"garbage")
    child = sidecars.start("--port", "0", "--snapshot-discard-invalid", snapshot_path=path)
    ready = sidecars.wait_ready(child)

    assert requests.get(f"{ready.url}/api/v1/stats", timeout=5).json()["total_sessions"] == 0
    (aside,) = tmp_path.glob("sessions.json.invalid-*")
    assert aside.read_bytes() == b"garbage"
    assert not path.exists()
    assert "moved it to" in child.output()


def test_a_redis_store_with_a_snapshot_path_exits_2_without_connecting(
    sidecars: SidecarSpawner, tmp_path: Path
) -> None:
    # Port 1: nothing listens there; the refusal comes before any connection.
    child = sidecars.start(store="redis://127.0.0.1:1/0", snapshot_path=tmp_path / "s.json")

    assert child.wait(EXIT_SECONDS) == 2
    assert child.lines() == [
        "sidecar: invalid settings: SIDECAR_SNAPSHOT_PATH is for memory sessions only: with "
        "SIDECAR_STORE naming Redis the sessions are already kept by Redis (durable with "
        "appendonly yes); unset one"
    ]


def test_a_snapshot_directory_that_does_not_exist_exits_2_at_start(
    sidecars: SidecarSpawner, tmp_path: Path
) -> None:
    path = tmp_path / "missing" / "s.json"
    child = sidecars.start(snapshot_path=path)

    assert child.wait(EXIT_SECONDS) == 2
    assert child.lines() == [
        f"sidecar: invalid SIDECAR_SNAPSHOT_PATH={path}: "
        f"directory {tmp_path / 'missing'} does not exist"
    ]


def test_a_periodic_snapshot_keeps_the_sessions_through_a_sigkill(
    sidecars: SidecarSpawner, tmp_path: Path
) -> None:
    path = tmp_path / "sessions.json"
    first = sidecars(snapshot_path=path, snapshot_interval_seconds=1)
    with requests.Session() as http:
        ids = sessions_in_every_status(http, first.url)
        before = peek(http, first.url, ids)

    def written() -> bool | None:
        # The file is replaced whole: it is either absent, an older whole one, or this one.
        try:
            snapshot = read_snapshot(path)
        except SnapshotError as exc:
            pytest.fail(f"a periodic snapshot was not whole: {exc}")
        if snapshot is None:
            return None
        held = {s.session_id: s for s in snapshot.sessions}
        # every session, with the last GET's access time
        done = set(held) == set(ids) and all(
            held[sid].last_accessed.isoformat().replace("+00:00", "Z")
            == before[sid]["last_accessed"]
            for sid in ids
        )
        return True if done else None

    listed = listing(first.url)
    poll(written, timeout=EXIT_SECONDS, what=f"the 4 sessions in {path}")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(EXIT_SECONDS)

    second = sidecars(snapshot_path=path)
    relisted = listing(second.url)
    with requests.Session() as http:
        after = peek(http, second.url, ids)

    assert relisted == listed
    assert untouched(after) == untouched(before)
