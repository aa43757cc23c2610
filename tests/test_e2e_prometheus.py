"""End to end: a real Prometheus, loaded with the shipped rules, scraping a real sidecar.

One sidecar (capacity 20) and one Prometheus (scrapes and rule evaluations every second, its
config generated from prometheus/prometheus.yml) are started once for the module. The tests
show that the target is up, that every shipped rule group loads and evaluates, that the
critical utilization alert is inactive while the sidecar is empty and goes pending once it
holds 95 % of its capacity, and that every query of the shipped dashboard evaluates, the panels
about sessions, utilization, health and HTTP traffic returning data.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import SidecarProcess, SidecarSpawner, memory_store_name, poll, require_binary
from prometheus_process import Prometheus, load_demo, run_prometheus
from test_dashboards import OVERVIEW, panels
from test_metric_names import metric_names

from sidecar.simulate import SimulationConfig, SimulationReport, Simulator

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "prometheus" / "prometheus.yml"
JOB = "sidecar"
CAPACITY = 20
FILL = 19  # 95 %: past the critical bound (90 %) with a margin, and not full, so no eviction
CRITICAL = "SidecarSessionUtilizationCritical"
WARNING = "SidecarSessionUtilizationWarning"

# Grafana's built-in variables for the time range "Last 5 minutes" on a Prometheus data source
# whose scrape interval is set to the 1 s this Prometheus scrapes at: $__interval is then that
# minimum interval, and $__rate_interval = max($__interval + scrape interval, 4 x scrape interval).
RANGE_SECONDS = 300
STEP_SECONDS = 1
BUILTINS = {
    "__interval": "1s",
    "__interval_ms": "1000",
    "__rate_interval": "4s",
    "__rate_interval_ms": "4000",
    "__range": "5m",
    "__range_s": str(RANGE_SECONDS),
    "__range_ms": str(RANGE_SECONDS * 1000),
}
# $name, ${name}, ${name:format}, [[name]], [[name:format]]
_REFERENCE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]")


def epoch(timestamp: str) -> float:
    """Unix seconds of an RFC 3339 timestamp from Prometheus (nanoseconds cut to microseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", timestamp).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class BeforeFill:
    """What Prometheus says about the critical utilization alert while the sidecar is empty."""

    utilization: float
    rule: dict[str, Any]
    alerts: list[dict[str, Any]]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sidecar(spawn_sidecar: SidecarSpawner) -> SidecarProcess:
    return spawn_sidecar(max_sessions=CAPACITY)


@pytest.fixture(scope="module")
def sidecar_http() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(scope="module")
def prometheus(
    sidecar: SidecarProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = require_binary("prometheus")
    target = sidecar.url.removeprefix("http://")
    config = load_demo().prometheus_config(target, "1s", SHIPPED_CONFIG)
    with run_prometheus(binary, tmp_path_factory.mktemp("prometheus"), config) as prometheus:
        yield prometheus


@pytest.fixture(scope="module")
def target(prometheus: Prometheus) -> dict[str, Any]:
    """The sidecar's scrape target, once it is up (discovery reports it ~5 s after start)."""

    def up() -> dict[str, Any] | None:
        active = prometheus.data("/api/v1/targets", state="active")["activeTargets"]
        found = [t for t in active if t["labels"]["job"] == JOB and t["health"] == "up"]
        return found[0] if found else None

    found: dict[str, Any] = poll(up, timeout=30, what="the sidecar target to be up")
    return found


@pytest.fixture(scope="module")
def before_fill(prometheus: Prometheus, target: dict[str, Any]) -> BeforeFill:
    """The critical alert as evaluated after Prometheus knew the empty sidecar's utilization."""
    utilization = "store:sidecar_sessions_utilization_ratio:max"
    recorded = poll(
        lambda: prometheus.query(utilization) or None, timeout=15, what=f"{utilization} recorded"
    )
    known = time.time()

    def evaluated_since() -> dict[str, Any] | None:
        # An evaluation that started a full interval later ran at a time after the recording.
        rule = prometheus.rule(CRITICAL)
        return rule if epoch(rule["lastEvaluation"]) > known + 1.0 else None

    rule = poll(evaluated_since, timeout=15, what=f"{CRITICAL} evaluated after the recording")
    return BeforeFill(float(recorded[0]["value"][1]), rule, prometheus.alerts(CRITICAL))


@pytest.fixture(scope="module")
def filled(
    sidecar: SidecarProcess,
    sidecar_http: requests.Session,
    prometheus: Prometheus,
    before_fill: BeforeFill,
) -> SimulationReport:
    """A second of simulated traffic, then plain creates up to FILL sessions, scraped."""
    config = SimulationConfig(
        url=sidecar.url,
        rate=10,
        duration=1,
        step_seconds=0.05,
        failure_ratio=0.3,
        stuck_ratio=0.1,
        seed=5,
    )
    report = Simulator(config).run()
    assert report.created == 10
    assert report.http_errors == {}

    for _ in range(FILL - report.created):
        with sidecar_http.post(
            f"{sidecar.url}/api/v1/sessions", json={"story_text": "A fox finds a lantern."}
        ) as response:
            assert response.status_code == 201, response.text
    with sidecar_http.get(f"{sidecar.url}/api/v1/stats") as response:
        assert response.json()["total_sessions"] == FILL

    held = f'sum(sidecar_sessions{{job="{JOB}"}})'
    poll(
        lambda: [s for s in prometheus.query(held) if float(s["value"][1]) == FILL] or None,
        timeout=15,
        what=f"a scrape of the {FILL} sessions",
    )
    return report


# ---------------------------------------------------------------------------- scrape and rules


def test_prometheus_scrapes_the_sidecar_as_job_sidecar(
    sidecar: SidecarProcess, target: dict[str, Any]
) -> None:
    assert target["labels"] == {"job": JOB, "instance": sidecar.url.removeprefix("http://")}
    assert target["scrapeUrl"] == f"{sidecar.url}/metrics"
    assert target["scrapeInterval"] == "1s"
    assert target["lastError"] == ""


def test_the_generated_config_keeps_the_shipped_rule_files() -> None:
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    generated = load_demo().prometheus_config("127.0.0.1:1", "1s", SHIPPED_CONFIG)
    assert generated["rule_files"] == [
        str(SHIPPED_CONFIG.parent / name) for name in shipped["rule_files"]
    ]
    assert [job["job_name"] for job in generated["scrape_configs"]] == [JOB]
    assert generated["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:1"]}]
    assert generated["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_every_shipped_rule_group_is_loaded_and_evaluates_without_error(
    prometheus: Prometheus, target: dict[str, Any]
) -> None:
    expected: dict[str, list[str]] = {}
    for name in prometheus.config["rule_files"]:
        for group in yaml.safe_load(Path(name).read_text(encoding="utf-8"))["groups"]:
            expected[group["name"]] = [r.get("record") or r["alert"] for r in group["rules"]]

    def evaluated() -> list[dict[str, Any]] | None:
        groups: list[dict[str, Any]] = prometheus.data("/api/v1/rules")["groups"]
        healths = [rule["health"] for group in groups for rule in group["rules"]]
        return groups if healths and "unknown" not in healths else None

    groups = poll(evaluated, timeout=15, what="every rule evaluated once")

    assert {g["name"]: [r["name"] for r in g["rules"]] for g in groups} == expected
    assert {g["file"] for g in groups} == set(prometheus.config["rule_files"])
    assert {
        (g["name"], r["name"]): (r["health"], r.get("lastError", ""))
        for g in groups
        for r in g["rules"]
    } == {(group, rule): ("ok", "") for group, rules in expected.items() for rule in rules}
    assert {g["interval"] for g in groups} == {1}


