"""Prometheus export: state read from the manager at scrape time, events as they happen.

Gauges derived from state come from `SessionCollector`, which asks the manager for one
`snapshot()` per scrape: the manager keeps those figures in sorted indexes, so a scrape costs
O(log n) and never walks the sessions, and nothing can drift the way inc/dec gauges do.
Event counters are kept by the manager under its lock and exported here as counters; the
histograms (session duration, HTTP latency, and with a shared store its call latency) are
observed as events happen.
Everything lives in a private `CollectorRegistry`, never the process-global one.

No family is exposed with a `_created` series. prometheus_client adds one to each histogram
child (in both formats) but not to the counters built here, and Prometheus 2.x stores each as
a series of its own; the sidecar exposes none rather than one per HTTP latency child. rate()
and increase() see a counter's reset without it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sidecar.core.clock import EPOCH
from sidecar.core.figures import Health
from sidecar.core.manager import (
    AGE_BUCKETS,
    EventType,
    ManagerSnapshot,
    RemovalReason,
    SessionEvent,
    SessionManager,
)
from sidecar.core.models import FINISHED, GenerationStatus
from sidecar.negotiate import wants_gzip, well_formed_accept
from sidecar.store.errors import StoreUnavailableError
from sidecar.store.observed import OPERATIONS as STORE_OPERATIONS
from sidecar.store.observed import ObservedStore
from sidecar.version import __version__

__all__ = [
    "DURATION_BUCKETS",
    "HEALTH_STATES",
    "HTTP_BUCKETS",
    "STORE_BUCKETS",
    "SessionCollector",
    "SidecarMetrics",
    "StoreName",
    "WithoutCreated",
]

HEALTH_STATES = tuple(Health)
# A generation takes seconds to tens of minutes; sessions live at most a day.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0)
# The app answers in under a millisecond when idle and in milliseconds to tens of milliseconds
# under load; a request held up by a stalled Redis runs into the store timeout (1 s by
# default), past the last bucket. Few buckets on purpose: each of the 25 or so (method, route,
# status) children renders all of them, plus +Inf, _count and _sum, on every scrape, and the
# render is what a scrape costs. 10 -> 8 buckets, with the store histogram left out of memory
# mode, took benchmark 2 (mutations while scraping, memory mode) from 87.7 % to 91.9 % in one
# interleaved run, against 90.2 % for the store histogram alone (2026-12-03).
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
# A call to a shared store: a loopback round trip (~0.1-0.5 ms) in Redis, up to the store
# timeout (1 s by default) when Redis stalls. A memory store is not timed: its calls take
# microseconds under a lock, which the HTTP latency already shows, and its 12 children of 10
# lines each were a fifth of a memory-mode scrape.
STORE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.025, 0.1, 1.0)
# How allow-utf-8 escaping writes a name that is not a legacy one: `"a.b"="v"` for a label
# name, `{"a.b"` for a sample's name, `# HELP "a.b"` for a family's (label values never hold
# an unescaped quote).
_UNDERSCORED_OPENMETRICS = frozenset(
    {
        openmetrics.CONTENT_TYPE_LATEST,  # no version asked for
        f"{openmetrics.CONTENT_TYPE_LATEST}; escaping={openmetrics.UNDERSCORES}",  # version=1.0.0
    }
)
_QUOTED_NAMES = (b'"=', b'\n{"', b'# HELP "')


class StoreName:
    """The `store` label's value; the server fills in the real port once it has bound one."""

    def __init__(self, value: str) -> None:
        self.value = value


