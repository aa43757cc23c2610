"""The metrics layer: exact values from a manager driven directly, with an injected clock."""

from __future__ import annotations

import gzip
import subprocess

import pytest
from conftest import NoScanStore, session_in, started, transition_counts, with_store
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__
from sidecar.core.clock import ManualClock
from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.errors import InvalidTransitionError, SessionCapacityError
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationSession
from sidecar.metrics import SidecarMetrics, WithoutCreated

STATUSES = ["pending", "processing", "completed", "failed"]
BUCKETS = ["under_1h", "1h_to_6h", "6h_to_24h", "over_24h"]
STORY = GenerationRequest(story_text="A lighthouse keeper adopts a gull.", num_scenes=2)


@pytest.fixture
def metrics(manager: SessionManager) -> SidecarMetrics:
    return SidecarMetrics(manager, process_metrics=False)


def value(metrics: SidecarMetrics, name: str, **labels: str) -> float | None:
    store = metrics.store_name.value
    return metrics.registry.get_sample_value(name, with_store(name, labels, store))


def exposed(metrics: SidecarMetrics) -> CollectorRegistry:
    """The registry as /metrics exposes it: without _created series (sidecar.metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WithoutCreated(metrics.registry))
    return registry


def make(manager: SessionManager, status: str = "pending") -> GenerationSession:
    return session_in(manager, status, STORY)


def test_every_known_series_exists_at_zero_before_anything_happens(
    metrics: SidecarMetrics,
) -> None:
    for status in STATUSES:
        assert value(metrics, "sidecar_sessions", status=status) == 0
    for bucket in BUCKETS:
        assert value(metrics, "sidecar_sessions_by_age", age_bucket=bucket) == 0
    for reason in ["deleted", "expired", "evicted", "purged"]:
        assert value(metrics, "sidecar_sessions_removed_total", reason=reason) == 0
    assert value(metrics, "sidecar_sessions_rejected_total", reason="capacity") == 0
    assert transition_counts(metrics.registry) == {
        ("pending", "processing"): 0,
        ("pending", "failed"): 0,
        ("processing", "completed"): 0,
        ("processing", "failed"): 0,
    }
    for outcome in ["completed", "failed"]:
        assert value(metrics, "sidecar_session_duration_seconds_count", outcome=outcome) == 0
    assert value(metrics, "sidecar_health_state", state="healthy") == 1
    assert value(metrics, "sidecar_health_state", state="warning") == 0
    assert value(metrics, "sidecar_health_state", state="critical") == 0
    assert value(metrics, "sidecar_sessions_created_total") == 0
    assert value(metrics, "sidecar_sessions_stuck") == 0
    assert value(metrics, "sidecar_cleanup_runs_total") == 0
    assert value(metrics, "sidecar_cleanup_errors_total") == 0
    assert value(metrics, "sidecar_cleanup_last_run_timestamp_seconds") == 0
    assert value(metrics, "sidecar_build_info", version=__version__) == 1
    # an empty status has no oldest session, so no series rather than a made-up 0
    for status in STATUSES:
        assert (
            value(metrics, "sidecar_session_oldest_created_timestamp_seconds", status=status)
            is None
        )


def test_status_gauges_and_transition_counters_follow_changes(
    manager: SessionManager, metrics: SidecarMetrics
) -> None:
    make(manager, "pending")
    make(manager, "processing")
    make(manager, "completed")
    make(manager, "completed")
    make(manager, "failed")
    assert [value(metrics, "sidecar_sessions", status=s) for s in STATUSES] == [1, 1, 2, 1]
    assert value(metrics, "sidecar_sessions_created_total") == 5
    assert transition_counts(metrics.registry) == {
        ("pending", "processing"): 3,
        ("processing", "completed"): 2,
        ("pending", "failed"): 1,
        ("processing", "failed"): 0,
    }


def test_session_duration_is_observed_once_per_finish_with_its_outcome(
    manager: SessionManager, metrics: SidecarMetrics, clock: ManualClock
) -> None:
    session = make(manager, "processing")
    clock.advance(90)
    manager.update_session_status(session.session_id, "completed")
    other = make(manager, "pending")
    clock.advance(4)
    manager.update_session_status(other.session_id, "failed")
    # recovery of a finished session is refused, so it cannot be a second finish
    with pytest.raises(InvalidTransitionError):
        manager.recover_corrupted_session(session.session_id)
    assert value(metrics, "sidecar_session_duration_seconds_count", outcome="completed") == 1
    assert value(metrics, "sidecar_session_duration_seconds_sum", outcome="completed") == 90
    assert value(metrics, "sidecar_session_duration_seconds_count", outcome="failed") == 1
    assert value(metrics, "sidecar_session_duration_seconds_sum", outcome="failed") == 4
    assert (
        value(metrics, "sidecar_session_duration_seconds_bucket", outcome="completed", le="60.0")
        == 0
    )
    assert (
        value(metrics, "sidecar_session_duration_seconds_bucket", outcome="completed", le="120.0")
        == 1
    )


@pytest.mark.parametrize(
    ("age_seconds", "bucket"),
    [
        (0, "under_1h"),
        (3599, "under_1h"),
        (3600, "1h_to_6h"),
        (6 * 3600 - 1, "1h_to_6h"),
        (6 * 3600, "6h_to_24h"),
        (24 * 3600 - 1, "6h_to_24h"),
        (24 * 3600, "over_24h"),
        (30 * 3600, "over_24h"),
    ],
)
def test_age_buckets_move_with_the_clock(clock: ManualClock, age_seconds: int, bucket: str) -> None:
    # long expiry so the session survives to be counted in over_24h
    config = ManagerConfig(session_max_age_seconds=7 * 86400)
    manager = SessionManager(config, clock=clock)
    metrics = SidecarMetrics(manager, process_metrics=False)
    make(manager, "processing")
    clock.advance(age_seconds)
    counts = {b: value(metrics, "sidecar_sessions_by_age", age_bucket=b) for b in BUCKETS}
    assert counts == {b: (1 if b == bucket else 0) for b in BUCKETS}


def test_stuck_count_follows_the_threshold(
    manager: SessionManager, metrics: SidecarMetrics, clock: ManualClock
) -> None:
    first = make(manager, "processing")
    clock.advance(600)
    make(manager, "processing")
    clock.advance(1300)  # first: 1900 s without update, second: 1300 s
    assert value(metrics, "sidecar_stuck_after_seconds") == 1800
    assert value(metrics, "sidecar_sessions_stuck") == 1
    manager.reconfigure(stuck_after_seconds=1200)
    assert value(metrics, "sidecar_stuck_after_seconds") == 1200
    assert value(metrics, "sidecar_sessions_stuck") == 2
    # a read does not count as progress, an update does
    manager.get_session(first.session_id)
    assert value(metrics, "sidecar_sessions_stuck") == 2
    manager.update_session_progress(first.session_id, 1, 4, "drawing")
    assert value(metrics, "sidecar_sessions_stuck") == 1


def test_utilization_and_health_follow_capacity_changes(
    manager: SessionManager, metrics: SidecarMetrics
) -> None:
    for _ in range(6):
        make(manager)
    assert value(metrics, "sidecar_sessions_capacity") == 10
    assert value(metrics, "sidecar_sessions_utilization_ratio") == pytest.approx(0.6)
    assert value(metrics, "sidecar_health_state", state="healthy") == 1
    manager.reconfigure(max_sessions=8)  # 0.75
    assert value(metrics, "sidecar_sessions_utilization_ratio") == pytest.approx(0.75)
    assert [
        value(metrics, "sidecar_health_state", state=s) for s in ("healthy", "warning", "critical")
    ] == [0, 1, 0]
    manager.reconfigure(max_sessions=5)  # 1.2: above 1 until the next create evicts
    assert value(metrics, "sidecar_sessions_utilization_ratio") == pytest.approx(1.2)
    assert [
        value(metrics, "sidecar_health_state", state=s) for s in ("healthy", "warning", "critical")
    ] == [0, 0, 1]
    make(manager)
    assert value(metrics, "sidecar_sessions_utilization_ratio") == pytest.approx(1.0)
    assert value(metrics, "sidecar_sessions_removed_total", reason="evicted") == 2


def test_reject_policy_counts_rejections(clock: ManualClock) -> None:
    manager = SessionManager(
        ManagerConfig(max_sessions=2, capacity_policy=CapacityPolicy.REJECT), clock=clock
    )
    metrics = SidecarMetrics(manager, process_metrics=False)
    make(manager)
    make(manager)
    for _ in range(3):
        with pytest.raises(SessionCapacityError):
            make(manager)
    assert value(metrics, "sidecar_sessions_rejected_total", reason="capacity") == 3
    assert value(metrics, "sidecar_sessions_created_total") == 2
    assert value(metrics, "sidecar_sessions_removed_total", reason="evicted") == 0


def test_removals_are_counted_by_reason(
    manager: SessionManager, metrics: SidecarMetrics, clock: ManualClock
) -> None:
    doomed = make(manager)
    manager.remove_session(doomed.session_id)
    make(manager, "failed")
    clock.advance(3601)  # the failed one expires
    assert manager.run_cleanup() == 1
    for _ in range(10):
        make(manager)
    make(manager)  # the 11th create evicts the oldest pending
    make(manager, "completed")  # evicts again
    assert manager.cleanup_failed_sessions() == 0
    assert manager.force_cleanup_all() == 10
    removed = {
        r: value(metrics, "sidecar_sessions_removed_total", reason=r)
        for r in ("deleted", "expired", "evicted", "purged")
    }
    assert removed == {"deleted": 1, "expired": 1, "evicted": 2, "purged": 10}
    assert value(metrics, "sidecar_cleanup_runs_total") == 1
    assert value(metrics, "sidecar_cleanup_last_run_timestamp_seconds") == pytest.approx(
        clock.now().timestamp()
    )


def test_oldest_created_timestamp_per_status(
    manager: SessionManager, metrics: SidecarMetrics, clock: ManualClock
) -> None:
    first = make(manager, "pending")
    clock.advance(60)
    make(manager, "pending")
    second = make(manager, "processing")
    name = "sidecar_session_oldest_created_timestamp_seconds"
    assert value(metrics, name, status="pending") == first.created_at.timestamp()
    assert value(metrics, name, status="processing") == second.created_at.timestamp()
    assert value(metrics, name, status="completed") is None
    manager.remove_session(first.session_id)
    assert value(metrics, name, status="pending") == second.created_at.timestamp()


def test_cleanup_worker_up_reflects_the_thread(clock: ManualClock) -> None:
    manager = SessionManager(clock=clock)
    metrics = SidecarMetrics(manager, process_metrics=False)
    assert value(metrics, "sidecar_cleanup_worker_up") == 0
    started(manager)
    assert value(metrics, "sidecar_cleanup_worker_up") == 1
    manager.shutdown()
    assert value(metrics, "sidecar_cleanup_worker_up") == 0


def test_a_scrape_does_not_walk_the_sessions(clock: ManualClock) -> None:
    store = NoScanStore()
    manager = SessionManager(ManagerConfig(max_sessions=1000), clock=clock, store=store)
    metrics = SidecarMetrics(manager)
    for i in range(300):
        make(manager, STATUSES[i % 4])
        clock.advance(97)
    store.scans_allowed = store.listing_allowed = False
    body, _ = metrics.render(None, None)
    assert b'sidecar_sessions{status="completed",store="memory"} 75.0' in body
    store.scans_allowed = store.listing_allowed = True


def test_render_negotiates_openmetrics_text_and_gzip(metrics: SidecarMetrics) -> None:
    prometheus_accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    body, headers = metrics.render(prometheus_accept, None)
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, headers = metrics.render(None, None)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in headers
    zipped, headers = metrics.render(None, "gzip, deflate")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == body


ACCEPTS = [
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=underscores",
    "",
]


def populated(manager: SessionManager) -> SidecarMetrics:
    """Metrics with every kind of family filled in (no process metrics: they move between
    two renders)."""
    metrics = SidecarMetrics(manager, process_metrics=False)
    for status in STATUSES:
        make(manager, status)
    metrics.init_route("GET", "/api/v1/sessions/<session_id>", 200)
    metrics.observe_request("GET", "/api/v1/sessions/<session_id>", 404, 0.003)
    metrics.observe_request("other", "<unmatched>", 405, 0.0001)
    return metrics


@pytest.mark.parametrize("accept", ACCEPTS)
def test_render_gives_prometheus_clients_own_bytes_for_every_accept_header(
    manager: SessionManager, accept: str
) -> None:
    metrics = populated(manager)
    encoder, content_type = choose_encoder(accept)

    body, headers = metrics.render(accept, None)

    assert headers["Content-Type"] == content_type
    assert body == encoder(exposed(metrics))


@pytest.mark.parametrize("accept", ACCEPTS[:6])
def test_a_name_that_is_not_plain_is_escaped_as_prometheus_client_does(
    manager: SessionManager, accept: str
) -> None:
    metrics = populated(manager)
    odd = Gauge("sidecar_odd:ratio", "A colon.", ["pod.name"], registry=metrics.registry)
    odd.labels("a").set(1)
    encoder, _ = choose_encoder(accept)

    body, _ = metrics.render(accept, None)

    assert body == encoder(exposed(metrics))
    assert b"odd" in body


def test_the_default_registry_renders_as_openmetrics(manager: SessionManager) -> None:
    metrics = SidecarMetrics(manager)  # process, platform and gc collectors included
    accept = "application/openmetrics-text;version=1.0.0"

    body, _ = metrics.render(accept, None)

    families = {f.name for f in openmetrics_families(body.decode())}
    assert {"process_cpu_seconds", "python_info", "sidecar_sessions"} <= families


def test_metrics_live_in_a_private_registry(manager: SessionManager) -> None:
    metrics = SidecarMetrics(manager)
    assert isinstance(metrics.registry, CollectorRegistry)
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("sidecar_sessions_created_total") is None
    # the standard process, platform and gc collectors are registered on the private registry
    names = {family.name for family in metrics.registry.collect()}
    assert {"process_cpu_seconds", "python_info", "python_gc_objects_collected"} <= names


def test_a_second_collector_with_the_same_names_is_refused(manager: SessionManager) -> None:
    registry = CollectorRegistry()
    SidecarMetrics(manager, registry, process_metrics=False)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        SidecarMetrics(manager, registry, process_metrics=False)


def test_no_label_carries_a_session_id(manager: SessionManager, metrics: SidecarMetrics) -> None:
    ids = {make(manager, s).session_id for s in STATUSES}
    body, _ = metrics.render(None, None)
    text = body.decode()
    assert not any(session_id in text for session_id in ids)
    label_values = {
        v
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for v in sample.labels.values()
    }
    assert not label_values & ids


def test_exposition_passes_promtool_check_metrics(
    manager: SessionManager, clock: ManualClock, promtool: str
) -> None:
    metrics = SidecarMetrics(manager)
    metrics.init_route("GET", "/api/v1/sessions/<session_id>", 200)
    metrics.observe_request("POST", "/api/v1/sessions", 201, 0.002)
    for status in STATUSES:
        make(manager, status)
    clock.advance(120)
    body, _ = metrics.render(None, None)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize(
    ("accept_encoding", "zipped"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("gzip;q=0, identity", False),
        ("gzip; q=0.0", False),
        ("gzip;q=abc", False),
        ("gzip;q=2", False),
        ("identity", False),
        ("*", False),
        ("", False),
        (None, False),
    ],
)
def test_gzip_only_when_the_client_gives_it_a_weight_above_0(
    metrics: SidecarMetrics, accept_encoding: str | None, zipped: bool
) -> None:
    body, headers = metrics.render(None, accept_encoding)

    assert ("Content-Encoding" in headers) is zipped
    assert body.startswith(b"\x1f\x8b") is zipped
