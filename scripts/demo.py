"""`make demo`: a sidecar, Prometheus with the shipped rules (when installed) and simulated traffic.

Everything listens on 127.0.0.1. The sidecar is small (200 sessions) and the traffic steady, so
within a few minutes it climbs through the health bounds, the utilization alerts go pending,
and once full it evicts. Ctrl-C, or the end of the simulation, stops everything; Prometheus
keeps its data in a temporary directory that is removed with it.

`prometheus_config` is also what tests/test_e2e_prometheus.py runs Prometheus with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "prometheus" / "prometheus.yml"
JOB = "sidecar"  # the job name SidecarDown watches


def prometheus_config(target: str, interval: str, shipped: Path = SHIPPED_CONFIG) -> dict[str, Any]:
    """The shipped Prometheus config, pointed at one sidecar and sped up to `interval`.

    Keeps the shipped rule files (made absolute, so the generated file can live anywhere) and
    the "sidecar" job with its settings, scraping `target` (host:port) only; scrapes and rule
    evaluations happen every `interval`.
    """
    config: dict[str, Any] = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    config.setdefault("global", {}).update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    config["rule_files"] = [str(shipped.parent / name) for name in config["rule_files"]]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    if len(jobs) != 1:
        raise ValueError(f"{shipped} must have exactly one scrape job named {JOB!r}")
    (job,) = jobs
    for key in ("scrape_interval", "scrape_timeout"):
        job.pop(key, None)
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    return config


def _ready(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Poll `url` until it answers 200; exit with a message if `process` dies or time runs out."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: {what} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        pause.wait(0.2)
    raise SystemExit(f"demo: {what} did not answer {url} within {timeout:g} s")


def _simulator(flags: dict[str, Any]) -> list[str]:
    """The `sidecar simulate` command line for `flags`."""
    argv = [f"--{name.replace('_', '-')}={value}" for name, value in flags.items()]
    return [sys.executable, "-m", "sidecar", "simulate", *argv]


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop the children, newest first: SIGTERM, then SIGKILL after 15 s."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(args: argparse.Namespace, workdir: Path, children: list[subprocess.Popen[bytes]]) -> int:
    """Start the sidecar, Prometheus (if installed) and the simulator; wait for the simulator."""
    sidecar = f"http://127.0.0.1:{args.port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
    env |= {
        "SIDECAR_HOST": "127.0.0.1",
        "SIDECAR_PORT": str(args.port),
        "SIDECAR_MAX_SESSIONS": str(args.max_sessions),
        "SIDECAR_STUCK_AFTER_SECONDS": "60",
    }
    serve = [sys.executable, "-m", "sidecar", "serve"]
    children.append(subprocess.Popen(serve, env=env, stdin=subprocess.DEVNULL))
    _ready(f"{sidecar}/readyz", children[-1], "the sidecar")

    lines = [
        f"sidecar API   {sidecar}/api/v1/stats  (also /api/v1/health, /api/v1/sessions)",
        f"metrics       {sidecar}/metrics",
    ]
    binary = shutil.which("prometheus")
    if binary is None:
        lines.append("Prometheus    not installed (Debian: apt-get install prometheus)")
    else:
        prometheus = f"http://127.0.0.1:{args.prometheus_port}"
        config = workdir / "prometheus.yml"
        target = f"127.0.0.1:{args.port}"
        config.write_text(yaml.safe_dump(prometheus_config(target, "5s")), encoding="utf-8")
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
            "--log.level=warn",
        ]
        children.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
        _ready(f"{prometheus}/-/ready", children[-1], "Prometheus")
        lines += [
            f"Prometheus    {prometheus}/graph  (targets: /targets, rules: /rules)",
            f"alerts        {prometheus}/alerts",
            "Grafana       grafana/README.md; data source "
            f"{prometheus}, dashboard grafana/dashboards/sidecar-overview.json",
        ]

    flags = {
        "url": sidecar,
        "rate": args.rate,
        "failure_ratio": 0.1,
        "stuck_ratio": 0.05,
        "duration": args.duration,
        "step_seconds": 0.5,
    }
    simulate = _simulator(flags)
    print("\n".join(["", *lines, ""]), flush=True)
    print(
        f"simulating {args.rate:g} sessions/s for {args.duration:g} s into a sidecar of "
        f"{args.max_sessions} sessions; Ctrl-C stops everything\n",
        flush=True,
    )
    children.append(subprocess.Popen(simulate, stdin=subprocess.DEVNULL))
    return children[-1].wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until the simulation ends or Ctrl-C; stop every process it started."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="sidecar port (default 8000)")
    parser.add_argument(
        "--prometheus-port", type=int, default=9090, help="Prometheus port (default 9090)"
    )
    parser.add_argument("--max-sessions", type=int, default=200, help="capacity (default 200)")
    parser.add_argument("--rate", type=float, default=2.0, help="new sessions/s (default 2)")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds of traffic (default 600)"
    )
    args = parser.parse_args(argv)

    for sig in (signal.SIGINT, signal.SIGTERM):  # even if started with SIGINT ignored
        signal.signal(sig, _interrupt)
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as workdir:
        try:
            status = run(args, Path(workdir), children)
            print("demo: the simulation is over, stopping", flush=True)
        except KeyboardInterrupt:
            print("\ndemo: stopping", flush=True)
            status = 0
        finally:
            _stop(children)
    return status


if __name__ == "__main__":
    sys.exit(main())
