"""The real server: `sidecar serve` as a process, and the drain of waitress in-process."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import STARTUP_SECONDS, SidecarSpawner, memory_store_name, started
from flask import Flask

from sidecar.core.manager import SessionManager
from sidecar.server import BacklogLog, SidecarServer
from sidecar.settings import Settings
from sidecar.web.app import create_app, get_sidecar

pytestmark = pytest.mark.process

EXIT_SECONDS = 10.0
TOKEN = "pr0cess-t0ken-0123"
STORY = "A heron teaches a lighthouse to fish."


def drive_a_session_life(http: requests.Session, base: str) -> dict[str, Any]:
    """Create a session and take it through processing, progress and scenes to completed."""
    created = http.post(f"{base}/api/v1/sessions", json={"story_text": STORY, "num_scenes": 2})
    assert created.status_code == 201
    path = f"{base}{created.headers['Location']}"
    steps = [
        ("PUT", "/status", {"status": "processing"}, 200),
        ("PUT", "/progress", {"current_step": 1, "total_steps": 2}, 200),
        ("PUT", "/scenes/1", {"prompt": "A heron on the rocks."}, 201),
        ("PUT", "/progress", {"current_step": 2, "total_steps": 2}, 200),
        ("PUT", "/scenes/2", {"prompt": "The lamp sweeps the sea."}, 201),
        ("PUT", "/status", {"status": "completed"}, 200),
    ]
    for method, tail, body, status in steps:
        response = http.request(method, path + tail, json=body)
        assert response.status_code == status, (tail, response.text)
    final: dict[str, Any] = http.get(path).json()
    return final


def test_serve_drives_a_session_life_and_exits_0_on_sigterm(sidecars: SidecarSpawner) -> None:
    child = sidecars.start(
        "--port", "0", "--log-format", "json", "--log-level", "debug",
        console_script=True, api_token=TOKEN,
    )  # fmt: skip
    base = sidecars.wait_ready(child).url
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        final = drive_a_session_life(http, base)
    unauthenticated = requests.get(f"{base}/api/v1/sessions")
    metrics = requests.get(f"{base}/metrics").text

    assert final["status"] == "completed"
    assert final["progress"]["percentage"] == 100.0
    assert [s["scene_number"] for s in final["scenes"]] == [1, 2]
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["Content-Type"] == "application/problem+json"
    store = memory_store_name(base)
    assert f'sidecar_sessions{{status="completed",store="{store}"}} 1.0' in metrics

    child.process.send_signal(signal.SIGTERM)

    assert child.wait(EXIT_SECONDS) == 0
    lines = child.lines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [event["message"] for event in events]
    assert messages[-1] == "stopped"
    assert "SIGTERM: drained, stopping the session manager" in messages
    (froze,) = [m for m in messages if m.startswith("froze ")]  # start-up objects, once
    assert int(froze.split()[1]) > 1000
    logged = "\n".join(lines)
    assert TOKEN not in logged
    assert STORY not in logged


def test_python_m_sidecar_exits_0_on_sigint(sidecars: SidecarSpawner) -> None:
    child = sidecars.start("--port", "0")
    base = sidecars.wait_ready(child).url

    child.process.send_signal(signal.SIGINT)

    assert child.wait(EXIT_SECONDS) == 0
    assert child.lines()[-1].endswith("INFO sidecar.server: stopped")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/livez", timeout=2)


def test_serve_refuses_a_public_address_without_a_token(sidecars: SidecarSpawner) -> None:
    child = sidecars.start("--host", "0.0.0.0", "--port", "0")

    assert child.wait(EXIT_SECONDS) == 2
    assert child.lines() == [
        "sidecar: refusing to listen on 0.0.0.0 (--host) without an API token; "
        "set SIDECAR_API_TOKEN or pass --allow-unauthenticated"
    ]


def test_serve_exits_2_on_a_bad_variable(sidecars: SidecarSpawner) -> None:
    child = sidecars.start(max_sessions="0")

    assert child.wait(EXIT_SECONDS) == 2
    assert child.lines() == ["sidecar: invalid SIDECAR_MAX_SESSIONS=0: must be >= 1"]


def test_serve_exits_1_when_the_port_is_taken(sidecars: SidecarSpawner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = sidecars.start("--port", str(port))

        assert child.wait(STARTUP_SECONDS) == 1
    lines = child.lines()
    assert len(lines) == 1
    assert f"cannot listen on http://127.0.0.1:{port}" in lines[0]


# ---------------------------------------------------------------------- the drain, in-process


class Held:
    """A request the test holds in the app until it lets go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.answers: list[requests.Response | Exception] = []

    def view(self) -> dict[str, str]:
        self.entered.set()
        assert self.release.wait(EXIT_SECONDS)
        return {"done": "yes"}

    def fetch(self, url: str) -> None:
        try:
            self.answers.append(requests.get(url, timeout=EXIT_SECONDS))
        except requests.RequestException as exc:
            self.answers.append(exc)


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
def slow_app(clean_env: pytest.MonkeyPatch, manager: SessionManager, held: Held) -> Iterator[Flask]:
    """An app whose /slow route holds its request until the test releases it."""
    started(manager)
    app = create_app(Settings(), manager=manager)
    app.add_url_rule("/slow", view_func=held.view)
    yield app
    held.release.set()
    get_sidecar(app).close()


