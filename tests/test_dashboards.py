"""The Grafana dashboards: the committed JSON is build.py's output, and it is fit to provision."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import STATE_GAUGES

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
OVERVIEW = DASHBOARD_DIR / "sidecar-overview.json"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}


def load_builder() -> ModuleType:
    """grafana/build.py as a module (grafana/ is not a package)."""
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_builder()


@pytest.fixture(scope="module")
def overview() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OVERVIEW.read_text(encoding="utf-8"))
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but the rows."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, name
    return found[0]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- built as code


def test_committed_json_is_the_builders_output(builder: ModuleType) -> None:
    committed = sorted(path.name for path in DASHBOARD_DIR.glob("*.json"))
    assert committed == sorted(builder.DASHBOARDS)
    for filename, build in builder.DASHBOARDS.items():
        on_disk = json.loads((DASHBOARD_DIR / filename).read_text(encoding="utf-8"))
        assert on_disk == build(), f"{filename} is stale: run `make dashboards` and commit it"


def test_committed_json_is_byte_for_byte_what_build_writes(builder: ModuleType) -> None:
    # Same content is checked above; this keeps diffs of the committed file reviewable.
    assert OVERVIEW.read_text(encoding="utf-8") == builder.render(builder.build_overview())


def test_build_writes_the_dashboards_directory(
    builder: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder, "DASHBOARD_DIR", tmp_path)
    assert builder.main() == 0
    assert (tmp_path / "sidecar-overview.json").read_text(encoding="utf-8") == (
        OVERVIEW.read_text(encoding="utf-8")
    )


# ---------------------------------------------------------------------------- structure


def test_schema_version_uid_and_title_are_stable(overview: dict[str, Any]) -> None:
    assert overview["schemaVersion"] == 42
    assert overview["uid"] == "sidecar-overview"
    assert overview["title"] == "Session sidecar / Overview"


def test_datasource_is_a_prometheus_datasource_variable(overview: dict[str, Any]) -> None:
    datasource = variable(overview, "datasource")
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"


def test_no_import_time_datasource_input_anywhere() -> None:
    text = OVERVIEW.read_text(encoding="utf-8")
    assert "${DS_PROMETHEUS}" not in text
    assert "DS_PROMETHEUS" not in text
    assert "__inputs" not in json.loads(text)


@pytest.mark.parametrize("name", ["job", "store", "instance"])
def test_job_store_and_instance_are_multi_select_variables_with_all(
    overview: dict[str, Any], name: str
) -> None:
    scope = variable(overview, name)
    assert scope["type"] == "query"
    assert scope["multi"] is True
    assert scope["includeAll"] is True
    assert scope["datasource"] == DATASOURCE_REF
    assert scope["query"].startswith("label_values(sidecar_")
    assert scope["query"].endswith(f", {name})")


def test_store_choices_follow_the_jobs_and_instance_choices_the_stores(
    overview: dict[str, Any],
) -> None:
    names = [v["name"] for v in overview["templating"]["list"]]
    assert names == ["datasource", "job", "store", "instance"]
    assert variable(overview, "job")["query"] == "label_values(sidecar_build_info, job)"
    # sidecar_store_up carries `store` and is exported while the store is down too
    assert variable(overview, "store")["query"] == (
        'label_values(sidecar_store_up{job=~"$job"}, store)'
    )
    assert variable(overview, "instance")["query"] == (
        'label_values(sidecar_store_up{job=~"$job", store=~"$store"}, instance)'
    )


def test_every_panel_has_a_description(overview: dict[str, Any]) -> None:
    for panel in panels(overview):
        assert len(panel.get("description", "")) >= 80, panel["title"]
        assert "Normal" in panel["description"], panel["title"]


def test_every_panel_and_target_reads_the_datasource_variable(overview: dict[str, Any]) -> None:
    for panel in panels(overview):
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
    for title, target in targets(overview):
        assert target["datasource"] == DATASOURCE_REF, title


def test_panel_ids_are_unique(overview: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in overview["panels"]]
    assert len(ids) == len(set(ids))
    assert 0 not in ids


def test_every_panel_has_targets_with_distinct_ref_ids(overview: dict[str, Any]) -> None:
    for panel in panels(overview):
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids, panel["title"]
        assert all(ref_ids), panel["title"]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_panels_fit_the_grid_without_overlapping(overview: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in overview["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_utilization_gauge_shows_the_health_bounds(overview: dict[str, Any]) -> None:
    (gauge,) = [panel for panel in panels(overview) if panel["type"] == "gauge"]
    assert gauge["title"] == "Session utilization"
    defaults = gauge["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit"
    assert (defaults["min"], defaults["max"]) == (0, 1)
    assert defaults["thresholds"] == {
        "mode": "absolute",
        "steps": [
            {"color": "green", "value": None},
            {"color": "yellow", "value": 0.7},
            {"color": "red", "value": 0.9},
        ],
    }
    assert [target["expr"] for target in gauge["targets"]] == [
        'store:sidecar_sessions_utilization_ratio:max{job=~"$job", store=~"$store"}'
    ]


def test_the_panels_issue_5_asks_for_are_there(overview: dict[str, Any]) -> None:
    titles = {panel["title"] for panel in panels(overview)}
    assert {
        "Session utilization",
        "Health state",
        "Sessions by status",
        "Sessions by age",
        "Stuck sessions",
        "Created and finished",
        "Removed by reason, and rejected creates",
        "Evictions in range",
        "Failure ratio (15 min)",
        "Session duration by outcome",
        "Age of the oldest pending and processing session",
        "Cleanup worker",
        "Since the last cleanup run",
        "Requests by route",
        "Server error ratio by route",
        "p95 latency by route",
    } <= titles


def test_sessions_by_status_are_stacked(overview: dict[str, Any]) -> None:
    (panel,) = [p for p in panels(overview) if p["title"] == "Sessions by status"]
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"] == {"mode": "normal"}
    assert panel["targets"][0]["legendFormat"] == "{{status}}"


def test_evictions_stand_out_in_red(overview: dict[str, Any]) -> None:
    (panel,) = [p for p in panels(overview) if p["title"].startswith("Removed by reason")]
    overrides = {
        o["matcher"]["options"]: o["properties"] for o in panel["fieldConfig"]["overrides"]
    }
    assert overrides["evicted"] == [
        {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}
    ]


def test_duration_and_latency_quantiles_aggregate_buckets_by_le(overview: dict[str, Any]) -> None:
    quantiles = [t["expr"] for _, t in targets(overview) if "histogram_quantile" in t["expr"]]
    assert len(quantiles) == 4
    for expr in quantiles:
        assert re.match(
            r"histogram_quantile\(0\.\d+, sum by \(le, (outcome|route|operation)\) \(rate\(",
            expr,
        )


# ---------------------------------------------------------------------------- queries

# A sidecar metric or a recording rule over one, with its optional label matchers.
_SELECTOR = re.compile(r"((?:[a-z_]+:)?sidecar_[a-z0-9_]+(?::[a-z0-9_]+)?)(\{[^}]*\})?")


def is_store_state(metric: str) -> bool:
    """A state gauge (the same figure on every replica of a store) or a store: rule."""
    return metric in STATE_GAUGES or metric.startswith("store:")


def test_every_selector_is_scoped_by_job_and_its_store_or_instance(
    overview: dict[str, Any],
) -> None:
    selectors = {"store": 0, "instance": 0}
    for title, target in targets(overview):
        for metric, matchers in _SELECTOR.findall(target["expr"]):
            scope = "store" if is_store_state(metric) else "instance"
            selectors[scope] += 1
            assert matchers.startswith(f'{{job=~"$job", {scope}=~"${scope}"'), (title, metric)
    assert selectors["store"] >= 12
    assert selectors["instance"] >= 20


def test_state_gauges_are_taken_once_per_store_before_any_sum(overview: dict[str, Any]) -> None:
    # Replicas of one store export the same figures: a sum over instances would show N times
    # the store's. Each state gauge is read through max or min (by store) first.
    # A figure made of several series (a total, a code) is made per replica first (a sum by
    # store and instance, inside a max by store), or read from one replica per store (and on
    # store and instance, topk by store of 1).
    once = re.compile(r"(?:(?:max|min) by \(store(?:, \w+)*\) \(|max\()$")
    per_replica = re.compile(r"sum by \(store, instance\) \($")
    one_replica = "and on (store, instance) topk by (store) (1, "
    checked = 0
    for title, target in targets(overview):
        expr = target["expr"]
        for found in re.finditer(r"\b(sidecar_[a-z0-9_]+)\{", expr):
            if found.group(1) in STATE_GAUGES:
                checked += 1
                before, after = expr[: found.start()], expr[found.end() :]
                in_one_replica = before.endswith(one_replica + "sum by (store, instance) (")
                assert (
                    once.search(before)
                    or (per_replica.search(before) and expr.startswith("max by (store) ("))
                    or in_one_replica
                    or after.split("}", 1)[-1].lstrip().startswith(one_replica)
                ), (title, expr)
    assert checked >= 10


PANEL_CHECKS = """
rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # two replicas of one store, scraped either side of one session's change of status
      - series: 'sidecar_sessions{job="sidecar", instance="a", store="s", status="pending"}'
        values: "5x5"
      - series: 'sidecar_sessions{job="sidecar", instance="a", store="s", status="processing"}'
        values: "5x5"
      - series: 'sidecar_sessions{job="sidecar", instance="b", store="s", status="pending"}'
        values: "4x5"
      - series: 'sidecar_sessions{job="sidecar", instance="b", store="s", status="processing"}'
        values: "6x5"
      # and either side of the step from warning to critical
      - series: 'sidecar_health_state{job="sidecar", instance="a", store="s", state="warning"}'
        values: "1x5"
      - series: 'sidecar_health_state{job="sidecar", instance="a", store="s", state="critical"}'
        values: "0x5"
      - series: 'sidecar_health_state{job="sidecar", instance="b", store="s", state="warning"}'
        values: "0x5"
      - series: 'sidecar_health_state{job="sidecar", instance="b", store="s", state="critical"}'
        values: "1x5"
    promql_expr_test: []
