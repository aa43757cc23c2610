"""Settings from SIDECAR_* variables: defaults, overrides, and one-line errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.settings import Settings, describe_errors, host_problem


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
        "SIDECAR_API_TOKEN": "a" * 16,
        "SIDECAR_ADMIN_TOKEN": "b" * 16,
        "SIDECAR_METRICS_TOKEN": "c" * 16,
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
    assert (settings.secret("api_token"), settings.secret("admin_token")) == ("a" * 16, "b" * 16)
    assert settings.secret("metrics_token") == "c" * 16


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
    settings = Settings(api_token="hunter2-token-long-enough")

    assert "hunter2-token-long-enough" not in repr(settings)
    assert "hunter2-token-long-enough" not in str(settings.model_dump())


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
            "invalid SIDECAR_CLEANUP_INTERVAL_SECONDS=0: must be >= 1",
        ),
        (
            "SIDECAR_CLEANUP_INTERVAL_SECONDS",
            "1e-300",
            "invalid SIDECAR_CLEANUP_INTERVAL_SECONDS=1e-300: must be >= 1",
        ),
        (
            "SIDECAR_CLEANUP_INTERVAL_SECONDS",
            "nan",
            "invalid SIDECAR_CLEANUP_INTERVAL_SECONDS=nan: not a finite number",
        ),
        (
            "SIDECAR_SESSION_MAX_AGE_SECONDS",
            "inf",
            "invalid SIDECAR_SESSION_MAX_AGE_SECONDS=inf: not a finite number",
        ),
        (
            "SIDECAR_FAILED_MAX_AGE_SECONDS",
            "59",
            "invalid SIDECAR_FAILED_MAX_AGE_SECONDS=59: must be >= 60",
        ),
        (
            "SIDECAR_COMPLETED_MAX_AGE_SECONDS",
            "31536001",
            "invalid SIDECAR_COMPLETED_MAX_AGE_SECONDS=31536001: must be <= 31536000",
        ),
        (
            "SIDECAR_STUCK_AFTER_SECONDS",
            "0.5",
            "invalid SIDECAR_STUCK_AFTER_SECONDS=0.5: must be >= 1",
        ),
        (
            "SIDECAR_STUCK_AFTER_SECONDS",
            "604801",
            "invalid SIDECAR_STUCK_AFTER_SECONDS=604801: must be <= 604800",
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
            "invalid settings: SIDECAR_WARNING_UTILIZATION must not exceed "
            "SIDECAR_CRITICAL_UTILIZATION",
        ),
        (
            "SIDECAR_API_TOKEN",
            "has space and is long",
            "invalid SIDECAR_API_TOKEN: must be visible ASCII characters without spaces",
        ),
        ("SIDECAR_API_TOKEN", "v1", "invalid SIDECAR_API_TOKEN: must be at least 16 characters"),
        (
            "SIDECAR_ADMIN_TOKEN",
            "fifteen-chars!!",
            "invalid SIDECAR_ADMIN_TOKEN: must be at least 16 characters",
        ),
        (
            "SIDECAR_METRICS_TOKEN",
            "met",
            "invalid SIDECAR_METRICS_TOKEN: must be at least 16 characters",
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
        "invalid --max-sessions=0: must be >= 1; invalid --port=x: must be an integer"
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


def test_a_token_of_16_characters_is_taken(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SIDECAR_API_TOKEN", "sixteen-chars-ok")

    assert Settings().secret("api_token") == "sixteen-chars-ok"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SIDECAR_CAPACITY_POLICY", "REJECT", "capacity_policy", CapacityPolicy.REJECT),
        ("SIDECAR_CAPACITY_POLICY", "Evict_Oldest", "capacity_policy", CapacityPolicy.EVICT_OLDEST),
        ("SIDECAR_LOG_LEVEL", "Warning", "log_level", "warning"),
        ("SIDECAR_LOG_FORMAT", "JSON", "log_format", "json"),
    ],
)
def test_choices_are_taken_in_any_case(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object
) -> None:
    clean_env.setenv(variable, value)

    assert getattr(Settings(), field) == expected
    assert getattr(Settings(**{field: value}), field) == expected  # as a flag passes it


@pytest.mark.parametrize(
    ("host", "line"),
    [
        ("notahost", "invalid SIDECAR_HOST=notahost: not an IP address or host name"),
        ("no such host", "invalid SIDECAR_HOST=no such host: not an IP address or host name"),
        ("10.0.0.300", "invalid SIDECAR_HOST=10.0.0.300: not an IP address or host name"),
    ],
)
def test_a_host_that_is_neither_an_address_nor_a_known_name_is_named(host: str, line: str) -> None:
    assert host_problem(host) == line
    assert host_problem(host, frozenset({"host"})) == line.replace("SIDECAR_HOST", "--host")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "::", "localhost"])
def test_addresses_and_known_names_are_hosts(host: str) -> None:
    assert host_problem(host) is None


def test_a_settings_error_printed_as_it_is_shows_no_secret(clean_env: pytest.MonkeyPatch) -> None:
    # describe_errors (the CLI's line) never shows one; a traceback of create_app() would print
    # str(the ValidationError), which quoted every input, tokens and store password included
    clean_env.setenv("SIDECAR_STORE", "redis://u:pw-never-shown-9@host:0/0")
    clean_env.setenv("SIDECAR_API_TOKEN", "tok-never-shown-9")  # too short: refused

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert "pw-never-shown-9" not in str(caught.value)
    assert "tok-never-shown-9" not in str(caught.value)
