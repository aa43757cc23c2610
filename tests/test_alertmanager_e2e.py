"""End to end, real processes: sidecar -> Prometheus -> Alertmanager -> a webhook on 127.0.0.1.

A real `sidecar serve` (capacity 20), Debian's Prometheus with the shipped rules and Debian's
Alertmanager with the shipped example configuration, both on free loopback ports in temporary
directories, and a webhook receiver this test serves. The test fills the sidecar to 95 % over
HTTP, sees exactly one firing SidecarSessionUtilizationCritical notification on the pager
receiver and none for the warning the inhibit rule holds back, then deletes the sessions and
sees the resolved notification.

Only the test's copies are sped up, never the shipped files:
- alerts.yml: every `for: <N>m` becomes `for: <N>s` (a regex rewrite, checked to have changed
  every `for:` line), so the critical alert fires after 5 s and the warning after 15 s;
- prometheus.yml: scrapes and rule evaluations every second (scripts/demo.py's
  prometheus_config), plus an `alerting` section naming this Alertmanager;
- alertmanager.yml: group_wait and group_interval of 1 s, the webhook URLs pointed at the
  receiver; routes, grouping, repeat_interval and the inhibit rule are as shipped.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import SidecarProcess, SidecarSpawner, poll, require_binary
from prometheus_process import Prometheus, load_demo, run_alertmanager, run_prometheus

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "prometheus"
CAPACITY = 20
FILL = 19  # 95 %: past the critical bound (90 %), not full, so nothing is evicted
CRITICAL = "SidecarSessionUtilizationCritical"
WARNING = "SidecarSessionUtilizationWarning"
_FOR_MINUTES = re.compile(r"^(\s*for: )(\d+)m$", re.M)


@dataclass
class Webhook:
    """Alertmanager webhook payloads received, by path (/pager, /ticket), in arrival order."""

    url: str
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def notifications(self, path: str, alertname: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                body
                for got, body in self.received
                if got == path and body["groupLabels"].get("alertname") == alertname
            ]

    def about(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [
                (path, body)
                for path, body in self.received
                if any(a["labels"]["alertname"] == alertname for a in body["alerts"])
            ]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    holder: list[Webhook] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook = holder[0]
            with hook.lock:
                hook.received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Webhook(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fast_alerts(text: str) -> str:
    """alerts.yml with every `for:` in minutes read as seconds; fails if one is missed."""
    rewritten, count = _FOR_MINUTES.subn(r"\g<1>\g<2>s", text)
    assert count == len(re.findall(r"^\s*for: ", text, re.M)) > 0, "a for: line not in minutes"
    return rewritten


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped example, its webhooks pointed at the test's receiver, its waits shortened."""
    config: dict[str, Any] = yaml.safe_load(
        (PROMETHEUS_DIR / "alertmanager.yml").read_text(encoding="utf-8")
    )
    assert {"group_wait", "group_interval"} <= set(config["route"])
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        (hook,) = receiver["webhook_configs"]
        hook["url"] = f"{webhook_url}/{receiver['name']}"
    return config


@dataclass(frozen=True)
class Stack:
    sidecar: SidecarProcess
    prometheus: Prometheus
    alertmanager: str
    http: requests.Session

    def am_alerts(self, alertname: str) -> list[dict[str, Any]]:
        with self.http.get(
            f"{self.alertmanager}/api/v2/alerts",
            params={"filter": f'alertname="{alertname}"', "inhibited": "true"},
            timeout=10,
        ) as response:
            response.raise_for_status()
            alerts: list[dict[str, Any]] = response.json()
        return alerts


@pytest.fixture(scope="module")
def stack(
    spawn_sidecar: SidecarSpawner, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", package="prometheus-alertmanager")
    sidecar = spawn_sidecar(max_sessions=CAPACITY)
    rules = tmp_path_factory.mktemp("rules")
    shutil.copy(PROMETHEUS_DIR / "rules.yml", rules / "rules.yml")
    (rules / "alerts.yml").write_text(
        fast_alerts((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8")),
        encoding="utf-8",
    )
    shutil.copy(PROMETHEUS_DIR / "prometheus.yml", rules / "prometheus.yml")

    with run_alertmanager(
        alertmanager_bin, tmp_path_factory.mktemp("alertmanager"), alertmanager_config(webhook.url)
    ) as alertmanager:
        target = sidecar.url.removeprefix("http://")
        config = load_demo().prometheus_config(target, "1s", rules / "prometheus.yml")
        assert config["rule_files"] == [str(rules / "rules.yml"), str(rules / "alerts.yml")]
        config["alerting"] = {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
            ]
        }
        with (
            run_prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), config) as prom,
            requests.Session() as http,
        ):
            yield Stack(sidecar, prom, alertmanager, http)


