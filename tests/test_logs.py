"""Logs keep secrets out by construction: routes intact, no token, no raw path or query."""

from __future__ import annotations

import io
import json
import logging
import re
import signal

import pytest
import requests
from conftest import SidecarSpawner

from sidecar.logs import ConnectionLimitLines, Throttle, configure_logging

API = "api-t0ken-0123456789"
ADMIN = "adm1n-t0ken-0123456789"
METRICS = "metr1cs-t0ken-0123456789"
SHORT = ("v1", "adm", "met")  # what substring redaction used to cut out of routes
EXIT_SECONDS = 10.0


@pytest.mark.process
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_request_lines_name_the_route_and_never_a_token(sidecars: SidecarSpawner, fmt: str) -> None:
    child = sidecars.start(
        "--port", "0", "--log-level", "debug", "--log-format", fmt,
        api_token=API, admin_token=ADMIN, metrics_token=METRICS,
    )  # fmt: skip
    base = sidecars.wait_ready(child).url

    def get(path: str, token: str) -> int:
        answer = requests.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        return answer.status_code

    assert get("/api/v1/stats", API) == 200
    assert get("/api/v1/admin/config", ADMIN) == 200
    assert get("/metrics", METRICS) == 200
    for short in SHORT:  # a client sending a short (wrong) token
        assert get("/api/v1/stats", short) == 401
        assert get("/api/v1/admin/config", short) == 401
        assert get("/metrics", short) == 401
    # a token where it does not belong: in the query, in a session id, in an unknown path
    assert get(f"/api/v1/stats?token={API}", API) == 200
    assert get(f"/api/v1/sessions/{API}", API) == 404
    assert get(f"/api/v1/{ADMIN}/stats", API) == 404
    child.process.send_signal(signal.SIGTERM)
    assert child.wait(EXIT_SECONDS) == 0

    lines = child.lines()
    if fmt == "json":
        lines = [json.loads(line)["message"] for line in lines]
    text = "\n".join(lines)
    for route, status, times in [
        ("/api/v1/stats", 200, 2),
        ("/api/v1/stats", 401, 3),
        ("/api/v1/admin/config", 200, 1),
        ("/api/v1/admin/config", 401, 3),
        ("/metrics", 200, 1),
        ("/metrics", 401, 3),
        ("/api/v1/sessions/<session_id>", 404, 1),
        ("<unmatched>", 404, 1),
    ]:
        request_line = re.compile(rf"(^|: )GET {re.escape(route)} {status} ")
        found = [line for line in lines if request_line.search(line)]
        assert len(found) == times, (route, status, text)
    for secret in (API, ADMIN, METRICS):
        assert secret not in text
    assert "Bearer" not in text
    assert "token=" not in text
    assert "[redacted]" not in text


def _line(logger: str, message: str, fmt: str) -> str:
    stream = io.StringIO()
    configure_logging("info", fmt, stream=stream)
    logging.getLogger(logger).info(message)
    return stream.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_path_waitress_logs_is_cut(restore_logging: None, fmt: str) -> None:
    path = f"/api/v1/sessions/{API}?token={API}"

    output = _line("waitress", f"Client disconnected while serving {path}", fmt)

    assert "Client disconnected while serving [path not logged]" in output
    assert API not in output


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_other_lines_are_written_as_logged(restore_logging: None, fmt: str) -> None:
    # No text is searched for secrets: a line that happens to hold "v1" or "met" stays whole.
    message = "GET /api/v1/admin/config 200 0.10ms; GET /metrics 200 0.20ms"

    assert message in _line("sidecar.web.app", message, fmt)


@pytest.mark.parametrize(
    "message",
    ["a\nforged 2026-01-01T00:00:00.000Z ERROR sidecar: line", "a\r\nb", "a\u2028b", "a\x85b"],
)
def test_a_text_line_never_breaks_whatever_its_message_holds(
    restore_logging: None, message: str
) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)

    logging.getLogger("sidecar.test").warning("value %s", message, extra={"note": message})
    # what logging.captureWarnings logs for a Python warning: the source line on a second line
    logging.getLogger("py.warnings").warning("x.py:6: UserWarning: old\n  warnings.warn('old')\n")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # before: the message's and the warning's breaks split them
    assert lines[0].endswith("note=" + message.encode("unicode_escape").decode("ascii"))


def test_a_throttle_reports_at_once_then_once_an_interval_with_the_count() -> None:
    now = [0.0]
    throttle = Throttle(60.0, clock=lambda: now[0])

    first = throttle.due()
    held = [throttle.due() for _ in range(5)]
    now[0] = 60.0
    later = throttle.due()

    assert first == 1
    assert held == [None] * 5
    assert later == 6  # this one and the five held back


def test_waitress_connection_limit_lines_come_at_once_then_once_a_minute() -> None:
    """A client that holds connections up to the limit and cycles one made waitress log the
    pair "reached the connection limit" / "listening again" once per cycle."""
    lines = ConnectionLimitLines(60.0)
    waitress = logging.getLogger("waitress")

    def record(message: str, level: int) -> logging.LogRecord:
        return waitress.makeRecord("waitress", level, "server.py", 1, message, None, None)

    reached = (
        "total open connections reached the connection limit, no longer accepting new connections"
    )
    dropped = "total open connections dropped below the connection limit, listening again"
    passed = []
    for _ in range(50):
        for message, level in ((reached, logging.WARNING), (dropped, logging.INFO)):
            entry = record(message, level)
            if lines.filter(entry):
                passed.append(entry.getMessage())
    other = record("Client disconnected while serving [path not logged]", logging.INFO)

    assert passed == [
        f"{reached} (1 time(s) since the last such line)",
        f"{dropped} (1 time(s) since the last such line)",
    ]
    assert lines.filter(other)


def test_the_server_throttles_waitress_limit_lines_while_it_serves(restore_logging: None) -> None:
    from sidecar.server import SidecarServer
    from sidecar.settings import Settings
    from sidecar.web.app import create_app, get_sidecar

    app = create_app(Settings())
    server = SidecarServer(app, port=0)
    installed = [
        f for f in logging.getLogger("waitress").filters if isinstance(f, ConnectionLimitLines)
    ]
    server.request_shutdown()
    server.serve()  # drains at once and returns
    get_sidecar(app).close()

    assert len(installed) == 1
    assert not [
        f for f in logging.getLogger("waitress").filters if isinstance(f, ConnectionLimitLines)
    ]
