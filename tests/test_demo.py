"""`make demo` as a newcomer runs it: real processes, ports held by the test, a short real run."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ChildProcess, require_binary
from demo_redis import ping
from redis_server import require_redis_server

pytestmark = pytest.mark.process

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
_LINK = re.compile(r"https?://127\.0\.0\.1:\d+/[^\s,)]*")


@pytest.fixture
def held_port() -> Iterator[socket.socket]:
    """A listening socket on a free loopback port, as `make run` would hold one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        held.setblocking(False)
        yield held


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports that are free now."""
    for _ in range(50):
        base = free_port()
        taken = []
        try:
            for port in range(base + 1, min(base + count, 65536)):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                taken.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in taken:
                probe.close()
        if base + count - 1 <= 65535:
            return base
    pytest.fail(f"no {count} consecutive free ports in 50 tries")


def run_demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> ChildProcess:
    return ChildProcess.start(
        [sys.executable, str(DEMO), *args], log=tmp_path / "demo.log", env=env
    )


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cmdline = (stat.parent / "cmdline").read_bytes()
                found[int(stat.parent.name)] = cmdline.replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def assert_untouched(held: socket.socket) -> None:
    """Nobody connected to the held port: the demo drove nothing it had not started."""
    with pytest.raises(BlockingIOError):
        held.accept()


@pytest.mark.parametrize(
    ("option", "what", "hint"),
    [
        ("--port", "the sidecar", "is `make run` or another demo running?"),
        ("--prometheus-port", "Prometheus", "is a Prometheus running?"),
    ],
)
def test_demo_refuses_a_port_in_use_with_one_line(
    tmp_path: Path, held_port: socket.socket, option: str, what: str, hint: str
) -> None:
    if what == "Prometheus":
        require_binary("prometheus")  # without it the demo needs no Prometheus port
    port = held_port.getsockname()[1]
    ports = {"--port": free_port(), "--prometheus-port": free_port(), option: port}

    demo = run_demo(tmp_path, *(f"{name}={value}" for name, value in ports.items()))

    assert demo.wait(60) == 1
    assert demo.lines() == [
        f"demo: port {port} on 127.0.0.1 is already in use ({what}; {hint}); "
        f'choose another with DEMO_ARGS="{option} {port + 1}"'
    ]
    assert_untouched(held_port)


def test_a_short_demo_shows_the_critical_alert_pending_then_resolved(tmp_path: Path) -> None:
    require_binary("prometheus")
    demo = run_demo(
        tmp_path,
        f"--port={free_port()}",
        f"--prometheus-port={free_port()}",
        "--max-sessions=20",
        "--rate=20",
        "--interval=1",
        "--hold-seconds=8",
        "--settle-seconds=30",
    )
    try:
        demo.wait_for_line(re.compile(r"filling: 19 of 20"), timeout=90)
        # every link the demo printed works while it runs
        links = [
            link
            for line in demo.lines()
            if line.startswith(("sidecar API", "metrics", "Prometheus", "alerts"))
            for link in _LINK.findall(line)
        ]
        assert any("/alerts" in link for link in links), demo.output()
        for link in links:
            assert requests.get(link, timeout=5).status_code == 200, link
        assert demo.wait(120) == 0, demo.output()
    finally:
        demo.stop()

    out = demo.output()
    assert "filled: 19 of 20 sessions held, utilization 0.95" in out
    assert "alert SidecarSessionUtilizationCritical" in out
    assert re.search(
        r"SidecarSessionUtilizationCritical \(memory:\S+\): inactive -> pending", out
    ), out
    assert re.search(
        r"SidecarSessionUtilizationCritical \(memory:\S+\): pending -> inactive", out
    ), out
    assert "SidecarDown" not in out  # the demo starts once Prometheus has scraped the sidecar
    assert "SidecarSessionUtilizationCritical did NOT fire and is now resolved" in out


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--rate=0", "demo: --rate must be above 0 (see scripts/demo.py --help)"),
        ("--port=70000", "demo: --port must be 1 to 65535 (see scripts/demo.py --help)"),
        ("--bogus", "demo: unrecognized arguments: --bogus (see scripts/demo.py --help)"),
        ("--replicas=0", "demo: --replicas must be 1 to 16 (see scripts/demo.py --help)"),
        (
            "--max-sessions=5",
            "demo: a capacity of 5 cannot hold 0.9 of it without filling up;"
            " use a larger --max-sessions",
        ),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, arg: str, message: str) -> None:
    # a free port first, so that a demo that took the option would start on it and not exit 2
    demo = run_demo(tmp_path, "--no-prometheus", f"--port={free_port()}", arg)
    try:
        assert demo.wait(30) == 2
    finally:
        demo.stop()
    assert demo.lines() == [message]


def test_a_replicas_demo_shares_one_redis_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_redis_server()
    port = free_ports(3)
    demo = run_demo(
        tmp_path,
        "--replicas=3",
        f"--port={port}",
        f"--prometheus-port={free_port()}",
        "--max-sessions=20",
        "--rate=20",
        "--interval=1",
        "--hold-seconds=120",  # the test interrupts the hold, as Ctrl-C would
    )
    try:
        demo.wait_for_line(re.compile(r"holding for 120 s"), timeout=120)
        out = demo.output()
        replicas = re.findall(r"^replica \d\s+(http://127\.0\.0\.1:\d+)/api/v1/stats", out, re.M)
        redis = re.search(r"^redis\s+redis://127\.0\.0\.1:(\d+)/0 .*; in (\S+)\)$", out, re.M)
        prometheus = re.search(r"\(JSON: (http://127\.0\.0\.1:\d+)/api/v1/alerts\)", out)
        assert redis is not None, out
        assert prometheus is not None, out
        assert replicas == [f"http://127.0.0.1:{port + i}" for i in range(3)], out
        redis_port, redis_dir = int(redis.group(1)), Path(redis.group(2))
        assert (redis_dir / "appendonlydir").is_dir() or (redis_dir / "appendonly.aof").exists()
        # the simulators spread 19 creates over the three; the store holds them all
        assert "filled: 19 of 20 sessions held, utilization 0.95, the same through all 3 " in out
        started = children_of(demo.process.pid)
        # the simulators are done: Redis, three sidecars and Prometheus remain
        assert len(started) == 5, started
        assert sum("redis-server" in cmd for cmd in started.values()) == 1, started
        assert sum("-m sidecar serve" in cmd for cmd in started.values()) == 3, started
        assert sum("--config.file=" in cmd for cmd in started.values()) == 1, started

        # a session created through one replica is read through the others
        created = requests.post(
            f"{replicas[0]}/api/v1/sessions", json={"story_text": "A fox."}, timeout=10
        )
        assert created.status_code == 201
        sid = created.json()["session_id"]
        for url in replicas[1:]:
            seen = requests.get(f"{url}/api/v1/sessions/{sid}", timeout=10)
            assert seen.status_code == 200, url
            assert seen.json()["session_id"] == sid
            stats = requests.get(f"{url}/api/v1/stats", timeout=10).json()
            assert stats["total_sessions"] == 20
        # Prometheus scrapes all three, every state gauge under the one store label
        with requests.get(f"{prometheus.group(1)}/api/v1/targets", timeout=10) as answer:
            targets = answer.json()["data"]["activeTargets"]
        assert sorted(t["labels"]["instance"] for t in targets) == [
            url.removeprefix("http://") for url in replicas
        ]
        with requests.get(f"{replicas[2]}/metrics", timeout=10) as answer:
            assert 'sidecar_sessions_capacity{store="demo"} 20.0' in answer.text

        demo.process.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, demo.output()
    finally:
        demo.stop()

    assert "demo: stopping" in demo.lines()
    for pid, cmd in started.items():
        assert not Path(f"/proc/{pid}").exists(), f"{cmd} still runs"
    assert not ping(redis_port)
    for url in replicas:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/livez", timeout=5)
    assert not redis_dir.exists()
    assert not redis_dir.parent.exists()


def test_replicas_without_redis_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    demo = run_demo(tmp_path, "--replicas=3", f"--port={free_port()}", env=env)
    try:
        assert demo.wait(30) == 2
    finally:
        demo.stop()
    assert demo.lines() == [
        "demo: --replicas needs redis-server: redis-server is not installed "
        "(Debian: apt-get install redis-server)"
    ]
