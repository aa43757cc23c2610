"""End to end, real processes: sidecar -> Prometheus -> Alertmanager -> a webhook on 127.0.0.1.

A real `sidecar serve` (capacity 20, memory mode: its own store) and the pipeline of
alerting_stack.py (Debian's Prometheus with the shipped rules, Debian's Alertmanager with the
shipped example configuration, only their test copies sped up; see that module). The test
fills the sidecar to 95 % over HTTP, sees exactly one firing SidecarSessionUtilizationCritical
notification on the pager receiver, keyed by the sidecar's store, and none for the warning
the inhibit rule holds back, then deletes the sessions and sees the resolved notification.
Several replicas on one store: test_replicas_alerting.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from alerting_stack import (
    CRITICAL,
    PROMETHEUS_DIR,
    Stack,
    Webhook,
    expect_inhibited_warning,
    expect_never_down,
    fast_alerts,
    run_stack,
    serve_webhook,
    shipped_runbook_url,
    wait_for_one_firing,
    wait_for_resolved,
)
from conftest import SidecarProcess, SidecarSpawner, memory_store_name

pytestmark = pytest.mark.process

CAPACITY = 20
FILL = 19  # 95 %: past the critical bound (90 %), not full, so nothing is evicted


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    with serve_webhook() as hook:
        yield hook


@pytest.fixture(scope="module")
def sidecar(spawn_sidecar: SidecarSpawner) -> SidecarProcess:
    return spawn_sidecar(max_sessions=CAPACITY)


@pytest.fixture(scope="module")
def stack(
    sidecar: SidecarProcess, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with run_stack([sidecar.url.removeprefix("http://")], webhook, tmp_path_factory) as stack:
        yield stack


def test_the_test_copy_reads_every_for_duration_in_seconds() -> None:
    shipped = (PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8")
    fast = fast_alerts(shipped)
    assert "for: 5m" in shipped
    assert "for: 5m" not in fast
    assert re.findall(r"for: (\d+)m", shipped) == re.findall(r"for: (\d+)s", fast)
    with pytest.raises(AssertionError, match="not in minutes"):
        fast_alerts(shipped.replace("for: 5m", "for: 1h", 1))


def test_critical_utilization_pages_once_inhibits_the_warning_and_resolves(
    sidecar: SidecarProcess, stack: Stack, webhook: Webhook
) -> None:
    base = f"{sidecar.url}/api/v1/sessions"
    store = memory_store_name(sidecar.url)
    ids = []
    for _ in range(FILL):
        with stack.http.post(base, json={"story_text": "A fox finds a lantern."}) as response:
            assert response.status_code == 201, response.text
            ids.append(response.json()["session_id"])

    # Firing: the pager gets the critical alert once, keyed by the sidecar's own store.
    firing = wait_for_one_firing(webhook, "/pager", CRITICAL)
    assert firing["receiver"] == "pager"
    assert firing["status"] == "firing"
    assert firing["groupLabels"] == {"alertname": CRITICAL, "job": "sidecar", "store": store}
    (alert,) = firing["alerts"]
    assert alert["labels"] == {
        "alertname": CRITICAL,
        "severity": "critical",
        "job": "sidecar",
        "store": store,
    }
    runbook_url = alert["annotations"]["runbook_url"]
    assert re.fullmatch(rf"https://\S+#{CRITICAL.lower()}", runbook_url)
    assert runbook_url == shipped_runbook_url(CRITICAL)

    expect_inhibited_warning(stack, webhook)
    assert len(webhook.notifications("/pager", CRITICAL)) == 1

    # Drained: the pager gets the resolved notification.
    for session_id in ids:
        with stack.http.delete(f"{base}/{session_id}") as response:
            assert response.status_code in {200, 204}, response.text
    done = wait_for_resolved(webhook, "/pager", CRITICAL)
    assert [a["status"] for a in done["alerts"]] == ["resolved"]
    assert done["alerts"][0]["labels"] == alert["labels"]
    statuses = [n["status"] for n in webhook.notifications("/pager", CRITICAL)]
    assert statuses == ["firing", "resolved"]
    expect_never_down(stack)
