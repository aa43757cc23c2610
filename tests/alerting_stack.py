"""A real alerting pipeline for the end-to-end tests: Prometheus -> Alertmanager -> a webhook.

Debian's Prometheus with the shipped rules and Debian's Alertmanager with the shipped example
configuration, on free loopback ports in temporary directories, and a webhook receiver served
here on 127.0.0.1. The tests start their own sidecars and hand their addresses to `run_stack`.

Only the test's copies are sped up, never the shipped files:
- alerts.yml: every `for: <N>m` becomes `for: <N>s` (a regex rewrite, checked to have changed
  every `for:` line), so the critical utilization alert fires after 5 s and the warning after
  15 s;
- prometheus.yml: scrapes and rule evaluations every second (scripts/demo.py's
  prometheus_config), the targets given, plus an `alerting` section naming this Alertmanager;
  the rules are loaded (a reload) once every target has been scraped, because Prometheus's
  first scrape comes about 5 s after its start, which no sped-up `for:` outlasts;
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import poll, require_binary
from prometheus_process import Prometheus, load_demo, run_alertmanager, run_prometheus

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "prometheus"
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


@contextmanager
def serve_webhook() -> Iterator[Webhook]:
    """A webhook receiver on a free loopback port, recording every payload; closed after."""
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


def shipped_runbook_url(alertname: str) -> str:
    """The runbook_url of `alertname` in the shipped alerts.yml."""
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    (url,) = [
        rule["annotations"]["runbook_url"]
        for group in groups
        for rule in group["rules"]
        if rule["alert"] == alertname
    ]
    assert isinstance(url, str)
    return url


@dataclass(frozen=True)
class Stack:
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


@contextmanager
def run_stack(
    targets: list[str], webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Alertmanager and Prometheus (the shipped files, sped up) scraping `targets` (host:port)."""
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", package="prometheus-alertmanager")
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
        config = load_demo().prometheus_config(targets[0], "1s", rules / "prometheus.yml")
        assert config["rule_files"] == [str(rules / "rules.yml"), str(rules / "alerts.yml")]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": list(targets)}]
        config["alerting"] = {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
            ]
        }
        # No rules until every target has been scraped once: Prometheus starts scraping about
        # 5 s after it starts (its first target sync), a delay the sped-up `for: 5s` of
        # SidecarDown would not outlast (absent(up) pages, then resolves). With the shipped
        # `for: 5m` that start-up gap never pages, so the test must not either.
        unruled = {**config, "rule_files": []}
        with (
            run_prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), unruled) as bare,
            requests.Session() as http,
        ):
            poll(
                lambda: len(bare.query(f'up{{job="{job["job_name"]}"}}')) == len(targets) or None,
                timeout=30,
                what="every target scraped once",
            )
            prom = bare.reload(config)
            assert {g["file"] for g in prom.data("/api/v1/rules")["groups"]} == set(
                config["rule_files"]
            )
            yield Stack(prom, alertmanager, http)


def wait_for_one_firing(webhook: Webhook, path: str, alertname: str) -> dict[str, Any]:
    """The one firing notification of `alertname` on `path`, polled with a deadline."""
    (firing,) = poll(
        lambda: webhook.notifications(path, alertname) or None,
        timeout=60,
        what=lambda: f"a {alertname} notification; received {webhook.received}",
    )
    return firing


def expect_inhibited_warning(stack: Stack, webhook: Webhook) -> None:
    """The warning fires in Prometheus (its rule does not look at the critical alert), is held
    back by Alertmanager's inhibit rule, and is never notified."""
    poll(
        lambda: [a for a in stack.prometheus.alerts(WARNING) if a["state"] == "firing"] or None,
        timeout=45,
        what=f"{WARNING} firing in Prometheus",
    )
    held = poll(
        lambda: (
            [a for a in stack.am_alerts(WARNING) if a["status"]["state"] == "suppressed"] or None
        ),
        timeout=15,
        what=f"{WARNING} suppressed in Alertmanager",
    )
    assert all(alert["status"]["inhibitedBy"] != [] for alert in held)
    # A notification of it would leave after group_wait (1 s); watch for three seconds more,
    # failing at once if one arrives.
    watch_until = time.monotonic() + 3.0

    def quiet_window_over() -> bool | None:
        assert webhook.about(WARNING) == []
        return True if time.monotonic() >= watch_until else None

    poll(quiet_window_over, timeout=10, what="the end of the quiet window")


def wait_for_resolved(webhook: Webhook, path: str, alertname: str) -> dict[str, Any]:
    """The resolved notification of `alertname` on `path`, polled with a deadline."""
    (done,) = poll(
        lambda: (
            [n for n in webhook.notifications(path, alertname) if n["status"] == "resolved"] or None
        ),
        timeout=30,
        what=lambda: f"the resolved {alertname}; received {webhook.received}",
    )
    return done


def expect_never_down(stack: Stack) -> None:
    """SidecarDown was never pending or firing in this Prometheus's life (ALERTS holds pending
    alerts too): every target was up from the first evaluation of the rules on."""
    seen = stack.prometheus.query('count_over_time(ALERTS{alertname="SidecarDown"}[1h])')
    assert seen == [], seen
