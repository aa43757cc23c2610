"""Benchmark 10: mutations per second in Redis mode, with and without a 10/s scraper.

Benchmark 2's windowed run (bench/mutations.py: one continuous run cut into half-second
windows, the scraper on in half of them) against the real app in Redis mode: the workers call
the app's manager, whose store is a redis-server of the benchmark's own holding 100,000
sessions at capacity, and the scraper fetches /metrics through the same app.
"""

from __future__ import annotations

from bench.common import Figure, Log, Section, bench_config, fmt, median
from bench.mutations import OPS_PER_LIFE, WORKERS, run_windows
from bench.redis_common import TIMEOUT, check_loaded, load_redis, redis_app
from bench.redis_server import temporary_redis
from bench.scrape import prometheus_scrape
from sidecar.store.redis import RedisSessionStore, connect
from sidecar.web.app import get_sidecar

TARGET_SHARE = 0.90
PREFIX = "bench10"


def run(quick: bool, log: Log) -> Section:
    sessions = 10_000 if quick else 100_000
    windows = 8 if quick else 60
    window_seconds = 0.5
    with temporary_redis() as server:
        log(f"loading {sessions:,} sessions into Redis at capacity {sessions:,}")
        with connect(server.url, TIMEOUT) as client:
            loaded = load_redis(client, PREFIX, sessions, config=bench_config(sessions))
            check_loaded(RedisSessionStore(client, PREFIX), loaded)
        app = redis_app(server.url, PREFIX, sessions, loaded.clock)
        manager = get_sidecar(app).manager
        test_client = app.test_client()

        def scrape() -> object:
            return prometheus_scrape(test_client)

        try:
            log(f"{windows} windows of {window_seconds} s, scraper on in half of them")
            result = run_windows(manager, scrape, windows, window_seconds)
            held = manager.get_session_count()
        finally:
            manager.shutdown()
    log(f"without {median(result.off):,.0f} ops/s, with {median(result.on):,.0f} ops/s")
    if held != sessions:
        raise RuntimeError(f"expected {sessions} sessions after the run, found {held}")
    mean_share = (sum(result.on) / len(result.on)) / (sum(result.off) / len(result.off))
    rows = [
        [
            "off",
            str(len(result.off)),
            fmt(median(result.off)),
            "-",
            fmt(min(result.off)) + " - " + fmt(max(result.off)),
        ],
        [
            "GET /metrics through the app, 10/s",
            str(len(result.on)),
            fmt(median(result.on)),
            fmt(median(result.scrape_seconds) * 1e3),
            fmt(min(result.on)) + " - " + fmt(max(result.on)),
        ],
    ]
    return Section(
        number=10,
        title="Mutations while scraping, Redis mode",
        method=[
            f"One redis-server (Debian's, free loopback port, no persistence) loaded with "
            f"{sessions:,} sessions in benchmark 1's mix through the store's own scripts, "
            f"pipelined, at capacity {sessions:,}: every create evicts one finished session "
            "inside the create script. The real app in Redis mode (`create_app` with "
            f"SIDECAR_STORE) on it; {WORKERS} threads call that app's manager directly, "
            f"each running benchmark 2's generation lives back to back ({OPS_PER_LIFE} "
            "mutations, each one round trip to Redis).",
            f"As benchmark 2: the run is cut into {windows} windows of {window_seconds} s after "
            "a warm-up window; in half of them (off, on, on, off, ...) one more thread fetches "
            "`/metrics` through the same app (Flask test client, Prometheus's headers) every "
            "100 ms. The figure is the median of the on windows over the median of the off "
            "windows. The workers, the scraper and redis-server share the machine's two cores.",
        ],
        headers=["scraper", "windows", "mutations/s (median)", "ms per scrape", "range"],
        rows=rows,
        figures=[
            Figure(
                "Redis mode: mutation rate with a 10/s scraper, share of without",
                f"{result.share:.1%}",
                f">= {TARGET_SHARE:.0%}",
                result.share >= TARGET_SHARE,
            )
        ],
        notes=[
            f"Share computed from means instead of medians: {mean_share:.1%}. "
            f"Scrapes: {len(result.scrape_seconds)}. Loading took {loaded.seconds:.1f} s."
        ],
    )
