"""Serving the app with waitress in one process, and stopping it cleanly.

Sessions live in memory, so one process with threads serves them all. waitress's own
`serve()` stops abruptly on a signal; here the main loop is driven step by step so that a
shutdown request (SIGTERM, SIGINT, or `request_shutdown()` from any thread) can drain:

1. /readyz and the API start answering 503, the listening sockets close;
2. requests already received run to the end and their answers are flushed, until
   `drain_seconds` have passed; idle keep-alive connections are closed;
3. the request threads stop, then the caller shuts the session manager down.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from sidecar.settings import Settings
from sidecar.store.select import MEMORY, default_store_name, describe_store
from sidecar.web.app import create_app, get_sidecar

__all__ = [
    "BACKLOG_LOG_SECONDS",
    "DRAIN_SECONDS",
    "BacklogLog",
    "connection_adjustments",
    "raise_open_file_limit",
    "SidecarServer",
    "is_loopback",
    "serve",
]

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0
BACKLOG_LOG_SECONDS = 60.0  # at most one "requests are waiting" line per minute
_LOOP_SECONDS = 1.0  # longest select() wait; a shutdown request wakes the loop at once


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BacklogLog(logging.Filter):
    """A filter on waitress's `waitress.queue` logger, which warns "Task queue depth is N" for
    every request that has to wait for a free thread: under sustained load, a line per request.
    Each of those lines is written while waitress holds its task lock, and the write hands the
    GIL away. This drops them, logs the first backlog at once, then at most one line per
    `interval` with the deepest backlog and the number of requests that waited since the last
    line.
    """

    def __init__(
        self, interval: float = BACKLOG_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._next = -math.inf
        self._deepest = 0
        self._waited = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Count the record, report when due; waitress's own line never passes."""
        args = record.args
        depth = args[0] if isinstance(args, tuple) and args and isinstance(args[0], int) else 1
        self._waited += 1
        self._deepest = max(self._deepest, depth)
        now = self._clock()
        if now >= self._next:
            logger.warning(
                "requests are waiting for a free thread: up to %d queued, %d waited since the "
                "last report; if this persists, raise SIDECAR_THREADS",
                self._deepest,
                self._waited,
            )
            self._next = now + self._interval
            self._deepest = self._waited = 0
        return False


def _bound(listener: BaseWSGIServer) -> tuple[str, int]:
    assert listener.socket is not None, "a listener that is not bound"
    host, port = listener.socket.getsockname()[:2]
    return str(host), int(port)


_QUEUE_LOGGER = logging.getLogger("waitress.queue")  # documented: "Task queue depth" warnings
_SPARE_FILES = 64  # listener, trigger pipe, log files, temporary buffers


def connection_adjustments(settings: Settings) -> dict[str, Any]:
    """waitress's documented adjustments for the connection limits in `settings`.

    Slow and idle clients are read by waitress's main loop, not by request threads, so they
    cost a connection slot each, which `connection_limit` bounds and `channel_timeout` frees.
    A client that pipelines requests without reading makes its thread wait once the answers
    buffered for it exceed `outbuf_high_watermark`; waitress reads no further request from a
    connection while answers are still buffered for it, so a high mark keeps the thread free.
    """
    return {
        "connection_limit": settings.connection_limit,
        "channel_timeout": settings.idle_timeout_seconds,
        # how often idle connections are looked for; at most the timeout itself
        "cleanup_interval": min(settings.idle_timeout_seconds, 30),
        "max_request_header_size": settings.max_header_bytes,
        # The app answers 413 as problem+json; waitress only stops absurd bodies early.
        "max_request_body_size": max(16 * settings.max_body_bytes, 16 << 20),
        "outbuf_high_watermark": settings.unread_answer_bytes,
        # select() cannot watch descriptors past 1024; poll() has no such bound
        "asyncore_use_poll": True,
    }


