"""Benchmark 1: what one scrape of /metrics costs at 1,000, 10,000 and 100,000 sessions.

Each size gets its own manager and its own real app. A scrape is timed through the app (Flask
test client, Prometheus's headers), and split into what renders it: the session collector
alone, the process/platform/gc collectors, the app's histograms, and the whole registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from werkzeug.test import TestResponse

from bench.common import Figure, Log, Section, fmt, load_sessions, median, time_calls
from sidecar.core.clock import ManualClock
from sidecar.core.manager import SessionManager
from sidecar.metrics import DURATION_BUCKETS, HTTP_BUCKETS, SessionCollector, SidecarMetrics
from sidecar.settings import Settings
from sidecar.web.app import get_sidecar
from sidecar.worker import start_worker

__all__ = ["PROMETHEUS_HEADERS", "make_app", "prometheus_scrape", "run"]

# What Prometheus 2.x sends with every scrape.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
ENCODER = choose_encoder(PROMETHEUS_HEADERS["Accept"])[0]
TARGET_RATIO = 1.5
TARGET_COLLECTOR_MS = 1.0


def make_app(manager: SessionManager) -> Flask:
    """The real app around an already loaded manager, its cleanup worker running (so /readyz
    is ready, as in production)."""
    from sidecar.web.app import create_app

    start_worker(manager)
    return create_app(Settings(), manager=manager)


def app_metrics(app: Flask) -> SidecarMetrics:
    """The SidecarMetrics object the app renders /metrics from."""
    return get_sidecar(app).metrics


def prometheus_scrape(client: FlaskClient) -> bytes:
    """GET /metrics as Prometheus does; the (gzipped) body."""
    response = client.get("/metrics", headers=PROMETHEUS_HEADERS)
    if response.status_code != 200:
        raise RuntimeError(f"/metrics answered {response.status_code}")
    return bytes(response.data)


def _expect(response: TestResponse, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.path}: expected {status}, "
            f"got {response.status_code}: {response.get_data(as_text=True)[:300]}"
        )
    return response.get_json(silent=True)


def exercise_routes(client: FlaskClient, clock: ManualClock) -> None:
    """A day's requests in miniature, so the HTTP histogram has the children a working
    sidecar has: every route's success, plus the common client errors. `clock` is the app's:
    it is moved past the stuck threshold so that a recover succeeds."""
    api = "/api/v1"
    ids = []
    for i in range(3):
        body = {"story_text": f"Story {i}: a fox finds a lantern.", "num_scenes": 3}
        ids.append(_expect(client.post(f"{api}/sessions", json=body), 201)["session_id"])
    one, two, three = (f"{api}/sessions/{x}" for x in ids)
    _expect(client.get(one), 200)
    _expect(client.put(f"{one}/status", json={"status": "processing"}), 200)
    _expect(client.put(f"{one}/progress", json={"current_step": 1, "total_steps": 3}), 200)
    _expect(client.put(f"{one}/scenes/1", json={"prompt": "A lantern in the snow."}), 201)
    _expect(client.put(f"{one}/scenes/1", json={"prompt": "A lantern in the rain."}), 200)
    scenes = [{"scene_number": 2, "prompt": "The fox looks up."}]
    _expect(client.put(f"{one}/scenes", json={"scenes": scenes}), 200)
    _expect(client.patch(one, json={"status": "completed"}), 200)
    # Only a session not updated for longer than stuck_after_seconds may be recovered.
    stuck_after = _expect(client.get(f"{api}/admin/config"), 200)["stuck_after_seconds"]
    clock.advance(stuck_after + 1)
    _expect(client.post(f"{two}/recover"), 200)
    bulk = {"session_ids": [ids[2]], "status": "failed", "error_message": "model timeout"}
    _expect(client.post(f"{api}/sessions/bulk/status", json=bulk), 200)
    _expect(client.delete(three), 204)
    _expect(client.get(f"{api}/sessions?limit=10&status=completed"), 200)
    for path in (f"{api}/stats", f"{api}/health", f"{api}/admin/config", "/livez", "/readyz"):
        _expect(client.get(path), 200)
    _expect(client.post(f"{api}/admin/cleanup", json={"scope": "expired"}), 200)
    _expect(client.patch(f"{api}/admin/config", json={"stuck_after_seconds": 1800.0}), 200)
    # The errors clients make: an unknown id, a finished session changed, a bad body.
    _expect(client.get(three), 404)
    _expect(client.put(f"{one}/status", json={"status": "processing"}), 409)
    _expect(client.post(f"{api}/sessions", json={"story_text": ""}), 422)
    _expect(client.post(f"{api}/sessions", data="{", content_type="application/json"), 400)
    prometheus_scrape(client)


class _Only(Collector):
    """Some of a registry's collectors, rendered on their own."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


SCRAPE = "GET /metrics through the app"
COLLECTOR = "session collector"
REGISTRY = "whole registry"
PARTS = (COLLECTOR, "process, platform, gc", "histograms", REGISTRY, SCRAPE)
SCAN = "reference: get_all_sessions_info(), an O(n) walk"


@dataclass(frozen=True, slots=True)
class _Size:
    sessions: int
    parts: dict[str, Callable[[], object]]
    children: dict[str, int]  # label combinations per histogram


def _children(histograms: Collector) -> dict[str, int]:
    return {
        family.name: len(
            {tuple(sorted(s.labels.items())) for s in family.samples if s.name.endswith("_count")}
        )
        for family in histograms.collect()
    }


