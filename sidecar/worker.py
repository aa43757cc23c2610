"""The background cleanup worker: a thread that runs `manager.run_cleanup()` every interval.

It lives outside the pure core; the app (or whoever builds a manager) starts it. The manager
knows it only through `sidecar.core.state.Worker`: shutdown stops it, and a change of
`cleanup_interval_seconds` makes it work out again when the next run is due: the new interval
after the last run (at once if that time has passed), so changes never put a run off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sidecar.core.manager import SessionManager

__all__ = ["CleanupWorker", "start_worker"]

logger = logging.getLogger(__name__)


class CleanupWorker:
    """Runs the manager's periodic cleanup on a daemon thread until stopped."""

    def __init__(
        self,
        manager: SessionManager,
        before_run: Callable[[], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._before_run = before_run
        self._clock = clock  # seconds; only differences are used
        self._wakeup = threading.Condition(threading.Lock())
        self._stopping = False
        self._rescheduled = False
        self._thread = threading.Thread(
            target=self._run, name="sidecar-session-cleanup", daemon=True
        )

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def start(self) -> CleanupWorker:
        """Attach to the manager (SessionManagerError once it is shut down) and start."""
        self._manager.attach_worker(self)
        self._thread.start()
        return self

    def stop(self, timeout: float) -> bool:
        """Stop the thread; False if it still runs after `timeout` seconds."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        thread = self._thread
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        return thread is threading.current_thread() or not thread.is_alive()

    def reschedule(self) -> None:
        """Work out again when the next run is due, with the manager's interval now in force."""
        with self._wakeup:
            self._rescheduled = True
            self._wakeup.notify_all()

    def _due_in(self, last_run: float) -> float:
        """Seconds until the next run is due: the interval in force after `last_run`."""
        return last_run + self._manager.config.cleanup_interval_seconds - self._clock()

    def _run(self) -> None:
        last_run = self._clock()  # the start counts as a run: the first one is an interval on
        while True:
            with self._wakeup:
                while (wait := self._due_in(last_run)) > 0 and not self._stopping:
                    # Woken early by stop() or reschedule(): the loop works the time out again.
                    self._rescheduled = False
                    self._wakeup.wait_for(lambda: self._stopping or self._rescheduled, wait)
                if self._stopping:
                    return
            last_run = self._clock()
            if self._before_run is not None:
                try:
                    self._before_run()  # e.g. pick up live settings shared by other replicas
                except Exception:
                    # Whatever it was, the cleanup still runs, and so does this thread.
                    logger.exception("before the cleanup run")
            self._manager.run_cleanup()


def start_worker(
    manager: SessionManager, before_run: Callable[[], None] | None = None
) -> CleanupWorker:
    """The manager's running cleanup worker, started now unless one already runs;
    `before_run` is called before each cleanup run."""
    running = manager.worker
    if isinstance(running, CleanupWorker) and running.alive:
        return running
    return CleanupWorker(manager, before_run).start()
