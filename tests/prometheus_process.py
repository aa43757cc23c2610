"""Real Prometheus and Alertmanager processes for the end-to-end tests, and their HTTP APIs.

Both log `msg="Listening on" address=127.0.0.1:PORT` once they listen, so each is started on
port 0 (the kernel picks a free one) and the test reads the port from its log.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import requests
import yaml
from conftest import ChildProcess, wait_for_200

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r'msg="Listening on" address=(127\.0\.0\.1:\d+)')


def load_demo() -> ModuleType:
    """scripts/demo.py as a module: its prometheus_config is what the test Prometheus runs with."""
    spec = importlib.util.spec_from_file_location("sidecar_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    config: dict[str, Any]
    config_file: Path
    http: requests.Session

    def api(self, path: str, **params: str | float) -> dict[str, Any]:
        """The whole answer of an API call, errors included."""
        with self.http.get(self.url + path, params=params, timeout=10) as response:
            body: dict[str, Any] = response.json()
        return body

    def data(self, path: str, **params: str | float) -> Any:
        body = self.api(path, **params)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant vector at the present time."""
        data = self.data("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def rule(self, name: str) -> dict[str, Any]:
        groups = self.data("/api/v1/rules")["groups"]
        rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"] if r["name"] == name]
        (rule,) = rules
        return rule

    def alerts(self, name: str) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.data("/api/v1/alerts")["alerts"]
        return [alert for alert in alerts if alert["labels"]["alertname"] == name]

    def reload(self, config: dict[str, Any]) -> Prometheus:
        """This Prometheus running `config` instead: the file rewritten, then /-/reload (which
        answers 200 once the new configuration, rules included, is applied)."""
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        with self.http.post(f"{self.url}/-/reload", timeout=30) as response:
            assert response.status_code == 200, response.text
        return replace(self, config=config)


@contextmanager
def listening(args: list[str], log: Path) -> Iterator[str]:
    """Start `args`, yield the loopback host:port it logs that it listens on; stop it after."""
    child = ChildProcess.start(args, log=log)
    try:
        yield child.wait_for_line(LISTENING, timeout=30).group(1)
    finally:
        child.stop()


@contextmanager
def run_prometheus(binary: str, workdir: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    """A Prometheus with `config` (written to workdir), ready, on a free loopback port."""
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    args = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        # Port 0: the kernel picks a free one and Prometheus logs it (at level info, to the
        # log file, which keeps the test's output quiet).
        "--web.listen-address=127.0.0.1:0",
        "--log.level=info",
        # POST /-/reload, for Prometheus.reload (the port is on loopback, for this test only).
        "--web.enable-lifecycle",
    ]
    with listening(args, workdir / "prometheus.log") as address:
        wait_for_200(f"http://{address}/-/ready", timeout=30)
        with requests.Session() as http:
            yield Prometheus(f"http://{address}", config, config_file, http)


@contextmanager
def run_alertmanager(binary: str, workdir: Path, config: dict[str, Any]) -> Iterator[str]:
    """An Alertmanager with `config`, ready, on a free loopback port; yields its base URL."""
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    args = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'data'}",
        "--web.listen-address=127.0.0.1:0",
        # No gossip: it would listen on every interface at :9094.
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    with listening(args, workdir / "alertmanager.log") as address:
        wait_for_200(f"http://{address}/-/ready", timeout=30)
        yield f"http://{address}"
