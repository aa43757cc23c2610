"""A real Redis server for tests: Debian's `redis-server` on a free loopback port in a tmp dir.

No fake Redis anywhere: every Redis test talks to one of these processes. Under CI (CI=true) a
missing binary fails the test instead of skipping it (see conftest.require_binary).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from demo_redis import START_SECONDS, free_port, ping, redis_command


def require_redis_server() -> str:
    """Path of redis-server; under CI a missing one fails instead of skipping."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (Debian: redis-server); .ci/run installs it"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
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
        """Start (or restart, on the same port and data) and wait for PONG with a deadline."""
        # The demo's command line (scripts/demo_redis.py): the tests' Redis is the demo's.
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
                pytest.fail(f"redis-server exited with {self.process.returncode}:\n{self._tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no PONG within {START_SECONDS:g} s:\n{self._tail()}")
            time.sleep(0.05)
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
