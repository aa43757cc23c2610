"""Benchmark 6: a normal client's latency and failures while each attack is held, against the
same client on a quiet server, in one run (issue 12).

The server is the real SidecarServer (waitress, 8 threads, default connection settings) in
this process, holding 1,000 sessions so a page of the list is ~250 KB; the attacks and the
probe are the clients of bench/attacks.py, on 127.0.0.1 only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from bench import rss
from bench.attacks import Probe, idle, non_readers, open_files_for, probe, slowloris
from bench.common import Figure, Log, Section, fmt
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest
from sidecar.server import SidecarServer
from sidecar.settings import Settings
from sidecar.web.app import create_app, get_sidecar

THREADS = 8
SESSIONS = 1000
PAGE = "/api/v1/sessions?limit=1000"
P99_RATIO = 3.0

Address = tuple[str, int]
Attack = Callable[[Address], AbstractContextManager[Any]]


def _attacks(quick: bool) -> dict[str, Attack]:
    idle_n, slow_n = (300, 100) if quick else (1000, 200)
    return {
        f"{idle_n:,} idle": lambda a: idle(a, idle_n),
        f"{slow_n} slowloris": lambda a: slowloris(a, slow_n, interval=0.5),
        f"{THREADS} pipelined non-readers": lambda a: non_readers(a, THREADS, PAGE),
    }


def _ms(seconds: float) -> str:
    return fmt(seconds * 1000) + " ms"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _rss(quick: bool, log: Log) -> tuple[str, list[str], list[list[str]]]:
    """RSS full and after evictions at capacity, per allocator setting, in fresh interpreters."""
    sessions, evictions = (10_000, 100_000) if quick else (100_000, 1_000_000)
    rows = []
    for name, env in rss.ALLOCATORS.items():
        log(f"resilience: RSS, {sessions:,} sessions then {evictions:,} evictions, {name}")
        r = rss.run_child(sessions, evictions, env)
        rows.append(
            [
                name,
                _mib(r["full"] - r["start"]),
                " / ".join(_mib(step - r["full"]) for step in r["steps"]),
                f"{(r['after'] - r['full']) / (r['full'] - r['start']):.0%}",
            ]
        )
    before = (
        f"Resident memory of a fresh interpreter (bench/rss.py): a manager filled to "
        f"{sessions:,} sessions (evict_oldest), then {evictions:,} more creates, each evicting "
        "the oldest; RSS (VmRSS) after a gc.collect() at each quarter of the evictions."
    )
    headers = [
        "allocator",
        "fill",
        "RSS over full, after each quarter of the evictions",
        "growth / fill",
    ]
    return before, headers, rows


def run(quick: bool, log: Log) -> Section:
    requests = 50 if quick else 200
    open_files_for(3000)
    settings = Settings(max_sessions=SESSIONS)
    manager = SessionManager(settings.manager_config)
    story = GenerationRequest(story_text="A gull reads the weather. " * 10, num_scenes=5)
    for _ in range(SESSIONS):
        manager.create_session(story)
    app = create_app(settings, manager=manager)
    server = SidecarServer(app, port=0, threads=THREADS)
    serving = threading.Thread(target=server.serve)
    serving.start()
    address = server.addresses[0]
    results: list[tuple[str, Probe]] = []
    try:
        log(f"resilience: quiet server, {requests} requests of /livez")
        quiet = probe(address, "/livez", requests)
        results.append(("quiet", quiet))
        for name, attack in _attacks(quick).items():
            log(f"resilience: {name}")
            with attack(address):
                results.append((name, probe(address, "/livez", requests)))
    finally:
        server.request_shutdown()
        serving.join(30)
        get_sidecar(app).close()
        manager.shutdown()

    memory = _rss(quick, log)
    rows = [
        [name, str(len(p.seconds)), str(len(p.failures)), _ms(p.p50), _ms(p.p99)]
        for name, p in results
    ]
    figures = []
    for name, p in results[1:]:
        ratio = p.p99 / quiet.p99
        figures.append(
            Figure(
                f"{name}: failures, p99 over quiet",
                f"{len(p.failures)}, {ratio:.2f}",
                f"0, <= {P99_RATIO:g}",
                not p.failures and ratio <= P99_RATIO,
            )
        )
    return Section(
        number=6,
        title="Resilience: a normal client while attacks are held",
        method=[
            f"The real SidecarServer (waitress, {THREADS} threads, default connection settings) "
            f"with {SESSIONS:,} sessions, in-process; a normal client sends {requests} "
            "`GET /livez`, each on a new connection, on a quiet server and then while each "
            "attack is held (bench/attacks.py). Non-readers pipeline 2,000 "
            f"`GET {PAGE}` each and read nothing.",
        ],
        headers=["while", "answered", "failures", "p50", "p99"],
        rows=rows,
        figures=figures,
        extra=[memory],
    )
