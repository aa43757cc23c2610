"""Benchmark 8: what one scrape of /metrics costs in Redis mode at 1,000, 100,000 and 1,000,000
sessions.

One redis-server (bench/redis_server.py) holds the three stores under three prefixes, each
loaded by bench/redis_common.py's pipelined loader; each gets its own real app in Redis mode
(`create_app` with SIDECAR_STORE pointing at it). Sizes are timed in rotating order, as in
benchmark 1.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from bench.common import Figure, Log, Section, bench_config, fmt, median, time_calls
from bench.redis_common import TIMEOUT, check_loaded, load_redis, redis_app, used_memory
from bench.redis_server import temporary_redis
from bench.scrape import ENCODER, PROMETHEUS_HEADERS, app_metrics, exercise_routes
from bench.scrape import prometheus_scrape as scrape_through
from sidecar.core.manager import SessionManager
from sidecar.metrics import SessionCollector
from sidecar.store.redis import RedisSessionStore, connect
from sidecar.web.app import get_sidecar

TARGET_RATIO = 1.5
TARGET_SCRAPE_MS = 5.0
TARGET_STORE_MS = 1.0

SCRAPE = "GET /metrics through the app"
STORE = "the store's figures (manager.snapshot(): one MULTI round trip)"
VERSION = "shared-settings version check (one GET)"
COLLECTOR = "session collector (snapshot + render)"
REGISTRY = "whole registry"
PARTS = (STORE, VERSION, COLLECTOR, REGISTRY, SCRAPE)


def _parts(
    n: int, url: str, log: Log
) -> tuple[dict[str, Callable[[], object]], SessionManager, str]:
    prefix = f"bench8-{n}"
    log(f"loading {n:,} sessions into Redis (prefix {prefix})")
    with connect(url, TIMEOUT) as client:
        before = used_memory(client)
        loaded = load_redis(client, prefix, n, config=bench_config(2 * n))
        check_loaded(RedisSessionStore(client, prefix), loaded)
        grown = used_memory(client) - before
    note = (
        f"{n:,}: loaded in {loaded.seconds:.1f} s ({n / loaded.seconds:,.0f} sessions/s), "
        f"used_memory +{grown / 2**20:,.0f} MiB"
    )
    log(note)
    app = redis_app(url, prefix, 2 * n, loaded.clock)
    client_ = app.test_client()
    exercise_routes(client_, loaded.clock)
    sidecar = get_sidecar(app)
    manager: SessionManager = sidecar.manager
    sync = sidecar.settings_sync
    if sync is None:
        raise RuntimeError("a Redis-mode app without shared settings")
    sessions_only = CollectorRegistry()
    sessions_only.register(SessionCollector(manager))
    metrics = app_metrics(app)
    parts: dict[str, Callable[[], object]] = {
        STORE: manager.snapshot,
        VERSION: sync.refresh,
        COLLECTOR: lambda: ENCODER(sessions_only),
        REGISTRY: lambda: metrics.render(PROMETHEUS_HEADERS["Accept"], None)[0],
        SCRAPE: lambda: scrape_through(client_),
    }
    return parts, manager, note


def run(quick: bool, log: Log) -> Section:
    ns = (1_000, 10_000, 100_000) if quick else (1_000, 100_000, 1_000_000)
    rounds = 3 if quick else 7
    reps = 20 if quick else 60
    samples: dict[tuple[int, str], list[float]] = {(n, p): [] for n in ns for p in PARTS}
    with temporary_redis() as server:
        built = [(n, *_parts(n, server.url, log)) for n in ns]
        for r in range(rounds):
            for n, parts, _, _ in built[r % len(built) :] + built[: r % len(built)]:
                for part in PARTS:
                    samples[(n, part)] += time_calls(parts[part], reps)
            log(f"round {r + 1}/{rounds} done")
        # Stop each app's cleanup worker before the server goes (a shared store is left as it
        # is; the server and its temporary directory go next).
        for _, _, manager, _ in built:
            manager.shutdown()
    notes_load = [note for _, _, _, note in built]
    ms = {key: median(values) * 1e3 for key, values in samples.items()}
    small, large = ns[0], ns[-1]
    ratio = ms[(large, SCRAPE)] / ms[(small, SCRAPE)]
    rows = [[part, *(fmt(ms[(n, part)]) for n in ns)] for part in PARTS]
    rows.append(
        [
            "**GET /metrics, ratio to 1,000 sessions**",
            *(f"**{ms[(n, SCRAPE)] / ms[(small, SCRAPE)]:.2f}**" for n in ns),
        ]
    )
    label = f"{large // 1000:,}k" if large < 1_000_000 else f"{large // 1_000_000}M"
    return Section(
        number=8,
        title="Scrape cost against the number of sessions, Redis mode",
        method=[
            f"One redis-server (Debian's, on a free loopback port, no persistence) holds "
            f"{', '.join(f'{n:,}' for n in ns)} sessions under three prefixes, loaded through "
            "the store's own create and update scripts, pipelined (`bench/redis_common.py`), "
            "in benchmark 1's mix (out of every 20: 5 pending, 5 processing, 7 completed, 3 "
            "failed; creation spread over 30 hours; max_sessions twice the count); the load "
            "is checked by reading counts and sessions back through the store. Each store is "
            "served by its own real app in Redis mode (`create_app` with SIDECAR_STORE, the "
            "observed store, shared live settings, cleanup worker), which first serves "
            "benchmark 1's miniature day of requests.",
            "Rows: the store's figures as the session collector reads them (`snapshot()`: "
            "one MULTI of ZCARD/ZLEXCOUNT/ZRANGE, O(log n)); the shared-settings version check "
            "the app makes before every non-open request, a scrape included (`SettingsSync."
            "refresh()`, one GET); the session collector alone (snapshot and OpenMetrics "
            "render); the whole registry; a full `GET /metrics` through the app (Flask test "
            f"client, Prometheus's headers, gzip). {rounds} rounds rotating the sizes, "
            f"{reps} calls per part per size per round; medians of all calls. Redis and the "
            "benchmark share the machine's two cores.",
        ],
        headers=["ms per call (median)", *(f"{n:,} sessions" for n in ns)],
        rows=rows,
        figures=[
            Figure(
                f"Redis mode: GET /metrics, {label} / 1k",
                f"{ratio:.2f}",
                f"<= {TARGET_RATIO}",
                ratio <= TARGET_RATIO,
            ),
            Figure(
                f"Redis mode: one GET /metrics at {label}",
                f"{ms[(large, SCRAPE)]:.2f} ms",
                f"< {TARGET_SCRAPE_MS:g} ms",
                ms[(large, SCRAPE)] < TARGET_SCRAPE_MS,
            ),
            Figure(
                f"Redis mode: the store's figures at {label} (one round trip)",
                f"{ms[(large, STORE)]:.3f} ms",
                f"< {TARGET_STORE_MS:g} ms",
                ms[(large, STORE)] < TARGET_STORE_MS,
            ),
        ],
        notes=["Loading (pipelined, one client): " + "; ".join(notes_load) + "."],
    )
