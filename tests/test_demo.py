"""`make demo` as a newcomer runs it: real processes, ports held by the test, a short real run."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ChildProcess, require_binary

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


def run_demo(tmp_path: Path, *args: str) -> ChildProcess:
    return ChildProcess.start(
        [sys.executable, str(DEMO), *args], log=tmp_path / "demo.log", env=None
    )


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
