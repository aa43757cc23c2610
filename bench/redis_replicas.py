"""Benchmark 12: two sidecar replicas on one Redis against one, under the same wrk load.

Two `sidecar serve` subprocesses share one redis-server and one prefix (as two replicas of a
deployment would). Each round runs the same total of wrk connections either against one
replica or split over both (two wrk processes at once); the rounds alternate.
"""

from __future__ import annotations

import shutil
import threading

from bench.common import Figure, Log, Section, fmt, median
from bench.http_overhead import (
    CONNECTIONS,
    THREADS,
    Server,
    WrkResult,
    free_port,
    reset,
    run_wrk,
    sidecar_command,
)
from bench.redis_server import temporary_redis

PREFIX = "bench12"
MAX_SESSIONS = 1_000_000
SETUPS = ("one replica", "two replicas")


def _parallel(ports: list[int], seconds: float, connections: int) -> list[WrkResult]:
    """wrk against each port at once, `connections` each; their results in port order."""
    results: list[WrkResult | BaseException | None] = [None] * len(ports)

    def one(k: int) -> None:
        try:
            results[k] = run_wrk(ports[k], seconds, ["post"], connections)
        except BaseException as exc:  # re-raised below, in the caller's thread
            results[k] = exc

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out: list[WrkResult] = []
    for result in results:
        if not isinstance(result, WrkResult):
            raise RuntimeError(f"a wrk run failed: {result!r}")
        out.append(result)
    return out


def run(quick: bool, log: Log) -> Section:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    seconds = 2.0 if quick else 5.0
    rounds = 2 if quick else 6
    rps: dict[str, list[float]] = {name: [] for name in SETUPS}
    p99: dict[str, list[float]] = {name: [] for name in SETUPS}
    with temporary_redis() as redis_server:
        env = {
            "SIDECAR_MAX_SESSIONS": str(MAX_SESSIONS),
            "SIDECAR_STORE": redis_server.url,
            "SIDECAR_STORE_PREFIX": PREFIX,
        }
        ports = [free_port(), free_port()]
        first = Server("replica 1", sidecar_command(ports[0]), ports[0], "/readyz", env)
        second = Server("replica 2", sidecar_command(ports[1]), ports[1], "/readyz", env)
        with first, second:
            _parallel(ports, 1.0 if quick else 2.0, CONNECTIONS // 2)  # warm-up, both
            for r in range(rounds):
                for name in SETUPS if r % 2 == 0 else SETUPS[::-1]:
                    reset(ports[0])  # one shared store: either replica empties it
                    if name == "one replica":
                        # alternate which replica serves alone
                        results = _parallel([ports[r % 2]], seconds, CONNECTIONS)
                    else:
                        results = _parallel(ports, seconds, CONNECTIONS // 2)
                    rps[name].append(sum(x.requests_per_second for x in results))
                    p99[name].append(max(x.p99_ms for x in results))
                log(
                    f"round {r + 1}/{rounds}: "
                    + ", ".join(f"{n} {rps[n][-1]:,.0f}/s" for n in SETUPS)
                )
            reset(ports[0])
    total = {name: median(rps[name]) for name in SETUPS}
    ratio = total["two replicas"] / total["one replica"]
    rows = [
        [
            name,
            fmt(total[name]),
            fmt(median(p99[name])),
            ", ".join(f"{x:,.0f}" for x in rps[name]),
        ]
        for name in SETUPS
    ]
    return Section(
        number=12,
        title="Two replicas on one Redis",
        method=[
            f"Two `python -m sidecar serve --threads {THREADS}` subprocesses with the same "
            "SIDECAR_STORE and SIDECAR_STORE_PREFIX on one redis-server of the benchmark's own "
            "(Debian's, free loopback port, no persistence), as two replicas of a deployment. "
            f"`POST /api/v1/sessions` under wrk ({CONNECTIONS} connections in all, "
            "`bench/api.lua`): either one wrk against one replica (which one alternates by "
            f"round) or two wrk processes at once, {CONNECTIONS // 2} connections each, one per "
            f"replica. {rounds} rounds of {seconds:g} s per setup, alternating which goes "
            "first; each round starts from an empty store. Figures: the sum of req/s over the "
            "wrk runs of a round, medians; p99 is the worse of the two replicas'.",
            "The machine has two cores, shared by wrk, both replicas and redis-server: a "
            "second replica cannot add CPU here, so the figure shows the cost or gain of "
            "splitting the same load, not a scaling factor.",
        ],
        headers=["setup", "req/s (median, sum)", "p99 ms (median)", "each round (req/s)"],
        rows=rows,
        figures=[
            Figure(
                "POST /api/v1/sessions: req/s, two replicas / one (one Redis, 2 cores)",
                f"{ratio:.2f}",
                "reported",
                None,
            )
        ],
    )