class SessionCollector(Collector):
    """Builds the session gauges and event counters from one manager snapshot per scrape.

    The state gauges describe the store, so they carry a `store` label naming it: replicas
    attached to one store export the same values under the same label, and Prometheus
    aggregates them once per store. While the store does not answer they are left out (no
    stale figure is shown as current) and `sidecar_store_up` is 0; it carries the `store`
    label too, so the alerts can group replicas that cannot reach one store. The counters of
    what this process did are exported either way.
    """

    def __init__(self, manager: SessionManager, store: StoreName | None = None) -> None:
        self._manager = manager
        self._store = store or StoreName("memory")

    def describe(self) -> Iterable[Metric]:
        # Families without samples: lets the registry detect duplicate names at registration
        # without taking a snapshot.
        return list(self._families(None, None, False))

    def collect(self) -> Iterable[Metric]:
        manager = self._manager
        try:
            snap: ManagerSnapshot | None = manager.snapshot()
        except StoreUnavailableError:
            snap = None
        # The scrape's own figures call is the last store call: it says whether the store is up.
        return list(self._families(manager, snap, snap is not None))

    def _families(
        self, manager: SessionManager | None, snap: ManagerSnapshot | None, up: bool
    ) -> Iterator[Metric]:
        store = ["store"]
        sessions = GaugeMetricFamily(
            "sidecar_sessions", "Sessions held now, by status.", labels=[*store, "status"]
        )
        by_age = GaugeMetricFamily(
            "sidecar_sessions_by_age",
            "Sessions held now, by time since creation.",
            labels=[*store, "age_bucket"],
        )
        stuck = GaugeMetricFamily(
            "sidecar_sessions_stuck",
            "Processing sessions whose last update is older than sidecar_stuck_after_seconds.",
            labels=store,
        )
        stuck_after = GaugeMetricFamily(
            "sidecar_stuck_after_seconds",
            "The stuck threshold in force (stuck_after_seconds), in seconds.",
            labels=store,
        )
        capacity = GaugeMetricFamily(
            "sidecar_sessions_capacity",
            "The max_sessions setting in force: sessions that may be held.",
            labels=store,
        )
        utilization = GaugeMetricFamily(
            "sidecar_sessions_utilization_ratio",
            "Sessions held divided by max_sessions. Above 1 after max_sessions was lowered below "
            "the sessions held, until enough of them expire, are deleted or are evicted.",
            labels=store,
        )
        health = GaugeMetricFamily(
            "sidecar_health_state",
            "1 for the current health state (by utilization), 0 for the others.",
            labels=[*store, "state"],
        )
        oldest = GaugeMetricFamily(
            "sidecar_session_oldest_created_timestamp_seconds",
            "Creation time (Unix seconds) of the oldest session in each non-empty status.",
            labels=[*store, "status"],
        )
        store_up = GaugeMetricFamily(
            "sidecar_store_up",
            "1 when the session store answered this scrape's read, 0 when it failed or timed "
            "out (the state gauges are then absent).",
            labels=store,
        )
        worker_up = GaugeMetricFamily(
            "sidecar_cleanup_worker_up", "1 while the cleanup worker thread is alive."
        )
        last_run = GaugeMetricFamily(
            "sidecar_cleanup_last_run_timestamp_seconds",
            "When the last cleanup run ended (Unix seconds); 0 before the first run.",
        )
        build = GaugeMetricFamily(
            "sidecar_build_info", "The sidecar's version; always 1.", labels=["version"]
        )
        created = CounterMetricFamily(
            "sidecar_sessions_created", "Sessions created since the sidecar started."
        )
        removed = CounterMetricFamily(
            "sidecar_sessions_removed",
            "Sessions removed since the sidecar started, by reason.",
            labels=["reason"],
        )
        rejected = CounterMetricFamily(
            "sidecar_sessions_rejected",
            "Creates refused since the sidecar started: max_sessions held, capacity_policy reject.",
            labels=["reason"],
        )
        transitions = CounterMetricFamily(
            "sidecar_session_transitions",
            "Status changes since the sidecar started, by the status left and the status entered.",
            labels=["from_status", "to_status"],
        )
        cleanup_runs = CounterMetricFamily(
            "sidecar_cleanup_runs", "Cleanup runs of the background worker, failed ones included."
        )
        cleanup_errors = CounterMetricFamily(
            "sidecar_cleanup_errors",
            "Cleanup runs that raised an error (each also counts in sidecar_cleanup_runs_total).",
        )

        if snap is not None:
            name = [self._store.value]
            for status in GenerationStatus:
                sessions.add_metric([*name, status.value], snap.by_status.get(status, 0))
            for bucket, _, _ in AGE_BUCKETS:
                by_age.add_metric([*name, bucket], snap.by_age[bucket])
            stuck.add_metric(name, snap.stuck)
            stuck_after.add_metric(name, snap.stuck_after_seconds)
            capacity.add_metric(name, snap.capacity)
            utilization.add_metric(name, snap.utilization)
            for state in HEALTH_STATES:
                health.add_metric([*name, state], 1.0 if state == snap.health else 0.0)
            for status, moment in snap.oldest_created.items():
                oldest.add_metric([*name, status.value], (moment - EPOCH).total_seconds())
        if manager is not None:
            store_up.add_metric([self._store.value], 1.0 if up else 0.0)
            c = manager.event_counts()
            worker_up.add_metric([], 1.0 if manager.worker_alive else 0.0)
            ended = c.cleanup_last_run
            last_run.add_metric([], 0.0 if ended is None else (ended - EPOCH).total_seconds())
            build.add_metric([__version__], 1.0)
            created.add_metric([], c.created)
            for reason in RemovalReason:
                removed.add_metric([reason.value], c.removed[reason])
            for why, count in c.rejected.items():
                rejected.add_metric([why], count)
            for (src, dst), count in c.transitions.items():
                transitions.add_metric([src.value, dst.value], count)
            cleanup_runs.add_metric([], c.cleanup_runs)
            cleanup_errors.add_metric([], c.cleanup_errors)

        yield from (sessions, by_age, stuck, stuck_after, capacity, utilization, health, oldest)
        yield from (store_up, worker_up, last_run, build, created, removed, rejected, transitions)
        yield from (cleanup_runs, cleanup_errors)


