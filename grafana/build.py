"""The sidecar's Grafana dashboards as code; `python grafana/build.py` writes dashboards/*.json.

Built with Grafana's Foundation SDK (grafana-foundation-sdk==0.0.21, schemaVersion 42). The
committed JSON is this module's output, and tests/test_dashboards.py fails when they differ:
edit this file, run `make dashboards`, commit both.

Every query is scoped by the `job` variable and by `store` or `instance`, and reads from the
`datasource` variable, because file provisioning cannot resolve an import-time
`${DS_PROMETHEUS}` input. Two kinds of panels:

- The store's state (sessions, utilization, health, age, stuck, capacity): every replica of
  one store exports the same figures under the same `store` label, so these queries take
  `max by (store)` (or a store: recording rule) and only then add stores up: the store's
  figure, never N times it. Scoped by `job` and `store` (`sstore`).
- What each replica did or is (counters, latency, cleanup worker, store reachability,
  version): scoped by `job` and `instance` (`sel`), summed over instances for totals. The
  `instance` variable lists the replicas of the chosen stores.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # The SDK warns on import that the v1 dashboard model is deprecated in favour of v2; file
    # provisioning loads v1 JSON (schemaVersion 42), which is what this module writes.
    warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
    from grafana_foundation_sdk.builders import (
        bargauge,
        dashboard,
        gauge,
        prometheus,
        stat,
        timeseries,
    )
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as model

__all__ = ["DASHBOARDS", "DASHBOARD_DIR", "OVERVIEW_UID", "build_overview", "main", "render"]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
OVERVIEW_UID = "sidecar-overview"
DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
_SCOPE = 'job=~"$job", instance=~"$instance"'
_STORE_SCOPE = 'job=~"$job", store=~"$store"'

# The health states' bounds (ManagerConfig's defaults) and the alerts' thresholds.
WARNING_UTILIZATION = 0.7
CRITICAL_UTILIZATION = 0.9


def sel(metric: str, *matchers: str) -> str:
    """A selector for `metric` scoped by the job and instance variables, plus `matchers`."""
    return f"{metric}{{{', '.join((_SCOPE, *matchers))}}}"


def sstore(metric: str, *matchers: str) -> str:
    """A selector for a state gauge (or store: rule) scoped by the job and store variables."""
    return f"{metric}{{{', '.join((_STORE_SCOPE, *matchers))}}}"


def per_store(metric: str, *matchers: str, by: str = "") -> str:
    """`metric` once per store: the max over the replicas that all export the store's figure."""
    return f"max by (store{by}) ({sstore(metric, *matchers)})"


def per_replica(expr: str) -> str:
    """`expr` per replica, then once per store: the max of the replicas' own figures. A figure
    built from several series (a sum, a code) is built per replica first, since replicas
    scraped either side of a change can each report it in a different series."""
    return f"max by (store) ({expr})"


def one_replica(metric: str, *matchers: str) -> str:
    """The series of `metric` from one replica per store (the one holding the most sessions),
    so that a breakdown adds up to that replica's total, never more than the store holds."""
    held = f"sum by (store, instance) ({sstore('sidecar_sessions')})"
    return f"{sstore(metric, *matchers)} and on (store, instance) topk by (store) (1, {held})"


def rate(metric: str, *matchers: str, window: str = "$__rate_interval") -> str:
    """`rate()` of a scoped counter (or histogram series) over `window`."""
    return f"rate({sel(metric, *matchers)}[{window}])"


