"""Session ids: UUID4 strings from batched os.urandom, per thread, fresh after a fork."""

from __future__ import annotations

import os
import re
import threading
import uuid

import pytest

import sidecar.core.ids
from sidecar.core.ids import SessionIds, new_session_id

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class CountingUrandom:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._lock = threading.Lock()
        self._urandom = os.urandom

    def __call__(self, size: int) -> bytes:
        with self._lock:
            self.sizes.append(size)
        return self._urandom(size)


@pytest.fixture
def urandom(monkeypatch: pytest.MonkeyPatch) -> CountingUrandom:
    counting = CountingUrandom()
    monkeypatch.setattr(sidecar.core.ids.os, "urandom", counting)  # os.urandom, for this test
    return counting


def test_ids_are_canonical_version_4_uuids() -> None:
    ids = [new_session_id() for _ in range(5000)]

    for text in ids:
        assert UUID4.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    # every variant digit and every nibble of the random part turns up
    assert {text[19] for text in ids} == set("89ab")
    assert set("".join(text[:8] for text in ids)) == set("0123456789abcdef")


def test_ids_do_not_repeat() -> None:
    ids = [new_session_id() for _ in range(100_000)]

    assert len(set(ids)) == len(ids)


def test_one_system_call_serves_a_whole_batch(urandom: CountingUrandom) -> None:
    ids = SessionIds(batch=4)

    drawn = [ids() for _ in range(10)]

    assert urandom.sizes == [64, 64, 64]  # 4 ids of 16 bytes each, three times for 10 ids
    assert len(set(drawn)) == 10


def test_each_thread_draws_from_its_own_pool(urandom: CountingUrandom) -> None:
    ids = SessionIds(batch=8)
    drawn: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def draw(into: list[str]) -> None:
        start.wait()
        into.extend(ids() for _ in range(20))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    every = [text for into in drawn for text in into]
    assert len(set(every)) == 80
    assert len(urandom.sizes) == 4 * 3  # each thread: 20 ids from batches of 8


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:  # POSIX, as the sidecar
    ids = SessionIds(batch=64)
    ids()  # the parent's pool now holds 63 more ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        try:
            os.write(write, ids().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id = pipe.read()
    os.waitpid(pid, 0)

    assert UUID4.fullmatch(child_id)
    assert child_id != ids()  # without the fork hook both would take the same next id


def test_a_batch_must_hold_at_least_one_id() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SessionIds(batch=0)
