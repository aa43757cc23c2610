"""Serving the app with waitress in one process, and stopping it cleanly.

Sessions live in memory, so one process with threads serves them all. waitress has no
graceful stop (its `serve()` stops abruptly on a signal), and the drain here uses only its
documented entry points and plain sockets. A shutdown request (SIGTERM, SIGINT, or
`request_shutdown()` from any thread) drains, for at most `drain_seconds`:

1. /readyz and the API answer 503 (the API with Retry-After), and every answer, whatever its
   status, ends its connection (`Connection: close`); the listener still accepts, so a new
   connection gets the same 503;
2. once no request is in the app and no answer is on its way, new connections are closed as
   soon as accepted, and each open one is closed once its last answer is flushed (requests
   waiting for a thread are still answered);
3. the request threads stop, then waitress's listener and wake-up pipe close, then the caller
   shuts the session manager down.

A request counts as arrived when a request thread takes it up; one whose body was still
arriving when the drain began gets the 503 if it completes before the drain ends.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from flask import Flask
from waitress.server import create_server

from sidecar.drain import DrainGate, listen, shut
from sidecar.logs import ConnectionLimitLines, Throttle
from sidecar.settings import Settings
from sidecar.store.select import MEMORY, default_store_name, describe_store
from sidecar.web.app import create_app, get_sidecar

if TYPE_CHECKING:
    pass

__all__ = [
    "BACKLOG_LOG_SECONDS",
    "DRAIN_SECONDS",
    "UNREAD_ANSWERS_BYTES",
    "BacklogLog",
    "connection_adjustments",
    "raise_open_file_limit",
    "SidecarServer",
    "is_loopback",
    "serve",
]

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0
BACKLOG_LOG_SECONDS = 60.0  # at most one "every request thread is busy" line per minute
_LOOP_SECONDS = 1.0  # waitress's asyncore_loop_timeout (its default): its longest poll() wait
_DRAIN_POLL_SECONDS = 0.02
# After the drain, how long the request threads get to stop; one in the app at the deadline
# is left running (a daemon) rather than waited for.
_STOP_SECONDS = 1
# A request that finds more of its connection's earlier answers unread than this is refused
# (sidecar.drain.DrainGate). A client that reads has ~0 unread when it sends its next request.
UNREAD_ANSWERS_BYTES = 256 * 1024


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


class BacklogLog:
    """Reports, at once and then at most once per `interval`, that every request thread was
    busy: the requests that arrive then wait in waitress's queue for a free thread.

    waitress itself warns "Task queue depth is N" on its `waitress.queue` logger for every
    request that has to wait: under sustained load a LogRecord per request, built while its
    loop thread holds the task lock the request threads take their work from. The server
    silences that logger by level, and `DrainGate` calls `note()` for each request that takes
    the last free thread instead. Against a logging.Filter that counted waitress's records,
    side by side under wrk as in benchmark 3 (12 paired rounds of 4 s, 2026-12-03): POST
    +5.4 % requests/s (server CPU 629 -> 587 us per request), PUT progress +5.6 % (585 -> 553).
    The report gives how often the pool was full, not how deep waitress's queue grew.
    """

    def __init__(
        self,
        threads: int,
        interval: float = BACKLOG_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threads = threads
        self._reports = Throttle(interval, clock)

    @property
    def seen(self) -> int:
        """Requests that took the last free thread, since the start."""
        return self._reports.total

    def note(self) -> None:
        """Count a request that took the last free thread; report when due."""
        full = self._reports.due()
        if full is None:
            return
        logger.warning(
            "every request thread is busy (%d), so new requests wait for one: %d request(s) "
            "took the last free thread since the last report; if this persists, raise "
            "SIDECAR_THREADS",
            self._threads,
            full,
        )


# documented: waitress's per-request "Task queue depth" warnings; BacklogLog reports instead
_QUEUE_LOGGER = logging.getLogger("waitress.queue")
_WAITRESS_LOGGER = logging.getLogger("waitress")


_SPARE_FILES = 64  # listener, trigger pipe, log files, temporary buffers
# How far over SIDECAR_MAX_BODY_BYTES a body may be declared and still reach the app.
_BODY_SLACK = 64 << 10


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
        # waitress reads a whole body (past 512 KiB into a temporary file) before the app, and
        # so the token check, sees it: a body declared far over the limit is refused before
        # it is read. One just over it still gets the app's 413 problem+json.
        "max_request_body_size": settings.max_body_bytes + _BODY_SLACK,
        "outbuf_high_watermark": settings.unread_answer_bytes,
        # select() cannot watch descriptors past 1024; poll() has no such bound
        "asyncore_use_poll": True,
        # the longest poll() wait: the loop ends this long after the drain empties it
        "asyncore_loop_timeout": _LOOP_SECONDS,
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
    """A waitress server for one app made by create_app, with a graceful stop.

    Only waitress's documented entry points are used: `create_server` with adjustments (the
    listening socket is ours, passed as `sockets`), `run`, `close`, and its task threads'
    `shutdown`. The drain works from outside waitress's loop, with the app's answers and
    plain socket calls on the connections our listening socket accepted.
    """

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
        raise_open_file_limit(settings.connection_limit)
        self._listener = listen(host, port)
        self._backlog = BacklogLog(threads)
        self._gate = DrainGate(
            app,
            self._sidecar,
            self._listener,
            UNREAD_ANSWERS_BYTES,
            threads=threads,
            on_full=self._backlog.note,
        )
        try:
            self._server = create_server(
                self._gate,
                sockets=[self._listener],
                threads=threads,
                ident="sidecar",
                **connection_adjustments(settings),
            )
        except BaseException:
            self._listener.close()
            raise
        self._address = self._listener.getsockname()[:2]
        self._queue_level = _QUEUE_LOGGER.level
        _QUEUE_LOGGER.setLevel(logging.ERROR)
        self._limit_lines = ConnectionLimitLines(BACKLOG_LOG_SECONDS)
        _WAITRESS_LOGGER.addFilter(self._limit_lines)
        self._drain_seconds = drain_seconds
        # Plain flags and a socket pair: request_shutdown runs in signal handlers, where
        # taking a lock the interrupted code may hold would deadlock.
        self._stop = False
        self._hurry = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each listening socket; the port is the real one when 0 was asked."""
        return [(str(self._address[0]), int(self._address[1]))]

    @property
    def urls(self) -> list[str]:
        """Where the server listens."""
        return [_url(host, port) for host, port in self.addresses]

    @property
    def busy(self) -> int:
        """Requests inside the app right now."""
        return self._gate.busy

    @property
    def unread_refused(self) -> int:
        """Requests refused because their connection had too many unread answers."""
        return self._gate.refused

    @property
    def backlog(self) -> BacklogLog:
        """What counts and reports the requests that found every thread busy."""
        return self._backlog

    def request_shutdown(self) -> None:
        """Begin a graceful stop; a second call cuts the drain short. Safe in signal handlers."""
        if self._stop:
            self._hurry = True
        self._sidecar.begin_drain()
        self._stop = True
        # OSError: the pair is full (already woken) or closed (already stopped)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _pause(self, seconds: float | None) -> None:
        """Wait `seconds` (None: until woken); request_shutdown wakes it at once."""
        self._wake_r.settimeout(seconds)
        with contextlib.suppress(TimeoutError):
            self._wake_r.recv(64)

    def serve(self) -> None:
        """Serve until request_shutdown(), then drain and return."""
        loop = threading.Thread(target=self._server.run, name="sidecar-http", daemon=True)
        loop.start()
        while not self._stop and loop.is_alive():
            self._pause(_LOOP_SECONDS)
        if not self._stop:
            logger.error("waitress's loop stopped by itself; stopping the server")
        self._drain(loop)

    def _drain(self, loop: threading.Thread) -> None:
        deadline = time.monotonic() + self._drain_seconds

        def waiting() -> bool:
            return not self._hurry and time.monotonic() < deadline

        logger.info("shutting down: draining for up to %ss", self._drain_seconds)
        # 1. Requests in the app finish and their answers reach their clients. Meanwhile the
        #    listener stays open and every answer (the API's is 503 problem+json) ends its
        #    connection.
        while (self._gate.busy or self._listener.sending()) and waiting():
            self._pause(_DRAIN_POLL_SECONDS)
        # 2. No new connections, whatever is still in the app: the listener closes each one it
        #    is handed at once (waitress keeps the listening socket, with its wake-up pipe).
        self._listener.refuse()
        # 3. Each open connection is closed by waitress once its answer is flushed: after
        #    shutdown(SHUT_RD) its next read is the end of the stream. A request waiting for a
        #    thread is not read from its connection, so it still gets its 503 meanwhile.
        left = self._listener.open_connections()
        while left and waiting():
            for conn in left:
                shut(conn, socket.SHUT_RD)
            self._pause(_DRAIN_POLL_SECONDS)
            left = self._listener.open_connections()
        if left or self._gate.busy:
            logger.warning(
                "drain ended with %d request(s) in the app and %d connection(s) open",
                self._gate.busy,
                len(left),
            )
            for conn in left:
                shut(conn, socket.SHUT_RDWR)
        # 4. The request threads stop; requests still waiting for one are cancelled (they
        #    never reached the app). Only then does close() shut waitress's wake-up pipe with
        #    its listener: a thread still serving would write to a closed, or reused,
        #    descriptor. A request stuck in the app keeps both to the process's end (its
        #    thread is a daemon, which does not hold the exit up).
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=_STOP_SECONDS)
        if not self._gate.busy:
            self._server.close()
            # With nothing left in its map, waitress's loop ends within its poll timeout.
            loop.join(0 if self._hurry else _LOOP_SECONDS * 2)
        _QUEUE_LOGGER.setLevel(self._queue_level)
        _WAITRESS_LOGGER.removeFilter(self._limit_lines)
        self._wake_r.close()
        self._wake_w.close()


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
    """Run the sidecar until SIGTERM or SIGINT; 0 after a clean stop, 1 if it cannot listen
    or the snapshot could not be written at shutdown. A snapshot that cannot be restored
    raises its SnapshotError before anything starts."""
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
        # Our handlers stay while the manager stops (and the snapshot is written): a signal
        # then only asks again for the stop under way, it does not end the process midway.
        try:
            sidecar.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if sidecar.snapshots is not None and sidecar.snapshots.failed:
        logger.info("stopped; the sessions were not kept (see the snapshot error above)")
        return 1
    logger.info("stopped")
    return 0