def query(ref_id: str, expr: str, legend: str, *, instant: bool = False) -> prometheus.Dataquery:
    """A Prometheus target on the dashboard's datasource variable."""
    target = (
        prometheus.Dataquery()
        .ref_id(ref_id)
        .expr(expr)
        .legend_format(legend)
        .datasource(DATASOURCE)
    )
    return target.instant() if instant else target.range()


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (from minus infinity)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def value_text(mapping: dict[str, tuple[str, str]]) -> list[model.ValueMapping]:
    """Value mappings from a number (as text) to a (text, color) pair."""
    return [
        model.ValueMap(
            options={
                value: model.ValueMappingResult(text=text, color=color, index=index)
                for index, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


def _last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def stat_panel(
    panel_id: int,
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str = "short",
    span: int = 4,
    height: int = 6,
) -> stat.Panel:
    """A single-value panel showing each series' last value."""
    return (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(span)
        .height(height)
        .reduce_options(_last_value())
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    )


def timeseries_panel(
    panel_id: int,
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str = "short",
    span: int = 8,
    height: int = 8,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series panel with a visible legend and a shared tooltip."""
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(span)
        .height(height)
        .line_width(1)
        .fill_opacity(40 if stacked else 10)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def reference_line(name: str) -> tuple[str, list[model.DynamicConfigValue]]:
    """Override properties that draw series `name` as a dashed, unfilled, unstacked line."""
    return name, [
        model.DynamicConfigValue(
            id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
        ),
        model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        model.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"}),
        model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
    ]


def fixed_color(color: str) -> list[model.DynamicConfigValue]:
    """Override properties that give a series one fixed color."""
    return [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def scope_variable(name: str, label: str, source: str) -> dashboard.QueryVariable:
    """A multi-select variable with All, listing the values of label `name` in `source`."""
    definition = f"label_values({source}, {name})"
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(definition)
        .definition(definition)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def _capacity_row(builder: dashboard.Dashboard) -> None:
    warning = sstore("sidecar_health_state", 'state="warning"')
    critical = sstore("sidecar_health_state", 'state="critical"')
    # 0 healthy, 1 warning, 2 critical: one number a stat panel can map to a colored word,
    # made per replica (one replica in warning and another in critical is 2, never 3).
    health_code = per_replica(
        f"sum by (store, instance) ({warning}) + 2 * sum by (store, instance) ({critical})"
    )
    evicted = sel("sidecar_sessions_removed_total", 'reason="evicted"')
    builder.with_row(dashboard.Row("Capacity and health").id(1))
    builder.with_panel(
        gauge.Panel()
        .id(2)
        .title("Session utilization")
        .description(
            "Sessions held divided by max_sessions, per store (recording rule "
            "store:sidecar_sessions_utilization_ratio:max from prometheus/rules.yml; every "
            "replica of a store shows the same figure). "
            "Green below 70 %; yellow from 70 % (health warning, SidecarSessionUtilizationWarning "
            "after 15 min); red from 90 % (health critical, SidecarSessionUtilizationCritical "
            "after 5 min). Normal: well under 70 %. Above 100 % only just after max_sessions "
            "was lowered."
        )
        .datasource(DATASOURCE)
        .with_target(
            query(
                "A",
                sstore("store:sidecar_sessions_utilization_ratio:max"),
                "{{store}}",
                instant=True,
            )
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .decimals(1)
        .thresholds(
            thresholds(
                (None, "green"),
                (WARNING_UTILIZATION, "yellow"),
                (CRITICAL_UTILIZATION, "red"),
            )
        )
        .reduce_options(_last_value())
        .show_threshold_markers(True)
        .span(6)
        .height(6)
    )
    builder.with_panel(
        stat_panel(
            3,
            "Health state",
            "The health the sidecars report (GET /api/v1/health), per store, from "
            "sidecar_health_state: healthy below 70 % utilization, warning from 70 %, critical "
            "from 90 %. Normal: healthy on every store.",
            [query("A", health_code, "{{store}}", instant=True)],
        )
        .mappings(
            value_text(
                {
                    "0": ("healthy", "green"),
                    "1": ("warning", "yellow"),
                    "2": ("critical", "red"),
                }
            )
        )
        .thresholds(thresholds((None, "green"), (1, "yellow"), (2, "red")))
    )
    builder.with_panel(
        stat_panel(
            4,
            "Sessions held / capacity",
            "Sessions held (all statuses) and max_sessions in force, per store (each store "
            "counted once, however many replicas export it). Normal: held well below "
            "capacity; capacity changes only when an operator changes max_sessions "
            "(PATCH /api/v1/admin/config).",
            [
                query(
                    "A",
                    per_replica(f"sum by (store, instance) ({sstore('sidecar_sessions')})"),
                    "{{store}} held",
                    instant=True,
                ),
                query(
                    "B",
                    per_store("sidecar_sessions_capacity"),
                    "{{store}} capacity",
                    instant=True,
                ),
            ],
        ).color_mode(common.BigValueColorMode.NONE)
    )
    builder.with_panel(
        stat_panel(
            5,
            "Evictions in range",
            "Sessions evicted to make room for new ones (capacity policy evict_oldest) during "
            "the dashboard's time range, summed over the selected replicas (each counts its "
            "own). Evicted sessions are lost to "
            "their clients. Normal: 0; anything else fires SidecarSessionsEvicted.",
            [
                query(
                    "A",
                    f"sum(increase({evicted}[$__range]))",
                    "evicted",
                    instant=True,
                )
            ],
            span=3,
        )
        .decimals(0)
        .thresholds(thresholds((None, "green"), (1, "red")))
    )
    builder.with_panel(
        stat_panel(
            6,
            "Creates rejected in range",
            "Creates refused because the sidecar was full (capacity policy reject, HTTP 429 to "
            "the client) during the dashboard's time range, all selected instances. "
            "Normal: 0.",
            [
                query(
                    "A",
                    f"sum(increase({sel('sidecar_sessions_rejected_total')}[$__range]))",
                    "rejected",
                    instant=True,
                )
            ],
            span=3,
        )
        .decimals(0)
        .thresholds(thresholds((None, "green"), (1, "red")))
    )
    builder.with_panel(
        stat_panel(
            7,
            "Version",
            "The sidecar version each instance runs (sidecar_build_info). Normal: the same "
            "version everywhere, except during a rollout.",
            [
                query(
                    "A",
                    f"count by (instance, version) ({sel('sidecar_build_info')})",
                    "{{instance}}: {{version}}",
                    instant=True,
                )
            ],
        )
        .text_mode(common.BigValueTextMode.NAME)
        .color_mode(common.BigValueColorMode.NONE)
    )


def _sessions_row(builder: dashboard.Dashboard) -> None:
    builder.with_row(dashboard.Row("Sessions").id(8))
    capacity_name, capacity_line = reference_line("capacity")
    builder.with_panel(
        timeseries_panel(
            9,
            "Sessions by status",
            "Sessions held by status, stacked, each selected store counted once (not once per "
            "replica), with their total capacity as a dashed red line. Normal: pending and "
            "processing follow the "
            "load; completed and failed sessions are kept until they expire (6 h and 1 h by "
            "default); the stack stays under the capacity line.",
            [
                query("A", f"sum by (status) ({one_replica('sidecar_sessions')})", "{{status}}"),
                query("B", f"sum({per_store('sidecar_sessions_capacity')})", "capacity"),
            ],
            span=12,
            stacked=True,
        )
        .override_by_name(capacity_name, capacity_line)
        .override_by_name("failed", fixed_color("red"))
        .override_by_name("completed", fixed_color("green"))
    )
    builder.with_panel(
        timeseries_panel(
            10,
            "Session utilization over time",
            "Held / max_sessions per store, with the health bounds at 70 % and 90 % drawn "
            "as thresholds. Normal: under 70 %. A steady climb toward 100 % is what "
            "SidecarSessionCapacityFullSoon forecasts.",
            [query("A", sstore("store:sidecar_sessions_utilization_ratio:max"), "{{store}}")],
            unit="percentunit",
            span=12,
        )
        .min(0)
        .axis_soft_max(1)
        .thresholds(
            thresholds(
                (None, "green"),
                (WARNING_UTILIZATION, "yellow"),
                (CRITICAL_UTILIZATION, "red"),
            )
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED_AND_AREA
            )
        )
    )
    age_buckets = (
        ("under_1h", "under 1 h"),
        ("1h_to_6h", "1 h to 6 h"),
        ("6h_to_24h", "6 h to 24 h"),
        ("over_24h", "over 24 h"),
    )
    builder.with_panel(
        bargauge.Panel()
        .id(11)
        .title("Sessions by age")
        .description(
            "Sessions held by time since creation, each selected store counted once. "
            "Normal: most sessions under 1 h; sessions over 24 h should not exist, because "
            "the cleanup worker expires them (session_max_age_seconds, 24 h by default)."
        )
        .datasource(DATASOURCE)
        .targets(
            [
                query(
                    chr(ord("A") + index),
                    "sum(" + per_store("sidecar_sessions_by_age", f'age_bucket="{bucket}"') + ")",
                    legend,
                    instant=True,
                )
                for index, (bucket, legend) in enumerate(age_buckets)
            ]
        )
        .unit("short")
        .decimals(0)
        .min(0)
        .reduce_options(_last_value())
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .show_unfilled(True)
        .thresholds(thresholds((None, "blue")))
        .override_by_name("over 24 h", fixed_color("orange"))
        .span(8)
        .height(8)
    )
    threshold_name, threshold_line = reference_line("stuck threshold")
    builder.with_panel(
        timeseries_panel(
            12,
            "Age of the oldest pending and processing session",
            "Time since creation of the oldest pending and the oldest processing session, per "
            "store; no line while a status is empty. The dashed red line is the stuck "
            "threshold (stuck_after_seconds), which applies to time since the last update. "
            "Normal: minutes, about as long as a generation takes; a line that only grows "
            "means sessions are not moving.",
            [
                query(
                    "A",
                    "time() - min by (store, status) ("
                    + sstore(
                        "sidecar_session_oldest_created_timestamp_seconds",
                        'status=~"pending|processing"',
                    )
                    + ")",
                    "{{store}} {{status}}",
                ),
                query("B", f"max({sstore('sidecar_stuck_after_seconds')})", "stuck threshold"),
            ],
            unit="s",
        ).override_by_name(threshold_name, threshold_line)
    )
    builder.with_panel(
        timeseries_panel(
            13,
            "Stuck sessions",
            "Processing sessions not updated for longer than the stuck threshold, per "
            "store. Normal: 0. Above 0 for 15 minutes fires SidecarSessionsStuck; the "
            "sessions are listed by GET /api/v1/sessions?stuck=true.",
            [query("A", per_store("sidecar_sessions_stuck"), "{{store}}")],
        )
        .decimals(0)
        .min(0)
        .thresholds(thresholds((None, "green"), (1, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.AREA)
        )
    )


def _throughput_row(builder: dashboard.Dashboard) -> None:
    builder.with_row(dashboard.Row("Throughput and outcomes").id(14))
    builder.with_panel(
        timeseries_panel(
            15,
            "Created and finished",
            "Sessions created, and sessions that reached completed or failed, per second, "
            "summed over the selected instances. Normal: finished follows created after about "
            "one generation time; created above finished for long means sessions pile up.",
            [
                query("A", f"sum({rate('sidecar_sessions_created_total')})", "created"),
                query(
                    "B",
                    "sum by (to_status) ("
                    + rate("sidecar_session_transitions_total", 'to_status=~"completed|failed"')
                    + ")",
                    "finished {{to_status}}",
                ),
            ],
            unit="ops",
        )
        .override_by_name("finished failed", fixed_color("red"))
        .override_by_name("finished completed", fixed_color("green"))
    )
    builder.with_panel(
        timeseries_panel(
            16,
            "Removed by reason, and rejected creates",
            "Sessions removed per second by reason (deleted by clients, expired by the cleanup "
            "worker, evicted at capacity, purged by an operator), stacked, plus creates "
            "rejected at capacity. Evicted and rejected are drawn in red. Normal: deleted "
            "and expired only; any red means the sidecar was full.",
            [
                query(
                    "A",
                    f"sum by (reason) ({rate('sidecar_sessions_removed_total')})",
                    "{{reason}}",
                ),
                query(
                    "B", f"sum({rate('sidecar_sessions_rejected_total')})", "rejected (capacity)"
                ),
            ],
            unit="ops",
            stacked=True,
        )
        .override_by_name("evicted", fixed_color("red"))
        .override_by_name("rejected (capacity)", fixed_color("dark-red"))
    )
    builder.with_panel(
        timeseries_panel(
            17,
            "Failure ratio (15 min)",
            "Failed / finished sessions over the last 15 minutes per store, the store's "
            "replicas summed (recording rule store:sidecar_session_failures:ratio_rate15m, "
            "the figure "
            "SidecarSessionFailureRatioHigh alerts on above 20 % with at least 10 finished). "
            "No line while nothing finishes. Normal: a few percent at most.",
            [
                query(
                    "A",
                    sstore("store:sidecar_session_failures:ratio_rate15m"),
                    "{{store}}",
                )
            ],
            unit="percentunit",
        )
        .min(0)
        .axis_soft_max(1)
        .thresholds(thresholds((None, "green"), (0.2, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    )
    builder.with_panel(
        timeseries_panel(
            18,
            "Session duration by outcome",
            "Median (p50) and 95th percentile (p95) time from creation to completed or failed, "
            "over the selected instances. Normal: steady at the service's usual generation "
            "time; failed sessions that finish much faster than completed ones point at "
            "requests rejected early, much slower ones at timeouts.",
            [
                query(
                    "A",
                    "histogram_quantile(0.5, sum by (le, outcome) ("
                    + rate("sidecar_session_duration_seconds_bucket")
                    + "))",
                    "p50 {{outcome}}",
                ),
                query(
                    "B",
                    "histogram_quantile(0.95, sum by (le, outcome) ("
                    + rate("sidecar_session_duration_seconds_bucket")
                    + "))",
                    "p95 {{outcome}}",
                ),
            ],
            unit="s",
            span=24,
        )
    )


def _cleanup_row(builder: dashboard.Dashboard) -> None:
    builder.with_row(dashboard.Row("Cleanup worker").id(19))
    builder.with_panel(
        stat_panel(
            20,
            "Cleanup worker",
            "Whether the background cleanup thread is alive, per instance "
            "(sidecar_cleanup_worker_up). Normal: up. Down for 5 minutes fires "
            "SidecarCleanupWorkerDown: nothing expires any more and the sidecar fills up.",
            [
                query(
                    "A",
                    f"min by (instance) ({sel('sidecar_cleanup_worker_up')})",
                    "{{instance}}",
                    instant=True,
                )
            ],
            span=6,
        )
        .mappings(value_text({"0": ("down", "red"), "1": ("up", "green")}))
        .thresholds(thresholds((None, "red"), (1, "green")))
    )
    last_run = f"max by (instance) ({sel('sidecar_cleanup_last_run_timestamp_seconds')})"
    builder.with_panel(
        stat_panel(
            21,
            "Since the last cleanup run",
            "Time since the last cleanup run ended, per instance. Before the first run (one "
            "cleanup interval after start) it shows the time since the sidecar started, "
            'labelled "no run yet". Normal: less than the cleanup interval '
            "(cleanup_interval_seconds, 1 h by default); orange from 2 h, with or without "
            "a run. An on-demand run is POST /api/v1/admin/cleanup.",
            [
                # the timestamp is 0 before the first run: no value rather than 56 years
                query("A", f"time() - ({last_run} > 0)", "{{instance}}", instant=True),
                query(
                    "B",
                    "time() - max by (instance) ("
                    + sel("process_start_time_seconds")
                    + f") and on (instance) ({last_run} == 0)",
                    "{{instance}}: no run yet, up for",
                    instant=True,
                ),
            ],
            unit="s",
            span=6,
        ).thresholds(thresholds((None, "green"), (7200, "orange")))
    )
    builder.with_panel(
        timeseries_panel(
            22,
            "Cleanup runs and errors",
            "Cleanup runs and failed cleanup runs per second, summed over the selected "
            "instances. Normal: one run per cleanup interval per instance and no errors; "
            "errors are logged by the sidecar with their traceback.",
            [
                query("A", f"sum({rate('sidecar_cleanup_runs_total')})", "runs"),
                query("B", f"sum({rate('sidecar_cleanup_errors_total')})", "errors"),
            ],
            unit="ops",
            span=12,
            height=6,
        ).override_by_name("errors", fixed_color("red"))
    )


def _http_row(builder: dashboard.Dashboard) -> None:
    builder.with_row(dashboard.Row("HTTP API").id(23))
    requests = "sidecar_http_request_duration_seconds_count"
    all_requests = rate(requests)
    # `or ... * 0` gives routes without any 5xx a 0 line instead of no data.
    server_errors = rate(requests, 'status=~"5.."')
    builder.with_panel(
        timeseries_panel(
            24,
            "Requests by route",
            "HTTP requests per second by route (the Flask URL rule; <unmatched> for paths "
            "that match none), over the selected instances, /metrics and the probes included. "
            "Normal: follows the service's traffic; /metrics at one request per scrape "
            "interval per Prometheus.",
            [query("A", f"sum by (route) ({all_requests})", "{{route}}")],
            unit="reqps",
        )
    )
    builder.with_panel(
        timeseries_panel(
            25,
            "Server error ratio by route",
            "Share of requests answered with a 5xx status, by route. 4xx answers (unknown "
            "session, invalid transition, full sidecar under the reject policy) are the "
            "clients' business and not counted. Normal: 0.",
            [
                query(
                    "A",
                    f"(sum by (route) ({server_errors}) or sum by (route) ({all_requests}) * 0)"
                    f" / sum by (route) ({all_requests})",
                    "{{route}}",
                )
            ],
            unit="percentunit",
        ).min(0)
    )
    builder.with_panel(
        timeseries_panel(
            26,
            "p95 latency by route",
            "95th percentile of the time to answer a request, by route, over the selected "
            "instances. Normal: milliseconds; /metrics grows with the number of series, and "
            "every session operation is O(log n) in the sessions held.",
            [
                query(
                    "A",
                    "histogram_quantile(0.95, sum by (le, route) ("
                    + rate("sidecar_http_request_duration_seconds_bucket")
                    + "))",
                    "{{route}}",
                )
            ],
            unit="s",
        )
    )


def _store_row(builder: dashboard.Dashboard) -> None:
    builder.with_row(dashboard.Row("Session store").id(27))
    builder.with_panel(
        stat_panel(
            28,
            "Session store",
            "Whether each instance's last call to its session store got an answer "
            "(sidecar_store_up). Normal: up (always, with the memory store). Down: Redis does not "
            "answer within SIDECAR_STORE_TIMEOUT_SECONDS, the API answers 503 "
            "store-unavailable and /readyz 503 until it does.",
            [
                query(
                    "A",
                    f"min by (instance) ({sel('sidecar_store_up')})",
                    "{{instance}}",
                    instant=True,
                )
            ],
            span=6,
        )
        .mappings(value_text({"0": ("down", "red"), "1": ("up", "green")}))
        .thresholds(thresholds((None, "red"), (1, "green")))
    )
    builder.with_panel(
        timeseries_panel(
            29,
            "p99 store call latency by operation",
            "99th percentile of one call to the session store, by operation, over the "
            "selected instances. Redis mode only (a memory store's calls are not timed). "
            "Normal: a loopback round trip, well under 1 ms; calls that time out count at the "
            "timeout.",
            [
                query(
                    "A",
                    "histogram_quantile(0.99, sum by (le, operation) ("
                    + rate("sidecar_store_duration_seconds_bucket")
                    + "))",
                    "{{operation}}",
                )
            ],
            unit="s",
            span=18,
        )
    )


def build_overview() -> dict[str, Any]:
    """The overview dashboard an on-call engineer opens, as Grafana's JSON model."""
    builder = (
        dashboard.Dashboard("Session sidecar / Overview")
        .uid(OVERVIEW_UID)
        .description(
            "Capacity, health, session flow, cleanup worker and HTTP API of the session "
            "sidecars selected by the job, store and instance variables: the store's figures "
            "once per store, what each replica did per instance. Alerts and their runbook: "
            "prometheus/alerts.yml and docs/runbook.md."
        )
        .tags(["sidecar", "sessions"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(scope_variable("job", "Job", "sidecar_build_info"))
        .with_variable(scope_variable("store", "Store", 'sidecar_store_up{job=~"$job"}'))
        .with_variable(
            scope_variable("instance", "Instance", 'sidecar_store_up{job=~"$job", store=~"$store"}')
        )
    )
    rows = (_capacity_row, _sessions_row, _throughput_row, _cleanup_row, _http_row, _store_row)
    for add_row in rows:
        add_row(builder)
    encoded: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return encoded


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "sidecar-overview.json": build_overview,
}


def render(dashboard_json: dict[str, Any]) -> str:
    """The committed text of a dashboard: stable key order, two-space indent, final newline."""
    return json.dumps(dashboard_json, indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write every dashboard to grafana/dashboards/."""
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for filename, build in DASHBOARDS.items():
        path = DASHBOARD_DIR / filename
        path.write_text(render(build()), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
