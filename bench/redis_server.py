"""A real Redis server: Debian's `redis-server` on a free loopback port in a directory of its own.

Shared by the benchmarks and the tests (tests/redis_server.py wraps it, turning its errors into
test failures), so both start Redis the same way. Nothing here needs pytest.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "START_SECONDS",
    "RedisServer",
    "RedisServerError",
    "TemporaryRedis",
    "free_port",
    "redis_server_binary",
]

START_SECONDS = 15.0  # from exec to PONG on a busy 2-core machine


class RedisServerError(RuntimeError):
    """redis-server is missing, exited, or did not answer in time."""


def redis_server_binary() -> str:
    """Path of redis-server; RedisServerError if it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisServerError("redis-server is not installed (Debian: redis-server)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    """True when a server on `port` answers PING with +PONG (plain RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process; `url` is what SIDECAR_STORE takes."""

    binary: str
    directory: Path
    appendonly: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port and data) and wait for PONG with a deadline;
        RedisServerError if it exits or does not answer in START_SECONDS."""
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--logfile",
            str(self.log),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while not _ping(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RedisServerError(f"redis-server exited with {code}:\n{self._tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RedisServerError(f"no PONG within {START_SECONDS:g} s:\n{self._tail()}")
            time.sleep(0.05)  # a poll step with a deadline
        return self

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed beyond what the fsync policy did."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class TemporaryRedis:
    """`with TemporaryRedis() as server:` a redis-server in a temporary directory, stopped
    and the directory removed on exit (the benchmarks' starter)."""

    def __init__(self) -> None:
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self.server: RedisServer | None = None

    def __enter__(self) -> RedisServer:
        binary = redis_server_binary()
        self._directory = tempfile.TemporaryDirectory(prefix="bench-redis-")
        try:
            self.server = RedisServer(binary, Path(self._directory.name)).start()
        except BaseException:
            self._directory.cleanup()
            raise
        return self.server

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.server is not None:
            self.server.stop()
        if self._directory is not None:
            self._directory.cleanup()