def serve_in_thread(server: SidecarServer) -> threading.Thread:
    serving = threading.Thread(target=server.serve)
    serving.start()
    return serving


def test_shutdown_lets_the_request_in_flight_finish(slow_app: Flask, held: Held) -> None:
    server = SidecarServer(slow_app, port=0, threads=2, drain_seconds=EXIT_SECONDS)
    serving = serve_in_thread(server)
    in_flight = threading.Thread(target=held.fetch, args=(f"{server.urls[0]}/slow",))
    in_flight.start()
    assert held.entered.wait(EXIT_SECONDS)

    server.request_shutdown()

    # The listener stays open while the request is in the app; whatever arrives is refused
    # with 503 and its connection closed after the answer.
    refused = requests.get(f"{server.urls[0]}/api/v1/stats", timeout=EXIT_SECONDS)
    readyz = requests.get(f"{server.urls[0]}/readyz", timeout=EXIT_SECONDS)
    assert (refused.status_code, refused.headers["Connection"]) == (503, "close")
    assert (readyz.status_code, readyz.headers["Connection"]) == (503, "close")
    assert serving.is_alive(), "the drain waits for the request in flight"

    held.release.set()
    in_flight.join(EXIT_SECONDS)
    serving.join(EXIT_SECONDS)

    assert not serving.is_alive()
    (answer,) = held.answers
    assert isinstance(answer, requests.Response)
    assert answer.status_code == 200
    assert answer.json() == {"done": "yes"}


def test_a_second_shutdown_request_cuts_the_drain_short(slow_app: Flask, held: Held) -> None:
    server = SidecarServer(slow_app, port=0, threads=1, drain_seconds=60)
    serving = serve_in_thread(server)
    in_flight = threading.Thread(target=held.fetch, args=(f"{server.urls[0]}/slow",))
    in_flight.start()
    assert held.entered.wait(EXIT_SECONDS)
    started = time.monotonic()

    server.request_shutdown()
    server.request_shutdown()
    serving.join(EXIT_SECONDS)

    assert not serving.is_alive()
    assert time.monotonic() - started < EXIT_SECONDS
    held.release.set()
    in_flight.join(EXIT_SECONDS)
    assert isinstance(held.answers[0], requests.ConnectionError)


# ---------------------------------------------------------------------- bodies and backlog


def served(app: Flask, threads: int = 2) -> tuple[SidecarServer, threading.Thread]:
    server = SidecarServer(app, port=0, threads=threads, drain_seconds=EXIT_SECONDS)
    return server, serve_in_thread(server)


def stop(server: SidecarServer, serving: threading.Thread) -> None:
    server.request_shutdown()
    serving.join(EXIT_SECONDS)
    assert not serving.is_alive()