def test_the_test_copy_reads_every_for_duration_in_seconds() -> None:
    shipped = (PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8")
    fast = fast_alerts(shipped)
    assert "for: 5m" in shipped
    assert "for: 5m" not in fast
    assert re.findall(r"for: (\d+)m", shipped) == re.findall(r"for: (\d+)s", fast)
    with pytest.raises(AssertionError, match="not in minutes"):
        fast_alerts(shipped.replace("for: 5m", "for: 1h", 1))


def test_critical_utilization_pages_once_inhibits_the_warning_and_resolves(
    stack: Stack, webhook: Webhook
) -> None:
    base = f"{stack.sidecar.url}/api/v1/sessions"
    instance = stack.sidecar.url.removeprefix("http://")
    ids = []
    for _ in range(FILL):
        with stack.http.post(base, json={"story_text": "A fox finds a lantern."}) as response:
            assert response.status_code == 201, response.text
            ids.append(response.json()["session_id"])

    # Firing: the pager gets the critical alert once.
    (firing,) = poll(
        lambda: webhook.notifications("/pager", CRITICAL) or None,
        timeout=60,
        what=lambda: f"a {CRITICAL} notification; received {webhook.received}",
    )
    assert firing["receiver"] == "pager"
    assert firing["status"] == "firing"
    assert firing["groupLabels"] == {"alertname": CRITICAL, "job": "sidecar"}
    (alert,) = firing["alerts"]
    assert alert["labels"] == {
        "alertname": CRITICAL,
        "severity": "critical",
        "job": "sidecar",
        "instance": instance,
    }
    runbook_url = alert["annotations"]["runbook_url"]
    assert re.fullmatch(rf"https://\S+#{CRITICAL.lower()}", runbook_url)
    assert (
        runbook_url
        == yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))["groups"][0][
            "rules"
        ][0]["annotations"]["runbook_url"]
    )

    # The warning fires in Prometheus too (its rule does not look at the critical alert), and
    # Alertmanager holds it back by the inhibit rule.
    poll(
        lambda: [a for a in stack.prometheus.alerts(WARNING) if a["state"] == "firing"] or None,
        timeout=45,
        what=f"{WARNING} firing in Prometheus",
    )
    (held,) = poll(
        lambda: (
            [a for a in stack.am_alerts(WARNING) if a["status"]["state"] == "suppressed"] or None
        ),
        timeout=15,
        what=f"{WARNING} suppressed in Alertmanager",
    )
    assert held["status"]["inhibitedBy"] != []
    # A notification of it would leave after group_wait (1 s); watch for three seconds more,
    # failing at once if one arrives.
    watch_until = time.monotonic() + 3.0

    def quiet_window_over() -> bool | None:
        assert webhook.about(WARNING) == []
        return True if time.monotonic() >= watch_until else None

    poll(quiet_window_over, timeout=10, what="the end of the quiet window")
    assert len(webhook.notifications("/pager", CRITICAL)) == 1

    # Drained: the pager gets the resolved notification.
    for session_id in ids:
        with stack.http.delete(f"{base}/{session_id}") as response:
            assert response.status_code in {200, 204}, response.text
    resolved = poll(
        lambda: (
            [n for n in webhook.notifications("/pager", CRITICAL) if n["status"] == "resolved"]
            or None
        ),
        timeout=30,
        what=lambda: f"the resolved {CRITICAL}; received {webhook.received}",
    )
    (done,) = resolved
    assert [a["status"] for a in done["alerts"]] == ["resolved"]
    assert done["alerts"][0]["labels"] == alert["labels"]
    statuses = [n["status"] for n in webhook.notifications("/pager", CRITICAL)]
    assert statuses == ["firing", "resolved"]
