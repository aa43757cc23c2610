"""Benchmark 3: the real server against bare Flask on the same server, under wrk.

Both run as subprocesses on 127.0.0.1 under waitress with the same thread count; wrk drives
them with bench/api.lua, alternating sidecar and bare Flask, several rounds per endpoint.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.common import Figure, Log, Section, fmt, median
from bench.http_breakdown import VARIANTS, breakdown

HERE = Path(__file__).resolve().parent
LUA = HERE / "api.lua"
TARGET_SHARE = 0.85
THREADS = 8  # waitress threads, the same for both servers
CONNECTIONS = 16
WRK_THREADS = 2
PROGRESS_SESSIONS = 64
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_json(
    port: int, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One request to 127.0.0.1:port; the status and the decoded JSON body (or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return response.status, data
    finally:
        conn.close()


class Server:
    """A server subprocess on 127.0.0.1, ready once `ready_path` answers 200; stopped on exit."""

    def __init__(
        self, name: str, command: Sequence[str], port: int, ready_path: str, env: dict[str, str]
    ) -> None:
        self.name = name
        self.port = port
        self._command = list(command)
        self._ready_path = ready_path
        self._env = {**os.environ, **env}
        # Kept open while the server runs, for the error message if it fails; closed on exit.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self._process = subprocess.Popen(
            self._command,
            env=self._env,
            cwd=HERE.parent,  # so that `python -m bench.bare_app` resolves from anywhere
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            try:
                if request_json(self.port, "GET", self._ready_path)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)  # a poll step with a deadline, not a fixed wait
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {READY_TIMEOUT}s:\n{self.output()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int


def run_wrk(
    port: int, seconds: float, args: Sequence[str], connections: int = CONNECTIONS
) -> WrkResult:
    """One wrk run against 127.0.0.1:port; refuses a run with any error or non-2xx answer."""
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}/",
        "--",
        *args,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")]
    if not lines:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    data = json.loads(lines[-1].removeprefix("WRK_JSON "))
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
    if errors or data["requests"] == 0:
        raise RuntimeError(f"wrk run had errors {errors}:\n{out.stdout}")
    return WrkResult(
        requests_per_second=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        requests=data["requests"],
    )


def sidecar_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(THREADS),
    ]


def bare_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--threads", str(THREADS)]


def progress_ids(port: int) -> list[str]:
    """Sessions for the progress run, created on the sidecar and moved to processing."""
    ids: list[str] = []
    for i in range(PROGRESS_SESSIONS):
        status, body = request_json(
            port, "POST", "/api/v1/sessions", {"story_text": f"Story {i} of the benchmark."}
        )
        if status != 201:
            raise RuntimeError(f"creating a session answered {status}: {body}")
        session_id = str(body["session_id"])
        status, body = request_json(
            port, "PUT", f"/api/v1/sessions/{session_id}/status", {"status": "processing"}
        )
        if status != 200:
            raise RuntimeError(f"moving a session to processing answered {status}: {body}")
        ids.append(session_id)
    return ids


def reset(port: int) -> None:
    """Drop every session the sidecar holds (admin cleanup), so each round starts alike."""
    status, body = request_json(port, "POST", "/api/v1/admin/cleanup", {"scope": "all"})
    if status != 200:
        raise RuntimeError(f"cleanup answered {status}: {body}")


def session_count(port: int) -> int:
    status, body = request_json(port, "GET", "/api/v1/health")
    if status != 200:
        raise RuntimeError(f"health answered {status}: {body}")
    return int(body["session_count"])


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Measured:
    wrk: WrkResult
    cpu_us_per_request: float  # the server process's CPU, user + system


def measure(server: Server, seconds: float, args: Sequence[str]) -> Measured:
    before = _cpu_seconds(server.pid)
    result = run_wrk(server.port, seconds, args)
    cpu = _cpu_seconds(server.pid) - before
    return Measured(result, cpu / result.requests * 1e6)


ENDPOINTS = (
    ("POST /api/v1/sessions", "post"),
    ("PUT /api/v1/sessions/{id}/progress", "progress"),
)
NAMES = ("sidecar", "bare flask")


def table_headers(kind: str) -> list[str]:
    """The columns of compare()'s rows; `kind` names what the two rows differ in."""
    return [
        "endpoint",
        kind,
        "req/s (median)",
        "p50 ms",
        "p99 ms",
        "server CPU us/request",
        "each round (req/s)",
    ]


def compare(
    results: dict[tuple[str, str], list[Measured]],
    names: tuple[str, str],
    *,
    short: tuple[str, str],
    share_title: str,
    target: float,
    target_text: str,
    cpu_tail: str = "",
) -> tuple[list[list[str]], list[Figure], list[str]]:
    """For every endpoint in ENDPOINTS: its table rows, its req/s share and p99 figures, and its
    per-round note, `names[0]` measured against `names[1]` (`results` keyed by (endpoint label,
    name)), `short` their names in the figures."""
    rows: list[list[str]] = []
    figures: list[Figure] = []
    notes: list[str] = []
    for label, _ in ENDPOINTS:
        runs = {name: results[(label, name)] for name in names}
        rps = {n: median([x.wrk.requests_per_second for x in runs[n]]) for n in names}
        p99 = {n: median([x.wrk.p99_ms for x in runs[n]]) for n in names}
        cpu = {n: median([x.cpu_us_per_request for x in runs[n]]) for n in names}
        rows += [
            [
                label,
                name,
                fmt(rps[name]),
                fmt(median([x.wrk.p50_ms for x in runs[name]])),
                fmt(p99[name]),
                fmt(cpu[name]),
                ", ".join(f"{x.wrk.requests_per_second:,.0f}" for x in runs[name]),
            ]
            for name in names
        ]
        measured, baseline = names
        share = rps[measured] / rps[baseline]
        figures += [
            Figure(f"{label}: {share_title}", f"{share:.1%}", target_text, share >= target),
            Figure(
                f"{label}: p99 latency, {short[0]} / {short[1]}",
                f"{fmt(p99[measured])} ms / {fmt(p99[baseline])} ms",
                "reported",
                None,
            ),
        ]
        paired = sorted(
            a.wrk.requests_per_second / b.wrk.requests_per_second
            for a, b in zip(runs[measured], runs[baseline], strict=True)
        )
        notes.append(
            f"{label}: per-round shares, sorted: {', '.join(f'{x:.0%}' for x in paired)}; "
            f"server CPU per request, {short[0]} / {short[1]}: "
            f"{cpu[measured] / cpu[baseline]:.2f}{cpu_tail}."
        )
    return rows, figures, notes


