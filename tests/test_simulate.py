"""The traffic simulator: its configuration checks, and runs against a real `sidecar serve`."""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import SidecarProcess, SidecarSpawner, memory_store_name, poll
from prometheus_client.parser import text_string_to_metric_families

from sidecar.simulate import (
    SimulationConfig,
    SimulationReport,
    Simulator,
    SimulatorError,
    _Client,
)

URL = "http://127.0.0.1:8000"
TOKEN = "simulate-test-token"


# ---------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"url": "127.0.0.1:8000"},
            "--url must be an http(s) URL such as http://127.0.0.1:8000, not '127.0.0.1:8000'",
        ),
        (
            {"url": "ftp://127.0.0.1/"},
            "--url must be an http(s) URL such as http://127.0.0.1:8000, not 'ftp://127.0.0.1/'",
        ),
        (
            {"url": "http://"},
            "--url must be an http(s) URL such as http://127.0.0.1:8000, not 'http://'",
        ),
        ({"rate": 0}, "--rate must be above 0 and at most 10000, not 0"),
        ({"rate": -2.5}, "--rate must be above 0 and at most 10000, not -2.5"),
        ({"rate": 10_001}, "--rate must be above 0 and at most 10000, not 10001"),
        ({"rate": math.nan}, "--rate must be above 0 and at most 10000, not nan"),
        ({"failure_ratio": -0.1}, "--failure-ratio must be between 0 and 1, not -0.1"),
        ({"failure_ratio": 1.5}, "--failure-ratio must be between 0 and 1, not 1.5"),
        ({"failure_ratio": math.nan}, "--failure-ratio must be between 0 and 1, not nan"),
        ({"stuck_ratio": -1}, "--stuck-ratio must be between 0 and 1, not -1"),
        ({"stuck_ratio": 2}, "--stuck-ratio must be between 0 and 1, not 2"),
        (
            {"failure_ratio": 0.6, "stuck_ratio": 0.5},
            "--failure-ratio plus --stuck-ratio must not exceed 1",
        ),
        ({"duration": 0}, "--duration must be above 0 and at most a week, not 0"),
        ({"duration": 604_801}, "--duration must be above 0 and at most a week, not 604801"),
        ({"duration": math.inf}, "--duration must be above 0 and at most a week, not inf"),
        ({"step_seconds": 0}, "--step-seconds must be above 0 and at most 3600, not 0"),
        ({"step_seconds": 3601}, "--step-seconds must be above 0 and at most 3600, not 3601"),
        ({"timeout": 0}, "--timeout must be above 0 and at most 300, not 0"),
        ({"timeout": -1}, "--timeout must be above 0 and at most 300, not -1"),
    ],
)
def test_validate_names_the_flag_of_a_bad_value(changes: dict[str, Any], message: str) -> None:
    config = SimulationConfig(**{"url": URL, **changes})
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        config.validate()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"url": "https://sidecar.example:8443/base/"},
        {"rate": 10_000},
        {"rate": 0.01},
        {"failure_ratio": 1, "stuck_ratio": 0},
        {"failure_ratio": 0, "stuck_ratio": 1},
        {"failure_ratio": 0.5, "stuck_ratio": 0.5},
        {"duration": 7 * 86400},
        {"step_seconds": 3600},
        {"timeout": 300},
        {"url": "http://[::1]/"},
    ],
)
def test_validate_accepts_the_edges(changes: dict[str, Any]) -> None:
    SimulationConfig(**{"url": URL, **changes}).validate()


def test_a_simulator_refuses_a_bad_config() -> None:
    with pytest.raises(ValueError, match=r"^--rate must be above 0"):
        Simulator(SimulationConfig(URL, rate=0))


# ---------------------------------------------------------------------------- against a sidecar


def counters(server: SidecarProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the sidecar's /metrics, by name and labels."""
    with requests.get(f"{server.url}/metrics", timeout=5) as response:
        response.raise_for_status()
        text = response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def transitions(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], src: str, dst: str
) -> float:
    key = frozenset({("from_status", src), ("to_status", dst)})
    return samples[("sidecar_session_transitions_total", key)]