# ---------------------------------------------------------------------------- the utilization alert


def test_utilization_critical_is_inactive_while_the_sidecar_is_empty(
    before_fill: BeforeFill,
) -> None:
    assert before_fill.utilization == 0.0
    assert before_fill.rule["health"] == "ok"
    assert before_fill.rule["state"] == "inactive"
    assert before_fill.alerts == []


def test_utilization_critical_goes_pending_once_the_sidecar_is_95_percent_full(
    prometheus: Prometheus, target: dict[str, Any], filled: SimulationReport
) -> None:
    (alert,) = poll(
        lambda: prometheus.alerts(CRITICAL) or None, timeout=20, what=f"{CRITICAL} active"
    )
    # `for: 5m`: the test does not wait five minutes, so pending is as far as it goes.
    assert alert["state"] == "pending"
    # keyed by the store: a memory sidecar is its own store, memory:<host>:<port>
    assert alert["labels"] == {
        "alertname": CRITICAL,
        "severity": "critical",
        "job": JOB,
        "store": memory_store_name(f"http://{target['labels']['instance']}"),
    }
    assert float(alert["value"]) == FILL / CAPACITY
    assert prometheus.rule(CRITICAL)["state"] == "pending"


def test_utilization_warning_stays_pending_while_the_critical_alert_only_pends(
    prometheus: Prometheus, filled: SimulationReport
) -> None:
    (alert,) = poll(
        lambda: prometheus.alerts(WARNING) or None, timeout=20, what=f"{WARNING} active"
    )
    assert alert["state"] == "pending"
    assert alert["labels"]["severity"] == "warning"
    assert prometheus.alerts(CRITICAL)[0]["state"] == "pending"


