"""A real Redis server: Debian's `redis-server` on a free loopback port in a directory of its own.

Shared by the benchmarks and the tests (tests/redis_server.py wraps it, turning its errors into
test failures). The command line and the PING are the demo's (scripts/demo_redis.py), so the
demo's, the tests' and the benchmarks' Redis are started one way. Nothing here needs pytest.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# scripts/ is not a package (its modules run as `python scripts/demo.py`); pytest puts it on the
# path through pyproject's pythonpath, `python -m bench` through this line.
_SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)

from demo_redis import START_SECONDS, free_port, ping, redis_command  # noqa: E402

__all__ = [
    "START_SECONDS",
    "RedisServer",
    "RedisServerError",
    "temporary_redis",
    "free_port",
    "redis_server_binary",
]


class RedisServerError(RuntimeError):
    """redis-server is missing, exited, or did not answer in time."""


def redis_server_binary() -> str:
    """Path of redis-server; RedisServerError if it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisServerError("redis-server is not installed (Debian: redis-server)")
    return path


@dataclass
class RedisServer:
    """One redis-server process; `url` is what SIDECAR_STORE takes."""

    binary: str
    directory: Path
    appendonly: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    config: Path | None = None  # a redis.conf read before the options above
    password: str | None = None  # requirepass

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f"default:{self.password}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port and data) and wait for PONG with a deadline;
        RedisServerError if it exits or does not answer in START_SECONDS."""
        extra = () if self.password is None else ("--requirepass", self.password)
        command = redis_command(
            self.binary,
            self.port,
            self.directory,
            appendonly=self.appendonly,
            config=self.config,
            extra=extra,
        )
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while not ping(self.port, self.password):
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


@contextmanager
def temporary_redis() -> Iterator[RedisServer]:
    """`with temporary_redis() as server:` a redis-server in a temporary directory, stopped and
    the directory removed on exit (the benchmarks' starter)."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        server = RedisServer(binary, Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()
