"""Command line: `sidecar serve` runs the HTTP server; `sidecar selfcheck` exercises the core.

Every `serve` flag mirrors a SIDECAR_* environment variable (flags win over the environment,
the environment over defaults). A bad value or a usage error exits with status 2 and one line
on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from sidecar import __version__

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
# Subcommands import what they need when they run: `sidecar --version` and `selfcheck` stay
# quick and do not load Flask or waitress.


def _fail(message: str) -> int:
    print(f"sidecar: {message}", file=sys.stderr)
    return 2


def _selfcheck(_args: argparse.Namespace) -> int:
    from sidecar.clock import ManualClock
    from sidecar.manager import SessionManager
    from sidecar.models import GenerationRequest

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


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The `sidecar` argument parser; each subcommand sets `handler`."""
    parser = argparse.ArgumentParser(prog="sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
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
