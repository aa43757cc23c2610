"""What this process's manager did: event counters and the rate-limited eviction report.

Counters count what this replica did (a shared store's figures describe the store instead).
They sit behind their own plain lock, held for a few additions at a time.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timedelta

from sidecar.core.events import REJECTED_CAPACITY, RemovalReason
from sidecar.core.models import GenerationStatus
from sidecar.core.rules import KNOWN_TRANSITIONS

__all__ = ["EVICTION_REPORT_SECONDS", "Counters", "CounterValues", "EvictionReport"]

logger = logging.getLogger("sidecar.core.manager")

# At capacity under evict_oldest every create evicts: one warning per eviction would be a line
# per create. Each eviction is logged at debug; a warning sums them up at most this often.
EVICTION_REPORT_SECONDS = 60.0
_EVICTION_REPORT = timedelta(seconds=EVICTION_REPORT_SECONDS)

Transition = tuple[GenerationStatus, GenerationStatus]


class CounterValues:
    """The counters at one instant (copies)."""

    __slots__ = (
        "cleanup_errors",
        "cleanup_last_run",
        "cleanup_runs",
        "created",
        "rejected",
        "removed",
        "transitions",
    )

    def __init__(self, counters: Counters) -> None:
        self.created = counters.created
        self.removed = {r: counters.removed[r] for r in RemovalReason}
        self.rejected = {REJECTED_CAPACITY: counters.rejected[REJECTED_CAPACITY]}
        self.transitions = {t: counters.transitions[t] for t in KNOWN_TRANSITIONS}
        self.cleanup_runs = counters.cleanup_runs
        self.cleanup_errors = counters.cleanup_errors
        self.cleanup_last_run = counters.cleanup_last_run


class Counters:
    """Event counters; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.created = 0
        self.removed: Counter[RemovalReason] = Counter()
        self.rejected: Counter[str] = Counter()
        self.transitions: Counter[Transition] = Counter()
        self.cleanup_runs = 0
        self.cleanup_errors = 0
        self.cleanup_last_run: datetime | None = None

    def count_created(self) -> None:
        with self._lock:
            self.created += 1

    def count_rejected(self, reason: str = REJECTED_CAPACITY) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def count_removed(self, reason: RemovalReason, n: int = 1) -> None:
        if n:
            with self._lock:
                self.removed[reason] += n

    def count_transition(self, transition: Transition) -> None:
        with self._lock:
            self.transitions[transition] += 1

    def count_cleanup(self, at: datetime, *, failed: bool) -> None:
        with self._lock:
            self.cleanup_runs += 1
            self.cleanup_errors += failed
            self.cleanup_last_run = at

    def values(self) -> CounterValues:
        with self._lock:
            return CounterValues(self)


class EvictionReport:
    """Sums evictions up in one warning at most every EVICTION_REPORT_SECONDS; `flush` logs
    what is still unreported (at shutdown), so every eviction is reported once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unreported = 0
        self._latest = ""
        self._next: datetime | None = None  # None: report the next one at once

    def add(self, evicted: list[str], now: datetime, max_sessions: int) -> None:
        """Count new evictions (debug line each); warn if a report is due."""
        for victim in evicted:
            logger.debug("evicted session %s to make room (capacity limit)", victim)
        with self._lock:
            self._unreported += len(evicted)
            self._latest = evicted[-1]
            due = self._next
            if due is not None and now < due and due - now <= _EVICTION_REPORT:  # else: set back
                return
            report, latest = self._take()
            self._next = now + _EVICTION_REPORT
        self._warn(report, latest, max_sessions)

    def flush(self, max_sessions: int) -> int:
        """Log the evictions not reported yet, if any; how many."""
        with self._lock:
            report, latest = self._take()
        if report:
            self._warn(report, latest, max_sessions)
        return report

    def _take(self) -> tuple[int, str]:
        report, self._unreported = self._unreported, 0
        return report, self._latest

    @staticmethod
    def _warn(report: int, latest: str, max_sessions: int) -> None:
        logger.warning(
            "evicted %d session(s) to make room since the last report (max_sessions=%d, "
            "capacity_policy=evict_oldest); latest: %s",
            report,
            max_sessions,
            latest,
        )
