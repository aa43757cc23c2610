"""Settings from SIDECAR_* variables: defaults, overrides, and one-line errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.settings import Settings, describe_errors


def test_defaults_are_loopback_port_8000_and_the_seed_manager_settings(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = Settings()

    assert (settings.host, settings.port, settings.threads) == ("127.0.0.1", 8000, 8)
    assert settings.max_body_bytes == 1048576
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert settings.api_token is None
    assert settings.admin_token is None
    assert settings.metrics_token is None
    assert settings.allow_unauthenticated is False
    assert settings.manager_config == ManagerConfig()


def test_environment_overrides_defaults(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SIDECAR_HOST": "0.0.0.0",
        "SIDECAR_PORT": "9100",
        "SIDECAR_THREADS": "4",
        "SIDECAR_MAX_SESSIONS": "500",
        "SIDECAR_CLEANUP_INTERVAL_SECONDS": "60",
        "SIDECAR_SESSION_MAX_AGE_SECONDS": "7200",
        "SIDECAR_FAILED_MAX_AGE_SECONDS": "600",
        "SIDECAR_COMPLETED_MAX_AGE_SECONDS": "900",
        "SIDECAR_STUCK_AFTER_SECONDS": "120",
        "SIDECAR_CAPACITY_POLICY": "reject",
        "SIDECAR_MAX_BODY_BYTES": "2048",
        "SIDECAR_LOG_LEVEL": "DEBUG",
        "SIDECAR_LOG_FORMAT": "json",
        "SIDECAR_API_TOKEN": "a",
        "SIDECAR_ADMIN_TOKEN": "b",
        "SIDECAR_METRICS_TOKEN": "c",
    }.items():
        clean_env.setenv(name, value)

    settings = Settings()

    assert (settings.host, settings.port, settings.threads) == ("0.0.0.0", 9100, 4)
    assert settings.manager_config == ManagerConfig(
        max_sessions=500,
        cleanup_interval_seconds=60,
        session_max_age_seconds=7200,
        failed_max_age_seconds=600,
        completed_max_age_seconds=900,
        stuck_after_seconds=120,
        capacity_policy=CapacityPolicy.REJECT,
    )
    assert settings.max_body_bytes == 2048
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert (settings.secret("api_token"), settings.secret("admin_token")) == ("a", "b")
    assert settings.secret("metrics_token") == "c"


def test_arguments_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SIDECAR_MAX_SESSIONS", "5")

    assert Settings(max_sessions="7").max_sessions == 7
    assert Settings().max_sessions == 5


def test_empty_variables_count_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SIDECAR_API_TOKEN", "")
    clean_env.setenv("SIDECAR_PORT", "")

    settings = Settings()

    assert settings.api_token is None
    assert settings.port == 8000


def test_tokens_are_hidden_from_repr(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(api_token="hunter2-token")

    assert "hunter2-token" not in repr(settings)
    assert "hunter2-token" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("SIDECAR_MAX_SESSIONS", "0", "invalid SIDECAR_MAX_SESSIONS=0: must be >= 1"),
        ("SIDECAR_MAX_SESSIONS", "abc", "invalid SIDECAR_MAX_SESSIONS=abc: must be an integer"),
        ("SIDECAR_MAX_SESSIONS", "2.5", "invalid SIDECAR_MAX_SESSIONS=2.5: must be an integer"),
        (
            "SIDECAR_CAPACITY_POLICY",
            "drop_newest",
            "invalid SIDECAR_CAPACITY_POLICY=drop_newest: must be evict_oldest or reject",
        ),
        ("SIDECAR_PORT", "65536", "invalid SIDECAR_PORT=65536: must be <= 65535"),
        ("SIDECAR_PORT", "-1", "invalid SIDECAR_PORT=-1: must be >= 0"),
        ("SIDECAR_THREADS", "0", "invalid SIDECAR_THREADS=0: must be >= 1"),
        (
            "SIDECAR_CLEANUP_INTERVAL_SECONDS",
            "0",
            "invalid SIDECAR_CLEANUP_INTERVAL_SECONDS=0: must be > 0",
        ),
        (
            "SIDECAR_STUCK_AFTER_SECONDS",
            "soon",
            "invalid SIDECAR_STUCK_AFTER_SECONDS=soon: must be a number",
        ),
        ("SIDECAR_MAX_BODY_BYTES", "0", "invalid SIDECAR_MAX_BODY_BYTES=0: must be >= 1"),
        (
            "SIDECAR_LOG_FORMAT",
            "xml",
            "invalid SIDECAR_LOG_FORMAT=xml: must be text or json",
        ),
        (
            "SIDECAR_LOG_LEVEL",
            "loud",
            "invalid SIDECAR_LOG_LEVEL=loud: must be debug, info, warning, error or critical",
        ),
        (
            "SIDECAR_WARNING_UTILIZATION",
            "0.95",
            "invalid settings: warning_utilization must not exceed critical_utilization",
        ),
        (
            "SIDECAR_API_TOKEN",
            "has space",
            "invalid SIDECAR_API_TOKEN: must be visible ASCII characters without spaces",
        ),
        (
            "SIDECAR_ALLOW_UNAUTHENTICATED",
            "maybe",
            "invalid SIDECAR_ALLOW_UNAUTHENTICATED=maybe: must be true or false",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, line: str
) -> None:
    clean_env.setenv(variable, value)

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert describe_errors(caught.value) == line


def test_flag_values_are_named_as_flags(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(max_sessions="0", port="x")

    assert describe_errors(caught.value, frozenset({"max_sessions", "port"})) == (
        "invalid --port=x: must be an integer"
    )


def test_several_bad_values_share_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SIDECAR_PORT", "http")
    clean_env.setenv("SIDECAR_LOG_FORMAT", "yaml")

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert describe_errors(caught.value) == (
        "invalid SIDECAR_PORT=http: must be an integer; "
        "invalid SIDECAR_LOG_FORMAT=yaml: must be text or json"
    )