def _size(n: int, log: Log) -> _Size:
    log(f"loading {n:,} sessions")
    manager, clock = load_sessions(n, max_sessions=2 * n)
    app = make_app(manager)
    client = app.test_client()
    exercise_routes(client, clock)
    metrics = app_metrics(app)
    sessions_only = CollectorRegistry()
    sessions_only.register(SessionCollector(manager))
    runtime_only = CollectorRegistry()
    ProcessCollector(registry=runtime_only)
    PlatformCollector(registry=runtime_only)
    GCCollector(registry=runtime_only)
    histograms_only = _Only([metrics.http_duration, metrics.session_duration])
    return _Size(
        n,
        {
            COLLECTOR: lambda: ENCODER(sessions_only),
            "process, platform, gc": lambda: ENCODER(runtime_only),
            "histograms": lambda: ENCODER(histograms_only),
            REGISTRY: lambda: metrics.render(PROMETHEUS_HEADERS["Accept"], None)[0],
            SCRAPE: lambda: prometheus_scrape(client),
            SCAN: manager.get_all_sessions_info,
        },
        _children(histograms_only),
    )


def run(quick: bool, log: Log) -> Section:
    ns = (1_000, 10_000, 100_000)
    rounds = 3 if quick else 7
    reps = 20 if quick else 60
    sizes = [_size(n, log) for n in ns]
    samples: dict[tuple[int, str], list[float]] = {(n, p): [] for n in ns for p in (*PARTS, SCAN)}
    for r in range(rounds):
        # Rotate the order of the sizes each round, so drift in the machine's load is shared.
        for size in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:
            for part in PARTS:
                samples[(size.sessions, part)] += time_calls(size.parts[part], reps)
            samples[(size.sessions, SCAN)] += time_calls(size.parts[SCAN], 1)
        log(f"round {r + 1}/{rounds} done")
    ms = {key: median(values) * 1e3 for key, values in samples.items()}
    small, large = ns[0], ns[-1]
    ratio = ms[(large, SCRAPE)] / ms[(small, SCRAPE)]
    collector_ms = ms[(large, COLLECTOR)]
    rows = [[part, *(fmt(ms[(n, part)]) for n in ns)] for part in PARTS]
    rows.append(
        [
            "GET /metrics minus whole registry (Flask, gzip, its own observation)",
            *(fmt(ms[(n, SCRAPE)] - ms[(n, REGISTRY)]) for n in ns),
        ]
    )
    rows.append(
        [
            "**GET /metrics, ratio to 1,000 sessions**",
            *(f"**{ms[(n, SCRAPE)] / ms[(small, SCRAPE)]:.2f}**" for n in ns),
        ]
    )
    rows.append([SCAN, *(fmt(ms[(n, SCAN)]) for n in ns)])
    children = sizes[-1].children
    http_children = children.get("sidecar_http_request_duration_seconds", 0)
    duration_children = children.get("sidecar_session_duration_seconds", 0)
    parts_sum = sum(ms[(large, p)] for p in (COLLECTOR, "process, platform, gc", "histograms"))
    histogram_share = ms[(large, "histograms")] / parts_sum
    per_child = ms[(large, "histograms")] / max(http_children + duration_children, 1)
    return Section(
        number=1,
        title="Scrape cost against the number of sessions",
        method=[
            "Three managers loaded through the public API with 1,000, 10,000 and 100,000 "
            "sessions (out of every 20: 5 pending, 5 processing, 7 completed, 3 failed; "
            "creation times spread evenly over 30 hours; max_sessions twice the count), each "
            "inside its own real app (`create_app`, cleanup worker running). Before timing, "
            "each app serves a miniature day of requests (every route's success, plus 404, "
            "409, 422 and 400 answers), so the HTTP histogram has the children a working "
            f"sidecar has: {http_children} HTTP latency children and {duration_children} "
            f"session-duration children, {len(HTTP_BUCKETS)} and {len(DURATION_BUCKETS)} "
            "buckets.",
            "Rows: the session collector alone in a registry of its own; process, platform and "
            "gc collectors alone; the app's two histograms alone (these three with "
            "prometheus_client's OpenMetrics encoder); the app's whole registry as `/metrics` "
            "renders it (`SidecarMetrics.render`, no gzip: the same bytes, without the "
            "library's per-sample re-escaping of plain names); and a full `GET /metrics` "
            "through the app (Flask test client, with Prometheus's Accept header, so "
            f"OpenMetrics, and gzip). {rounds} rounds, rotating the order of the sizes; each "
            f"round renders each part {reps} times in a row per size. Figures are medians of "
            "all renders.",
            "The last row is a reference, not part of a scrape: the seed computed its figures "
            "by walking every session under the lock, as `get_all_sessions_info()` still does "
            "(one call per size per round).",
        ],
        headers=["ms per render (median)", *(f"{n:,} sessions" for n in ns)],
        rows=rows,
        figures=[
            Figure(
                "GET /metrics, 100k / 1k",
                f"{ratio:.2f}",
                f"<= {TARGET_RATIO}",
                ratio <= TARGET_RATIO,
            ),
            Figure(
                "session collector alone at 100k",
                f"{collector_ms:.3f} ms",
                "< 1 ms",
                collector_ms < TARGET_COLLECTOR_MS,
            ),
            Figure(
                "one GET /metrics at 100k",
                f"{ms[(large, SCRAPE)]:.2f} ms",
                "reported",
                None,
            ),
        ],
        notes=[
            f"At {large:,} sessions the histograms are {histogram_share:.0%} of the three "
            f"parts' render time (library encoder), about {per_child:.2f} ms "
            "per child; the session collector, the only part that reads the sessions, is "
            f"{ms[(large, COLLECTOR)] / ms[(large, SCRAPE)]:.0%} of a scrape."
        ],
    )
