"""`serve` in this process (pytest runs tests in the main thread, where signals are handled):
what a signal does while the sidecar stops."""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from sidecar import server
from sidecar.settings import Settings
from sidecar.web.context import Sidecar


@pytest.fixture
def recorded_sigterm() -> Iterator[list[int]]:
    """SIGTERM's handler before `serve` installs its own: it records instead of ending pytest."""
    seen: list[int] = []

    def record(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_while_the_manager_stops_does_not_end_the_process_midway(
    recorded_sigterm: list[int], monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    closed: list[bool] = []
    real_close = Sidecar.close

    def close_under_a_second_sigterm(self: Sidecar) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # as an impatient orchestrator would
        real_close(self)
        closed.append(True)

    monkeypatch.setattr(Sidecar, "close", close_under_a_second_sigterm)
    ours = signal.getsignal(signal.SIGTERM)
    gave_up = threading.Event()

    def first_sigterm_once_serving() -> None:
        # from a thread, handled in this (main) thread; a bounded wait for serve's handler
        for _ in range(500):
            if signal.getsignal(signal.SIGTERM) is not ours:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if gave_up.wait(0.01):
                return

    sender = threading.Thread(target=first_sigterm_once_serving, daemon=True)
    sender.start()
    try:
        status = server.serve(Settings(port=0))
    finally:
        gave_up.set()
        sender.join(10)
        gc.unfreeze()  # serve froze the start-up objects: give pytest's back to the collector

    assert status == 0
    assert closed == [True]
    # the second signal reached the sidecar's handler, not the one it replaced (before: the
    # default handler, which ended the process with the snapshot unwritten)
    assert recorded_sigterm == []
    assert signal.getsignal(signal.SIGTERM) is ours  # given back once stopped
