"""Benchmark 4: a create at capacity (every create evicts), 100,000 sessions against 1,000."""

from __future__ import annotations

import time

from bench.common import STORY, Figure, Log, Section, fmt, load_sessions, median
from sidecar.core.manager import RemovalReason, SessionManager

TARGET_RATIO = 2.0


def _timed_creates(manager: SessionManager, creates: int) -> float:
    """Seconds per create, checking that every one of them evicted a session."""
    before = manager.snapshot().removed_total[RemovalReason.EVICTED]
    start = time.perf_counter()
    for _ in range(creates):
        manager.create_session(STORY)
    elapsed = time.perf_counter() - start
    evicted = manager.snapshot().removed_total[RemovalReason.EVICTED] - before
    if evicted != creates:
        raise RuntimeError(f"{creates} creates at capacity evicted {evicted} sessions")
    return elapsed / creates


def run(quick: bool, log: Log) -> Section:
    small, large = 1_000, 100_000
    creates = 2_000 if quick else 5_000
    rounds = 3 if quick else 15
    managers = {}
    for n in (small, large):
        log(f"loading {n:,} sessions at capacity {n:,}")
        managers[n], _ = load_sessions(n)
    per_create: dict[int, list[float]] = {small: [], large: []}
    for r in range(rounds):
        # Alternate which size goes first, so drift in the machine's load hits both alike.
        for n in (small, large) if r % 2 == 0 else (large, small):
            per_create[n].append(_timed_creates(managers[n], creates))
        log(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{n:,}: {per_create[n][-1] * 1e6:.1f} us" for n in (small, large))
        )
    for manager in managers.values():
        manager.shutdown()

    us = {n: median(v) * 1e6 for n, v in per_create.items()}
    ratio = us[large] / us[small]
    paired = sorted(b / a for a, b in zip(per_create[small], per_create[large], strict=True))
    return Section(
        number=4,
        title="Churn at capacity",
        method=[
            f"Two managers, each full ({small:,} and {large:,} sessions, max_sessions equal to "
            "that, statuses mixed, ages spread over 30 hours); the capacity policy is "
            "evict_oldest, so every create evicts one session (checked from the eviction "
            "counter).",
            f"Each round times {creates:,} creates in a row on each manager, called directly "
            f"on the manager from one thread; {rounds} rounds, alternating which size goes "
            "first. Figures are medians over rounds.",
        ],
        headers=["sessions held", "us per create (median)", "each round (us)"],
        rows=[
            [f"{n:,}", fmt(us[n]), ", ".join(f"{x * 1e6:.1f}" for x in per_create[n])]
            for n in (small, large)
        ],
        figures=[
            Figure("create cost at capacity, 100k / 1k", f"{ratio:.2f}", "<= 2", ratio <= 2),
        ],
        notes=[
            "Per-round ratios 100k / 1k, sorted: " + ", ".join(f"{x:.2f}" for x in paired) + ".",
        ],
    )
