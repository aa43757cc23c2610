"""Benchmark 9: the API in Redis mode against memory mode, same server and threads, under wrk;
and what the per-request shared-settings version check costs.

Two `sidecar serve` subprocesses, one on the memory store and one on a redis-server of its own
(bench/redis_server.py), driven alternately by wrk with bench/api.lua, as benchmark 3 drives
the sidecar and bare Flask. Then, in-process, the same POSTs fed to a Redis-mode app with and
without its SettingsSync, to price the GET of the version key made before every API request.
"""

from __future__ import annotations

import shutil
import time

from flask import Flask

from bench.common import Figure, Log, Section, fmt, median, time_calls
from bench.http_breakdown import requests_for, serve_all
from bench.http_overhead import (
    ENDPOINTS,
    THREADS,
    Measured,
    Server,
    compare,
    free_port,
    measure,
    progress_ids,
    reset,
    run_wrk,
    session_count,
    sidecar_command,
    table_headers,
)
from bench.redis_common import redis_settings
from bench.redis_server import temporary_redis
from sidecar.web.app import create_app, get_sidecar

TARGET_SHARE = 0.70
NAMES = ("redis", "memory")
PREFIX = "bench9"
MAX_SESSIONS = 1_000_000


def _version_check(url: str, rounds: int, batch: int) -> dict[str, float]:
    """µs per in-process POST on a Redis-mode app with and without its SettingsSync (minimum
    over interleaved batches), and µs per `SettingsSync.refresh()` called alone (median)."""
    apps: dict[str, Flask] = {
        name: create_app(redis_settings(url, f"{PREFIX}-inproc", MAX_SESSIONS))
        for name in ("with the version check", "without the version check")
    }
    # On the second app instance only: no SettingsSync, as in memory mode (bench-side change).
    get_sidecar(apps["without the version check"]).settings_sync = None
    sync = get_sidecar(apps["with the version check"]).settings_sync
    if sync is None:
        raise RuntimeError("a Redis-mode app without shared settings")
    best: dict[str, float] = {}
    names = list(apps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            environs = requests_for("post", "any", batch)
            start = time.perf_counter()
            serve_all(apps[name], environs)
            us = (time.perf_counter() - start) / batch * 1e6
            best[name] = min(best.get(name, us), us)
    best["SettingsSync.refresh() alone (median)"] = median(time_calls(sync.refresh, 2000)) * 1e6
    for app in apps.values():
        get_sidecar(app).manager.shutdown()
    return best


def run(quick: bool, log: Log) -> Section:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    seconds = 2.0 if quick else 5.0
    warmup = 1.0 if quick else 2.0
    rounds = 2 if quick else 6
    results: dict[tuple[str, str], list[Measured]] = {}
    held: list[int] = []
    with temporary_redis() as redis_server:
        ports = {name: free_port() for name in NAMES}
        env = {"SIDECAR_MAX_SESSIONS": str(MAX_SESSIONS)}
        servers = {
            "redis": Server(
                "redis",
                sidecar_command(ports["redis"]),
                ports["redis"],
                "/readyz",
                {**env, "SIDECAR_STORE": redis_server.url, "SIDECAR_STORE_PREFIX": PREFIX},
            ),
            "memory": Server(
                "memory", sidecar_command(ports["memory"]), ports["memory"], "/readyz", env
            ),
        }
        with servers["redis"], servers["memory"]:
            for label, mode in ENDPOINTS:
                ids = {n: progress_ids(ports[n]) if mode == "progress" else [] for n in NAMES}
                for name in NAMES:
                    run_wrk(ports[name], warmup, [mode, *ids[name]])
                    results[(label, name)] = []
                for r in range(rounds):
                    for name in NAMES if r % 2 == 0 else NAMES[::-1]:
                        if mode == "post":
                            reset(ports[name])
                        measured = measure(servers[name], seconds, [mode, *ids[name]])
                        results[(label, name)].append(measured)
                        if mode == "post":
                            held.append(session_count(ports[name]))
                    log(
                        f"{label} round {r + 1}/{rounds}: "
                        + ", ".join(
                            f"{n} {results[(label, n)][-1].wrk.requests_per_second:,.0f}/s"
                            for n in NAMES
                        )
                    )
                for name in NAMES:
                    reset(ports[name])
        log("in-process: POST with and without the shared-settings version check")
        version_us = _version_check(
            redis_server.url, rounds=4 if quick else 16, batch=200 if quick else 1000
        )

    rows, figures, notes = compare(
        results,
        NAMES,
        short=("Redis", "memory"),
        share_title="req/s, Redis store / memory store",
        target=TARGET_SHARE,
        target_text=f">= {TARGET_SHARE:.0%}",
        cpu_tail=" (the Redis server's own CPU not included)",
    )
    with_us = version_us["with the version check"]
    without_us = version_us["without the version check"]
    figures.append(
        Figure(
            "shared-settings version check per API request (in-process POST, with - without)",
            f"{with_us - without_us:.0f} µs of {with_us:.0f} µs",
            "reported",
            None,
        )
    )
    notes.append(
        "Sessions each server held at the end of each POST round (Redis, memory alternately "
        "by round order): " + ", ".join(f"{n:,}" for n in held) + "."
    )
    return Section(
        number=9,
        title="HTTP in Redis mode against memory mode",
        method=[
            f"Two `python -m sidecar serve --threads {THREADS}` subprocesses on 127.0.0.1, "
            "one with SIDECAR_STORE naming a redis-server of the benchmark's own (Debian's, on "
            "a free loopback port, no persistence), one on the memory store; "
            f"SIDECAR_MAX_SESSIONS={MAX_SESSIONS:,} on both, so no POST evicts. wrk, both "
            "servers and redis-server share the machine's two cores.",
            "As benchmark 3: wrk with `bench/api.lua`, POST one fixed create body, PUT progress "
            "cycling through 64 sessions made processing on that server; any socket error or "
            "non-2xx answer voids the run; each POST round starts from an empty store (admin "
            f"cleanup, outside the timing). Per endpoint a {warmup:g} s warm-up per server, "
            f"then {rounds} rounds of {seconds:g} s per server, alternating which goes first; "
            "medians. CPU is the sidecar process's user + system time per request.",
        ],
        headers=table_headers("store"),
        rows=rows,
        figures=figures,
        notes=notes,
        extra=[
            (
                "The shared-settings version check: before every non-open request a Redis-mode "
                "app calls `SettingsSync.refresh()` (sidecar/live.py), one GET of the settings "
                "version key, so that a PATCH made through another replica is in force. The "
                "same POSTs fed in-process (no server, `bench/http_breakdown.py`'s environs) "
                "to two Redis-mode apps on the same redis-server, one with its SettingsSync "
                "removed (a bench-side change on that instance), minimum over interleaved "
                "batches; and `refresh()` called alone.",
                ["in-process", "µs per call"],
                [[name, fmt(us)] for name, us in version_us.items()],
            )
        ],
    )
