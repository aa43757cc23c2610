"""Command line: `sidecar serve` runs the HTTP server, `sidecar simulate` plays a generation
service against one, `sidecar selfcheck` exercises the core.

Every `serve` flag mirrors a SIDECAR_* environment variable (flags win over the environment,
the environment over defaults). A bad value or a usage error exits with status 2 and one line
on stderr, before anything is started.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args, get_origin

from pydantic import ValidationError

from sidecar.logs import one_line
from sidecar.version import __version__

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
# Subcommands import what they need when they run: `sidecar --version` and `selfcheck` stay
# quick and do not load Flask or waitress.


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _fail(message: str, status: int = 2) -> int:
    """Exit `status` (2: bad input) with `message` on one line: control characters a bad
    value carried (a newline in an environment variable) are shown escaped."""
    print(f"sidecar: {one_line(message)}", file=sys.stderr)
    return status


def _selfcheck(_args: argparse.Namespace) -> int:
    from sidecar.core.clock import ManualClock
    from sidecar.core.manager import SessionManager
    from sidecar.core.models import GenerationRequest

    with SessionManager(clock=ManualClock()) as manager:
        session = manager.create_session(GenerationRequest(story_text="A fox finds a lantern."))
        manager.update_session_status(session.session_id, "processing")
        manager.update_session_status(session.session_id, "completed")
        print(json.dumps(manager.get_health_status()))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from sidecar.logs import configure_logging
    from sidecar.server import is_loopback, serve
    from sidecar.settings import (
        Settings,
        describe_errors,
        env_name,
        flag_name,
        host_problem,
        source_name,
    )

    overrides = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    given = frozenset(overrides)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        return _fail(describe_errors(exc, given))
    problem = host_problem(settings.host, given)
    if problem is not None:
        return _fail(problem)
    host_from = source_name("host", given)
    unauthenticated = not is_loopback(settings.host) and settings.api_token is None
    if unauthenticated and not settings.allow_unauthenticated:
        return _fail(
            f"refusing to listen on {settings.host} ({host_from}) without an API token; "
            "set SIDECAR_API_TOKEN or pass --allow-unauthenticated"
        )
    if settings.store != "memory":
        try:
            import redis  # noqa: F401
        except ImportError:
            return _fail(
                f"{source_name('store', given)} names a Redis store but the Redis client is not "
                "installed: pip install 'session-sidecar[redis]'"
            )
    if settings.snapshot_path is not None:
        from sidecar.store.snapshot import path_problem

        problem = path_problem(settings.snapshot_path)
        if problem is not None:
            where = source_name("snapshot_path", given)
            return _fail(f"invalid {where}={settings.snapshot_path}: {problem}")
    configure_logging(settings.log_level, settings.log_format)
    if unauthenticated:
        logging.getLogger("sidecar.cli").warning(
            "serving %s without an API token (allowed by %s)",
            settings.host,
            source_name("allow_unauthenticated", given),
        )
    from sidecar.store.snapshot import SnapshotError

    try:
        return serve(settings)
    except SnapshotError as exc:
        discard = "snapshot_discard_invalid"
        return _fail(
            f"cannot restore sessions from {exc}; move the file away, or set "
            f"{env_name(discard)}=true (or pass {flag_name(discard)}) to move it aside "
            "and start empty"
        )


def _metavar(name: str, field: FieldInfo) -> str:
    """What a flag takes, in words: its choices, or the kind of value."""
    choices = _choices(field)
    if choices:
        return "{" + ",".join(choices) + "}"
    kind = field.annotation
    if name.endswith("_token"):
        return "TOKEN"
    if name.endswith("_seconds"):
        return "SECONDS"
    if name.endswith("_path"):
        return "PATH"
    if kind is int:
        return "N"
    if kind is float:
        return "RATIO" if name.endswith("_utilization") else "NUMBER"
    return name.upper()


def _choices(field: FieldInfo) -> tuple[str, ...]:
    kind: Any = field.annotation
    if get_origin(kind) is Literal:
        return tuple(str(choice) for choice in get_args(kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(str(member.value) for member in kind)
    return ()


def _add_serve(sub: argparse._SubParsersAction[_Parser]) -> None:
    from sidecar.core.config import MANAGER_SETTINGS, bounds_of, describe_bounds
    from sidecar.settings import MIN_TOKEN_LENGTH, SECRET_FIELDS, Settings, env_name, flag_name

    parser = sub.add_parser(
        "serve",
        help="serve the JSON API and /metrics",
        description="Serve the JSON API and /metrics. Each flag overrides its variable; "
        "choices are taken in any case, in flags and variables alike. Live settings can also "
        "be changed while running, with PATCH /api/v1/admin/config.",
    )
    manager = {spec.name for spec in MANAGER_SETTINGS}
    live = {spec.name for spec in MANAGER_SETTINGS if spec.live}
    fields = Settings.model_fields
    # The process's own settings first (host, port, ...), then the manager's.
    for name in sorted(fields, key=lambda n: n in manager):
        field = fields[name]
        if field.annotation is bool:
            parser.add_argument(
                flag_name(name),
                action="store_true",
                default=argparse.SUPPRESS,
                help=f"{field.description} [{env_name(name)}, default off]",
            )
            continue
        parts = [field.description or ""]
        if name in SECRET_FIELDS:
            parts.append(
                f"At least {MIN_TOKEN_LENGTH} visible ASCII characters; the flag is visible "
                "to other local users in the process list."
            )
        choices = _choices(field)
        allowed = ", ".join(choices) if choices else describe_bounds(bounds_of(field))
        if allowed:
            parts.append(f"Allowed: {allowed}.")
        if name in live:
            parts.append("Live.")
        default = "unset" if field.default is None else _shown(field.default)
        parts.append(f"[{env_name(name)}, default {default}]")
        parser.add_argument(
            flag_name(name),
            default=argparse.SUPPRESS,
            metavar=_metavar(name, field),
            help=" ".join(parts).replace("%", "%%"),
        )
    parser.set_defaults(handler=_serve, parser=parser)


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
        return _fail(str(exc), 1)
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
    parser.set_defaults(handler=_simulate, parser=parser)


def build_parser() -> argparse.ArgumentParser:
    """The `sidecar` argument parser; each subcommand sets `handler`."""
    parser = _Parser(prog="sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_simulate(sub)
    selfcheck = sub.add_parser(
        "selfcheck",
        help="exercise the session core once, print its health as JSON",
        description="Create a session in a manager of its own, complete it, print the health "
        "report as one JSON object; no server is started. Exit 0 when the core works.",
    )
    selfcheck.set_defaults(handler=_selfcheck, parser=selfcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sidecar` command."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        # Named by the subcommand's parser, so the line points at `sidecar serve --help`.
        command: argparse.ArgumentParser = args.parser
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
