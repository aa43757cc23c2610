"""The drain of a real `sidecar serve` process, as keep-alive clients see it (issue 12, item 8).

What the README promises: a request already in the app when SIGTERM arrives is served to the
end; every request that reaches the app during the drain, on a kept-alive connection or a new
one, gets 503 problem+json with Retry-After and `Connection: close`, and its connection is
closed after it; a request whose body was still arriving when the drain began is one of them.

To hold the drain open for as long as the test needs, one client asks for a ~2 MB session
and reads nothing until the end: its answer is still on its way, and the drain waits for it
(the kernel's send queue of its connection stays non-empty until the client reads).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
from urllib.parse import urlsplit

import pytest
import requests
from conftest import SidecarProcess, SidecarSpawner, poll
from drain_hold import WAIT, big_session, unread_answer

pytestmark = pytest.mark.process


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
