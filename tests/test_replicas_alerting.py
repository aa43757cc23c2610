"""End to end, real processes: three replicas on one Redis store page once, and the dashboard
shows the store's figures once (issue 11, issue 15 item 2).

A real redis-server (tests/redis_server.py), THREE real `sidecar serve` on it (same store URL
and key prefix, no SIDECAR_STORE_NAME: the default label, which the three must agree on), and
the pipeline of alerting_stack.py: Debian's Prometheus with the shipped rules scraping all
three, Debian's Alertmanager with the shipped alertmanager.yml, a webhook receiver on
127.0.0.1. Only the test copies are sped up (alerts.yml: `for: <N>m` read as `<N>s`;
alertmanager.yml: group_wait and group_interval 1 s, webhook URLs pointed at the receiver;
see alerting_stack.py). The shipped rules and grouping are what make it one notification.

The test fills the store to 95 % with creates spread over the three replicas and sees exactly
ONE firing SidecarSessionUtilizationCritical notification holding ONE alert, keyed by the
store, with the shipped absolute runbook_url; the warning fires in Prometheus but is
inhibited; while full, the dashboard's state panels evaluated against this Prometheus show
19 sessions and a capacity of 20 for the store (not 3 x); deletes spread over the replicas
drain it and exactly one resolved notification follows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from alerting_stack import (
    CRITICAL,
    Stack,
    Webhook,
    expect_inhibited_warning,
    expect_never_down,
    run_stack,
    serve_webhook,
    shipped_runbook_url,
    wait_for_one_firing,
    wait_for_resolved,
)
from conftest import SidecarProcess, SidecarSpawner, poll
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer
from test_dashboards import OVERVIEW, panels
from test_e2e_prometheus import interpolate, resolve_variables

pytestmark = pytest.mark.process

REPLICAS = 3
CAPACITY = 20
FILL = 19  # 95 %: past the critical bound (90 %), not full, so nothing is evicted
TIMEOUT = 10


def store_labels(url: str) -> set[str]:
    """Every `store` label value the sidecar at `url` exports."""
    with requests.get(f"{url}/metrics", timeout=TIMEOUT) as response:
        response.raise_for_status()
        text = response.text
    return {
        sample.labels["store"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "store" in sample.labels
    }


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    with serve_webhook() as hook:
        yield hook


@pytest.fixture(scope="module")
def replicas(spawn_sidecar: SidecarSpawner, redis_server: RedisServer) -> list[SidecarProcess]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return [
        spawn_sidecar(store=redis_server.url, store_prefix=prefix, max_sessions=CAPACITY)
        for _ in range(REPLICAS)
    ]


@pytest.fixture(scope="module")
def store(replicas: list[SidecarProcess]) -> str:
    """The one store label the three replicas share (the default for a Redis store)."""
    (label,) = set.union(*(store_labels(r.url) for r in replicas))
    assert label.startswith("redis:127.0.0.1:")
    return label


@pytest.fixture(scope="module")
def stack(
    replicas: list[SidecarProcess], webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    targets = [r.url.removeprefix("http://") for r in replicas]
    with run_stack(targets, webhook, tmp_path_factory) as stack:
        # all three scraped before anything is filled, so each replica's view is in the rules
        poll(
            lambda: len(stack.prometheus.query("sidecar_sessions_capacity")) == REPLICAS or None,
            timeout=30,
            what="the three replicas scraped",
        )
        yield stack


def state_panel_values(stack: Stack) -> dict[tuple[str, str], list[float]]:
    """The instant values of the dashboard's held/capacity and by-status panels, evaluated by
    this Prometheus with every variable at its default (All), as Grafana would ask."""
    dashboard: dict[str, Any] = json.loads(OVERVIEW.read_text(encoding="utf-8"))
    values = resolve_variables(dashboard, stack.prometheus)
    wanted = {"Sessions held / capacity", "Sessions by status"}
    found: dict[tuple[str, str], list[float]] = {}
    for panel in panels(dashboard):
        if panel["title"] not in wanted:
            continue
        for target in panel["targets"]:
            expr = interpolate(target["expr"], values)
            if panel["title"] == "Sessions by status" and target["refId"] == "A":
                expr = f"sum({expr})"  # the stack's height: all statuses
            found[(panel["title"], target["refId"])] = [
                float(series["value"][1]) for series in stack.prometheus.query(expr)
            ]
    assert len(found) == 4, found
    return found


def test_three_replicas_of_one_store_page_once_show_once_and_resolve_once(
    replicas: list[SidecarProcess], store: str, stack: Stack, webhook: Webhook
) -> None:
    ids: list[str] = []
    for n in range(FILL):
        base = f"{replicas[n % REPLICAS].url}/api/v1/sessions"
        with stack.http.post(base, json={"story_text": "A fox finds a lantern."}) as response:
            assert response.status_code == 201, response.text
            ids.append(response.json()["session_id"])

    # Firing: one notification, one alert in it, keyed by the store (no instance).
    firing = wait_for_one_firing(webhook, "/pager", CRITICAL)
    assert firing["groupLabels"] == {"alertname": CRITICAL, "job": "sidecar", "store": store}
    (alert,) = firing["alerts"]
    assert alert["labels"] == {
        "alertname": CRITICAL,
        "severity": "critical",
        "job": "sidecar",
        "store": store,
    }
    assert alert["annotations"]["runbook_url"] == shipped_runbook_url(CRITICAL)
    assert alert["annotations"]["runbook_url"].startswith("https://")
    assert len(stack.prometheus.alerts(CRITICAL)) == 1

    # While the store is full, the dashboard shows its figures once, not once per replica.
    shown = state_panel_values(stack)
    assert shown == {
        ("Sessions held / capacity", "A"): [FILL],
        ("Sessions held / capacity", "B"): [CAPACITY],
        ("Sessions by status", "A"): [FILL],
        ("Sessions by status", "B"): [CAPACITY],
    }

    # The warning fires in Prometheus, once, and is inhibited; by the end of that wait (15 s
    # and a quiet window, at group_interval 1 s) any second critical notification had come.
    expect_inhibited_warning(stack, webhook)
    assert len(webhook.notifications("/pager", CRITICAL)) == 1
    paged = [
        body["groupLabels"]["alertname"] for path, body in webhook.received if path == "/pager"
    ]
    assert paged == [CRITICAL]

    # Drained through all three: one resolved notification.
    for n, session_id in enumerate(ids):
        url = f"{replicas[n % REPLICAS].url}/api/v1/sessions/{session_id}"
        with stack.http.delete(url) as response:
            assert response.status_code in {200, 204}, response.text
    done = wait_for_resolved(webhook, "/pager", CRITICAL)
    assert [a["labels"] for a in done["alerts"]] == [alert["labels"]]
    statuses = [n["status"] for n in webhook.notifications("/pager", CRITICAL)]
    assert statuses == ["firing", "resolved"]
    expect_never_down(stack)
