"""The session core's tunable settings: the seed's constants, made configurable and validated."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

__all__ = ["CapacityPolicy", "ManagerConfig"]


class CapacityPolicy(enum.StrEnum):
    """What a create does when the manager is full."""

    EVICT_OLDEST = "evict_oldest"
    REJECT = "reject"


Seconds = Annotated[float, Field(gt=0, le=10 * 365 * 86400)]
Ratio = Annotated[float, Field(gt=0, le=1)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ManagerConfig:
    """Capacity, expiry, stuck and health thresholds. Defaults are the seed's."""

    max_sessions: Annotated[int, Field(ge=1, le=10_000_000)] = 100
    cleanup_interval_seconds: Seconds = 3600.0
    session_max_age_seconds: Seconds = 24 * 3600.0
    failed_max_age_seconds: Seconds = 3600.0
    completed_max_age_seconds: Seconds = 6 * 3600.0
    stuck_after_seconds: Seconds = 1800.0
    capacity_policy: CapacityPolicy = CapacityPolicy.EVICT_OLDEST
    warning_utilization: Ratio = 0.7
    critical_utilization: Ratio = 0.9

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> ManagerConfig:
        if self.warning_utilization > self.critical_utilization:
            raise ValueError("warning_utilization must not exceed critical_utilization")
        return self

    def replace(self, **changes: Any) -> ManagerConfig:
        """A validated copy with `changes` applied (raises pydantic's ValidationError)."""
        return ManagerConfig(**{**dataclasses.asdict(self), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        values = dataclasses.asdict(self)
        values["capacity_policy"] = self.capacity_policy.value
        return values