# ---------------------------------------------------------------------------- the dashboard


def grafana_regex_escape(value: str) -> str:
    """A value as Grafana's Prometheus data source writes a multi-value variable into a query.

    Backslashes and regex metacharacters get escaped for the regex and again for the PromQL
    string they sit in (prometheusSpecialRegexEscape).
    """
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value.replace("\\", "\\\\\\\\"))


def interpolate(expr: str, values: dict[str, str]) -> str:
    """`expr` with every Grafana variable replaced; fails on any variable not in `values`."""
    unknown: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if match.group(2) or match.group(5) or name not in values:
            unknown.append(match.group(0))
            return match.group(0)
        return values[name]

    result = _REFERENCE.sub(replace, expr)
    if unknown:
        pytest.fail(f"no value for Grafana variable(s) {unknown} in {expr!r}")
    return result


def resolve_variables(dashboard: dict[str, Any], prometheus: Prometheus) -> dict[str, str]:
    """Grafana's built-ins plus each template variable at its default, resolved as Grafana does.

    The query variables default to All: every value their label_values() query finds, as a
    regex alternation. The data source variable only picks the data source.
    """
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            continue
        if kind != "query" or variable["current"]["value"] != "$__all":
            pytest.fail(f"variable {name}: only query variables defaulting to All are handled")
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
        if found is None:
            pytest.fail(f"variable {name}: unhandled query {variable['query']!r}")
        selector, label = interpolate(found.group(1), values), found.group(2)
        options: list[str] = prometheus.data(
            f"/api/v1/label/{label}/values", **{"match[]": selector}
        )
        if not options:
            pytest.fail(f"variable {name}: {variable['query']!r} found no value")
        escaped = [grafana_regex_escape(option) for option in options]
        values[name] = escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return values


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    instant: bool
    metrics: frozenset[str]
    expr: str  # variables substituted


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OVERVIEW.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def panel_queries(
    dashboard: dict[str, Any], prometheus: Prometheus, filled: SimulationReport
) -> list[PanelQuery]:
    values = resolve_variables(dashboard, prometheus)
    return [
        PanelQuery(
            panel["title"],
            target["refId"],
            bool(target.get("instant")),
            frozenset(metric_names(target["expr"])),
            interpolate(target["expr"], values),
        )
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def family(metric: str) -> str | None:
    """Which of the checked areas a metric (or a recording rule over one) belongs to."""
    name = metric.split(":")[1] if ":" in metric else metric  # level:metric:operations
    if "utilization" in name:
        return "utilization"
    if name.startswith("sidecar_health_state"):
        return "health"
    if name.startswith("sidecar_http_request"):
        return "http"
    if name.startswith(("sidecar_sessions", "sidecar_session_")):
        return "sessions"
    return None  # build info, cleanup worker, stuck threshold


def has_data(prometheus: Prometheus, query: PanelQuery) -> bool:
    """True if the panel's query shows a number: an instant query now, or the range of the
    last five minutes at the 1 s step, as Grafana asks for them."""
    if query.instant:
        data = prometheus.data("/api/v1/query", query=query.expr)
        points = [series["value"] for series in data["result"]]
    else:
        now = time.time()
        data = prometheus.data(
            "/api/v1/query_range",
            query=query.expr,
            start=now - RANGE_SECONDS,
            end=now,
            step=STEP_SECONDS,
        )
        points = [point for series in data["result"] for point in series["values"]]
    assert data["resultType"] in {"vector", "matrix"}, query
    return any(math.isfinite(float(value)) for _, value in points)


def test_dashboard_variables_resolve_to_the_scraped_sidecar(
    dashboard: dict[str, Any], prometheus: Prometheus, target: dict[str, Any]
) -> None:
    values = resolve_variables(dashboard, prometheus)
    # What Grafana writes into instance=~"...": the dots escaped for the regex and the string.
    assert values["job"] == JOB
    assert values["instance"] == target["labels"]["instance"].replace(".", "\\\\.")
    store = memory_store_name(f"http://{target['labels']['instance']}")
    assert values["store"] == grafana_regex_escape(store)


def test_every_dashboard_query_evaluates_without_error(
    prometheus: Prometheus, panel_queries: list[PanelQuery], dashboard: dict[str, Any]
) -> None:
    assert len(panel_queries) == sum(len(p["targets"]) for p in panels(dashboard))
    failures = {}
    for query in panel_queries:
        body = prometheus.api("/api/v1/query", query=query.expr)
        if body["status"] != "success" or body.get("warnings"):
            failures[(query.panel, query.ref_id)] = body
    assert failures == {}


def test_session_utilization_health_and_http_panels_show_data(
    prometheus: Prometheus, panel_queries: list[PanelQuery]
) -> None:
    # A panel is checked when any of its queries reads a metric of those areas; all of its
    # queries must then show data. Left out: version, cleanup worker (its first run is an
    # hour after start).
    areas: dict[str, set[str]] = {q.panel: set() for q in panel_queries}
    for q in panel_queries:
        areas[q.panel] |= {area for m in q.metrics if (area := family(m)) is not None}
    checked = [q for q in panel_queries if areas[q.panel]]
    assert set().union(*areas.values()) == {"sessions", "utilization", "health", "http"}
    assert checked

    # Recording rules run on their own schedule: give each query a few evaluations.
    empty: list[tuple[str, str, str]] = []

    def every_one_shows_data() -> bool | None:
        empty[:] = [(q.panel, q.ref_id, q.expr) for q in checked if not has_data(prometheus, q)]
        return True if not empty else None

    poll(
        every_one_shows_data,
        timeout=20,
        interval=0.5,
        what=lambda: f"data in every checked panel; none yet in {empty}",
    )
    assert empty == []


def test_the_cleanup_panel_says_something_before_the_first_run(
    prometheus: Prometheus, panel_queries: list[PanelQuery]
) -> None:
    # This sidecar runs with the default cleanup interval (1 h): no run has ended yet.
    queries = {q.ref_id: q for q in panel_queries if q.panel == "Since the last cleanup run"}
    assert set(queries) == {"A", "B"}
    assert not has_data(prometheus, queries["A"])  # no run: no "time since the last run"
    assert has_data(prometheus, queries["B"])  # but the time since start, labelled so
    (uptime,) = prometheus.data("/api/v1/query", query=queries["B"].expr)["result"]
    assert 0 < float(uptime["value"][1]) < 3600
