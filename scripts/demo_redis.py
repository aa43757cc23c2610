"""How the demo starts Redis: Debian's `redis-server` on a free loopback port, in a directory of
its own, with the settings README "Several replicas" recommends (appendonly yes, appendfsync
everysec, maxmemory-policy noeviction).

tests/redis_server.py starts its servers with the same command line and the same PING, so the
demo's Redis is the tests' Redis. Plain RESP over a socket: no client library needed to start it.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from demo_process import HOST, DemoError, poll

START_SECONDS = 15.0  # from exec to an answer on a busy 2-core machine
MISSING = "redis-server is not installed (Debian: apt-get install redis-server)"
_MAX_REPLY = 1 << 20
_PROCESS_ID = re.compile(rb"^process_id:(\d+)\r?$", re.MULTILINE)


def redis_command(
    binary: str,
    port: int,
    directory: Path,
    *,
    appendonly: bool,
    config: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """redis-server on HOST:`port`, its files (AOF, log) in `directory`, no RDB snapshots.

    A `config` file is read first (these options then override its own); `extra` options last.
    """
    return [
        binary,
        *([str(config)] if config is not None else []),
        *("--port", str(port), "--bind", HOST, "--dir", str(directory)),
        *("--save", "", "--appendonly", "yes" if appendonly else "no"),
        *("--appendfsync", "everysec", "--maxmemory-policy", "noeviction"),
        *("--logfile", str(directory / "redis.log")),
        *extra,
    ]


def free_port() -> int:
    """A port the kernel says is free now (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _request(*words: str) -> str:
    return f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)


def command(
    port: int, *words: str, password: str | None = None, timeout: float = 0.5
) -> bytes | None:
    """The reply to one command sent to HOST:`port` (after AUTH with `password`, if given): a
    simple string's text or a bulk string's bytes; None for no answer, an error reply (such as
    NOAUTH without the password) or anything else."""
    request = (
        _request(*words) if password is None else _request("AUTH", password) + _request(*words)
    )
    authenticating = password is not None
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request.encode())
            reply = b""
            while len(reply) <= _MAX_REPLY:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
                if authenticating and b"\r\n" in reply:
                    accepted, _, reply = reply.partition(b"\r\n")
                    if accepted != b"+OK":
                        return None
                    authenticating = False
                head, found, rest = reply.partition(b"\r\n")
                if not found:
                    continue
                if head.startswith(b"+"):
                    return head[1:]
                if not head.startswith(b"$"):
                    return None
                if len(rest) >= int(head[1:]):
                    return rest[: int(head[1:])]
    except (OSError, ValueError):
        return None
    return None


def ping(port: int, password: str | None = None) -> bool:
    """True when a server on HOST:`port` answers PING with PONG (after AUTH with `password`)."""
    return command(port, "PING", password=password) == b"PONG"


def server_pid(port: int) -> int | None:
    """The process id the Redis server on HOST:`port` reports (INFO server), if any answers."""
    info = command(port, "INFO", "server")
    found = _PROCESS_ID.search(info or b"")
    return int(found.group(1)) if found else None


def require_redis_server() -> str:
    """Path of redis-server; DemoError saying how to install it if there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError(MISSING)
    return binary


def start_redis(binary: str, directory: Path, children: list[subprocess.Popen[bytes]]) -> str:
    """Our own durable Redis in `directory` (created); its URL once it answers as our process."""
    directory.mkdir()
    port = free_port()
    child = subprocess.Popen(
        redis_command(binary, port, directory, appendonly=True), stdin=subprocess.DEVNULL
    )
    children.append(child)
    try:
        # Ours: the server on the port reports our child's process id, not just any PONG.
        poll(lambda: server_pid(port) == child.pid, child, "the demo's redis-server", START_SECONDS)
    except DemoError as exc:
        log = directory / "redis.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        raise DemoError(f"{exc}: {lines[-1] if lines else 'no log'}") from exc
    return f"redis://{HOST}:{port}/0"
