"""Process settings: environment variables prefixed SIDECAR_, overridden by `sidecar serve` flags.

The manager's nine settings are not declared here: their fields (names, types, defaults, bounds
and help) are made from `sidecar.core.config.MANAGER_SETTINGS`, so a variable, a flag and the
admin PATCH body take exactly what ManagerConfig takes. `describe_errors` turns any failure
into one line that names the variable (or flag) and what it accepts, for the command line to
print. Choices (capacity policy, log level and format) are case-insensitive in variables and
flags alike.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar.core.config import MANAGER_SETTINGS, ManagerConfig
from sidecar.store.url import check_prefix, check_url, redact
from sidecar.tokens import TOKEN_CHARACTERS, sendable_token

__all__ = [
    "ENV_PREFIX",
    "MIN_TOKEN_LENGTH",
    "SECRET_FIELDS",
    "Settings",
    "describe_errors",
    "env_name",
    "flag_name",
    "host_problem",
    "source_name",
]

ENV_PREFIX = "SIDECAR_"
SECRET_FIELDS = frozenset({"api_token", "admin_token", "metrics_token"})
# A token is a shared secret in a header: 16 visible characters leave guessing hopeless, and a
# short one ("v1") would also be a piece of ordinary text.
MIN_TOKEN_LENGTH = 16
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _visible_ascii(token: SecretStr) -> SecretStr:
    if not sendable_token(token.get_secret_value()):
        raise ValueError(f"must be {TOKEN_CHARACTERS}")
    return token


def _store(value: str) -> str:
    # `memory` in any case, like the other choices; a URL as given (its password is checked
    # here but never repeated: check_url's messages are redacted).
    if value.lower() == "memory":
        return "memory"
    return check_url(value)


Token = Annotated[SecretStr, Field(min_length=MIN_TOKEN_LENGTH), AfterValidator(_visible_ascii)]


def _manager_fields() -> dict[str, Any]:
    """ManagerConfig's fields as settings: same type, default, bounds and help."""
    fields: dict[str, Any] = {}
    for spec in MANAGER_SETTINGS:
        annotation = spec.field.rebuild_annotation()
        if spec.choices:
            annotation = Annotated[annotation, BeforeValidator(_lower)]
        fields[spec.name] = (annotation, Field(spec.default, description=spec.help))
    return fields


if TYPE_CHECKING:  # the checker cannot follow a class made at run time
    _ManagerSettings = BaseSettings
else:
    _ManagerSettings = create_model("_ManagerSettings", __base__=BaseSettings, **_manager_fields())


