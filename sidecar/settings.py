"""Process settings: environment variables prefixed SIDECAR_, overridden by `sidecar serve` flags.

The manager's part is checked by `ManagerConfig` itself, so its bounds live in one place;
`describe_errors` turns any failure into one line that names the variable (or flag) and what
it accepts, for the command line to print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar.core.config import CapacityPolicy, ManagerConfig

__all__ = ["ENV_PREFIX", "SECRET_FIELDS", "Settings", "describe_errors", "env_name"]

ENV_PREFIX = "SIDECAR_"
SECRET_FIELDS = frozenset({"api_token", "admin_token", "metrics_token"})
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

_DEFAULTS = ManagerConfig()


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _visible_ascii(token: SecretStr) -> SecretStr:
    # A token travels in an Authorization header: no spaces, no control or non-ASCII bytes.
    if not all("!" <= ch <= "~" for ch in token.get_secret_value()):
        raise ValueError("must be visible ASCII characters without spaces")
    return token


Token = Annotated[SecretStr, Field(min_length=1), AfterValidator(_visible_ascii)]


class Settings(BaseSettings):
    """Everything `sidecar serve` can be told; manager fields are validated by ManagerConfig."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    host: Annotated[str, Field(min_length=1, description="Address to listen on.")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="TCP port; 0 picks a free one.")] = 8000
    threads: Annotated[int, Field(ge=1, le=256, description="Request threads.")] = 8
    max_sessions: Annotated[int, Field(description="Sessions held at most.")] = (
        _DEFAULTS.max_sessions
    )
    cleanup_interval_seconds: Annotated[
        float, Field(description="Seconds between two automatic cleanup runs.")
    ] = _DEFAULTS.cleanup_interval_seconds
    session_max_age_seconds: Annotated[
        float, Field(description="Age at which any session expires.")
    ] = _DEFAULTS.session_max_age_seconds
    failed_max_age_seconds: Annotated[
        float, Field(description="Age at which a failed session expires.")
    ] = _DEFAULTS.failed_max_age_seconds
    completed_max_age_seconds: Annotated[
        float, Field(description="Age at which a completed session expires.")
    ] = _DEFAULTS.completed_max_age_seconds
    stuck_after_seconds: Annotated[
        float, Field(description="A processing session not updated for this long is stuck.")
    ] = _DEFAULTS.stuck_after_seconds
    capacity_policy: Annotated[
        CapacityPolicy, Field(description="What a create does when full.")
    ] = _DEFAULTS.capacity_policy
    warning_utilization: Annotated[
        float, Field(description="Utilization (0-1] at which health turns warning.")
    ] = _DEFAULTS.warning_utilization
    critical_utilization: Annotated[
        float, Field(description="Utilization (0-1] at which health turns critical.")
    ] = _DEFAULTS.critical_utilization
    max_body_bytes: Annotated[
        int, Field(ge=1, le=1 << 30, description="Largest request body accepted, in bytes.")
    ] = 1 << 20
    log_level: Annotated[LogLevel, BeforeValidator(_lower), Field(description="Log level.")] = (
        "info"
    )
    log_format: Annotated[
        Literal["text", "json"], BeforeValidator(_lower), Field(description="Log line format.")
    ] = "text"
    api_token: Annotated[
        Token | None, Field(description="Bearer token every /api/v1 route requires.")
    ] = None
    admin_token: Annotated[
        Token | None, Field(description="Bearer token /api/v1/admin/* require.")
    ] = None
    metrics_token: Annotated[Token | None, Field(description="Bearer token /metrics requires.")] = (
        None
    )
    allow_unauthenticated: Annotated[
        bool, Field(description="Serve a non-loopback address without an API token.")
    ] = False

    _manager_config: ManagerConfig = PrivateAttr()

    @model_validator(mode="after")
    def _build_manager_config(self) -> Settings:
        # ManagerConfig holds the bounds; its errors carry the same field names as ours.
        fields = {f.name for f in dataclasses.fields(ManagerConfig)}
        self._manager_config = ManagerConfig(**{name: getattr(self, name) for name in fields})
        return self

    @property
    def manager_config(self) -> ManagerConfig:
        """The session manager's settings, already validated."""
        return self._manager_config

    def secret(self, name: Literal["api_token", "admin_token", "metrics_token"]) -> str | None:
        """A token's plain value, or None when it is not set."""
        value: SecretStr | None = getattr(self, name)
        return None if value is None else value.get_secret_value()


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """The `sidecar serve` flag that sets `field`."""
    return "--" + field.replace("_", "-")


_RULES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_too_short": "must not be empty",
    "extra_forbidden": "is not a known setting",
}


def _plain(value: Any) -> Any:
    # 0.0 reads as 0: the bound or value as a person would write it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _allowed(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = {key: _plain(value) for key, value in (error.get("ctx") or {}).items()}
    if kind in ("enum", "literal_error"):
        return "must be " + str(ctx.get("expected", "")).replace("'", "")
    rule = _RULES.get(kind)
    if rule is not None:
        return rule.format(**ctx)
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def describe_errors(exc: ValidationError, from_flags: frozenset[str] = frozenset()) -> str:
    """One line naming each bad setting (as the flag or variable that set it) and what it takes.

    Token values are never repeated.
    """
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:
            parts.append(f"invalid settings: {_allowed(error)}")
            continue
        field = str(loc[0])
        name = flag_name(field) if field in from_flags else env_name(field)
        value = _plain(error.get("input"))
        shown = "" if field in SECRET_FIELDS or isinstance(value, dict) else f"={value}"
        parts.append(f"invalid {name}{shown}: {_allowed(error)}")
    return "; ".join(parts)
