"""The Flask application factory; its collaborators live in `app.extensions["sidecar"]`.

Sessions live in this process's memory, so the app is meant to be served by one process with
threads (see sidecar.server). Nothing here runs at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, request
from prometheus_client import CollectorRegistry

from sidecar.api import OPERATIONS, register_routes
from sidecar.auth import Scope, TokenGuard, scope_of
from sidecar.clock import Clock
from sidecar.manager import SessionManager
from sidecar.metrics import SidecarMetrics
from sidecar.problems import register_error_handlers, shutting_down
from sidecar.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["EXTENSION", "UNMATCHED_ROUTE", "Sidecar", "create_app", "get_sidecar"]

logger = logging.getLogger(__name__)

EXTENSION = "sidecar"
UNMATCHED_ROUTE = "<unmatched>"
_ROUTE_KEY = "sidecar.route"  # the matched URL rule, left in the WSGI environ by _admit
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


class _RequestTimer:
    """WSGI middleware: times every request into the HTTP latency histogram.

    A middleware rather than Flask before/after hooks: it costs a few microseconds less per
    request, which matters for a sidecar sitting in the generation service's hot path.
    The route label is the matched URL rule, never the raw path.
    """

    __slots__ = ("_app", "_metrics")

    def __init__(self, wsgi_app: WSGIApplication, metrics: SidecarMetrics) -> None:
        self._app = wsgi_app
        self._metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        statuses: list[str] = []

        def recording(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            return self._app(environ, recording)
        finally:
            if statuses:
                seconds = perf_counter() - started
                method = environ.get("REQUEST_METHOD", "")
                if method not in _METHODS:
                    method = "other"
                route = environ.get(_ROUTE_KEY, UNMATCHED_ROUTE)
                status = int(statuses[-1][:3])
                self._metrics.observe_request(method, route, status, seconds)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("%s %s %d %.2fms", method, route, status, seconds * 1000)


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

    @app.before_request
    def _admit() -> None:
        rule = request.url_rule
        if rule is not None:  # for _RequestTimer, which runs outside the request context
            request.environ[_ROUTE_KEY] = rule.rule
        scope = scope_of(request.path)
        if scope is Scope.OPEN:
            return
        guard.check(scope, request.headers.get("Authorization"))
        if scope is not Scope.METRICS and not sidecar.accepting:
            raise shutting_down()

    app.wsgi_app = _RequestTimer(app.wsgi_app, metrics)  # type: ignore[method-assign]
    if owns_manager:
        manager.start()
    return app