class WithoutCreated(Collector):
    """Every family of `registry`, without its `_created` samples (see the module's docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            metric.samples = [sample for sample in metric.samples if sample.name != created]
            yield metric


class SidecarMetrics:
    """The sidecar's metrics in a private registry, plus the hooks the HTTP layer calls."""

    def __init__(
        self,
        manager: SessionManager,
        registry: CollectorRegistry | None = None,
        *,
        process_metrics: bool = True,
        store_name: str = "memory",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.store_name = StoreName(store_name)
        store = manager.store
        observed = store if isinstance(store, ObservedStore) else None
        self.registry.register(SessionCollector(manager, self.store_name))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.session_duration = Histogram(
            "sidecar_session_duration_seconds",
            "Seconds from a session's creation to the status change that finished it, by that "
            "status (completed or failed); once per session.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        for outcome in (GenerationStatus.COMPLETED, GenerationStatus.FAILED):
            self.session_duration.labels(outcome.value)
        self.http_duration = Histogram(
            "sidecar_http_request_duration_seconds",
            "Seconds from a request reaching the app to its answer being ready (sending the body "
            "not included), by method, URL rule and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self._http_children: dict[tuple[str, str, int], Histogram] = {}
        # Store call latency: only for a store that is timed, a shared one (see STORE_BUCKETS).
        self.store_duration: Histogram | None = None
        self._store_children: dict[str, Histogram] = {}
        if observed is not None:
            self.store_duration = Histogram(
                "sidecar_store_duration_seconds",
                "Seconds one call to the session store took, answered or not, by operation.",
                ["operation"],
                buckets=STORE_BUCKETS,
                registry=self.registry,
            )
            self._store_children = {op: self.store_duration.labels(op) for op in STORE_OPERATIONS}
            observed.listener = self._on_store_call
        # What /metrics renders: the registry above, less its _created samples.
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(WithoutCreated(self.registry))
        manager.register_session_callback(EventType.STATUS_CHANGED, self._on_status_changed)

    def _on_status_changed(self, event: SessionEvent) -> None:
        session = event.session
        # Only the first finish counts. The state machine never leaves a finished status
        # (recovery included), so this is a guard, not a filter that ever drops an event.
        if session.status in FINISHED and event.previous_status not in FINISHED:
            seconds = (session.updated_at - session.created_at).total_seconds()
            self.session_duration.labels(session.status.value).observe(seconds)

    def _on_store_call(self, operation: str, seconds: float) -> None:
        self._store_children[operation].observe(seconds)

    def init_route(self, method: str, route: str, status: int) -> None:
        """Create a route's latency series at zero, so it exists before the first request."""
        self.http_duration.labels(method, route, str(status))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one served request; `route` must be the URL rule, never the raw path."""
        key = (method, route, status)
        child = self._http_children.get(key)
        if child is None:
            # labels() validates and takes a lock on every call: look each child up only once.
            # The key space is bounded: methods are normalised and routes are URL rules.
            child = self._http_children[key] = self.http_duration.labels(method, route, str(status))
        child.observe(seconds)

    def render(
        self, accept: str | None, accept_encoding: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """The exposition body for this Accept header (OpenMetrics or text), gzipped if asked."""
        encoder, content_type = choose_encoder(well_formed_accept(accept))
        body = None
        if content_type in _UNDERSCORED_OPENMETRICS:
            # OpenMetrics 1.0.0 with the library's default escaping, underscores (what
            # Prometheus 2 asks for), rewrites every name character by character. For legacy
            # Prometheus names, which all of the sidecar's are, allow-utf-8 writes the same
            # lines, through the same public generate_latest: 8.6 -> 4.3 ms per render of the
            # sidecar's 519 lines (2026-12-03; the scrape targets of bench 1, 2, 8 and 10). A
            # name that is not legacy comes out quoted there; the negotiated encoder renders it.
            body = openmetrics.generate_latest(  # type: ignore[no-untyped-call]
                self._exposed, escaping=openmetrics.ALLOWUTF8
            )
            if any(quoted in body for quoted in _QUOTED_NAMES):
                body = None
        if body is None:
            body = encoder(self._exposed)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if wants_gzip(accept_encoding):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return body, headers
