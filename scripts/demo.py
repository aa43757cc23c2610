"""`make demo`: a sidecar, Prometheus with the shipped rules (when installed) and simulated traffic.

Everything listens on 127.0.0.1: the sidecar on --port (8000), Prometheus on --prometheus-port
(9090). The demo refuses to start when either port is taken, and talks only to processes it
started itself. It fills the sidecar past the critical utilization threshold, holds it there
until SidecarSessionUtilizationCritical has gone pending and then firing (about 7 minutes with
the shipped `for: 5m`), purges the finished sessions and waits for the alert to resolve,
printing every alert state change Prometheus reports. Ctrl-C, or the end of the plan, stops
everything; Prometheus keeps its data in a temporary directory that is removed with it.

`prometheus_config` is also what tests/test_e2e_prometheus.py runs Prometheus with.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import yaml
from demo_plan import TrafficPlan, UtilizationRule, default_plan, utilization_rule
from demo_watch import AlertWatch, get_json, ui_prefix

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "prometheus" / "prometheus.yml"
JOB = "sidecar"  # the job name SidecarDown watches
HOST = "127.0.0.1"


class DemoError(Exception):
    """Why the demo cannot go on, as one line."""


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


def check_port_free(port: int, what: str, option: str, hint: str) -> None:
    """DemoError naming `port` and the option that changes it, if something listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: a port left in TIME_WAIT by an earlier run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise DemoError(f"cannot use port {port} for {what}: {exc.strerror}") from exc
            raise DemoError(
                f"port {port} on {HOST} is already in use ({what}; {hint}); "
                f'choose another with DEMO_ARGS="{option} {port + 1}"'
            ) from exc


