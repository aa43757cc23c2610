"""Where benchmark 3's overhead goes: the same requests in-process, with parts taken away.

No server and no network: prepared WSGI environs are fed to the apps one at a time, so the
figures are the apps' own cost per request. Variants of the sidecar app remove one part at a
time (on their own app instances; the sidecar's code is not touched):
- without the gate: the WSGI gate in front of Flask is taken off (token guard,
  drain check, request timing into the HTTP latency histogram);
- without the manager call: the view's SessionManager call returns a stored session at once.
The minimum over interleaved batches is reported: the cost with the least interference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask

from bench.bare_app import create_bare_app
from sidecar.core.manager import SessionManager
from sidecar.core.models import MAX_STEPS, GenerationRequest, GenerationSession
from sidecar.settings import Settings
from sidecar.web.app import create_app, get_sidecar

__all__ = ["VARIANTS", "breakdown", "requests_for", "serve_all"]

STORY = (
    "A lighthouse keeper adopts a gull that can read the weather. "
    "Together they warn the harbour before every storm, until the gull falls silent."
)
VARIANTS = ("bare flask", "sidecar", "sidecar without the gate", "sidecar without the manager call")
Environ = dict[str, Any]


def _environ(method: str, path: str, body: bytes) -> Environ:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(method=method, path=path, data=body, content_type="application/json")
    try:
        environ = dict(builder.get_environ())
    finally:
        builder.close()
    environ["wsgi.input_terminated"] = True  # as waitress sets it: werkzeug reads differently
    return environ


def requests_for(mode: str, session_id: str, n: int) -> list[Environ]:
    if mode == "post":
        body = json.dumps({"story_text": STORY, "media_type": "storybook", "num_scenes": 5})
        return [_environ("POST", "/api/v1/sessions", body.encode()) for _ in range(n)]
    return [
        _environ(
            "PUT",
            f"/api/v1/sessions/{session_id}/progress",
            json.dumps(
                {
                    "current_step": i % MAX_STEPS,
                    "total_steps": MAX_STEPS,
                    "description": f"rendering frame {i}",
                }
            ).encode(),
        )
        for i in range(n)
    ]


def _stub_manager(manager: SessionManager, mode: str, session: GenerationSession) -> None:
    """Make the manager call of this mode return `session` without doing anything."""

    def create(_request: GenerationRequest, _key: object = None) -> GenerationSession:
        return session

    def update(_session_id: str, _updates: object) -> GenerationSession:
        return session

    # On this instance only: the class, and so every other manager, keeps the real method.
    if mode == "post":
        setattr(manager, "create_session", create)  # noqa: B010
    else:
        setattr(manager, "atomic_session_update", update)  # noqa: B010


def _app(variant: str, mode: str) -> tuple[Flask, str]:
    if variant == "bare flask":
        return create_bare_app(), "any"
    app = create_app(Settings(max_sessions=1_000_000))
    manager = get_sidecar(app).manager
    session = manager.create_session(GenerationRequest(story_text=STORY))
    if variant == "sidecar without the gate":
        # the gate (sidecar.web.app._Gate: tokens, drain, timing) wraps wsgi_app; take it off too
        inner = getattr(app.wsgi_app, "_app", None)
        if inner is not None:
            app.wsgi_app = inner  # type: ignore[method-assign]
    elif variant == "sidecar without the manager call":
        _stub_manager(manager, mode, session)
    return app, session.session_id


def serve_all(app: Flask, environs: Iterable[Environ]) -> None:
    statuses: list[str] = []

    def start_response(status: str, _headers: object, _exc_info: object = None) -> None:
        statuses.append(status)

    for environ in environs:
        for _chunk in app(environ, start_response):  # type: ignore[arg-type]
            pass
    if any(not s.startswith("2") for s in statuses):
        raise RuntimeError(f"in-process requests failed: {sorted(set(statuses))}")


def breakdown(mode: str, rounds: int, batch: int) -> dict[str, float]:
    """Microseconds per request of each variant (minimum over `rounds` interleaved batches)."""
    apps = {variant: _app(variant, mode) for variant in VARIANTS}
    best: dict[str, float] = {}
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            app, session_id = apps[variant]
            environs = requests_for(mode, session_id, batch)
            start = time.perf_counter()
            serve_all(app, environs)
            per_request = (time.perf_counter() - start) / batch * 1e6
            best[variant] = min(best.get(variant, per_request), per_request)
    for app, _ in apps.values():
        sidecar = app.extensions.get("sidecar")
        if sidecar is not None:
            sidecar.manager.shutdown()
    return best
