"""The drain of a real `sidecar serve` process, as keep-alive clients see it (issue 12, item 8).

What the README promises: a request already in the app when SIGTERM arrives is served to the
end; every request that reaches the app during the drain, on a kept-alive connection or a new
one, gets 503 problem+json with Retry-After and `Connection: close`, and its connection is
closed after it; a request whose body was still arriving when the drain began, and completes
while it lasts, is one of them; requests waiting for a thread are answered before it ends.

To hold the drain open for as long as the test needs, one client asks for a ~2 MB session
and reads nothing until the end: its answer is still on its way, and the drain waits for it
(the kernel's send queue of its connection stays non-empty until the client reads).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import socket
import threading
from urllib.parse import urlsplit

import pytest
import requests
from conftest import SidecarProcess, SidecarSpawner, poll
from drain_hold import WAIT, big_session, unread_answer

from sidecar.server import DRAIN_SECONDS

pytestmark = pytest.mark.process

JSON = "application/json"


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(WAIT)
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def split_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def drive_the_drain(
    stack: contextlib.ExitStack, child: SidecarProcess, address: tuple[str, int], path: str
) -> None:
    # X: an answer on its way until X reads (on loopback the server's send queue then held
    # ~95 KB of it, and all 2.1 MB without the small window and segments).
    reader = stack.enter_context(unread_answer(address, path))

    # B: a kept-alive connection that has been served once.
    kept = http.client.HTTPConnection(*address, timeout=WAIT)
    stack.callback(kept.close)
    kept.request("GET", "/api/v1/stats")
    first = kept.getresponse()
    first.read()
    assert first.status == 200
    assert not first.will_close

    # A: a request whose body is still arriving when the drain begins.
    body = json.dumps({"story_text": "A late gull.", "num_scenes": 1}).encode()
    partial = stack.enter_context(socket.create_connection(address, timeout=WAIT))
    partial.sendall(
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )

    child.process.send_signal(signal.SIGTERM)

    def draining() -> requests.Response | None:
        readyz = requests.get(f"{child.url}/readyz", timeout=WAIT)  # a new connection each time
        return readyz if readyz.status_code == 503 else None

    readyz = poll(draining, timeout=WAIT, what="/readyz to answer 503")
    assert readyz.headers["Connection"] == "close"

    kept.request("GET", "/api/v1/stats")
    refused = kept.getresponse()
    refused_body = json.loads(refused.read())
    assert refused.status == 503
    assert refused.getheader("Content-Type") == "application/problem+json"
    assert refused.getheader("Retry-After") is not None
    assert refused.getheader("Connection") == "close"
    assert refused_body["type"].endswith(":shutting-down")
    kept.close()

    partial.sendall(body[5:])
    status, headers, late = split_answer(read_all(partial))  # read_all: closed after it
    assert status == 503, late
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"

    with requests.get(f"{child.url}/api/v1/stats", timeout=WAIT) as fresh:
        assert fresh.status_code == 503
        assert fresh.headers["Connection"] == "close"

    status, headers, served = split_answer(read_all(reader))
    assert status == 200
    assert len(served) == int(headers["content-length"])
    assert json.loads(served)["session_id"] in path


def test_a_drain_serves_what_arrived_and_answers_503_with_close_to_the_rest(
    sidecars: SidecarSpawner,
) -> None:
    child = sidecars(max_body_bytes=4 << 20)
    url = urlsplit(child.url)
    address = (str(url.hostname), int(url.port or 0))
    path = big_session(child.url)

    with contextlib.ExitStack() as stack:
        drive_the_drain(stack, child, address, path)

    assert child.wait(WAIT) == 0
    assert "SIGTERM: drained, stopping the session manager" in child.output()
    assert "drain ended with" not in child.output()


def test_a_drain_under_load_answers_every_request_it_took_and_closes_nothing_early(
    sidecars: SidecarSpawner,
) -> None:
    """More keep-alive clients than request threads, creating sessions until the server stops.

    Before: the drain closed waitress's wake-up pipe as soon as no request was in the app,
    while requests waiting for a thread were still to be served, and each of those threads
    then failed on the closed descriptor ("Exception when servicing ... Bad file
    descriptor"); under steady load the drain ran to its deadline and answers already
    rendered were lost with the connections it reset.
    """
    child = sidecars(threads=2, log_level="debug", max_sessions=100_000)
    url = urlsplit(child.url)
    address = (str(url.hostname), int(url.port or 0))
    body = json.dumps({"story_text": "A fox finds a lantern."})
    received: dict[int, int] = {201: 0, 503: 0}
    lock = threading.Lock()
    stopping = threading.Event()

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        for _ in range(2_000):  # bounded: the server's stop ends it much sooner
            if child.process.poll() is not None:
                break
            if conn is None:
                conn = http.client.HTTPConnection(*address, timeout=WAIT)
            try:
                conn.request("POST", "/api/v1/sessions", body, {"Content-Type": JSON})
                answer = conn.getresponse()
                answer.read()
            except OSError:  # a new connection closed at once by a stopping server
                conn.close()
                conn = None
                if stopping.is_set():
                    break
                continue
            with lock:
                received[answer.status] = received.get(answer.status, 0) + 1
            if answer.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    workers = [threading.Thread(target=client, daemon=True) for _ in range(24)]
    for worker in workers:
        worker.start()
    poll(lambda: True if received[201] >= 200 else None, timeout=WAIT, what="200 creates")
    stopping.set()
    child.process.send_signal(signal.SIGTERM)
    status = child.wait(DRAIN_SECONDS + 5)
    for worker in workers:
        worker.join(WAIT)

    log = child.output()
    assert status == 0
    assert "Exception when servicing" not in log
    assert "Bad file descriptor" not in log
    served = {code: len(re.findall(rf"POST /api/v1/sessions {code} ", log)) for code in (201, 503)}
    assert served[503] > 0  # the drain was under load
    assert received == served  # every answer the server made reached its client