def run(quick: bool, log: Log) -> Section:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    seconds = 2.0 if quick else 5.0
    warmup = 1.0 if quick else 2.0
    rounds = 2 if quick else 6
    sidecar_port, bare_port = free_port(), free_port()
    sidecar = Server(
        "sidecar",
        sidecar_command(sidecar_port),
        sidecar_port,
        "/readyz",
        # High enough that no POST evicts: eviction is benchmark 4's subject.
        {"SIDECAR_MAX_SESSIONS": "1000000"},
    )
    bare = Server("bare flask", bare_command(bare_port), bare_port, "/healthz", {})
    results: dict[tuple[str, str], list[Measured]] = {}
    held: list[int] = []
    with sidecar, bare:
        for label, mode in ENDPOINTS:
            ids = progress_ids(sidecar_port) if mode == "progress" else []
            args = [mode, *ids]
            for server in (sidecar, bare):
                run_wrk(server.port, warmup, args)
                results[(label, server.name)] = []
            for r in range(rounds):
                for server in (sidecar, bare) if r % 2 == 0 else (bare, sidecar):
                    if mode == "post" and server is sidecar:
                        reset(sidecar_port)
                    results[(label, server.name)].append(measure(server, seconds, args))
                    if mode == "post" and server is sidecar:
                        held.append(session_count(sidecar_port))
                log(
                    f"{label} round {r + 1}/{rounds}: "
                    + ", ".join(
                        f"{s.name} {results[(label, s.name)][-1].wrk.requests_per_second:,.0f}/s"
                        for s in (sidecar, bare)
                    )
                )
            reset(sidecar_port)

    rows, figures, notes = compare(
        results,
        NAMES,
        short=("sidecar", "bare"),
        share_title="req/s, share of bare Flask",
        target=TARGET_SHARE,
        target_text=">= 85 %",
    )
    log("in-process breakdown: the same requests without a server, parts taken away")
    extra_rows: list[list[str]] = []
    for label, mode in ENDPOINTS:
        us = breakdown(mode, rounds=4 if quick else 16, batch=300 if quick else 1000)
        bare_us = us["bare flask"]
        extra_rows += [
            [
                label,
                variant,
                fmt(us[variant]),
                f"{us[variant] - bare_us:+.1f}",
                f"{bare_us / us[variant]:.0%}",
            ]
            for variant in VARIANTS
        ]
    notes.append(
        "Sessions the sidecar held at the end of each POST round: "
        + ", ".join(f"{n:,}" for n in held)
        + "."
    )
    return Section(
        number=3,
        title="HTTP overhead against bare Flask",
        method=[
            "Two servers as subprocesses on 127.0.0.1, both waitress with "
            f"{THREADS} threads: the sidecar (`python -m sidecar serve --threads {THREADS}`: the "
            "real app with its metrics and logging; SIDECAR_MAX_SESSIONS=1000000, so no POST "
            "evicts) and `bench/bare_app.py` (bare Flask routes that parse the same JSON body "
            "and answer 201 / 200 with it echoed). Both silence waitress's per-request queue "
            "warning by level; the sidecar reports a full thread pool once a minute instead.",
            f"wrk -t{WRK_THREADS} -c{CONNECTIONS} with `bench/api.lua`: POST sends one fixed "
            f"create body; PUT progress cycles through {PROGRESS_SESSIONS} sessions created on "
            "the sidecar and moved to processing, with a rising step. Any socket error or "
            "non-2xx answer voids the run. Each POST round on the sidecar starts from an empty "
            "sidecar (admin cleanup, outside the timing), so every round holds the same number "
            f"of sessions. Per endpoint: a {warmup:g} s warm-up per server, then {rounds} "
            f"rounds of {seconds:g} s per server, alternating which goes first. wrk and both "
            "servers share the machine's cores. Figures are medians; CPU is the server "
            "process's user + system time over the requests it served.",
        ],
        headers=table_headers("server"),
        rows=rows,
        figures=figures,
        notes=notes,
        extra=[
            (
                "Where the difference goes: the same requests fed to the apps in-process (no "
                "server, no network; `bench/http_breakdown.py`), one at a time, minimum over "
                "interleaved batches. The sidecar variants each take one part away on their own "
                "app instance: the WSGI gate in front of Flask (token guard, drain check, "
                "request timing into the HTTP latency histogram), or the SessionManager call "
                "(stubbed to return a stored session). A part's cost is the sidecar's figure "
                "minus the variant's. Each environ carries wsgi.input_terminated, as waitress's "
                "do.",
                ["endpoint", "app", "us per request", "over bare", "rate, share of bare"],
                extra_rows,
            )
        ],
    )
