"""Command line: `sidecar selfcheck` (the HTTP server lands with the API)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.clock import ManualClock
from sidecar.manager import SessionManager
from sidecar.models import GenerationRequest


def _selfcheck() -> int:
    clock = ManualClock()
    with SessionManager(clock=clock) as manager:
        session = manager.create_session(GenerationRequest(story_text="A fox finds a lantern."))
        manager.update_session_status(session.session_id, "processing")
        manager.update_session_status(session.session_id, "completed")
        print(manager.get_health_status())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sidecar` command."""
    parser = argparse.ArgumentParser(prog="sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("selfcheck", help="exercise the session core once and print its health")
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        return _selfcheck()
    return 2


if __name__ == "__main__":
    sys.exit(main())
