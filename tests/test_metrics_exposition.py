"""What a scrape carries: no `_created` series in either format, help texts that say what
the value is."""

from __future__ import annotations

import re

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from sidecar.core.clock import ManualClock
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest
from sidecar.metrics import SidecarMetrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# What Prometheus 2.45 (Debian 12) sends when it scrapes
PROMETHEUS = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@pytest.fixture
def busy_metrics(manager: SessionManager, clock: ManualClock) -> SidecarMetrics:
    """Metrics with every family observed at least once: a finished session, a request."""
    metrics = SidecarMetrics(manager)
    session = manager.create_session(GenerationRequest(story_text="A moth."))
    manager.update_session_status(session.session_id, "processing")
    clock.advance(3)
    manager.update_session_status(session.session_id, "completed")
    metrics.observe_request("GET", "/livez", 200, 0.001)
    return metrics


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
def test_no_family_carries_a_created_series(
    busy_metrics: SidecarMetrics, accept: str | None
) -> None:
    body, _ = busy_metrics.render(accept, None)
    parse = openmetrics_families if accept else text_string_to_metric_families
    families = list(parse(body.decode()))

    # the text format writes each _created as a family of its own, OpenMetrics as a sample
    names = {family.name for family in families}
    samples = {sample.name for family in families for sample in family.samples}
    events = [f.name for f in families if f.type in ("counter", "histogram")]
    assert len(events) >= 8
    assert not {name + "_created" for name in events} & (names | samples)
    assert "sidecar_session_duration_seconds" in names
    assert "sidecar_http_request_duration_seconds" in names
    assert "sidecar_sessions_created" in names


def test_the_registry_itself_still_has_the_histograms_samples(
    busy_metrics: SidecarMetrics,
) -> None:
    # Only the exposition leaves _created out; the histograms are observed as before.
    labels = {"outcome": "completed"}
    count = busy_metrics.registry.get_sample_value("sidecar_session_duration_seconds_count", labels)
    assert count == 1


def _help(metrics: SidecarMetrics) -> dict[str, str]:
    body, _ = metrics.render(None, None)
    return {f.name: f.documentation for f in text_string_to_metric_families(body.decode())}


def test_help_texts_say_exactly_what_the_value_is(busy_metrics: SidecarMetrics) -> None:
    helps = _help(busy_metrics)

    utilization = helps["sidecar_sessions_utilization_ratio"]
    assert "just after" not in utilization
    assert "until" in utilization
    assert "max_sessions" in utilization
    assert "seconds" in helps["sidecar_session_duration_seconds"].lower()
    assert "seconds" in helps["sidecar_http_request_duration_seconds"].lower()
    for name, text in helps.items():
        if name.startswith("sidecar_"):
            assert text.endswith("."), name
            assert len(text) >= 20, name


def _lines_without_values(body: bytes) -> list[str]:
    """Each line up to its value: the name and the labels, as the encoder wrote them."""
    return [
        line if line.startswith("#") else line.rsplit(" ", 1)[0]
        for line in body.decode().splitlines()
    ]


def test_every_exposed_name_and_label_name_is_a_legacy_prometheus_name(
    busy_metrics: SidecarMetrics,
) -> None:
    # The precondition of rendering default OpenMetrics with allow-utf-8 escaping (render()).
    body, _ = busy_metrics.render(OPENMETRICS, None)
    families = list(openmetrics_families(body.decode()))
    names = {f.name for f in families} | {s.name for f in families for s in f.samples}
    label_names = {k for f in families for s in f.samples for k in s.labels}
    assert len(names) > 30
    assert "status" in label_names
    assert [n for n in names if not LEGACY_NAME.fullmatch(n)] == []
    assert [n for n in label_names if not LEGACY_LABEL.fullmatch(n)] == []


@pytest.mark.parametrize("accept", [OPENMETRICS, "application/openmetrics-text", PROMETHEUS, None])
def test_the_scrape_writes_what_the_librarys_negotiated_encoder_writes(
    busy_metrics: SidecarMetrics, accept: str | None
) -> None:
    body, headers = busy_metrics.render(accept, None)
    encoder, content_type = choose_encoder(accept or "")
    theirs = encoder(busy_metrics._exposed)

    assert headers["Content-Type"] == content_type
    assert _lines_without_values(body) == _lines_without_values(theirs)