def raise_open_file_limit(connections: int) -> None:
    """Raise the soft open-file limit (often 1,024) toward the hard one, so that
    `connections` clients can be held; warn when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logger.warning(
            "open-file limit %d is below SIDECAR_CONNECTION_LIMIT=%d; raise `ulimit -n`",
            target,
            connections,
        )


class SidecarServer:
    """A waitress server for one app made by create_app, with a graceful stop."""

    def __init__(
        self,
        app: Flask,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        threads: int = 8,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self._sidecar = get_sidecar(app)
        settings = self._sidecar.settings
        self._map: dict[int, Any] = {}
        raise_open_file_limit(settings.connection_limit)
        self._server = create_server(
            app,
            map=self._map,
            host=host,
            port=port,
            threads=threads,
            ident="sidecar",
            **connection_adjustments(settings),
        )
        self._backlog = BacklogLog()
        _QUEUE_LOGGER.addFilter(self._backlog)
        self._listeners = [s for s in self._map.values() if isinstance(s, BaseWSGIServer)]
        self._addresses = [_bound(s) for s in self._listeners]
        self._drain_seconds = drain_seconds
        self._stop = threading.Event()
        self._hurry = threading.Event()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each listening socket; the port is the real one when 0 was asked."""
        return list(self._addresses)

    @property
    def urls(self) -> list[str]:
        """Where the server listens."""
        return [_url(host, port) for host, port in self.addresses]

    def request_shutdown(self) -> None:
        """Begin a graceful stop; a second call cuts the drain short. Safe in signal handlers."""
        if self._stop.is_set():
            self._hurry.set()
        self._sidecar.begin_drain()
        self._stop.set()
        # Only writes a byte to a pipe (no lock), which wakes the loop's select().
        self._listeners[0].pull_trigger()

    def serve(self) -> None:
        """Serve until request_shutdown(), then drain and return."""
        while not self._stop.is_set():
            wasyncore.loop(timeout=_LOOP_SECONDS, map=self._map, use_poll=True, count=1)
        self._drain()

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_seconds
        logger.info("shutting down: not accepting, draining for up to %ss", self._drain_seconds)
        for listener in self._listeners:
            # The dispatcher's close, not the server's: the server's would close the trigger
            # that request threads pull to hand their answers to this loop.
            wasyncore.dispatcher.close(listener)
        busy = self._settle()
        while busy and time.monotonic() < deadline and not self._hurry.is_set():
            wait = min(_LOOP_SECONDS, max(deadline - time.monotonic(), 0.0))
            wasyncore.loop(timeout=wait, map=self._map, use_poll=True, count=1)
            busy = self._settle()
        if busy:
            logger.warning("drain ended with %d connection(s) still busy", busy)
        left = 0.0 if self._hurry.is_set() else deadline - time.monotonic()
        # Threads still busy after this are daemons: they do not hold the exit up.
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=max(math.ceil(left), 1))
        wasyncore.close_all(self._map)
        _QUEUE_LOGGER.removeFilter(self._backlog)

    def _settle(self) -> int:
        """Mark idle connections to close; return how many still have work in flight."""
        busy = 0
        for channel in list(self._map.values()):
            if not isinstance(channel, HTTPChannel):
                continue
            if channel.requests or channel.total_outbufs_len or channel.request is not None:
                busy += 1
            elif not channel.will_close:
                channel.will_close = True  # the loop closes it on its next pass
        return busy


def _freeze_start_up_objects() -> None:
    """Move everything alive after start-up out of the garbage collector's way.

    Modules, the app, its schemas and metrics live as long as the process, yet every full
    collection walked them again: with the sessions a busy sidecar holds, that made full
    collections, and so the slowest requests, longer. Frozen objects are still freed by
    reference counting; only the cycle search skips them (gc.freeze, Python 3.7+).
    """
    gc.collect()
    gc.freeze()
    logger.debug("froze %d start-up objects out of the collector's way", gc.get_freeze_count())


def serve(settings: Settings) -> int:
    """Run the sidecar until SIGTERM or SIGINT; 0 after a clean stop, 1 if it cannot listen."""
    app = create_app(settings)
    sidecar = get_sidecar(app)
    try:
        server = SidecarServer(
            app, host=settings.host, port=settings.port, threads=settings.threads
        )
    except (OSError, ValueError) as exc:
        sidecar.close()
        where = _url(settings.host, settings.port)
        logger.error("cannot listen on %s: %s", where, exc)
        return 1

    if settings.store_name is None and settings.store == MEMORY:
        # Each memory store is its instance's own: named by the port really bound.
        port = server.addresses[0][1]
        sidecar.metrics.store_name.value = default_store_name(MEMORY, settings.store_prefix, port)
    logger.info("session store: %s", describe_store(settings.store, settings.store_prefix))
    _freeze_start_up_objects()
    received: list[str] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        server.request_shutdown()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for url in server.urls:
            logger.info("listening on %s", url)
        server.serve()
        why = received[0] if received else "shutdown requested"
        logger.info("%s: drained, stopping the session manager", why)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sidecar.close()
    logger.info("stopped")
    return 0
