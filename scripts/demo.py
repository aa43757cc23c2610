"""`make demo`: a sidecar, Prometheus with the shipped rules (when installed) and simulated traffic.

Everything listens on 127.0.0.1: the sidecar on --port (8000), Prometheus on --prometheus-port
(9090). The demo refuses to start when either port is taken, and talks only to processes it
started itself. It fills the sidecar past the critical utilization threshold, holds it there
until SidecarSessionUtilizationCritical has gone pending and then firing (about 7 minutes with
the shipped `for: 5m`), purges the finished sessions and waits for the alert to resolve,
printing every alert state change Prometheus reports. Ctrl-C, or the end of the plan, stops
everything; Prometheus keeps its data in a temporary directory that is removed with it.

With --replicas N (2 or more) the demo first starts its own redis-server (scripts/demo_redis.py)
in that temporary directory, then N sidecars on ports --port, --port + 1, ... sharing it (one
SIDECAR_STORE, one SIDECAR_STORE_NAME), Prometheus scraping all of them, and one simulator per
sidecar, so the traffic is spread over the replicas while the capacity is the store's.

`prometheus_config` is also what tests/test_e2e_prometheus.py runs Prometheus with.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import yaml
from demo_plan import TrafficPlan, UtilizationRule, default_plan, utilization_rule
from demo_process import HOST, DemoError, check_port_free, poll, start_sidecar, stop
from demo_redis import require_redis_server, start_redis
from demo_watch import AlertWatch, get_json, ui_prefix

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "prometheus" / "prometheus.yml"
JOB = "sidecar"  # the job name SidecarDown watches
STORE_NAME = "demo"  # the `store` label every replica gives its state gauges
NO_CLIENT = "--replicas needs the redis extra: pip install 'session-sidecar[redis]'"


def prometheus_config(
    targets: str | Sequence[str], interval: str, shipped: Path = SHIPPED_CONFIG
) -> dict[str, Any]:
    """The shipped Prometheus config, pointed at the sidecars `targets` and sped up to `interval`.

    Keeps the shipped rule files (made absolute, so the generated file can live anywhere) and
    the "sidecar" job with its settings, scraping `targets` (one host:port, or several) only;
    scrapes and rule evaluations happen every `interval`.
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
    listed = [targets] if isinstance(targets, str) else list(targets)
    if not listed:
        raise ValueError("prometheus_config needs at least one target")
    job["static_configs"] = [{"targets": listed}]
    config["scrape_configs"] = [job]
    return config


