"""The `sidecar` command in-process: settings from flags and environment, refusals, logging."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from pathlib import Path

import pytest
from conftest import SidecarSpawner

from sidecar import __version__
from sidecar.cli import main
from sidecar.logs import configure_logging
from sidecar.settings import Settings


@pytest.fixture
def served(clean_env: pytest.MonkeyPatch, restore_logging: None) -> list[Settings]:
    """Replaces the server: records the settings `sidecar serve` would run with."""
    calls: list[Settings] = []

    def fake_serve(settings: Settings) -> int:
        calls.append(settings)
        return 0

    clean_env.setattr("sidecar.server.serve", fake_serve)
    return calls


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("SIDECAR_MAX_SESSIONS", "0", "invalid SIDECAR_MAX_SESSIONS=0: must be >= 1"),
        ("SIDECAR_MAX_SESSIONS", "abc", "invalid SIDECAR_MAX_SESSIONS=abc: must be an integer"),
        (
            "SIDECAR_CAPACITY_POLICY",
            "fifo",
            "invalid SIDECAR_CAPACITY_POLICY=fifo: must be evict_oldest or reject",
        ),
        ("SIDECAR_PORT", "70000", "invalid SIDECAR_PORT=70000: must be <= 65535"),
        (
            "SIDECAR_CLEANUP_INTERVAL_SECONDS",
            "1e-300",
            "invalid SIDECAR_CLEANUP_INTERVAL_SECONDS=1e-300: must be >= 1",
        ),
        ("SIDECAR_API_TOKEN", "v1", "invalid SIDECAR_API_TOKEN: must be at least 16 characters"),
        (
            "SIDECAR_HOST",
            "notahost",
            "invalid SIDECAR_HOST=notahost: not an IP address or host name",
        ),
        # a control character in a value is shown escaped: the message stays one line
        ("SIDECAR_PORT", "80\n81", "invalid SIDECAR_PORT=80\\n81: must be an integer"),
        (
            "SIDECAR_CAPACITY_POLICY",
            "reject\tx",
            "invalid SIDECAR_CAPACITY_POLICY=reject\\tx: must be evict_oldest or reject",
        ),
        (
            # A backslash typed in the value is escaped too, so it reads unlike the tab above.
            "SIDECAR_CAPACITY_POLICY",
            "reject\\tx",
            "invalid SIDECAR_CAPACITY_POLICY=reject\\\\tx: must be evict_oldest or reject",
        ),
        (
            "SIDECAR_STORE",
            "redis://127.0.0.1:6379/x",
            "invalid SIDECAR_STORE=redis://127.0.0.1:6379/x: the path names the database, "
            "a number such as /0, in redis://127.0.0.1:6379/x",
        ),
    ],
)
def test_a_bad_variable_exits_2_with_one_line_before_anything_starts(
    served: list[Settings],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    line: str,
) -> None:
    clean_env.setenv(variable, value)

    status = main(["serve"])

    assert status == 2
    assert capsys.readouterr().err == f"sidecar: {line}\n"
    assert served == []


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--store", "redis://127.0.0.1:1/0", "--snapshot-path", "/tmp/s.json"],
            "invalid settings: --snapshot-path is for memory sessions only: with --store naming "
            "Redis the sessions are already kept by Redis (durable with appendonly yes); "
            "unset one",
        ),
        (
            ["--snapshot-interval-seconds", "60"],
            "invalid settings: --snapshot-interval-seconds needs SIDECAR_SNAPSHOT_PATH",
        ),
        (
            ["--snapshot-interval-seconds", "-1", "--snapshot-path", "/tmp/s.json"],
            "invalid --snapshot-interval-seconds=-1: must be >= 0",
        ),
        (
            ["--snapshot-path", "/nonexistent-dir/s.json"],
            "invalid --snapshot-path=/nonexistent-dir/s.json: "
            "directory /nonexistent-dir does not exist",
        ),
        # a FIFO would block the start-up's read forever
        (["--snapshot-path", "{fifo}"], "invalid --snapshot-path={fifo}: is not a regular file"),
    ],
)
def test_a_snapshot_that_cannot_work_exits_2_before_anything_starts(
    served: list[Settings],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    line: str,
) -> None:
    fifo = tmp_path / "snapshot.fifo"
    os.mkfifo(fifo)
    argv = [arg.replace("{fifo}", str(fifo)) for arg in argv]
    line = line.replace("{fifo}", str(fifo))

    status = main(["serve", *argv])

    assert status == 2
    assert capsys.readouterr().err == f"sidecar: {line}\n"
    assert served == []


def test_a_bad_flag_is_named_as_the_flag(
    served: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["serve", "--max-sessions", "0"])

    assert status == 2
    assert capsys.readouterr().err == "sidecar: invalid --max-sessions=0: must be >= 1\n"


def test_a_bad_token_value_is_never_printed(
    served: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["serve", "--api-token", "two words and more"])

    assert status == 2
    assert capsys.readouterr().err == (
        "sidecar: invalid --api-token: must be visible ASCII characters without spaces\n"
    )


def test_flags_win_over_the_environment_which_wins_over_defaults(
    served: list[Settings], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SIDECAR_MAX_SESSIONS", "5")
    clean_env.setenv("SIDECAR_THREADS", "3")

    assert main(["serve", "--max-sessions", "7", "--capacity-policy", "reject"]) == 0

    settings = served[0]
    assert settings.max_sessions == 7
    assert settings.threads == 3
    assert settings.capacity_policy == "reject"
    assert settings.port == 8000


def test_serve_without_flags_uses_the_defaults(served: list[Settings]) -> None:
    assert main(["serve"]) == 0

    assert served == [Settings()]
    assert (served[0].host, served[0].port) == ("127.0.0.1", 8000)


def serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_variable_of_the_issue_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    text = serve_help(capsys)

    for name in (
        "HOST", "PORT", "THREADS", "MAX_SESSIONS", "CLEANUP_INTERVAL_SECONDS",
        "SESSION_MAX_AGE_SECONDS", "FAILED_MAX_AGE_SECONDS", "COMPLETED_MAX_AGE_SECONDS",
        "STUCK_AFTER_SECONDS", "CAPACITY_POLICY", "MAX_BODY_BYTES", "LOG_LEVEL", "LOG_FORMAT",
        "API_TOKEN", "ADMIN_TOKEN", "METRICS_TOKEN",
    ):  # fmt: skip
        flag = "--" + name.lower().replace("_", "-")
        assert re.search(rf"{flag} \S+\s", text), flag
        assert f"SIDECAR_{name}" in text
    assert "--allow-unauthenticated" in text


def test_serve_help_shows_each_flags_choices_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # argparse wraps help text; the test reads it as one line per flag.
    text = re.sub(r"\s+", " ", serve_help(capsys))

    assert "VALUE" not in text
    defaults = {
        "HOST": "127.0.0.1", "PORT": "8000", "THREADS": "8", "MAX_BODY_BYTES": "1048576",
        "LOG_LEVEL": "info", "LOG_FORMAT": "text", "API_TOKEN": "unset",
        "ADMIN_TOKEN": "unset", "METRICS_TOKEN": "unset", "ALLOW_UNAUTHENTICATED": "off",
        "CONNECTION_LIMIT": "2000", "IDLE_TIMEOUT_SECONDS": "30", "MAX_HEADER_BYTES": "65536",
        "UNREAD_ANSWER_BYTES": "134217728", "STORE": "memory", "STORE_PREFIX": "sidecar",
        "STORE_TIMEOUT_SECONDS": "1", "STORE_NAME": "unset",
        "SNAPSHOT_PATH": "unset", "SNAPSHOT_INTERVAL_SECONDS": "0",
        "SNAPSHOT_DISCARD_INVALID": "off",
        "MAX_SESSIONS": "100", "CLEANUP_INTERVAL_SECONDS": "3600",
        "SESSION_MAX_AGE_SECONDS": "86400", "FAILED_MAX_AGE_SECONDS": "3600",
        "COMPLETED_MAX_AGE_SECONDS": "21600", "STUCK_AFTER_SECONDS": "1800",
        "CAPACITY_POLICY": "evict_oldest", "WARNING_UTILIZATION": "0.7",
        "CRITICAL_UTILIZATION": "0.9",
    }  # fmt: skip
    assert len(defaults) == len(Settings.model_fields)
    for name, default in defaults.items():
        assert f"[SIDECAR_{name}, default {default}]" in text, name
    assert "--capacity-policy {evict_oldest,reject}" in text
    assert "--log-level {debug,info,warning,error,critical}" in text
    assert "--log-format {text,json}" in text
    assert "--snapshot-path PATH" in text
    assert "--snapshot-interval-seconds SECONDS" in text
    assert "Allowed: 1 to 86400." in text  # the cleanup interval's bounds
    assert "At least 16 visible ASCII characters" in text


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--capacity-policy", "Reject"], "capacity_policy", "reject"),
        (["--capacity-policy", "EVICT_OLDEST"], "capacity_policy", "evict_oldest"),
        (["--log-level", "DEBUG"], "log_level", "debug"),
        (["--log-format", "Json"], "log_format", "json"),
    ],
)
def test_choices_in_flags_are_taken_in_any_case_like_variables(
    served: list[Settings], argv: list[str], field: str, expected: str
) -> None:
    assert main(["serve", *argv]) == 0

    assert getattr(served[0], field) == expected


@pytest.mark.parametrize("token", [None, "a-long-enough-api-token"])
def test_an_unknown_host_exits_2_with_or_without_a_token(
    served: list[Settings], capsys: pytest.CaptureFixture[str], token: str | None
) -> None:
    extra = [] if token is None else ["--api-token", token]

    assert main(["serve", "--host", "notahost", *extra]) == 2
    assert capsys.readouterr().err == (
        "sidecar: invalid --host=notahost: not an IP address or host name\n"
    )
    assert served == []


@pytest.mark.parametrize(
    ("argv", "env", "source"),
    [
        (["--allow-unauthenticated"], {}, "--allow-unauthenticated"),
        ([], {"SIDECAR_ALLOW_UNAUTHENTICATED": "1"}, "SIDECAR_ALLOW_UNAUTHENTICATED"),
    ],
    ids=["flag", "variable"],
)
def test_serving_without_a_token_names_what_allowed_it(
    served: list[Settings],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    source: str,
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)

    assert main(["serve", "--host", "0.0.0.0", *argv]) == 0

    err = capsys.readouterr().err
    assert f"serving 0.0.0.0 without an API token (allowed by {source})" in err
    assert "(allowed by flag)" not in err


def test_an_unknown_serve_flag_points_at_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--bogus"])

    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "sidecar serve: unrecognized arguments: --bogus (see sidecar serve --help)\n"
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_public_address_without_a_token_is_refused(
    served: list[Settings], capsys: pytest.CaptureFixture[str], host: str
) -> None:
    status = main(["serve", "--host", host])

    assert status == 2
    assert capsys.readouterr().err == (
        f"sidecar: refusing to listen on {host} (--host) without an API token; "
        "set SIDECAR_API_TOKEN or pass --allow-unauthenticated\n"
    )
    assert served == []


@pytest.mark.parametrize(
    "extra",
    [["--allow-unauthenticated"], ["--api-token", "t0ken-long-enough"]],
    ids=["flag", "token"],
)
def test_a_public_address_is_served_with_a_token_or_the_flag(
    served: list[Settings], extra: list[str]
) -> None:
    assert main(["serve", "--host", "0.0.0.0", *extra]) == 0

    assert served[0].host == "0.0.0.0"


def test_the_unauthenticated_flag_also_comes_from_the_environment(
    served: list[Settings], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SIDECAR_ALLOW_UNAUTHENTICATED", "true")

    assert main(["serve", "--host", "0.0.0.0"]) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "localhost"])
def test_loopback_addresses_need_no_token(served: list[Settings], host: str) -> None:
    assert main(["serve", "--host", host]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve", "--nope"],
        ["serve", "--port"],
        ["launch"],
        ["simulate"],
        ["simulate", "--url", "http://127.0.0.1:1", "--rate", "abc"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)

    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sidecar")
    assert err.endswith("--help)\n")
    assert err.count("\n") == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])

    assert done.value.code == 0
    assert capsys.readouterr().out == f"sidecar {__version__}\n"


def test_selfcheck_prints_health_as_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selfcheck"]) == 0

    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out)["overall_health"] == "healthy"


def test_json_logs_are_one_object_per_line(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = logging.getLogger("sidecar.test")

    log.info("listening on %s", "http://127.0.0.1:8000", extra={"port": 8000})
    log.debug("not shown at info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "info"
    assert first["logger"] == "sidecar.test"
    assert first["message"] == "listening on http://127.0.0.1:8000"
    assert first["port"] == 8000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "error"
    assert "ValueError: boom" in second["exception"]


def test_text_logs_keep_a_traceback_on_one_line(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("warning", "text", stream=stream)
    log = logging.getLogger("sidecar.test")

    log.info("hidden")
    try:
        raise KeyError("k")
    except KeyError:
        log.warning("lookup failed", exc_info=True)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert re.match(r"\S+Z WARNING sidecar.test: lookup failed \| Traceback", lines[0])


def test_python_warnings_become_log_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old option", DeprecationWarning, stacklevel=1)

    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["logger"] == "py.warnings"
    assert "DeprecationWarning: old option" in json.loads(line)["message"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rate", "0"], "sidecar: --rate must be above 0 and at most 10000, not 0.0\n"),
        (["--failure-ratio", "2"], "sidecar: --failure-ratio must be between 0 and 1, not 2.0\n"),
        (
            ["--url", "ftp://x/"],
            "sidecar: --url must be an http(s) URL such as http://127.0.0.1:8000, not 'ftp://x/'\n",
        ),
        (
            ["--url", "http://127.0.0.1:99999"],
            "sidecar: --url must be an http(s) URL such as http://127.0.0.1:8000, not "
            "'http://127.0.0.1:99999' (Port out of range 0-65535)\n",
        ),
        # never repeated: the token would be the secret in the message
        (
            ["--token", "abc\ndef-secret"],
            "sidecar: the API token must be visible ASCII characters without spaces\n",
        ),
        (
            ["--token", "tok\u20acen"],
            "sidecar: the API token must be visible ASCII characters without spaces\n",
        ),
    ],
)
def test_simulate_bad_values_exit_2_with_one_line(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--url", "http://127.0.0.1:1", *flags]
    assert main(argv) == 2
    assert capsys.readouterr().err == message


def test_simulate_against_nothing_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # port 1 on loopback: nothing listens there, so the first create is refused at once
    assert main(["simulate", "--url", "http://127.0.0.1:1", "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sidecar: cannot reach the sidecar:")
    assert err.count("\n") == 1


@pytest.mark.process
@pytest.mark.parametrize(
    ("args", "settings", "line"),
    [
        (
            ["--host", "notahost"],
            {"api_token": "a-long-enough-api-token"},
            "sidecar: invalid --host=notahost: not an IP address or host name",
        ),
        (
            [],
            {"cleanup_interval_seconds": "1e-300"},
            "sidecar: invalid SIDECAR_CLEANUP_INTERVAL_SECONDS=1e-300: must be >= 1",
        ),
    ],
    ids=["host", "interval"],
)
def test_the_real_command_exits_2_with_one_line(
    sidecars: SidecarSpawner, args: list[str], settings: dict[str, str], line: str
) -> None:
    child = sidecars.start("--port", "0", *args, console_script=True, **settings)

    assert child.wait(30) == 2
    assert child.lines() == [line]


@pytest.mark.parametrize(
    "store",
    ["redis://h:6379/0?password=pw-never-shown-7", "redis://u:pw-never-shown-7@[::1/0"],
)
def test_a_refused_store_url_exits_2_with_one_line_and_no_password(
    served: list[Settings],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store: str,
) -> None:
    clean_env.setenv("SIDECAR_STORE", store)

    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pw-never-shown-7" not in err
    assert served == []
