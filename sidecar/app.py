"""The Flask application factory; its collaborators live in `app.extensions["sidecar"]`.

Sessions live in this process's memory, so the app is meant to be served by one process with
threads (see sidecar.server). Nothing here runs at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry

from sidecar.api import OPERATIONS, register_routes
from sidecar.auth import Scope, TokenGuard, scope_of
from sidecar.clock import Clock
from sidecar.manager import SessionManager
from sidecar.metrics import SidecarMetrics
from sidecar.problems import register_error_handlers, shutting_down
from sidecar.settings import Settings

__all__ = ["EXTENSION", "UNMATCHED_ROUTE", "Sidecar", "create_app", "get_sidecar"]

logger = logging.getLogger(__name__)

EXTENSION = "sidecar"
UNMATCHED_ROUTE = "<unmatched>"
_STARTED = "sidecar.started"
# Any other method becomes "other", so a client cannot invent metric label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(eq=False)
class Sidecar:
    """What the app works with: settings, the session manager, metrics, the token guard."""

    settings: Settings
    manager: SessionManager
    metrics: SidecarMetrics
    guard: TokenGuard
    owns_manager: bool
    draining: bool = False

    @property
    def accepting(self) -> bool:
        """True while API requests are served (not draining, manager not shut down)."""
        return not self.draining and not self.manager.closed

    def readiness(self) -> dict[str, bool]:
        """Each readiness condition; ready when all hold."""
        return {
            "accepting": not self.draining,
            "manager_open": not self.manager.closed,
            "cleanup_worker_alive": self.manager.worker_alive,
        }

    def begin_drain(self) -> None:
        """From now on /readyz and the API answer 503."""
        self.draining = True

    def close(self) -> None:
        """Drain, and shut the manager down if the app created it."""
        self.begin_drain()
        if self.owns_manager:
            self.manager.shutdown()


def get_sidecar(app: Flask) -> Sidecar:
    """The Sidecar of an app made by create_app."""
    sidecar: Sidecar = app.extensions[EXTENSION]
    return sidecar


def create_app(
    settings: Settings | None = None,
    *,
    manager: SessionManager | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> Flask:
    """Build the app.

    settings: defaults to Settings() read from the SIDECAR_* environment.
    manager: an existing manager, left to its owner (not started, not shut down); without
      one the app builds a manager from settings and `clock` and starts its cleanup worker.
    registry: where metrics go; a fresh private registry by default.
    """
    settings = settings if settings is not None else Settings()
    owns_manager = manager is None
    if manager is None:
        manager = SessionManager(settings.manager_config, clock=clock)
    elif clock is not None and clock is not manager.clock:
        raise ValueError("pass a clock only when create_app builds the manager")
    metrics = SidecarMetrics(manager, registry=registry)
    guard = TokenGuard(
        settings.secret("api_token"),
        settings.secret("admin_token"),
        settings.secret("metrics_token"),
    )
    sidecar = Sidecar(settings, manager, metrics, guard, owns_manager)

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # No redirects: /a//b and a trailing slash are plain 404s (or matches), never a 308.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions[EXTENSION] = sidecar
    register_error_handlers(app)
    register_routes(app, sidecar)
    for op in OPERATIONS:
        metrics.init_route(op.method, op.rule, op.status)

    debug = logger.isEnabledFor

    # The two hooks run on every request: each reads the request proxy as few times as it can.
    @app.before_request
    def _admit() -> None:
        environ = request.environ
        environ[_STARTED] = perf_counter()
        scope = scope_of(request.path)
        if scope is Scope.OPEN:
            return
        guard.check(scope, environ.get("HTTP_AUTHORIZATION"))
        if scope is not Scope.METRICS and not sidecar.accepting:
            raise shutting_down()

    @app.after_request
    def _observe(response: Response) -> Response:
        environ = request.environ
        started = environ.get(_STARTED)
        if started is None:
            return response
        seconds = perf_counter() - started
        method = environ.get("REQUEST_METHOD", "")
        if method not in _METHODS:
            method = "other"
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        status = response.status_code
        metrics.observe_request(method, route, status, seconds)
        if debug(logging.DEBUG):
            logger.debug("%s %s %d %.2fms", method, route, status, seconds * 1000)
        return response

    if owns_manager:
        manager.start()
    return app