def start_prometheus(
    binary: str,
    sidecars: Sequence[str],
    args: argparse.Namespace,
    workdir: Path,
    children: list[subprocess.Popen[bytes]],
) -> str:
    """Our own Prometheus scraping `sidecars`, known to be ours: it reports our config file
    among its flags."""
    url = f"http://{HOST}:{args.prometheus_port}"
    config = workdir / "prometheus.yml"
    targets = [sidecar.removeprefix("http://") for sidecar in sidecars]
    config.write_text(
        yaml.safe_dump(prometheus_config(targets, f"{args.interval:g}s")), encoding="utf-8"
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
        return len(up) == len(sidecars) and all(
            a["labels"].get("alertname") != "SidecarDown" for a in alerts
        )

    poll(ours, child, "the demo's Prometheus", 30)
    poll(scraped, child, "the demo's Prometheus (its first scrape)", 30 + 3 * args.interval)
    return url


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def _utilization(sidecars: Sequence[str]) -> str:
    """Held / capacity as the sidecars report it: one figure when they agree (replicas of one
    store do), else each one's."""
    seen = []
    for sidecar in sidecars:
        stats = get_json(f"{sidecar}/api/v1/stats")
        held, capacity = stats["total_sessions"], stats["max_capacity"]
        seen.append(f"{held} of {capacity} sessions held, utilization {held / capacity:.2f}")
    if len(sidecars) == 1:
        return seen[0]
    if len(set(seen)) == 1:
        return f"{seen[0]}, the same through all {len(sidecars)} replicas"
    return "; ".join(f"{sidecar}: {figure}" for sidecar, figure in zip(sidecars, seen, strict=True))


def simulators(plan: TrafficPlan, sidecars: Sequence[str]) -> list[list[str]]:
    """One `sidecar simulate` per sidecar, together creating the plan's sessions at its rate."""
    if len(sidecars) == 1:
        durations = [plan.fill_seconds]
    else:
        # The simulator creates at 0, 1/rate, ... while below its duration: half a step short
        # of each one's share makes exactly that share, whatever the rounding.
        share, extra = divmod(plan.fill_sessions, len(sidecars))
        rate = plan.rate / len(sidecars)
        durations = [(share + (i < extra) - 0.5) / rate for i in range(len(sidecars))]
    return [
        [
            *(sys.executable, "-m", "sidecar", "simulate", f"--url={sidecar}"),
            *(f"--rate={plan.rate / len(sidecars)}", f"--duration={duration}"),
            *("--step-seconds=0.5", "--failure-ratio=0.1", "--stuck-ratio=0.05"),
        ]
        for sidecar, duration in zip(sidecars, durations, strict=True)
        if duration > 0
    ]


def run_plan(
    plan: TrafficPlan,
    rule: UtilizationRule,
    sidecars: Sequence[str],
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
    started = [subprocess.Popen(c, stdin=subprocess.DEVNULL) for c in simulators(plan, sidecars)]
    children.extend(started)
    wait(plan.fill_seconds + 30, until=lambda: all(s.poll() is not None for s in started))
    for simulator in started:
        if simulator.poll() not in (None, 0):
            raise DemoError(f"the simulator exited with status {simulator.returncode}")
    _say(f"filled: {_utilization(sidecars)}")
    _say(
        f"holding for {plan.hold_seconds:g} s ({rule.name} needs >= {rule.threshold:g} "
        f"for {rule.for_seconds:g} s to fire)"
    )
    wait(plan.hold_seconds)
    removed = get_json(
        f"{sidecars[0]}/api/v1/admin/cleanup",
        "POST",
        {"scope": "completed", "max_age_seconds": 0.001},
    )["removed"]
    _say(f"purged {removed} completed sessions: {_utilization(sidecars)}")
    if watch is None:
        return 0

    def resolved() -> bool:
        return all(name != rule.name for name, _ in watch.states)

    wait(args.settle_seconds, until=resolved)
    fired = "went firing" if (rule.name, "firing") in watch.seen else "did NOT fire"
    now = "is now resolved" if resolved() else f"is still active after {args.settle_seconds:g} s"
    _say(f"{rule.name} {fired} and {now}")
    return 0


def start_sidecars(
    args: argparse.Namespace, workdir: Path, children: list[subprocess.Popen[bytes]]
) -> tuple[list[str], list[str]]:
    """The sidecar, or --replicas of them on our own Redis; their URLs and the lines to print."""
    settings = {
        "SIDECAR_MAX_SESSIONS": str(args.max_sessions),
        "SIDECAR_STUCK_AFTER_SECONDS": "60",
    }
    if args.replicas == 1:
        sidecar = start_sidecar(args.port, settings, children)
        return [sidecar], [
            f"sidecar API   {sidecar}/api/v1/stats  (also /api/v1/health, /api/v1/sessions)",
            f"metrics       {sidecar}/metrics",
        ]
    redis = start_redis(require_redis_server(), workdir / "redis", children)
    settings |= {
        "SIDECAR_STORE": redis,
        "SIDECAR_STORE_PREFIX": STORE_NAME,
        "SIDECAR_STORE_NAME": STORE_NAME,
    }
    sidecars = [
        start_sidecar(args.port + i, settings, children, f"the demo's sidecar {i + 1}")
        for i in range(args.replicas)
    ]
    lines = [
        f"redis         {redis}  (appendonly yes, appendfsync everysec; in {workdir / 'redis'})",
        *(
            f"replica {i}     {url}/api/v1/stats  (metrics: {url}/metrics)"
            for i, url in enumerate(sidecars, 1)
        ),
        f"              SIDECAR_STORE={redis} SIDECAR_STORE_NAME={STORE_NAME} on each",
    ]
    return sidecars, lines


def run(args: argparse.Namespace, workdir: Path, children: list[subprocess.Popen[bytes]]) -> int:
    """Check the ports, start the sidecars (and Redis) and Prometheus (if installed), run the
    plan."""
    rule = utilization_rule()
    plan = default_plan(args.max_sessions, args.rate, args.interval, rule, args.hold_seconds)
    binary = None if args.no_prometheus else shutil.which("prometheus")
    for i in range(args.replicas):
        what = "the sidecar" if args.replicas == 1 else f"replica {i + 1} of {args.replicas}"
        hint = "is `make run` or another demo running?"
        check_port_free(args.port + i, what, "--port", hint)
    if binary is not None:
        check_port_free(
            args.prometheus_port, "Prometheus", "--prometheus-port", "is a Prometheus running?"
        )

    sidecars, lines = start_sidecars(args, workdir, children)
    watch = None
    if binary is None:
        why = "--no-prometheus" if args.no_prometheus else "Debian: apt-get install prometheus"
        lines.append(f"Prometheus    not started ({why})")
    else:
        prometheus = start_prometheus(binary, sidecars, args, workdir, children)
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
    return run_plan(plan, rule, sidecars, watch, args, children)


def replicas_missing() -> str | None:
    """Why --replicas cannot run here, or None: it needs redis-server and the redis client."""
    try:
        require_redis_server()
    except DemoError as exc:
        return f"--replicas needs redis-server: {exc}"
    if importlib.util.find_spec("redis") is None:
        return NO_CLIENT
    return None


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


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
    add(
        "--replicas",
        type=int,
        default=1,
        help="sidecars sharing one Redis the demo starts (needs redis-server), on ports "
        "--port, --port + 1, ... (default 1: one sidecar, sessions in memory)",
    )
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
    if not 1 <= args.replicas <= 16:
        cli.error("--replicas must be 1 to 16")
    if args.port + args.replicas - 1 > 65535:
        cli.error(f"--port {args.port} leaves no room for {args.replicas} replicas")
    missing = replicas_missing() if args.replicas > 1 else None
    if missing is not None:  # nothing started yet: one line, as for a bad option
        print(f"demo: {missing}", file=sys.stderr, flush=True)
        return 2
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
            stop(children)
    return status


if __name__ == "__main__":
    sys.exit(main())