"""


def test_panels_never_count_one_session_twice_across_replicas_scraped_apart(
    overview: dict[str, Any], promtool: str, tmp_path: Path
) -> None:
    wanted = {
        ("Sessions held / capacity", "A"): ('{store="s"}', 10),
        ("Sessions by status", "A"): ("{}", 10),  # the stack's height
        ("Health state", "A"): ('{store="s"}', 2),  # critical, never 3
    }
    checks = []
    for title, target in targets(overview):
        key = (title, target["refId"])
        if key not in wanted:
            continue
        expr = target["expr"].replace('=~"$job"', '=~".*"').replace('=~"$store"', '=~".*"')
        labels, value = wanted.pop(key)
        if title == "Sessions by status":
            expr = f"sum({expr})"
        checks.append(
            {"expr": expr, "eval_time": "2m", "exp_samples": [{"labels": labels, "value": value}]}
        )
    assert wanted == {}, "panels not found"
    document = yaml.safe_load(PANEL_CHECKS)
    document["tests"][0]["promql_expr_test"] = checks
    result = promtool_on(promtool, "test", tmp_path / "panels_test.yml", document)

    assert result.returncode == 0, result.stdout + result.stderr


def test_rates_use_the_rate_interval_and_increases_the_time_range(
    overview: dict[str, Any],
) -> None:
    windows: dict[str, set[str]] = {"rate": set(), "increase": set()}
    for _, target in targets(overview):
        for function, window in re.findall(
            r"\b(rate|increase)\([^\[]*\[([^\]]+)\]", target["expr"]
        ):
            windows[function].add(window)
    assert windows == {"rate": {"$__rate_interval"}, "increase": {"$__range"}}


def promtool_on(
    promtool: str, command: str, path: Path, document: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`promtool <command> rules` on `document`, written as YAML to `path`."""
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return subprocess.run(
        [promtool, command, "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_query_is_valid_promql(
    overview: dict[str, Any], promtool: str, tmp_path: Path
) -> None:
    # Grafana's interval variables become fixed windows; $job and $instance sit in regex strings.
    exprs = [
        target["expr"].replace("$__rate_interval", "1m").replace("$__range", "1h")
        for _, target in targets(overview)
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}:check", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    result = promtool_on(promtool, "check", tmp_path / "dashboard_queries.yml", rules)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# ---------------------------------------------------------------------------- provisioning


def test_datasource_provisioning_file() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"
    assert datasource["isDefault"] is True
    assert datasource["name"] == "Prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://127.0.0.1:9090"


def test_dashboard_provider_file() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "dashboards" / "sidecar.yaml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["name"] == "sidecar"
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/sidecar"


def test_provider_path_is_where_the_readme_copies_the_json() -> None:
    path = load_yaml(GRAFANA / "provisioning" / "dashboards" / "sidecar.yaml")["providers"][0][
        "options"
    ]["path"]
    readme = (GRAFANA / "README.md").read_text(encoding="utf-8")
    assert f"sudo cp grafana/dashboards/*.json {path}/" in readme
    assert f'"$PWD/grafana/dashboards:{path}:ro"' in readme


def docker_run_commands(readme: str) -> list[str]:
    """Each `docker run` command of a shell block in `readme`, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [" ".join(c.split()) for c in commands if c.lstrip().startswith("docker run")]


def test_the_docker_recipe_reaches_the_provisioned_datasource() -> None:
    # Inside a container 127.0.0.1 is the container: a loopback data source URL is only the
    # host's Prometheus when the container shares the host's network.
    url = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")["datasources"][0][
        "url"
    ]
    host = urllib.parse.urlsplit(url).hostname
    (command,) = docker_run_commands((GRAFANA / "README.md").read_text(encoding="utf-8"))
    if host in {"127.0.0.1", "localhost", "::1"}:
        assert "--network host" in command or "--network=host" in command, command
        assert " -p " not in command, "ports are not published with --network host"
    else:
        assert host == "host.docker.internal", url
        assert "--add-host=host.docker.internal:host-gateway" in command, command
    assert "/etc/grafana/provisioning/datasources" in command


def test_every_grafana_yaml_file_parses() -> None:
    paths = sorted(GRAFANA.rglob("*.yaml"))
    assert [p.relative_to(GRAFANA).as_posix() for p in paths] == [
        "provisioning/dashboards/sidecar.yaml",
        "provisioning/datasources/prometheus.yaml",
    ]
    for path in paths:
        assert load_yaml(path)["apiVersion"] == 1
