"""The background cleanup worker: a thread that runs `manager.run_cleanup()` every interval.

It lives outside the pure core; the app (or whoever builds a manager) starts it. The manager
knows it only through `sidecar.core.state.Worker`: shutdown stops it, and a change of
`cleanup_interval_seconds` restarts its wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sidecar.core.manager import SessionManager

__all__ = ["CleanupWorker", "start_worker"]

logger = logging.getLogger(__name__)


class CleanupWorker:
    """Runs the manager's periodic cleanup on a daemon thread until stopped."""

    def __init__(
        self, manager: SessionManager, before_run: Callable[[], None] | None = None
    ) -> None:
        self._manager = manager
        self._before_run = before_run
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
        """Start a fresh wait with the manager's interval now in force."""
        with self._wakeup:
            self._rescheduled = True
            self._wakeup.notify_all()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                self._wakeup.wait_for(
                    lambda: self._stopping or self._rescheduled,
                    timeout=self._manager.config.cleanup_interval_seconds,
                )
                if self._stopping:
                    return
                if self._rescheduled:
                    self._rescheduled = False
                    continue
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