def test_a_chunked_body_is_read_and_held_to_the_limit(
    clean_env: pytest.MonkeyPatch, manager: SessionManager
) -> None:
    app = create_app(Settings(max_body_bytes=200), manager=manager)
    server, serving = served(app)
    url = f"{server.urls[0]}/api/v1/sessions"
    headers = {"Content-Type": "application/json"}
    try:
        # requests sends a generator as Transfer-Encoding: chunked, with no Content-Length
        small = requests.post(url, data=iter([b'{"story_text": ', b'"A heron."}']), headers=headers)
        large = requests.post(
            url, data=iter([b'{"story_text": "', b"x" * 300, b'"}']), headers=headers
        )
    finally:
        stop(server, serving)

    assert small.status_code == 201, small.text
    assert manager.get_session(small.json()["session_id"]) is not None
    assert large.status_code == 413
    assert large.headers["Content-Type"] == "application/problem+json"
    assert manager.get_session_count() == 1


def test_a_backlog_is_logged_once_not_once_per_waiting_request(
    slow_app: Flask, held: Held, caplog: pytest.LogCaptureFixture
) -> None:
    queue_logger = logging.getLogger("waitress.queue")
    server, serving = served(slow_app, threads=1)
    url = f"{server.urls[0]}/slow"
    first = threading.Thread(target=held.fetch, args=(url,))
    caplog.set_level(logging.WARNING)
    first.start()
    assert held.entered.wait(EXIT_SECONDS)  # the only thread is busy from now on
    waiting = [threading.Thread(target=held.fetch, args=(url,)) for _ in range(5)]
    try:
        # waitress's own warning, a record per queued request, is off while the server runs
        silenced = not queue_logger.isEnabledFor(logging.WARNING)
        assert server.backlog.seen == 1  # the first request took the last free thread
        for thread in waiting:
            thread.start()
        held.release.set()
        for thread in [first, *waiting]:
            thread.join(EXIT_SECONDS)
    finally:
        stop(server, serving)

    answers = [a.status_code for a in held.answers if isinstance(a, requests.Response)]
    assert answers == [200] * 6
    assert server.backlog.seen == 6  # each of them found the one thread taken once it ran
    backlog = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert backlog == [
        "every request thread is busy (1), so new requests wait for one: 1 request(s) took "
        "the last free thread since the last report; if this persists, raise SIDECAR_THREADS"
    ]
    assert silenced
    assert queue_logger.isEnabledFor(logging.WARNING)  # given back once the server stopped


def test_the_backlog_log_reports_at_once_then_once_per_interval() -> None:
    now = [100.0]
    log = BacklogLog(threads=8, interval=60.0, clock=lambda: now[0])
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    server_logger = logging.getLogger("sidecar.server")
    server_logger.addHandler(handler)
    try:
        log.note()  # the first full pool: at once
        for _ in range(4):
            log.note()
        now[0] += 59.9
        log.note()
        now[0] += 0.1
        log.note()  # a minute on: the summary
    finally:
        server_logger.removeHandler(handler)

    assert log.seen == 7
    assert [line.split(":")[1].strip() for line in lines] == [
        "1 request(s) took the last free thread since the last report; if this persists, "
        "raise SIDECAR_THREADS",
        "6 request(s) took the last free thread since the last report; if this persists, "
        "raise SIDECAR_THREADS",
    ]
    assert all(line.startswith("every request thread is busy (8)") for line in lines)


def test_a_real_server_checks_the_metrics_token_on_every_spelling(
    spawn_sidecar: SidecarSpawner,
) -> None:
    base = spawn_sidecar(metrics_token=TOKEN).url
    auth = {"Authorization": f"Bearer {TOKEN}"}

    for path in ("/metrics", "/metrics/", "/metrics%2f", "/metrics%2F"):
        # requests would normalise nothing here; the server decodes %2f itself
        assert requests.get(base + path, timeout=10).status_code == 401, path
        served = requests.get(base + path, headers=auth, timeout=10)
        assert served.status_code == 200, path
        assert "sidecar_sessions" in served.text
