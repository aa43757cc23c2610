"""The example Alertmanager configuration: amtool accepts it and routes each severity as documented.

amtool comes from the `amtool` fixture (conftest.py): under CI a missing amtool fails these
tests, elsewhere it skips them. The end-to-end behaviour (grouping, inhibition, resolved
notifications) is in test_alertmanager_e2e.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "prometheus" / "alertmanager.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def receiver_of(amtool: str, config: Path, *labels: str) -> str:
    result = run(amtool, "config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_the_example_config_passes_amtool_check_config(amtool: str) -> None:
    result = run(amtool, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "1 inhibit rules" in result.stdout
    assert "2 receivers" in result.stdout


def test_amtool_check_config_rejects_a_route_to_an_unknown_receiver(
    amtool: str, tmp_path: Path
) -> None:
    text = CONFIG.read_text(encoding="utf-8")
    broken = text.replace("receiver: pager", "receiver: pagr", 1)
    assert broken != text
    config = tmp_path / "alertmanager.yml"
    config.write_text(broken, encoding="utf-8")

    result = run(amtool, "check-config", str(config))

    assert result.returncode != 0
    assert "pagr" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("severity", "receiver"), [("critical", "pager"), ("warning", "ticket"), ("info", "ticket")]
)
def test_each_severity_goes_to_its_receiver(amtool: str, severity: str, receiver: str) -> None:
    labels = ("alertname=SidecarDown", "job=sidecar", f"severity={severity}")
    assert receiver_of(amtool, CONFIG, *labels) == receiver


def test_every_shipped_alert_is_routed_by_its_severity(amtool: str) -> None:
    expected = {"critical": "pager", "warning": "ticket"}
    for group in load(ALERTS)["groups"]:
        for rule in group["rules"]:
            severity = rule["labels"]["severity"]
            labels = (f"alertname={rule['alert']}", "job=sidecar", f"severity={severity}")
            assert receiver_of(amtool, CONFIG, *labels) == expected[severity], rule["alert"]


def test_grouping_inhibition_and_resolved_notifications_are_configured() -> None:
    config = load(CONFIG)
    # One notification per alert, job and store: replicas sharing a store are one problem.
    assert config["route"]["group_by"] == ["alertname", "job", "store"]
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["equal"] == ["job", "store"]
    hooks = [hook for r in config["receivers"] for hook in r["webhook_configs"]]
    assert len(hooks) == 2
    assert all(hook["send_resolved"] is True for hook in hooks)
    # Placeholders an operator replaces; nothing in the example points at a real service.
    assert all(".example.com/" in hook["url"] for hook in hooks)
