"""The demo's own processes: starting them, knowing they are ours, stopping them all.

Shared by scripts/demo.py (the sidecars, Prometheus, the simulator) and scripts/demo_redis.py.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import IO

HOST = "127.0.0.1"


class DemoError(Exception):
    """Why the demo cannot go on, as one line."""


def check_port_free(port: int, what: str, option: str, hint: str) -> None:
    """DemoError naming `port` and the option that changes it, if something listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: a port left in TIME_WAIT by an earlier run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise DemoError(f"cannot use port {port} for {what}: {exc.strerror}") from exc
            raise DemoError(
                f"port {port} on {HOST} is already in use ({what}; {hint}); "
                f'choose another with DEMO_ARGS="{option} {port + 1}"'
            ) from exc


def poll(
    probe: Callable[[], bool], child: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    """Call `probe` until True; DemoError if `child` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: a bounded pause between probes
    while not probe():
        if child.poll() is not None:
            raise DemoError(f"{what} exited with status {child.returncode}")
        if time.monotonic() >= deadline:
            raise DemoError(f"{what} did not start within {timeout:g} s")
        pause.wait(0.2)


def answers(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Forward(threading.Thread):
    """Copies a child's output to ours, and notes when a line contains `marker`."""

    def __init__(self, stream: IO[bytes], marker: str) -> None:
        super().__init__(daemon=True)
        self._stream, self._marker = stream, marker
        self.seen = threading.Event()

    def run(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace")
            if self._marker in line:
                self.seen.set()
            sys.stderr.write(line)


def start_sidecar(
    port: int,
    settings: Mapping[str, str],
    children: list[subprocess.Popen[bytes]],
    what: str = "the demo's sidecar",
) -> str:
    """Our own `sidecar serve` on HOST:`port` with exactly `settings` (SIDECAR_* variables) and
    no SIDECAR_* variable of ours; known to be ours: it logged that it listens on the port."""
    url = f"http://{HOST}:{port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
    env |= {**settings, "SIDECAR_HOST": HOST, "SIDECAR_PORT": str(port)}
    serve = [sys.executable, "-m", "sidecar", "serve"]
    child = subprocess.Popen(serve, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children.append(child)
    assert child.stderr is not None
    forward = _Forward(child.stderr, f"listening on {url}")
    forward.start()
    # Only our child's own line proves the port is ours: a /readyz answer could come from a
    # sidecar that took the port after the check.
    poll(forward.seen.is_set, child, what, 30)
    poll(lambda: answers(f"{url}/readyz"), child, what, 15)
    return url


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop the children, newest first: SIGTERM, then SIGKILL after 15 s."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
