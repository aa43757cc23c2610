"""The demo's traffic plan, derived from the shipped alert rules: no processes, no network.

The demo fills the sidecar past the critical utilization threshold of
prometheus/alerts.yml, holds it there for the alert's `for` plus the time Prometheus needs to
notice (a scrape, the recording rule, the alert rule, the evaluation that turns it firing), then
purges the finished sessions so the alert resolves. Reading the threshold and `for` from the
rules file keeps the demo honest when someone changes the rule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ALERTS = ROOT / "prometheus" / "alerts.yml"
CRITICAL_ALERT = "SidecarSessionUtilizationCritical"
FILL_RATIO = 0.95  # past the critical bound with a margin, short of full: no evictions
# Prometheus's duration syntax: 1h30m, 5m, 90s, 500ms, ...
_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_DURATION = re.compile("".join(rf"(?:(\d+){unit})?" for unit in _UNITS))
_AT_LEAST = re.compile(r">=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `5m` or `1h30m`; ValueError otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if not text.strip() or found is None:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * unit for n, unit in zip(found.groups(), _UNITS.values(), strict=True) if n)


@dataclass(frozen=True, slots=True)
class UtilizationRule:
    """An alert on utilization >= `threshold` held for `for_seconds`."""

    name: str
    threshold: float
    for_seconds: float


def utilization_rule(path: Path = SHIPPED_ALERTS, name: str = CRITICAL_ALERT) -> UtilizationRule:
    """The threshold and `for` of alert `name` in the rules file `path`."""
    groups: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = [
        rule
        for group in groups.get("groups", [])
        for rule in group.get("rules", [])
        if rule.get("alert") == name
    ]
    if len(rules) != 1:
        raise ValueError(f"{path} must define the alert {name} exactly once")
    (rule,) = rules
    threshold = _AT_LEAST.search(str(rule["expr"]).strip())
    if threshold is None:
        raise ValueError(f"{name} in {path}: expected an expression ending in '>= <ratio>'")
    return UtilizationRule(name, float(threshold.group(1)), parse_duration(rule.get("for", "0s")))


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """Create `fill_sessions` at `rate` per second, hold for `hold_seconds`, then purge.

    Every created session stays held until the purge (the sidecar's cleanup ages are hours),
    so held sessions grow linearly while filling and stay flat while holding.
    """

    capacity: int
    rate: float
    fill_sessions: int
    hold_seconds: float

    @property
    def fill_seconds(self) -> float:
        """How long the simulator creates sessions: one every 1/rate seconds."""
        return self.fill_sessions / self.rate

    def utilization_at(self, seconds: float) -> float:
        """Predicted held / capacity `seconds` after the fill started, until the purge."""
        # The simulator creates its n-th session (from 0) at n / rate.
        if seconds < 0:
            return 0.0
        return min(self.fill_sessions, math.floor(seconds * self.rate) + 1) / self.capacity

    def seconds_at_or_above(self, threshold: float) -> float:
        """How long the plan keeps utilization >= `threshold` before the purge."""
        needed = math.ceil(threshold * self.capacity - 1e-9)  # sessions for >= threshold
        if needed > self.fill_sessions:
            return 0.0
        reached = (needed - 1) / self.rate  # when the needed-th session is created
        return self.fill_seconds + self.hold_seconds - reached


def detection_margin(interval: float) -> float:
    """Time Prometheus may take beyond an alert's `for`, scraping and evaluating every `interval`.

    One scrape to see the level, one evaluation of the recording rule, one of the alert (the
    two groups run independently), one more evaluation to turn pending into firing, and two
    intervals of slack for a busy machine.
    """
    return 6 * interval


def default_plan(
    capacity: int, rate: float, interval: float, rule: UtilizationRule, hold: float | None = None
) -> TrafficPlan:
    """The plan that shows `rule` go pending and then firing; `hold` overrides the hold time."""
    if capacity < 2:
        raise ValueError("the demo needs a capacity of at least 2 sessions")
    fill = min(capacity - 1, math.ceil(FILL_RATIO * capacity - 1e-9))
    if fill / capacity < rule.threshold:
        raise ValueError(
            f"a capacity of {capacity} cannot hold {rule.threshold:g} of it without filling up;"
            " use a larger --max-sessions"
        )
    if hold is None:
        plan = TrafficPlan(capacity, rate, fill, 0.0)
        already = plan.seconds_at_or_above(rule.threshold)  # the end of the fill counts too
        hold = max(0.0, rule.for_seconds + detection_margin(interval) - already)
    return TrafficPlan(capacity, rate, fill, hold)
