"""Command line: `sidecar serve` runs the HTTP server, `sidecar simulate` plays a generation
service against one, `sidecar selfcheck` exercises the core.

Every `serve` flag mirrors a SIDECAR_* environment variable (flags win over the environment,
the environment over defaults). A bad value or a usage error exits with status 2 and one line
on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pydantic import ValidationError

from sidecar.version import __version__

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
# Subcommands import what they need when they run: `sidecar --version` and `selfcheck` stay
# quick and do not load Flask or waitress.


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _fail(message: str) -> int:
    print(f"sidecar: {message}", file=sys.stderr)
    return 2


def _selfcheck(_args: argparse.Namespace) -> int:
    from sidecar.core.clock import ManualClock
    from sidecar.core.manager import SessionManager
    from sidecar.core.models import GenerationRequest

    with SessionManager(clock=ManualClock()) as manager:
        session = manager.create_session(GenerationRequest(story_text="A fox finds a lantern."))
        manager.update_session_status(session.session_id, "processing")
        manager.update_session_status(session.session_id, "completed")
        print(manager.get_health_status())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from sidecar.logs import configure_logging
    from sidecar.server import is_loopback, serve
    from sidecar.settings import Settings, describe_errors

    overrides = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        return _fail(describe_errors(exc, frozenset(overrides)))
    if (
        not is_loopback(settings.host)
        and settings.api_token is None
        and not settings.allow_unauthenticated
    ):
        return _fail(
            f"refusing to listen on {settings.host} without SIDECAR_API_TOKEN; "
            "set a token or pass --allow-unauthenticated"
        )
    tokens = (settings.secret("api_token"), settings.secret("admin_token"))
    secrets = [t for t in (*tokens, settings.secret("metrics_token")) if t]
    configure_logging(settings.log_level, settings.log_format, secrets=secrets)
    return serve(settings)


def _add_serve(sub: argparse._SubParsersAction[_Parser]) -> None:
    from sidecar.settings import SECRET_FIELDS, Settings, env_name, flag_name

    parser = sub.add_parser(
        "serve",
        help="serve the JSON API and /metrics",
        description="Serve the JSON API and /metrics. Each flag overrides its variable.",
    )
    for name, field in Settings.model_fields.items():
        if field.annotation is bool:
            parser.add_argument(
                flag_name(name),
                action="store_true",
                default=argparse.SUPPRESS,
                help=f"{field.description} [{env_name(name)}]",
            )
            continue
        default = "unset" if field.default is None else str(field.default)
        note = " Visible to other local users in the process list." if name in SECRET_FIELDS else ""
        parser.add_argument(
            flag_name(name),
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"{field.description}{note} [{env_name(name)}, default {default}]",
        )
    parser.set_defaults(handler=_serve)


def _simulate(args: argparse.Namespace) -> int:
    import json
    import os
    import signal

    from sidecar.simulate import SimulationConfig, Simulator, SimulatorError

    config = SimulationConfig(
        url=args.url,
        rate=args.rate,
        failure_ratio=args.failure_ratio,
        stuck_ratio=args.stuck_ratio,
        duration=args.duration,
        step_seconds=args.step_seconds,
        token=args.token or os.environ.get("SIDECAR_API_TOKEN") or None,
        seed=args.seed,
    )
    try:
        simulator = Simulator(config)
    except ValueError as exc:
        return _fail(str(exc))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: simulator.stop())
    print(
        f"simulating against {config.url}: {config.rate}/s for {config.duration}s "
        f"(failure ratio {config.failure_ratio}, stuck ratio {config.stuck_ratio})",
        flush=True,
    )
    try:
        report = simulator.run()
    except SimulatorError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict()), flush=True)
    return 0


def _add_simulate(sub: argparse._SubParsersAction[_Parser]) -> None:
    parser = sub.add_parser(
        "simulate",
        help="play a generation service against a running sidecar",
        description="Create sessions, move them through processing with progress and scenes, "
        "complete or fail them, leave a share stuck; stop by itself after --duration.",
    )
    parser.add_argument("--url", required=True, help="the sidecar, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=2.0, help="new sessions per second [2]")
    parser.add_argument(
        "--failure-ratio", type=float, default=0.1, help="share that fails, 0 to 1 [0.1]"
    )
    parser.add_argument(
        "--stuck-ratio", type=float, default=0.05, help="share left stuck, 0 to 1 [0.05]"
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of creating sessions [60]"
    )
    parser.add_argument(
        "--step-seconds", type=float, default=0.5, help="seconds between updates of a session"
    )
    parser.add_argument("--token", help="API bearer token [SIDECAR_API_TOKEN]")
    parser.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    parser.set_defaults(handler=_simulate)


def build_parser() -> argparse.ArgumentParser:
    """The `sidecar` argument parser; each subcommand sets `handler`."""
    parser = _Parser(prog="sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_simulate(sub)
    selfcheck = sub.add_parser("selfcheck", help="exercise the session core once, print health")
    selfcheck.set_defaults(handler=_selfcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sidecar` command."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