def _poll(
    probe: Callable[[], bool], child: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    """Call `probe` until True; DemoError if `child` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: a bounded pause between probes
    while not probe():
        if child.poll() is not None:
            raise DemoError(f"{what} exited with status {child.returncode}")
        if time.monotonic() >= deadline:
            raise DemoError(f"{what} did not start within {timeout:g} s")
        pause.wait(0.2)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Forward(threading.Thread):
    """Copies a child's output to ours, and notes when a line contains `marker`."""

    def __init__(self, stream: IO[bytes], marker: str) -> None:
        super().__init__(daemon=True)
        self._stream, self._marker = stream, marker
        self.seen = threading.Event()

    def run(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace")
            if self._marker in line:
                self.seen.set()
            sys.stderr.write(line)


def start_sidecar(args: argparse.Namespace, children: list[subprocess.Popen[bytes]]) -> str:
    """Our own sidecar, known to be ours: it logged that it listens on the port."""
    url = f"http://{HOST}:{args.port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
    env |= {
        "SIDECAR_HOST": HOST,
        "SIDECAR_PORT": str(args.port),
        "SIDECAR_MAX_SESSIONS": str(args.max_sessions),
        "SIDECAR_STUCK_AFTER_SECONDS": "60",
    }
    serve = [sys.executable, "-m", "sidecar", "serve"]
    child = subprocess.Popen(serve, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children.append(child)
    assert child.stderr is not None
    forward = _Forward(child.stderr, f"listening on {url}")
    forward.start()
    # Only our child's own line proves the port is ours: a /readyz answer could come from a
    # sidecar that took the port after the check.
    _poll(forward.seen.is_set, child, "the demo's sidecar", 30)
    _poll(lambda: _answers(f"{url}/readyz"), child, "the demo's sidecar", 15)
    return url


def start_prometheus(
    binary: str, args: argparse.Namespace, workdir: Path, children: list[subprocess.Popen[bytes]]
) -> str:
    """Our own Prometheus, known to be ours: it reports our config file among its flags."""
    url = f"http://{HOST}:{args.prometheus_port}"
    config = workdir / "prometheus.yml"
    target = f"{HOST}:{args.port}"
    config.write_text(
        yaml.safe_dump(prometheus_config(target, f"{args.interval:g}s")), encoding="utf-8"
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={HOST}:{args.prometheus_port}",
        "--log.level=warn",
    ]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    children.append(child)

    def ours() -> bool:
        try:
            flags = get_json(f"{url}/api/v1/status/flags")["data"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        return bool(flags.get("config.file") == str(config))

    def scraped() -> bool:
        # Until the first scrape, SidecarDown's absent(up) is true: start once it is not.
        try:
            targets = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
            alerts = get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        up = [t for t in targets if t.get("health") == "up"]
        return bool(up) and all(a["labels"].get("alertname") != "SidecarDown" for a in alerts)

    _poll(ours, child, "the demo's Prometheus", 30)
    _poll(scraped, child, "the demo's Prometheus (its first scrape)", 30 + 3 * args.interval)
    return url


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def _utilization(sidecar: str) -> str:
    """Held / capacity as the sidecar reports it."""
    stats = get_json(f"{sidecar}/api/v1/stats")
    held, capacity = stats["total_sessions"], stats["max_capacity"]
    return f"{held} of {capacity} sessions held, utilization {held / capacity:.2f}"


def run_plan(
    plan: TrafficPlan,
    rule: UtilizationRule,
    sidecar: str,
    watch: AlertWatch | None,
    args: argparse.Namespace,
    children: list[subprocess.Popen[bytes]],
) -> int:
    """Fill, hold, purge, settle; watching the alerts all along."""
    pause = threading.Event()

    def wait(seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            if watch is not None:
                watch.check()
            pause.wait(min(args.interval, max(0.0, deadline - time.monotonic())))

    _say(
        f"filling: {plan.fill_sessions} of {plan.capacity} sessions at {plan.rate:g}/s "
        f"({plan.fill_seconds:g} s)"
    )
    simulate = [
        *(sys.executable, "-m", "sidecar", "simulate", f"--url={sidecar}"),
        *(f"--rate={plan.rate}", f"--duration={plan.fill_seconds}", "--step-seconds=0.5"),
        *("--failure-ratio=0.1", "--stuck-ratio=0.05"),
    ]
    simulator = subprocess.Popen(simulate, stdin=subprocess.DEVNULL)
    children.append(simulator)
    wait(plan.fill_seconds + 30, until=lambda: simulator.poll() is not None)
    if simulator.poll() not in (None, 0):
        raise DemoError(f"the simulator exited with status {simulator.returncode}")
    _say(f"filled: {_utilization(sidecar)}")
    _say(
        f"holding for {plan.hold_seconds:g} s ({rule.name} needs >= {rule.threshold:g} "
        f"for {rule.for_seconds:g} s to fire)"
    )
    wait(plan.hold_seconds)
    removed = get_json(
        f"{sidecar}/api/v1/admin/cleanup",
        "POST",
        {"scope": "completed", "max_age_seconds": 0.001},
    )["removed"]
    _say(f"purged {removed} completed sessions: {_utilization(sidecar)}")
    if watch is None:
        return 0

    def resolved() -> bool:
        return all(name != rule.name for name, _ in watch.states)

    wait(args.settle_seconds, until=resolved)
    fired = "went firing" if (rule.name, "firing") in watch.seen else "did NOT fire"
    now = "is now resolved" if resolved() else f"is still active after {args.settle_seconds:g} s"
    _say(f"{rule.name} {fired} and {now}")
    return 0


def run(args: argparse.Namespace, workdir: Path, children: list[subprocess.Popen[bytes]]) -> int:
    """Check the ports, start the sidecar and Prometheus (if installed), run the plan."""
    rule = utilization_rule()
    plan = default_plan(args.max_sessions, args.rate, args.interval, rule, args.hold_seconds)
    binary = None if args.no_prometheus else shutil.which("prometheus")
    check_port_free(args.port, "the sidecar", "--port", "is `make run` or another demo running?")
    if binary is not None:
        check_port_free(
            args.prometheus_port, "Prometheus", "--prometheus-port", "is a Prometheus running?"
        )

    sidecar = start_sidecar(args, children)
    lines = [
        f"sidecar API   {sidecar}/api/v1/stats  (also /api/v1/health, /api/v1/sessions)",
        f"metrics       {sidecar}/metrics",
    ]
    watch = None
    if binary is None:
        why = "--no-prometheus" if args.no_prometheus else "Debian: apt-get install prometheus"
        lines.append(f"Prometheus    not started ({why})")
    else:
        prometheus = start_prometheus(binary, args, workdir, children)
        ui = prometheus + ui_prefix(prometheus)
        lines += [
            f"Prometheus    {ui}/graph  (targets: {ui}/targets, rules: {ui}/rules)",
            f"alerts        {ui}/alerts  (JSON: {prometheus}/api/v1/alerts)",
            f"Grafana       data source {prometheus}, dashboard "
            "grafana/dashboards/sidecar-overview.json; in Docker use --network host "
            "(grafana/README.md)",
        ]
        watch = AlertWatch(prometheus, _say)
    print("\n".join(["", *lines, "", "Ctrl-C stops everything.", ""]), flush=True)
    return run_plan(plan, rule, sidecar, watch, args, children)


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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"demo: {message} (see scripts/demo.py --help)\n")


def parser() -> argparse.ArgumentParser:
    """The demo's options; `make demo DEMO_ARGS="..."` passes them."""
    cli = _Parser(description=(__doc__ or "").splitlines()[0])
    add = cli.add_argument
    add("--port", type=int, default=8000, help="the sidecar's port (default 8000)")
    add("--prometheus-port", type=int, default=9090, help="Prometheus's port (default 9090)")
    add("--no-prometheus", action="store_true", help="do not start Prometheus")
    add("--max-sessions", type=int, default=200, help="the sidecar's capacity (default 200)")
    add("--rate", type=float, default=2.0, help="new sessions per second (default 2)")
    add(
        "--hold-seconds",
        type=float,
        default=None,
        help="how long to hold past the critical threshold (default: the alert's `for` in "
        "prometheus/alerts.yml plus 6 scrape intervals; 30 shows it pending only)",
    )
    add("--interval", type=float, default=5.0, help="scrape and evaluation interval, s (5)")
    add(
        "--settle-seconds",
        type=float,
        default=60.0,
        help="how long to wait for the alert to resolve after the purge (default 60)",
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until the plan ends or Ctrl-C; stop every process it started."""
    cli = parser()
    args = cli.parse_args(argv)
    for name in ("port", "prometheus_port"):
        if not 1 <= getattr(args, name) <= 65535:
            cli.error(f"--{name.replace('_', '-')} must be 1 to 65535")
    for name in ("rate", "interval", "settle_seconds", "max_sessions"):
        if not getattr(args, name) > 0:
            cli.error(f"--{name.replace('_', '-')} must be above 0")
    if args.hold_seconds is not None and args.hold_seconds < 0:
        cli.error("--hold-seconds must be 0 or more")
    for sig in (signal.SIGINT, signal.SIGTERM):  # even if started with SIGINT ignored
        signal.signal(sig, _interrupt)
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as workdir:
        try:
            status = run(args, Path(workdir), children)
            _say("demo: the plan is over, stopping")
        except DemoError as exc:
            print(f"demo: {exc}", file=sys.stderr, flush=True)
            status = 1
        except ValueError as exc:  # a plan the options cannot make
            print(f"demo: {exc}", file=sys.stderr, flush=True)
            status = 2
        except KeyboardInterrupt:
            print("\ndemo: stopping", flush=True)
            status = 0
        finally:
            _stop(children)
    return status


if __name__ == "__main__":
    sys.exit(main())
