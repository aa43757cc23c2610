"""The baseline of benchmark 3: bare Flask routes that parse the same JSON, on waitress.

`python -m bench.bare_app --port P --threads T` serves, on 127.0.0.1 only:
- POST /api/v1/sessions: parses the JSON body, answers 201 with it echoed back;
- PUT /api/v1/sessions/<id>/progress: parses the JSON body, answers 200 with it echoed back;
- GET /healthz: 200, for the harness's readiness poll.
No validation, no state, no metrics: whatever the sidecar's API costs beyond this is its overhead.

waitress's per-request "Task queue depth" warning is silenced by level, as the sidecar does (it
reports a full thread pool once a minute instead: sidecar.server.BacklogLog).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import waitress
from flask import Flask, request

__all__ = ["create_bare_app", "main"]


def create_bare_app() -> Flask:
    """A Flask app with the two benchmarked routes and nothing else."""
    app = Flask(__name__)

    @app.post("/api/v1/sessions")
    def create_session() -> tuple[Any, int]:
        return request.get_json(), 201

    @app.put("/api/v1/sessions/<session_id>/progress")
    def update_progress(session_id: str) -> tuple[Any, int]:
        return request.get_json(), 200

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(create_bare_app(), host="127.0.0.1", port=args.port, threads=args.threads)


if __name__ == "__main__":
    main()
