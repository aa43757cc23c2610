"""Hostile clients held against a server on 127.0.0.1, and a normal client that probes it.

Shared by the resilience tests (scaled down) and bench/resilience.py (full sizes). Every
attack opens its sockets when entered and closes them all when left; nothing it does is
unbounded in count or time, and it only ever connects to the address it is given.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "Probe",
    "idle",
    "non_readers",
    "open_files_for",
    "probe",
    "slowloris",
]

Address = tuple[str, int]


def open_files_for(sockets: int) -> None:
    """Raise this process's open-file limit so it can hold `sockets` connections.

    The soft limit is often 1,024; the hard one is usually far higher and may be raised to
    without privileges.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sockets + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _connect(address: Address) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@contextlib.contextmanager
def idle(address: Address, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that send nothing."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_connect(address))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def slowloris(address: Address, count: int, interval: float = 0.5) -> Iterator[list[socket.socket]]:
    """`count` connections that send a request's headers one byte every `interval` seconds,
    never finishing them."""
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def drip() -> None:
        header = b"X-Slow: " + b"a" * 10_000
        sent = 0
        while not stop.wait(interval):
            byte = header[sent % len(header) : sent % len(header) + 1]
            for sock in list(sockets):
                with contextlib.suppress(OSError):
                    sock.send(byte)
            sent += 1

    dripper = threading.Thread(target=drip, daemon=True)
    try:
        for _ in range(count):
            sock = _connect(address)
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: sidecar\r\n")
            sockets.append(sock)
        dripper.start()
        yield sockets
    finally:
        stop.set()
        if dripper.is_alive():
            dripper.join(10)
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def non_readers(
    address: Address, count: int, path: str, requests: int = 2000
) -> Iterator[list[socket.socket]]:
    """`count` connections, each pipelining `requests` GETs of `path` and reading nothing."""
    line = f"GET {path} HTTP/1.1\r\nHost: sidecar\r\n\r\n".encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # a small receive window, so the server's answers back up at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(address)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(line * requests)  # as much as the server takes in; the rest is moot
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Probe:
    """A normal client's experience: latencies of answered requests and the failures."""

    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def p99(self) -> float:
        if len(self.seconds) < 2:
            return self.seconds[0] if self.seconds else float("nan")
        return statistics.quantiles(self.seconds, n=100)[98]


def probe(address: Address, path: str, count: int, timeout: float = 5.0) -> Probe:
    """`count` requests of `path`, each on a new connection, as a normal client sends them."""
    result = Probe()
    host, port = address
    for _ in range(count):
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                result.failures.append(f"status {answer.status}")
            else:
                result.seconds.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException) as exc:
            result.failures.append(type(exc).__name__)
        finally:
            conn.close()
    return result
