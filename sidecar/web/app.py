"""The Flask application factory; its collaborators live in `app.extensions["sidecar"]`.

Sessions live in this process's memory, so the app is meant to be served by one process with
threads (see sidecar.server). Nothing here runs at import time.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from sidecar.core.clock import Clock
from sidecar.core.manager import SessionManager
from sidecar.durability import SnapshotKeeper
from sidecar.live import SettingsSync
from sidecar.metrics import SidecarMetrics
from sidecar.settings import Settings
from sidecar.store.memory import InMemorySessionStore
from sidecar.store.observed import ObservedStore
from sidecar.store.select import default_store_name, open_store, shared_settings_of
from sidecar.web.auth import Scope, TokenGuard, scope_of
from sidecar.web.context import EXTENSION, Sidecar, get_sidecar
from sidecar.web.problems import UNMATCHED_ROUTE, Problem, register_error_handlers, shutting_down
from sidecar.web.routes import OPERATIONS
from sidecar.web.views import register_routes
from sidecar.worker import start_worker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["EXTENSION", "UNMATCHED_ROUTE", "Sidecar", "create_app", "get_sidecar"]

logger = logging.getLogger(__name__)

# Any other method becomes "other", so a client cannot invent metric label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Gate:
    """WSGI middleware in front of Flask: bearer tokens, the drain answer, request timing.

    Done here rather than in Flask before/after-request hooks, which cost several
    microseconds per request in proxy lookups and hook dispatch; the sidecar sits in the
    generation service's hot path. A refused request never reaches Flask. The route label is
    the URL rule of the view that ran (each view is wrapped by `label`), or, for a refused
    request, the rule its path would match; never the raw path.

    The gate checks the scope of the raw path, so an unknown path under /api/v1 asks for a
    token before it says 404. The router accepts more spellings than the raw prefix shows
    (`/metrics/`, `/metrics%2f`), so the view wrapper checks again with the scope of the rule
    that will serve the request whenever it differs from the one the gate checked: the token
    is decided by the route, never by the spelling of the path.
    """

    def __init__(self, app: Flask, sidecar: Sidecar) -> None:
        self._app = app.wsgi_app
        self._url_map = app.url_map
        self._sidecar = sidecar
        self._guard = sidecar.guard
        self._observe = sidecar.metrics.observe_request
        # Flask clears the request from the environ when it is done, so each view notes its
        # rule here instead; waitress serves a request on one thread from start to end.
        self._route = threading.local()

    def label(self, view: Callable[..., Any], rule: str) -> Callable[..., Any]:
        """`view`, noting `rule` as the route of the request it serves; with shared settings,
        brought in step with them first when its method's answer depends on a live setting."""
        route = self._route
        scope = scope_of(rule)
        admit = self._admit
        sync = self._sidecar.settings_sync
        # a PATCH through another replica is in force from the next request that reads it
        refresh = None if sync is None or scope is Scope.OPEN else sync.refresh
        reading = {op.method for op in OPERATIONS if op.rule == rule and op.reads_settings}
        if "GET" in reading:
            reading.add("HEAD")  # answered by the GET view

        @functools.wraps(view)
        def labelled(**kwargs: Any) -> Any:
            route.rule = rule
            # Without the gate in front (an embedding that takes it off), nothing was checked.
            if getattr(route, "checked", None) is not scope:
                problem = admit(scope, request.headers.get("Authorization"))
                if problem is not None:
                    raise problem
            if refresh is not None and request.method in reading:
                refresh()
            return view(**kwargs)

        return labelled

    def _admit(self, scope: Scope, authorization: str | None) -> Problem | None:
        """Why a request in `scope` is refused, or None if it may go on."""
        if scope is Scope.OPEN:
            return None
        try:
            self._guard.check(scope, authorization)
        except Problem as problem:
            return problem
        if scope is not Scope.METRICS and not self._sidecar.accepting:
            return shutting_down()
        return None

    def _matched_rule(self, environ: WSGIEnvironment) -> str | None:
        try:
            rule, _ = self._url_map.bind_to_environ(environ).match(return_rule=True)
        except HTTPException:
            return None
        return str(rule.rule)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        statuses: list[str] = []

        def recording(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        self._route.rule = None
        scope = scope_of(environ.get("PATH_INFO", ""))
        self._route.checked = scope
        try:
            problem = self._admit(scope, environ.get("HTTP_AUTHORIZATION"))
            if problem is None:
                return self._app(environ, recording)
            self._route.rule = self._matched_rule(environ)
            return problem.to_response()(environ, recording)
        finally:
            if statuses:
                seconds = perf_counter() - started
                method = environ.get("REQUEST_METHOD", "")
                if method not in _METHODS:
                    method = "other"
                route = self._route.rule or UNMATCHED_ROUTE
                status = int(statuses[-1][:3])
                self._observe(method, route, status, seconds)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("%s %s %d %.2fms", method, route, status, seconds * 1000)


def create_app(
    settings: Settings | None = None,
    *,
    manager: SessionManager | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> Flask:
    """Build the app.

    settings: defaults to Settings() read from the SIDECAR_* environment; its `store` says
      where a manager built here keeps its sessions; with `snapshot_path` (memory store) the
      snapshot is restored here (a SnapshotError if it cannot be used) and written by
      Sidecar.close().
    manager: an existing manager, left to its owner (not started, not shut down); without
      one the app builds a manager from settings and `clock` and starts its cleanup worker.
    registry: where metrics go; a fresh private registry by default.
    """
    settings = settings if settings is not None else Settings()
    owns_manager = manager is None
    sync: SettingsSync | None = None
    keeper: SnapshotKeeper | None = None
    if manager is None:
        inner = open_store(settings.store, settings.store_prefix, settings.store_timeout_seconds)
        # Only a shared store's calls are timed (sidecar_store_duration_seconds): see
        # metrics.STORE_BUCKETS for why a memory store's are not.
        store = ObservedStore(inner) if inner.shared else inner
        manager = SessionManager(settings.manager_config, clock=clock, store=store)
        shared = shared_settings_of(inner, settings.store_prefix)
        sync = None if shared is None else SettingsSync(manager, shared)
        if settings.snapshot_path is not None and isinstance(inner, InMemorySessionStore):
            keeper = SnapshotKeeper(
                inner,
                manager,
                settings.snapshot_path,
                discard_invalid=settings.snapshot_discard_invalid,
            )
            keeper.restore()  # SnapshotError: the file cannot be used
    elif clock is not None and clock is not manager.clock:
        raise ValueError("pass a clock only when create_app builds the manager")
    elif settings.snapshot_path is not None:
        raise ValueError("a snapshot path needs create_app to build the manager")
    store_name = settings.store_name or default_store_name(
        settings.store, settings.store_prefix, settings.port
    )
    metrics = SidecarMetrics(manager, registry=registry, store_name=store_name)
    guard = TokenGuard(
        settings.secret("api_token"),
        settings.secret("admin_token"),
        settings.secret("metrics_token"),
    )
    sidecar = Sidecar(
        settings, manager, metrics, guard, owns_manager, settings_sync=sync, snapshots=keeper
    )

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

    gate = _Gate(app, sidecar)
    labelled: set[str] = set()
    for rule in app.url_map.iter_rules():
        # one rule per endpoint, or the route label of a view would be ambiguous
        assert rule.endpoint not in labelled, f"endpoint {rule.endpoint} has several rules"
        labelled.add(rule.endpoint)
        view = app.view_functions[rule.endpoint]
        app.view_functions[rule.endpoint] = gate.label(view, rule.rule)
    app.wsgi_app = gate  # type: ignore[method-assign]
    if owns_manager:
        start_worker(manager, before_run=None if sync is None else sync.refresh)
    if keeper is not None and settings.snapshot_interval_seconds > 0:
        keeper.start(settings.snapshot_interval_seconds)
    return app
