"""Snapshots of the memory store: the format, the atomic write, the restore rules."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.core.clock import ManualClock
from sidecar.core.config import ManagerConfig
from sidecar.core.errors import IdempotencyKeySpentError
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus
from sidecar.durability import SnapshotKeeper
from sidecar.store.memory import InMemorySessionStore
from sidecar.store.snapshot import (
    KeyRecord,
    SnapshotContentError,
    SnapshotCorruptError,
    SnapshotFormatError,
    SnapshotTruncatedError,
    SnapshotUnreadableError,
    SnapshotVersionError,
    decode,
    encode,
    move_aside,
    path_problem,
    read_snapshot,
    write_atomically,
)

STORY = GenerationRequest(story_text="An owl keeps the lighthouse log.", num_scenes=3)


def a_manager(clock: ManualClock, **config: object) -> tuple[SessionManager, InMemorySessionStore]:
    store = InMemorySessionStore()
    return SessionManager(ManagerConfig(**config), clock=clock, store=store), store  # type: ignore[arg-type]


@pytest.fixture
def held(clock: ManualClock) -> Iterator[tuple[SessionManager, InMemorySessionStore]]:
    """A manager holding a session in every status, each field set, times all different."""
    manager, store = a_manager(clock)
    pending = manager.create_session(STORY, idempotency_key="key-pending")
    clock.advance(1.5)
    working = manager.create_session(STORY)
    manager.update_session_status(working.session_id, "processing")
    clock.advance(0.000001)
    manager.update_session_progress(working.session_id, 2, 7, "drawing scene 2")
    manager.add_scene_to_session(
        working.session_id,
        {"scene_number": 2, "prompt": "Fog.", "title": "Two", "negative_prompt": "no sun",
         "duration_seconds": 4.25},
    )  # fmt: skip
    manager.add_scene_to_session(working.session_id, {"scene_number": 1, "prompt": "Dusk."})
    clock.advance(3)
    done = manager.create_session(GenerationRequest(story_text="Done.", media_type="anime"))
    manager.update_session_status(done.session_id, "processing")
    manager.update_session_progress(done.session_id, 5, 5)
    manager.update_session_status(done.session_id, "completed")
    clock.advance(2)
    failed = manager.create_session(STORY, idempotency_key="key-failed")
    manager.update_session_status(failed.session_id, "failed", error_message="GPU lost ✗")
    clock.advance(7)
    manager.get_session(pending.session_id)  # last_accessed moves alone
    yield manager, store
    manager.shutdown()


def every(store: InMemorySessionStore) -> dict[str, GenerationSession]:
    sessions, _ = store.export()
    return {s.session_id: s for s in sessions}


def test_a_round_trip_keeps_every_status_field_timestamp_and_key(
    held: tuple[SessionManager, InMemorySessionStore], clock: ManualClock
) -> None:
    _, store = held
    sessions, keys = store.export()

    back = decode(b"".join(encode(clock.now(), sessions, [KeyRecord(*k) for k in keys])))

    assert back.written_at == clock.now()
    assert {s.session_id: s for s in back.sessions} == every(store)
    assert {s.status for s in back.sessions} == set(GenerationStatus)
    assert sorted(back.keys) == sorted(KeyRecord(*k) for k in keys)
    assert len(back.keys) == 2


def test_a_restored_store_answers_as_the_old_one_did(
    held: tuple[SessionManager, InMemorySessionStore], clock: ManualClock, tmp_path: Path
) -> None:
    manager, store = held
    path = tmp_path / "sessions.json"
    keeper = SnapshotKeeper(store, manager, path)
    assert keeper.write() == 4

    new_manager, new_store = a_manager(clock)
    try:
        assert SnapshotKeeper(new_store, new_manager, path).restore() == 4
        assert every(new_store) == every(store)
        assert new_manager.snapshot().by_status == manager.snapshot().by_status
        # A retried create finds the session its key made before the restart.
        pending_id = next(s.session_id for s in every(store).values() if s.status == "pending")
        assert new_manager.create_session(STORY, "key-pending").session_id == pending_id
        failed_id = next(s.session_id for s in every(store).values() if s.status == "failed")
        new_manager.remove_session(failed_id)
        with pytest.raises(IdempotencyKeySpentError):
            new_manager.create_session(STORY, "key-failed")
    finally:
        new_manager.shutdown()


# ---------------------------------------------------------------------- the atomic write


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    path.write_bytes(b"the old snapshot")

    def chunks() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise RuntimeError("serializer broke")

    with pytest.raises(RuntimeError, match="serializer broke"):
        write_atomically(path, chunks())

    assert path.read_bytes() == b"the old snapshot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.json"]


def test_a_write_into_a_directory_that_went_away_fails_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gone" / "snap.json"

    with pytest.raises(FileNotFoundError):
        write_atomically(path, [b"{}"])

    assert not path.parent.exists()


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    path.write_bytes(b"old")

    assert write_atomically(path, [b"new ", b"content"]) == 11

    assert path.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.json"]


# ---------------------------------------------------------------------- what a bad file says


def valid(clock: ManualClock, sessions: list[GenerationSession] | None = None) -> bytes:
    return b"".join(encode(clock.now(), sessions or [], []))


def one_session(clock: ManualClock) -> list[GenerationSession]:
    manager, store = a_manager(clock)
    manager.create_session(STORY)
    sessions, _ = store.export()
    return sessions


def tampered(clock: ManualClock, **fields: object) -> bytes:
    document = json.loads(valid(clock, one_session(clock)))
    document["sessions"][0].update(fields)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"", SnapshotTruncatedError, "empty file"),
        (b"  \n", SnapshotTruncatedError, "empty file"),
        (b"\x00\xff\xfe garbage", SnapshotCorruptError, "not a JSON text (not UTF-8 at byte 1)"),
        (b"{nope}", SnapshotCorruptError, "not JSON (Expecting property name"),
        (b"[1, 2]", SnapshotFormatError, 'not a sidecar snapshot (no "format"'),
        (b'{"format": "other", "version": 1}', SnapshotFormatError, "not a sidecar snapshot"),
        (
            b'{"format": "sidecar-snapshot", "version": 2, "sessions": []}',
            SnapshotVersionError,
            "format version 2; this sidecar reads version 1",
        ),
        (
            b'{"format": "sidecar-snapshot", "sessions": []}',
            SnapshotVersionError,
            "format version null",
        ),
    ],
)
def test_a_bad_file_raises_its_specific_error(raw: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as raised:
        decode(raw)

    assert raised.type is error
    assert str(raised.value).startswith(reason)


def test_a_truncated_snapshot_is_named_truncated(clock: ManualClock) -> None:
    raw = valid(clock, one_session(clock))

    for cut in (1, len(raw) // 2, len(raw) - 3):
        with pytest.raises(SnapshotTruncatedError, match="truncated: the JSON ends after"):
            decode(raw[:cut])


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"status": "paused"}, "sessions.0.status"),
        ({"status": 1}, "sessions.0.status"),
        ({"created_at": 1767225600}, "sessions.0.created_at"),  # a number is not a timestamp
        ({"created_at": "2026-01-01T00:00:00"}, "sessions.0.created_at"),  # naive
        ({"request_data": {"story_text": "x", "num_scenes": "3"}}, "num_scenes"),
        ({"progress": {"current_step": 9, "total_steps": 2}}, "sessions.0.progress"),
        ({"scenes": [{"scene_number": 1, "prompt": "a"}] * 2}, "sessions.0.scenes"),
        ({"hidden": True}, "sessions.0.hidden"),
    ],
)
def test_a_tampered_session_is_refused_by_the_models(
    clock: ManualClock, fields: dict[str, object], where: str
) -> None:
    with pytest.raises(SnapshotContentError) as raised:
        decode(tampered(clock, **fields))

    assert where in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        # before: each of these was restored, though the API could never have made it
        ({"scenes": [{"scene_number": 50, "prompt": "a"}]}, "scene_number"),  # num_scenes 3
        ({"error_message": "x" * 2001}, "error_message is over 2000"),
        ({"session_id": ""}, "not a session id"),
        ({"session_id": "../../x"}, "not a session id"),
        ({"updated_at": "2000-01-01T00:00:00Z"}, "updated or read before it was created"),
        # before: a traceback (OverflowError) and exit 1, discard or not: a crash loop
        ({"created_at": "0001-01-01T00:00:00+14:00"}, "out of range once converted to UTC"),
    ],
)
def test_a_session_the_api_could_not_have_made_is_refused(
    clock: ManualClock, fields: dict[str, object], why: str
) -> None:
    with pytest.raises(SnapshotContentError, match=why):
        decode(tampered(clock, **fields))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"version": True}, SnapshotVersionError),
        ({"version": 1.0}, SnapshotVersionError),
        # before: taken, then every later write failed (date value out of range)
        (
            {
                "idempotency_keys": [
                    {
                        "key": "k",
                        "recorded_at": "0001-01-01T00:00:00+14:00",
                        "fingerprint": "0" * 64,
                        "session_id": "x",
                    }
                ]
            },
            SnapshotContentError,
        ),
    ],
)
def test_a_document_field_out_of_its_type_is_refused(
    clock: ManualClock, change: dict[str, object], error: type
) -> None:
    document = json.loads(valid(clock, one_session(clock)))
    document.update(change)

    with pytest.raises(error):
        decode(json.dumps(document).encode())


def test_json_nested_too_deep_is_corrupt_not_a_crash() -> None:
    with pytest.raises(SnapshotCorruptError, match="nested deeper"):
        decode(b"[" * 100_000 + b"]" * 100_000)


def test_a_future_timestamp_is_taken(clock: ManualClock) -> None:
    (session,) = decode(tampered(clock, updated_at="2999-01-01T00:00:00Z")).sessions

    assert session.updated_at.year == 2999


def test_a_session_twice_is_refused(clock: ManualClock) -> None:
    sessions = one_session(clock)

    with pytest.raises(SnapshotContentError, match="appears twice"):
        decode(valid(clock, sessions * 2))


def test_reading_names_the_file(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "snap.json"
    assert read_snapshot(path) is None  # no file: nothing to restore
    path.write_bytes(valid(clock)[:-10])

    with pytest.raises(SnapshotTruncatedError) as raised:
        read_snapshot(path)
    assert str(raised.value).startswith(f"{path}: truncated")

    with pytest.raises(SnapshotUnreadableError, match="cannot be read"):
        read_snapshot(tmp_path)


def test_the_start_up_check_names_what_is_wrong_with_the_path(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")

    assert path_problem(tmp_path / "snap.json") is None
    assert (
        path_problem(tmp_path / "no" / "snap.json") == f"directory {tmp_path / 'no'} does not exist"
    )
    assert path_problem(a_file / "snap.json") == f"{a_file} is not a directory"
    assert path_problem(tmp_path) == "is a directory; name a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe is gone


def test_moving_aside_never_overwrites(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "snap.json"
    path.write_text("first")
    first = move_aside(path, clock.now())
    path.write_text("second")
    second = move_aside(path, clock.now())

    assert first.name == "snap.json.invalid-20260101T000000.000000Z"
    assert second.name == "snap.json.invalid-20260101T000000.000000Z-1"
    assert (first.read_text(), second.read_text()) == ("first", "second")
    assert not path.exists()


# ---------------------------------------------------------------------- restoring


def test_no_file_starts_empty_with_one_info_line(
    clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager, store = a_manager(clock)
    caplog.set_level(logging.INFO, "sidecar.durability")

    assert SnapshotKeeper(store, manager, tmp_path / "snap.json").restore() == 0

    assert [r.getMessage() for r in caplog.records] == [
        f"no snapshot at {tmp_path / 'snap.json'}: starting empty"
    ]
    manager.shutdown()


def test_an_invalid_file_is_refused_unless_told_to_discard_it(
    clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "snap.json"
    path.write_bytes(b'{"format": "sidecar-snapshot", "version": 9}')
    manager, store = a_manager(clock)

    with pytest.raises(SnapshotVersionError):
        SnapshotKeeper(store, manager, path).restore()
    assert path.exists()

    assert SnapshotKeeper(store, manager, path, discard_invalid=True).restore() == 0

    assert not path.exists()
    (aside,) = tmp_path.glob("snap.json.invalid-*")
    assert aside.read_bytes() == b'{"format": "sidecar-snapshot", "version": 9}'
    assert any(
        r.levelno == logging.WARNING and "moved it to" in r.getMessage() for r in caplog.records
    )
    manager.shutdown()


def test_more_sessions_than_capacity_are_all_loaded_and_the_next_create_evicts(
    clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "snap.json"
    old, old_store = a_manager(clock, max_sessions=5)
    ids = []
    for _ in range(5):
        ids.append(old.create_session(STORY).session_id)
        clock.advance(1)
    old.update_session_status(ids[0], "processing")  # evicted last: processing goes after pending
    SnapshotKeeper(old_store, old, path).write()
    old.shutdown()

    new, store = a_manager(clock, max_sessions=3)
    assert SnapshotKeeper(store, new, path).restore() == 5  # nothing dropped at start-up
    assert new.snapshot().utilization == pytest.approx(5 / 3)

    newest = new.create_session(STORY)

    assert sorted(every(store)) == sorted([ids[0], ids[4], newest.session_id])
    assert new.event_counts().removed["evicted"] == 3
    new.shutdown()


def test_sessions_past_their_age_expire_at_restore(clock: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    old, old_store = a_manager(clock)
    kept = old.create_session(STORY)
    gone = old.create_session(STORY)
    old.update_session_status(gone.session_id, "failed")
    SnapshotKeeper(old_store, old, path).write()
    old.shutdown()
    clock.advance(ManagerConfig().failed_max_age_seconds + 1)

    new, store = a_manager(clock)
    assert SnapshotKeeper(store, new, path).restore() == 1

    assert list(every(store)) == [kept.session_id]
    new.shutdown()


def test_loading_needs_an_empty_store(clock: ManualClock) -> None:
    manager, store = a_manager(clock)
    manager.create_session(STORY)
    sessions, _ = store.export()

    with pytest.raises(ValueError, match="empty store"):
        store.load(sessions)
    manager.shutdown()


# ---------------------------------------------------------------------- the shutdown log


def test_shutdown_says_dropped_only_for_sessions_really_lost(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, "sidecar")
    kept_all, store = a_manager(clock)
    for _ in range(3):
        kept_all.create_session(STORY)
    keeper = SnapshotKeeper(store, kept_all, tmp_path / "snap.json")

    kept_all.shutdown(keep=keeper.write_at_shutdown)

    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith("shutdown dropped")]
    assert "shutdown: all 3 sessions held in memory were kept" in messages
    assert f"snapshot: wrote 3 sessions to {tmp_path / 'snap.json'}" in messages
    caplog.clear()

    unkept, _ = a_manager(clock)
    unkept.create_session(STORY)
    unkept.shutdown(keep=lambda: 0)  # a snapshot that failed keeps nothing

    assert "shutdown dropped 1 sessions held in memory" in [r.getMessage() for r in caplog.records]


def test_a_failed_final_write_is_an_error_line_and_drops_the_sessions(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, "sidecar")
    manager, store = a_manager(clock)
    manager.create_session(STORY)
    keeper = SnapshotKeeper(store, manager, tmp_path / "missing" / "snap.json")

    manager.shutdown(keep=keeper.write_at_shutdown)

    assert keeper.failed
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not write" in error
    assert "shutdown dropped 1 sessions held in memory" in caplog.messages
    assert not os.path.exists(tmp_path / "missing")


def test_a_symlinked_path_keeps_its_link_and_its_target_gets_the_writes(
    clock: ManualClock, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    link = tmp_path / "snap.json"
    link.symlink_to(volume / "snap.json")
    manager, store = a_manager(clock)
    manager.create_session(STORY)
    keeper = SnapshotKeeper(store, manager, link)

    assert path_problem(link) is None
    keeper.write()

    assert link.is_symlink()  # before: replaced by a plain file, the volume's left behind
    assert len(decode((volume / "snap.json").read_bytes()).sessions) == 1
    assert sorted(p.name for p in volume.iterdir()) == ["snap.json"]
    manager.shutdown()


def test_temporary_files_a_killed_write_left_are_removed_at_restore(
    clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "snap.json"
    write_atomically(path, [valid(clock, one_session(clock))])
    for cut_short in (".snap.json.abc123.tmp", ".snap.json.def456.tmp"):
        (tmp_path / cut_short).write_bytes(b'{"format": "sidecar-sn')
    (tmp_path / ".other.json.x.tmp").write_bytes(b"not ours")
    manager, store = a_manager(clock)

    assert SnapshotKeeper(store, manager, path).restore() == 1

    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.tmp", "snap.json"]
    assert "removed 2 temporary file(s)" in caplog.text
    manager.shutdown()
