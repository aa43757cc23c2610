"""Keeping a memory store's sessions across restarts: SIDECAR_SNAPSHOT_PATH.

The keeper restores the snapshot when the app is built, writes one at shutdown (after the
drain, before the manager drops the sessions from memory) and, with an interval, every
interval on a thread of its own. What a restore does with more sessions than
`max_sessions` allows: it loads them all, drops those past their age at once (the usual
expiry), and leaves any excess to the usual capacity rule, exactly as after lowering
`max_sessions` live: the next create evicts in the usual order (evict_oldest) or is refused
(reject) until sessions leave. Nothing is dropped at start-up that was not expired.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from sidecar.core.config import CapacityPolicy
from sidecar.core.manager import SessionManager
from sidecar.store.memory import InMemorySessionStore
from sidecar.store.snapshot import (
    KeyRecord,
    SnapshotError,
    encode,
    move_aside,
    read_snapshot,
    remove_leftovers,
    write_atomically,
)

__all__ = ["SnapshotKeeper"]

logger = logging.getLogger(__name__)


class SnapshotKeeper:
    """Restores and writes the snapshot of one memory store at `path`."""

    def __init__(
        self,
        store: InMemorySessionStore,
        manager: SessionManager,
        path: Path,
        *,
        discard_invalid: bool = False,
    ) -> None:
        self._store = store
        self._manager = manager
        # Through any symlink, once: the writes replace a file in the target's directory, so
        # a link to a volume keeps pointing at the snapshot written last.
        self.path = Path(path).resolve()
        self._discard_invalid = discard_invalid
        self._write_lock = threading.Lock()  # one write at a time: the newest wins
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = False  # the last write failed
        self.writes = 0

    # ------------------------------------------------------------------ start-up

    def restore(self) -> int:
        """Load the snapshot into the (empty) store; how many sessions.

        No file: start empty (one info line). A file that cannot be used raises its
        SnapshotError, unless `discard_invalid`: then it is moved aside (never deleted), a
        warning is logged and the store starts empty.
        """
        left = remove_leftovers(self.path)
        if left:
            logger.warning(
                "snapshot: removed %d temporary file(s) next to %s that a write cut short "
                "(the process was killed while writing) had left",
                left,
                self.path,
            )
        try:
            snapshot = read_snapshot(self.path)
        except SnapshotError as exc:
            if not self._discard_invalid:
                raise
            aside = move_aside(self.path, self._manager.clock.now())
            logger.warning(
                "snapshot %s is unusable (%s); moved it to %s and starting empty",
                self.path,
                exc.reason,
                aside,
            )
            return 0
        if snapshot is None:
            logger.info("no snapshot at %s: starting empty", self.path)
            return 0
        self._store.load(snapshot.sessions, snapshot.keys)
        expired = self._manager.cleanup_expired_sessions()
        held = len(self._store)
        logger.info(
            "restored %d sessions and %d Idempotency-Keys from %s (written at %s); "
            "%d expired while stopped",
            len(snapshot.sessions),
            len(snapshot.keys),
            self.path,
            snapshot.written_at.isoformat(),
            expired,
        )
        config = self._manager.config
        if held > config.max_sessions:
            then = (
                "the next create evicts the excess in the usual order"
                if config.capacity_policy is CapacityPolicy.EVICT_OLDEST
                else "creates are refused until sessions leave"
            )
            logger.warning(
                "restored %d sessions, more than max_sessions=%d: %s",
                held,
                config.max_sessions,
                then,
            )
        return held

    # ------------------------------------------------------------------ writing

    def write(self) -> int:
        """Write every session and key now; how many sessions. Raises OSError on failure."""
        with self._write_lock:
            started = time.perf_counter()
            sessions, keys = self._store.export()  # references, under the store lock
            now = self._manager.clock.now()
            records = [KeyRecord(*key) for key in keys]
            size = write_atomically(self.path, encode(now, sessions, records))
            self.writes += 1
            logger.debug(
                "snapshot: wrote %d sessions (%d bytes) to %s in %.0f ms",
                len(sessions),
                size,
                self.path,
                (time.perf_counter() - started) * 1000,
            )
            return len(sessions)

    def write_at_shutdown(self) -> int:
        """The final write (SessionManager.shutdown's `keep`): how many sessions it kept;
        0, with an error line, when it failed."""
        self.stop()
        try:
            kept = self.write()
        except Exception as exc:
            self.failed = True
            logger.error("snapshot: could not write %s at shutdown: %s", self.path, exc)
            return 0
        self.failed = False
        logger.info("snapshot: wrote %d sessions to %s", kept, self.path)
        return kept

    # ------------------------------------------------------------------ periodic

    def start(self, interval: float) -> None:
        """Write every `interval` seconds on a daemon thread until stop()."""
        if self._thread is not None:
            raise RuntimeError("the periodic snapshot already runs")
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="sidecar-snapshot", daemon=True
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        # Start to start: a write that takes a while does not push the next one back, so a
        # crash loses at most one interval plus the write under way (README).
        due = time.monotonic() + interval
        while not self._stop.wait(max(due - time.monotonic(), 0.0)):
            due = max(due + interval, time.monotonic())
            try:
                self.write()
                self.failed = False
            except Exception as exc:
                self.failed = True
                logger.warning("snapshot: could not write %s: %s", self.path, exc)

    def stop(self, timeout: float = 30) -> None:
        """Stop the periodic writes (a write in progress finishes first)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
