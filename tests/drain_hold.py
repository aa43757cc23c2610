"""Holding a real sidecar's drain open: a client that asked for a big answer and reads nothing.

The drain waits while an answer is still on its way (the kernel's send queue of its connection
stays non-empty until the client reads), so tests can act during the drain without racing it.
"""

from __future__ import annotations

import select
import socket

import requests

WAIT = 15.0
SCENES = 100
BIG_SESSION = {
    "story_text": "A heron teaches a lighthouse to fish. " * 2600,  # ~99 KB
    "num_scenes": SCENES,
}
BIG_SCENES = {
    "scenes": [
        {"scene_number": n, "prompt": "p" * 10_000, "negative_prompt": "n" * 10_000}
        for n in range(1, SCENES + 1)
    ]
}


def big_session(base: str) -> str:
    """The path of a session whose JSON is over 2 MB."""
    created = requests.post(f"{base}/api/v1/sessions", json=BIG_SESSION, timeout=WAIT)
    assert created.status_code == 201, created.text
    path = created.headers["Location"]
    scenes = requests.put(f"{base}{path}/scenes", json=BIG_SCENES, timeout=WAIT)
    assert scenes.status_code == 200, scenes.text
    return str(path)


def unread_answer(address: tuple[str, int], path: str) -> socket.socket:
    """A connection that asked for `path` and reads nothing: its answer stays on its way.

    A small receive window keeps its kernel from taking (and acknowledging) the whole answer;
    small segments keep most of it in the server's buffer.
    """
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    reader.connect(address)
    reader.sendall(f"GET {path} HTTP/1.1\r\nHost: s\r\n\r\n".encode())
    ready, _, _ = select.select([reader], [], [], WAIT)
    assert ready, "the big answer never started"
    return reader
