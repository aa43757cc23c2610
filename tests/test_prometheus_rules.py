"""The Prometheus rules and example config: promtool checks and unit tests, and their conventions.

promtool comes from the `promtool` fixture (conftest.py): under CI a missing promtool fails
these tests, elsewhere it skips them. The structural tests need no promtool.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "prometheus"
RULES = PROMETHEUS / "rules.yml"
ALERTS = PROMETHEUS / "alerts.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
README = ROOT / "README.md"
GENERATOR = ROOT / "deploy" / "generate.py"

# Alert -> severity, as issues 5 and 11 ask for them.
REQUIRED_ALERTS = {
    "SidecarSessionUtilizationCritical": "critical",
    "SidecarSessionUtilizationWarning": "warning",
    "SidecarSessionCapacityFullSoon": "warning",
    "SidecarSessionsEvicted": "warning",
    "SidecarSessionsStuck": "warning",
    "SidecarSessionFailureRatioHigh": "warning",
    "SidecarStoreDown": "critical",
    "SidecarCleanupWorkerDown": "critical",
    "SidecarDown": "critical",
}
# Issue 11: alerts about the store's sessions fire once per (job, store), however many replicas
# share the store; alerts about one process stay per (job, instance).
PER_INSTANCE = frozenset({"SidecarCleanupWorkerDown", "SidecarDown"})
PER_STORE = frozenset(REQUIRED_ALERTS) - PER_INSTANCE


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules_of(ALERTS)}


def recording_rules() -> dict[str, dict[str, Any]]:
    return {rule["record"]: rule for rule in rules_of(RULES)}


def unit_test_cases() -> list[dict[str, Any]]:
    return [case for path in UNIT_TESTS for case in load(path)["tests"]]


def load_generator() -> ModuleType:
    """deploy/generate.py as a module: it owns the runbook base URL and the anchor rule."""
    spec = importlib.util.spec_from_file_location("sidecar_deploy_generate", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runbook_anchors() -> set[str]:
    anchors: set[str] = load_generator().runbook_anchors(RUNBOOK)
    return anchors


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


# ---------------------------------------------------------------------------- promtool


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES), str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(recording_rules())} rules found" in result.stdout
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    names = [path.name for path in UNIT_TESTS]
    assert names == ["alerts_test.yml", "replicas_test.yml", "rules_test.yml"]
    result = run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS)


def test_example_config_passes_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_bearer_token_variant_of_the_example_config_is_valid(promtool: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n", encoding="utf-8")
    text = CONFIG.read_text(encoding="utf-8")
    commented = re.compile(
        r"^(\s*)# (authorization:|  type: Bearer|  credentials_file: )(.*)$", re.M
    )
    assert len(commented.findall(text)) == 3
    uncommented = commented.sub(
        lambda m: m[1] + m[2] + (str(token) if m[2].endswith("credentials_file: ") else m[3]),
        text,
    )
    for name in ("rules.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    config = tmp_path / "prometheus.yml"
    config.write_text(uncommented, encoding="utf-8")

    result = run(promtool, "check", "config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert load(config)["scrape_configs"][0]["authorization"] == {
        "type": "Bearer",
        "credentials_file": str(token),
    }


def test_promtool_unit_tests_catch_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    # Guards against tests that pass whatever the rules do.
    for name in ("rules.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    (tmp_path / "tests").mkdir()
    original = (PROMETHEUS / "tests" / "alerts_test.yml").read_text(encoding="utf-8")
    broken = original.replace("severity: critical", "severity: warning", 1)
    assert broken != original
    (tmp_path / "tests" / "alerts_test.yml").write_text(broken, encoding="utf-8")

    result = run(promtool, "test", "rules", str(tmp_path / "tests" / "alerts_test.yml"))

    assert result.returncode == 1
    assert "FAILED" in result.stdout + result.stderr


def test_the_replicas_unit_test_catches_alerts_that_fire_per_replica(
    promtool: str, tmp_path: Path
) -> None:
    # The shipped rules with the utilization figure and the store-down alert per instance,
    # as they were before issue 11: replicas_test.yml must see one alert per replica and fail.
    rules = RULES.read_text(encoding="utf-8")
    per_instance = rules.replace(
        "expr: max by (job, store) (last_over_time(sidecar_sessions_utilization_ratio[2m]))",
        "expr: max by (job, instance, store) (sidecar_sessions_utilization_ratio)",
    )
    text = ALERTS.read_text(encoding="utf-8")
    down_per_instance = text.replace(
        "expr: count by (job, store) (sidecar_store_up == 0)", "expr: sidecar_store_up == 0"
    )
    assert per_instance != rules
    assert down_per_instance != text
    (tmp_path / "rules.yml").write_text(per_instance, encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(down_per_instance, encoding="utf-8")
    (tmp_path / "tests").mkdir()
    shutil.copy(PROMETHEUS / "tests" / "replicas_test.yml", tmp_path / "tests")

    result = run(promtool, "test", "rules", str(tmp_path / "tests" / "replicas_test.yml"))

    assert result.returncode == 1
    output = result.stdout + result.stderr
    for alertname in ("SidecarSessionUtilizationCritical", "SidecarStoreDown"):
        assert f"alertname: {alertname}" in output
    assert 'instance="10.0.0.3:8000"' in output


# ---------------------------------------------------------------------------- alerts


def test_the_alerts_issue_5_asks_for_exist_with_their_severity() -> None:
    severities = {name: rule["labels"]["severity"] for name, rule in alerts().items()}
    assert severities == REQUIRED_ALERTS


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_names_are_camel_case_with_the_sidecar_prefix(name: str) -> None:
    assert re.fullmatch(r"Sidecar(?:[A-Z][a-z0-9]*)+", name)


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_annotations_follow_the_mixin_conventions(name: str) -> None:
    annotations = alerts()[name]["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].endswith(".")
    assert "{{" not in annotations["summary"]
    key = "store" if name in PER_STORE else "instance"
    assert f"$labels.{key}" in annotations["description"]
    assert "$value" in annotations["description"]


@pytest.mark.parametrize("name", sorted(PER_STORE))
def test_store_alerts_are_keyed_by_job_and_store(name: str) -> None:
    # Each reads a store: recording rule or aggregates by (job, store): never one series per
    # replica, never the instance label.
    expr = alerts()[name]["expr"]
    groupings = re.findall(r"\bby \(([^)]*)\)", expr)
    store_rules = re.findall(r"\bstore:sidecar_\w+:\w+", expr)
    assert groupings or store_rules, name
    assert all(g.replace(" ", "") == "job,store" for g in groupings), name
    assert all(name in recording_rules() for name in store_rules), expr
    assert "instance" not in expr, name


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_runbook_url_is_the_base_url_and_the_alerts_own_runbook_section(name: str) -> None:
    url = alerts()[name]["annotations"]["runbook_url"]
    assert url == f"{load_generator().RUNBOOK_BASE_URL}#{name.lower()}"
    assert re.fullmatch(r"https://[^\s#]+#[a-z0-9_-]+", url)
    assert name.lower() in runbook_anchors()


def test_another_base_url_gives_every_alert_an_absolute_link_to_an_existing_anchor() -> None:
    generator = load_generator()
    base = "https://wiki.example.org/ops/session-sidecar/runbook"
    rewritten = yaml.safe_load(generator.generate(base)[ALERTS])
    links = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for group in rewritten["groups"]
        for rule in group["rules"]
    }
    assert set(links) == set(REQUIRED_ALERTS)
    for name, link in links.items():
        prefix, anchor = link.split("#")
        assert prefix == base, name
        assert anchor == name.lower()
        assert anchor in runbook_anchors()


@pytest.mark.parametrize(
    ("base", "problem"),
    [
        ("docs/runbook.md", "absolute http(s) URL"),
        ("https://wiki.example.org/runbook#top", "without '#'"),
    ],
)
def test_a_relative_or_anchored_base_url_is_refused(base: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        load_generator().generate(base)


def test_an_alert_without_a_runbook_section_is_refused() -> None:
    generator = load_generator()
    text = ALERTS.read_text(encoding="utf-8")
    renamed = text.replace("- alert: SidecarDown", "- alert: SidecarGone")
    assert renamed != text
    with pytest.raises(ValueError, match="no section SidecarGone"):
        generator.with_runbook_links(renamed, generator.RUNBOOK_BASE_URL, runbook_anchors())


def test_every_runbook_section_for_an_alert_has_meaning_confirmation_and_action() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    by_title = {section.splitlines()[0].strip(): section for section in sections}
    for name in REQUIRED_ALERTS:
        section = by_title[name]
        assert "### What it means" in section
        assert "### How to confirm" in section
        assert "### What to do" in section
        assert "curl " in section


def test_the_warning_yields_to_the_critical_alert_by_alertmanager_inhibition_alone() -> None:
    # One mechanism: Alertmanager's inhibit rule, not an `unless ALERTS{...}` in the rule.
    assert "ALERTS" not in alerts()["SidecarSessionUtilizationWarning"]["expr"]
    (inhibit,) = load(PROMETHEUS / "alertmanager.yml")["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="SidecarSessionUtilizationCritical"']
    assert inhibit["target_matchers"] == ['alertname="SidecarSessionUtilizationWarning"']


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in unit_test_cases():
        for check in case.get("alert_rule_test", []):
            expected = check["exp_alerts"]
            if expected == []:
                silent.add(check["alertname"])
                continue
            for alert in expected:
                assert {"severity", "job"} <= set(alert["exp_labels"]), check
                if check["alertname"] in PER_STORE:
                    assert "store" in alert["exp_labels"], check
                    assert "instance" not in alert["exp_labels"], check
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
            firing.add(check["alertname"])
    assert firing == set(REQUIRED_ALERTS)
    assert silent == set(REQUIRED_ALERTS)


def test_sidecar_down_watches_the_job_of_the_example_scrape_config() -> None:
    jobs = [scrape["job_name"] for scrape in load(CONFIG)["scrape_configs"]]
    assert jobs == ["sidecar"]
    expr = alerts()["SidecarDown"]["expr"]
    assert expr == 'up{job="sidecar"} == 0 or absent(up{job="sidecar"})'
    assert 'job="sidecar"' in RUNBOOK.read_text(encoding="utf-8")


def test_example_config_loads_both_rule_files_by_relative_path() -> None:
    config = load(CONFIG)
    assert config["rule_files"] == ["rules.yml", "alerts.yml"]
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]


def test_readme_alert_table_lists_every_alert_with_its_severity() -> None:
    rows = re.findall(
        r"^\| `(Sidecar\w+)` \| (critical|warning) \|", README.read_text(encoding="utf-8"), re.M
    )
    assert dict(rows) == REQUIRED_ALERTS


# ---------------------------------------------------------------------------- recording rules


def test_recording_rules_are_named_level_metric_operations() -> None:
    for name in recording_rules():
        level, metric, operations = name.split(":")
        assert level in {"instance", "store"}, name
        assert metric.startswith("sidecar_"), name
        assert re.fullmatch(r"[a-z0-9_]+", operations), name


def test_recording_rules_keep_the_labels_of_their_level() -> None:
    # store: rules keep job and store (one series per store); instance: rules job and instance.
    for name, rule in recording_rules().items():
        level = name.split(":")[0]
        groupings = re.findall(r"\bby \(([^)]*)\)", rule["expr"])
        for grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")}
            assert {"job", level} <= labels, name
            if level == "store":
                assert labels == {"job", "store"}, name


def test_counters_are_attributed_to_their_store_by_one_join() -> None:
    # Counters carry no store label: each store: rule over one joins the store of every
    # instance seen in its window (15 minutes at most), so a replaced replica still counts.
    join = "* on (job, instance) group_left (store) instance:sidecar_store:seen15m"
    rules = recording_rules()
    assert (
        "last_over_time(sidecar_store_up[15m])" in rules["instance:sidecar_store:seen15m"]["expr"]
    )
    windows = {
        w for rule in rules.values() for w in re.findall(r"_total[^\]]*\[(\d+)m\]", rule["expr"])
    }
    assert windows
    assert all(int(w) <= 15 for w in windows)
    for name, rule in rules.items():
        if "_total" in rule["expr"]:
            assert name.startswith("store:"), name
            assert join in rule["expr"], name


def test_every_recording_rule_has_an_expression_test() -> None:
    tested = {
        check["expr"] for case in unit_test_cases() for check in case.get("promql_expr_test", [])
    }
    assert set(recording_rules()) <= tested


def test_every_prometheus_yaml_file_parses() -> None:
    paths = sorted(PROMETHEUS.rglob("*.yml"))
    assert len(paths) == 7
    for path in paths:
        assert isinstance(load(path), dict), path
