"""The demo's traffic plan against the shipped alert rules, without running any traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_plan import (
    CRITICAL_ALERT,
    SHIPPED_ALERTS,
    TrafficPlan,
    UtilizationRule,
    default_plan,
    parse_duration,
    utilization_rule,
)

# What Prometheus needs beyond `for`, at scrape and evaluation interval `interval`: a scrape,
# the recording rule's evaluation, the alert's, and the evaluation that turns it firing.
SCRAPE_AND_EVALUATIONS = 4


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("15m", 900), ("1h30m", 5400), ("90s", 90), ("500ms", 0.5), ("1d", 86400)],
)
def test_parse_duration_reads_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "m", "-5m", "5 m"])
def test_parse_duration_refuses_what_prometheus_would(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration(text)


def test_the_rule_is_read_from_the_shipped_alerts() -> None:
    rule = utilization_rule()
    assert rule.name == CRITICAL_ALERT
    assert 0 < rule.threshold <= 1
    assert rule.for_seconds > 0
    assert CRITICAL_ALERT in SHIPPED_ALERTS.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("capacity", "rate", "interval"),
    [(200, 2.0, 5.0), (20, 20.0, 1.0), (10, 1.0, 15.0), (1000, 50.0, 5.0)],
)
def test_the_default_plan_holds_past_the_threshold_longer_than_the_alerts_for(
    capacity: int, rate: float, interval: float
) -> None:
    rule = utilization_rule()
    plan = default_plan(capacity, rate, interval, rule)

    held = plan.seconds_at_or_above(rule.threshold)
    assert held >= rule.for_seconds + SCRAPE_AND_EVALUATIONS * interval
    # never full, so no session is evicted and the level stays where the plan says
    assert rule.threshold <= plan.utilization_at(plan.fill_seconds) < 1


def test_the_hold_follows_the_rules_file(tmp_path: Path) -> None:
    shipped = SHIPPED_ALERTS.read_text(encoding="utf-8")
    assert shipped.count("for: 5m") >= 1
    longer = tmp_path / "alerts.yml"
    longer.write_text(shipped.replace("for: 5m", "for: 12m", 1), encoding="utf-8")

    rule = utilization_rule(longer)
    plan = default_plan(200, 2.0, 5.0, rule)

    assert rule.for_seconds == 720
    assert plan.seconds_at_or_above(rule.threshold) >= 720 + SCRAPE_AND_EVALUATIONS * 5.0


def test_a_shorter_hold_is_taken_as_given() -> None:
    rule = UtilizationRule(CRITICAL_ALERT, 0.9, 300)
    plan = default_plan(200, 2.0, 5.0, rule, hold=30.0)
    assert plan.hold_seconds == 30.0
    assert plan.seconds_at_or_above(0.9) < rule.for_seconds


def test_utilization_climbs_while_filling_and_stays_while_holding() -> None:
    plan = TrafficPlan(capacity=200, rate=2.0, fill_sessions=190, hold_seconds=100)
    assert plan.fill_seconds == 95
    assert plan.utilization_at(-1) == 0
    assert plan.utilization_at(0) == 1 / 200  # the first create is immediate
    assert plan.utilization_at(89.5) == 180 / 200  # the 180th session: 0.9 reached
    assert plan.utilization_at(89.4) < 0.9
    assert plan.utilization_at(150) == 190 / 200
    # from 89.5 s to the end of the fill (95 s) and the hold (100 s)
    assert plan.seconds_at_or_above(0.9) == pytest.approx(95 + 100 - 89.5)
    assert plan.seconds_at_or_above(0.96) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups: []", "exactly once"),
        (
            "groups: [{name: g, rules: [{alert: SidecarSessionUtilizationCritical, expr: up}]}]",
            "ending in '>= <ratio>'",
        ),
    ],
)
def test_a_rules_file_without_the_alert_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        utilization_rule(path)


def test_a_capacity_too_small_to_pass_the_threshold_unfilled_is_refused() -> None:
    with pytest.raises(ValueError, match="--max-sessions"):
        default_plan(5, 1.0, 5.0, UtilizationRule(CRITICAL_ALERT, 0.9, 300))
