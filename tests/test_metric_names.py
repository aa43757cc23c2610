"""Every metric the dashboards, alerts and recording rules read is one that exists.

"Exists" means: the sidecar's real exporter (`SidecarMetrics`) exposes it, a recording rule in
prometheus/rules.yml defines it, or Prometheus itself writes it (`up`, `ALERTS`). Names are
pulled out of PromQL by a small tokenizer, tested on its own below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"

# Series Prometheus writes itself: the scrape health of each target, and firing/pending alerts.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})

# Words that look like identifiers in PromQL but never name a metric.
# fmt: off
_KEYWORDS = frozenset(
    {
        # binary operators and modifiers
        "and", "or", "unless", "bool", "offset", "atan2",
        "by", "without", "on", "ignoring", "group_left", "group_right",
        # aggregation operators, which may be followed by `by (...)` instead of `(`
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
        # float literals
        "inf", "nan",
    }
)
# fmt: on
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TEMPLATE_VARIABLES = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKENS = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads.

    Strips, in order: string literals (label values, regexes, label_replace arguments), Grafana
    variables, label matchers in braces, range and subquery windows in brackets, and the label
    lists of by/without/on/ignoring/group_left/group_right. What remains are numbers, keywords,
    function calls (an identifier followed by `(`) and metric names.
    """
    text = _STRINGS.sub('""', expr)
    text = _TEMPLATE_VARIABLES.sub(" ", text)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[0].isdigit() or token.lower() in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function call
        names.add(token)
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sidecar_sessions", {"sidecar_sessions"}),
        (
            'sum by (le, route) (rate(sidecar_http_request_duration_seconds_bucket{job=~"$job",'
            ' route="/api/v1/sessions/<session_id>"}[$__rate_interval]))',
            {"sidecar_http_request_duration_seconds_bucket"},
        ),
        (
            "instance:sidecar_sessions_utilization_ratio:max >= 0.7 unless on (job, instance)"
            ' ALERTS{alertname="SidecarSessionUtilizationCritical", alertstate="firing"}',
            {"instance:sidecar_sessions_utilization_ratio:max", "ALERTS"},
        ),
        ('up{job="sidecar"} == 0 or absent(up{job="sidecar"})', {"up"}),
        ("time() - max(a offset 5m) > bool 3", {"a"}),
        ("rate(a[5m:1m]) / ignoring (reason) group_left (x, y) b", {"a", "b"}),
        ("histogram_quantile(0.95, sum(rate(h_bucket[5m])) without (instance))", {"h_bucket"}),
        ("predict_linear(m[1h], 3600) >= 1 and n < 1e3", {"m", "n"}),
        ('label_replace(m, "dst", "$1", "src", "(on|by) x")', {"m"}),
        ("count by (version) (sidecar_build_info)", {"sidecar_build_info"}),
        ("sum(x) by (status) + topk(3, y)", {"x", "y"}),
        ("vector(1) * -Inf < NaN", set()),
        ('{__name__=~"sidecar_.*"}', set()),
    ],
)
def test_metric_names_tokenizer(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


# ---------------------------------------------------------------------------- sources


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rule_exprs(path: Path) -> list[str]:
    return [rule["expr"] for group in load(path)["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            exprs += [target["expr"] for target in panel.get("targets", [])]
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                # label_values(selector, label): the label is not a metric
                exprs.append(re.sub(r",\s*\w+\)$", ")", variable["query"]))
    return exprs


def recorded_names() -> set[str]:
    return {rule["record"] for group in load(RULES)["groups"] for rule in group["rules"]}


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
}


@pytest.fixture(scope="module")
def exported_families() -> Iterator[dict[str, set[str]]]:
    """Each family the real exporter exposes -> its series names (with _total, _bucket, ...)."""
    # Imported here so the tokenizer tests above still run if the exporter is broken; these
    # tests then fail, as they must, rather than fall back to a list of names.
    from sidecar.core.manager import SessionManager
    from sidecar.metrics import SidecarMetrics
    from sidecar.store.memory import InMemorySessionStore
    from sidecar.store.observed import ObservedStore

    # With a timed store, as a shared store is: every family the exporter can expose.
    manager = SessionManager(store=ObservedStore(InMemorySessionStore()))
    try:
        families: dict[str, set[str]] = {}
        for family in SidecarMetrics(manager).registry.collect():
            series = {family.name, *(family.name + s for s in _SUFFIXES.get(family.type, ()))}
            series.update(sample.name for sample in family.samples)
            families[family.name] = series
        yield families
    finally:
        manager.shutdown()


@pytest.fixture(scope="module")
def exported_names(exported_families: dict[str, set[str]]) -> set[str]:
    return set().union(*exported_families.values())


def used_names() -> set[str]:
    used: set[str] = set()
    for expr in [*dashboard_exprs(), *rule_exprs(ALERTS), *rule_exprs(RULES)]:
        used |= metric_names(expr)
    return used


def unknown(exprs: list[str], known: set[str]) -> dict[str, set[str]]:
    missing = {expr: metric_names(expr) - known for expr in exprs}
    return {expr: names for expr, names in missing.items() if names}


def test_exporter_exposes_the_metrics_of_issue_4(exported_names: set[str]) -> None:
    assert {
        "sidecar_sessions",
        "sidecar_sessions_utilization_ratio",
        "sidecar_sessions_removed_total",
        "sidecar_session_transitions_total",
        "sidecar_session_duration_seconds_bucket",
        "sidecar_http_request_duration_seconds_bucket",
        "sidecar_http_request_duration_seconds_count",
        "sidecar_build_info",
    } <= exported_names


def test_dashboard_queries_read_only_existing_metrics(exported_names: set[str]) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    assert unknown(exprs, exported_names | recorded_names()) == {}


def test_alerts_read_only_existing_metrics(exported_names: set[str]) -> None:
    exprs = rule_exprs(ALERTS)
    assert len(exprs) == 9  # SidecarStoreDown joined the eight of issue 5
    assert unknown(exprs, exported_names | recorded_names() | PROMETHEUS_SERIES) == {}


def test_recording_rules_read_only_existing_metrics(exported_names: set[str]) -> None:
    assert unknown(rule_exprs(RULES), exported_names | recorded_names()) == {}


def test_recording_rules_are_all_used_by_an_alert_or_the_dashboard() -> None:
    assert recorded_names() <= used_names()


def test_every_sidecar_metric_is_watched_by_the_dashboard_or_the_rules(
    exported_families: dict[str, set[str]],
) -> None:
    used = used_names()
    unwatched = {
        family
        for family, series in exported_families.items()
        if family.startswith("sidecar_") and not series & used
    }
    assert unwatched == set()
