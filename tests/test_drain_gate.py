"""DrainGate in-process: the requests it counts, and the call when they fill every thread."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from sidecar.drain import DrainGate, Listener, listen


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def failing_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    raise RuntimeError("the app failed")


@pytest.fixture
def listener() -> Iterator[Listener]:
    sock = listen("127.0.0.1", 0)
    yield sock
    sock.close()


def enter(gate: DrainGate) -> Any:
    """One request into the gate, its answer not yet closed (a thread still serving it)."""

    def start_response(*_args: Any) -> Any:
        return None

    return gate({"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "9"}, start_response)


def test_the_request_that_takes_the_last_free_thread_is_reported(listener: Listener) -> None:
    full: list[int] = []
    gate = DrainGate(
        app,
        SimpleNamespace(draining=False),  # type: ignore[arg-type]
        listener,
        1 << 20,
        threads=3,
        on_full=lambda: full.append(gate.busy),
    )

    first, second = enter(gate), enter(gate)
    assert full == []  # one thread still free
    third = enter(gate)
    assert full == [3]
    third.close()
    second.close()
    fourth, fifth = enter(gate), enter(gate)
    assert (full, gate.busy) == ([3, 3], 3)
    for answer in (first, fourth, fifth):
        answer.close()
    assert gate.busy == 0


def test_a_failing_callback_or_app_leaves_the_count_right(listener: Listener) -> None:
    def fail() -> None:
        raise RuntimeError("the callback failed")

    sidecar = SimpleNamespace(draining=False)
    gate = DrainGate(app, sidecar, listener, 1 << 20, threads=1, on_full=fail)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="callback"):
        enter(gate)
    broken = DrainGate(failing_app, sidecar, listener, 1 << 20, threads=1, on_full=lambda: None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="app failed"):
        enter(broken)
    assert (gate.busy, broken.busy) == (0, 0)


def test_without_a_callback_nothing_is_reported_however_busy(listener: Listener) -> None:
    gate = DrainGate(app, SimpleNamespace(draining=False), listener, 1 << 20, threads=1)  # type: ignore[arg-type]
    answers = [enter(gate) for _ in range(3)]
    assert gate.busy == 3
    for answer in answers:
        answer.close()
    assert gate.busy == 0
