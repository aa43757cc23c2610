"""The session core's tunable settings, declared once.

`ManagerConfig` is the one declaration of the manager's settings: each field's name, type,
default, bounds, help text and whether it is live (changeable while running). The SIDECAR_*
environment settings and `sidecar serve` flags (sidecar.settings), the body of
PATCH /api/v1/admin/config (sidecar.web.schemas) and the OpenAPI document are all derived from
it through `MANAGER_SETTINGS`, so none of them can disagree on a name, a default or a bound.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

__all__ = [
    "MANAGER_SETTINGS",
    "CapacityPolicy",
    "ManagerConfig",
    "Seconds",
    "SettingSpec",
    "bounds_of",
    "describe_bounds",
]

DAY = 86400
YEAR = 365 * DAY


class CapacityPolicy(enum.StrEnum):
    """What a create does when the manager is full."""

    EVICT_OLDEST = "evict_oldest"
    REJECT = "reject"


# Any positive, finite duration (the age argument of a one-off cleanup).
Seconds = Annotated[float, Field(gt=0, le=10 * YEAR, allow_inf_nan=False)]


def _setting(
    help: str,
    *,
    live: bool = True,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    extra: dict[str, Any] = {"x-live": live}
    if ge is None and gt is None and le is None:  # a choice, not a number
        return Field(description=help, json_schema_extra=extra)
    # Numbers are finite everywhere: NaN fails every comparison, so no bound would catch it.
    return Field(
        description=help, json_schema_extra=extra, allow_inf_nan=False, ge=ge, gt=gt, le=le
    )


class ManagerConfig(BaseModel):
    """Capacity, expiry, stuck and health thresholds. Defaults are the seed's.

    The bounds keep a live change from hurting the process: a cleanup interval under a second
    would run cleanups thousands of times a second; ages under a minute expire sessions while
    they are still being created.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sessions: Annotated[int, _setting("Sessions held at most.", ge=1, le=10_000_000)] = 100
    cleanup_interval_seconds: Annotated[
        float, _setting("Seconds between two automatic cleanup runs.", ge=1, le=DAY)
    ] = 3600.0
    session_max_age_seconds: Annotated[
        float, _setting("Age in seconds at which any session expires.", ge=60, le=YEAR)
    ] = 24 * 3600.0
    failed_max_age_seconds: Annotated[
        float, _setting("Age in seconds at which a failed session expires.", ge=60, le=YEAR)
    ] = 3600.0
    completed_max_age_seconds: Annotated[
        float, _setting("Age in seconds at which a completed session expires.", ge=60, le=YEAR)
    ] = 6 * 3600.0
    stuck_after_seconds: Annotated[
        float,
        _setting(
            "Seconds without an update after which a processing session counts as stuck.",
            ge=1,
            le=7 * DAY,
        ),
    ] = 1800.0
    capacity_policy: Annotated[
        CapacityPolicy, _setting("What a create does when full (reject answers 429).")
    ] = CapacityPolicy.EVICT_OLDEST
    warning_utilization: Annotated[
        float, _setting("Utilization (0-1] at which health turns warning.", gt=0, le=1)
    ] = 0.7
    critical_utilization: Annotated[
        float, _setting("Utilization (0-1] at which health turns critical.", gt=0, le=1)
    ] = 0.9

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> ManagerConfig:
        if self.warning_utilization > self.critical_utilization:
            raise ValueError("warning_utilization must not exceed critical_utilization")
        return self

    def replace(self, **changes: Any) -> ManagerConfig:
        """A validated copy with `changes` applied (raises pydantic's ValidationError)."""
        return ManagerConfig(**{**self.model_dump(), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return self.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One declared setting, as the layers that derive from ManagerConfig need it."""

    name: str
    type: Any  # the field's type without its bounds: int, float or an enum
    default: Any
    help: str
    live: bool
    bounds: dict[str, float]  # any of ge, gt, le, lt
    field: FieldInfo  # the declaration itself, to rebuild the annotation from

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of an enum setting; empty for numbers."""
        if isinstance(self.type, type) and issubclass(self.type, enum.Enum):
            return tuple(str(member.value) for member in self.type)
        return ()

    def describe(self) -> str:
        """The allowed values in words, e.g. `1 to 86400` or `> 0 and <= 1`."""
        return " or ".join(self.choices) if self.choices else describe_bounds(self.bounds)


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def describe_bounds(bounds: dict[str, float]) -> str:
    """Bounds in words: `1 to 86400`, `> 0 and <= 1`, `>= 1`; empty when there are none."""
    ge, le = bounds.get("ge"), bounds.get("le")
    if ge is not None and le is not None:
        return f"{_plain(ge)} to {_plain(le)}"
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{symbols[k]} {_plain(v)}" for k, v in bounds.items())


_BOUNDS = ("ge", "gt", "le", "lt")


def bounds_of(field: FieldInfo) -> dict[str, float]:
    """A field's numeric bounds by pydantic's names (ge, gt, le, lt)."""
    bounds: dict[str, float] = {}
    for item in field.metadata:  # pydantic keeps each bound as an annotated-types object
        for key in _BOUNDS:
            value = getattr(item, key, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                bounds[key] = value
    return bounds


def _spec(name: str, field: FieldInfo) -> SettingSpec:
    bounds = bounds_of(field)
    extra = field.json_schema_extra
    live = bool(extra.get("x-live")) if isinstance(extra, dict) else False
    return SettingSpec(
        name=name,
        type=field.annotation,
        default=field.default,
        help=field.description or "",
        live=live,
        bounds=bounds,
        field=field,
    )


MANAGER_SETTINGS: tuple[SettingSpec, ...] = tuple(
    _spec(name, field) for name, field in ManagerConfig.model_fields.items()
)