class Settings(_ManagerSettings):
    """Everything `sidecar serve` can be told: the manager's settings, then the process's."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        # An embedding that lets a ValidationError print (create_app with a bad environment)
        # must not print a token or a store password; describe_errors still reads the inputs.
        hide_input_in_errors=True,
    )

    host: Annotated[str, Field(min_length=1, description="Address to listen on.")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="TCP port; 0 picks a free one.")] = 8000
    threads: Annotated[int, Field(ge=1, le=256, description="Request threads.")] = 8
    max_body_bytes: Annotated[
        int, Field(ge=1, le=1 << 30, description="Largest request body accepted, in bytes.")
    ] = 1 << 20
    # Connection handling (waitress adjustments; see docs/design.md, "Hostile clients").
    connection_limit: Annotated[
        int, Field(ge=10, le=100_000, description="Open client connections held at most.")
    ] = 2000
    idle_timeout_seconds: Annotated[
        int,
        Field(
            ge=1, le=3600, description="A connection silent this long with nothing to do closes."
        ),
    ] = 30
    max_header_bytes: Annotated[
        int,
        Field(ge=1024, le=1 << 20, description="Largest request line and headers, in bytes."),
    ] = 64 << 10
    unread_answer_bytes: Annotated[
        int,
        Field(
            ge=1 << 20,
            le=1 << 30,
            description="Answers buffered for a client that does not read before its thread waits.",
        ),
    ] = 128 << 20
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
    store: Annotated[
        str,
        AfterValidator(_store),
        Field(
            min_length=1,
            repr=False,  # a URL may hold a password
            description="Where sessions live: memory (this process), or a Redis URL shared by "
            "replicas (redis://[user:password@]host:port/db, rediss://..., unix:///path.sock).",
        ),
    ] = "memory"
    store_prefix: Annotated[
        str,
        AfterValidator(check_prefix),
        Field(description="Key prefix in Redis: fleets sharing one Redis use different ones."),
    ] = "sidecar"
    store_timeout_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=30,
            allow_inf_nan=False,
            description="Longest wait for Redis on any call; past it the API answers 503.",
        ),
    ] = 1.0
    store_name: Annotated[
        str | None,
        Field(
            pattern=r"^[A-Za-z0-9_.:/@-]{1,128}$",
            description="The store metric label; default: redis:<host>:<port>/<db>/<prefix> "
            "or memory:<hostname>:<port>.",
        ),
    ] = None
    allow_unauthenticated: Annotated[
        bool, Field(description="Serve a non-loopback address without an API token.")
    ] = False
    snapshot_path: Annotated[
        Path | None,
        Field(
            description="Memory store only: a file the sessions are written to at shutdown "
            "(atomically) and restored from at start; its directory must exist and be writable."
        ),
    ] = None
    snapshot_interval_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=86400,
            description="Also write the snapshot this often, so a crash loses at most one "
            "interval; 0: only at shutdown.",
        ),
    ] = 0
    snapshot_discard_invalid: Annotated[
        bool,
        Field(
            description="Move an unusable snapshot aside (<path>.invalid-<UTC time>) and start "
            "empty, instead of refusing to start."
        ),
    ] = False

    _manager_config: ManagerConfig = PrivateAttr()

    @model_validator(mode="after")
    def _check_snapshot(self) -> Settings:
        # Words that name a field are written alone: describe_errors names them as set.
        if self.snapshot_path is not None and self.store != "memory":
            raise ValueError(
                "snapshot_path is for memory sessions only: with store naming Redis the "
                "sessions are already kept by Redis (durable with appendonly yes); unset one"
            )
        if self.snapshot_interval_seconds and self.snapshot_path is None:
            raise ValueError("snapshot_interval_seconds needs snapshot_path")
        return self

    @model_validator(mode="after")
    def _build_manager_config(self) -> Settings:
        # Each field is already checked; ManagerConfig adds the rules across fields.
        values = {spec.name: getattr(self, spec.name) for spec in MANAGER_SETTINGS}
        self._manager_config = ManagerConfig(**values)
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
    "finite_number": "not a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_too_short": "must be at least {min_length} characters",
    "too_short": "must be at least {min_length} characters",
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
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in ("enum", "literal_error"):
        return "must be " + str(ctx.get("expected", "")).replace("'", "")
    rule = _RULES.get(kind)
    if rule is not None:
        return rule.format(**ctx)
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def source_name(field: str, from_flags: frozenset[str] = frozenset()) -> str:
    """Where `field`'s value came from: its flag if one was given, else its variable."""
    return flag_name(field) if field in from_flags else env_name(field)


def describe_errors(exc: ValidationError, from_flags: frozenset[str] = frozenset()) -> str:
    """One line naming each bad setting (as the flag or variable that set it) and what it takes.

    Token values are never repeated.
    """
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:
            # A rule across fields: name each field as the flag or variable that set it.
            words = [
                source_name(word, from_flags) if word in Settings.model_fields else word
                for word in _allowed(error).split(" ")
            ]
            parts.append(f"invalid settings: {' '.join(words)}")
            continue
        field = str(loc[0])
        name = source_name(field, from_flags)
        value = _plain(error.get("input"))
        shown = "" if field in SECRET_FIELDS or isinstance(value, dict) else f"={value}"
        if field == "store" and isinstance(value, str):
            shown = f"={redact(value)}"
        parts.append(f"invalid {name}{shown}: {_allowed(error)}")
    return "; ".join(parts)


def host_problem(host: str, from_flags: frozenset[str] = frozenset()) -> str | None:
    """Why `host` cannot be listened on (one line naming its flag or variable), or None.

    An IP address is taken as it is; a name must resolve, so that a typo stops `serve` with a
    clear line instead of a failure inside the server.
    """
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"invalid {source_name('host', from_flags)}={host}: not an IP address or host name"
    return None