def stats(server: SidecarProcess, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.get(f"{server.url}/api/v1/stats", headers=headers, timeout=5) as response:
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def guarded_server(spawn_sidecar: SidecarSpawner) -> SidecarProcess:
    """A sidecar whose API needs TOKEN, shared by the tests that do not count its sessions."""
    return spawn_sidecar(api_token=TOKEN)


@pytest.mark.process
def test_a_run_matches_what_the_sidecar_counted(spawn_sidecar: SidecarSpawner) -> None:
    server = spawn_sidecar(stuck_after_seconds=1)
    config = SimulationConfig(
        url=server.url,
        rate=20,
        duration=2,
        step_seconds=0.05,
        failure_ratio=0.2,
        stuck_ratio=0.1,
        seed=7,
    )

    report = Simulator(config).run()

    assert report.created == 40  # rate x duration
    assert report.http_errors == {}
    assert report.abandoned == 0
    assert report.completed + report.failed + report.stuck == report.created
    assert min(report.completed, report.failed, report.stuck) > 0  # seed 7 draws every fate
    figures = stats(server)
    assert figures["total_sessions"] == report.created
    assert figures["status_breakdown"] == {
        "pending": 0,
        "processing": report.stuck,
        "completed": report.completed,
        "failed": report.failed,
    }
    samples = counters(server)
    assert samples[("sidecar_sessions_created_total", frozenset())] == report.created
    assert transitions(samples, "pending", "processing") == report.created
    assert transitions(samples, "processing", "completed") == report.completed
    assert transitions(samples, "processing", "failed") == report.failed
    assert transitions(samples, "pending", "failed") == 0
    # Left in processing without updates, they are flagged once stuck_after_seconds pass.
    poll(
        lambda: stats(server)["stuck_sessions"] == report.stuck or None,
        timeout=10,
        what=f"{report.stuck} stuck sessions",
    )
    store = frozenset({("store", memory_store_name(server.url))})
    assert counters(server)[("sidecar_sessions_stuck", store)] == report.stuck


@pytest.mark.process
def test_a_run_returns_by_itself_within_its_duration_plus_grace(
    guarded_server: SidecarProcess,
) -> None:
    config = SimulationConfig(
        url=guarded_server.url, rate=5, duration=1, step_seconds=0.1, token=TOKEN, seed=1
    )
    grace = config.step_seconds * 8 + 1  # what the simulator gives open jobs to finish
    started = time.monotonic()

    report = Simulator(config).run()

    elapsed = time.monotonic() - started
    assert config.duration <= elapsed <= config.duration + grace
    assert report.created == 5
    assert report.abandoned == 0
    assert report.http_errors == {}


@pytest.mark.process
def test_stop_from_another_thread_ends_a_run_early(guarded_server: SidecarProcess) -> None:
    config = SimulationConfig(
        url=guarded_server.url, rate=20, duration=60, step_seconds=0.05, token=TOKEN, seed=2
    )
    simulator = Simulator(config)
    reports: list[SimulationReport] = []
    thread = threading.Thread(target=lambda: reports.append(simulator.run()))
    thread.start()
    try:
        poll(lambda: simulator.report.created >= 5 or None, timeout=10, what="5 sessions")
    finally:
        simulator.stop()
        thread.join(timeout=5)

    assert not thread.is_alive()
    (report,) = reports
    assert 5 <= report.created < config.rate * config.duration
    assert report.http_errors == {}
    # Every job is accounted for: finished, left stuck, or still open when stopped.
    assert report.completed + report.failed + report.stuck + report.abandoned == report.created


@pytest.mark.process
def test_a_refused_token_stops_the_run(guarded_server: SidecarProcess) -> None:
    config = SimulationConfig(url=guarded_server.url, duration=5, token="wrong-token")

    with pytest.raises(SimulatorError, match=r"refused the token \(HTTP 401\); pass --token"):
        Simulator(config).run()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_sidecar_raises_simulator_error(closed_port: int) -> None:
    config = SimulationConfig(url=f"http://127.0.0.1:{closed_port}", duration=5, timeout=2)

    with pytest.raises(SimulatorError, match=r"^cannot reach the sidecar: "):
        Simulator(config).run()


def test_a_bare_ipv6_host_keeps_its_default_port() -> None:
    client = _Client(SimulationConfig("http://[::1]/"))
    try:
        assert (client._conn.host, client._conn.port) == ("::1", 80)
    finally:
        client.close()
