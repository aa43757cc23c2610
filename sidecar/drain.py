"""The parts of the drain that sit outside waitress: a WSGI gate that counts the requests in
the app and ends connections while draining, and a listening socket that remembers the
connections it accepted, so they can be ended with plain socket calls.

waitress has no graceful stop and no API for its connections (Pylons/waitress issue #10);
these use only what PEP 3333 and the socket module offer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import socket
import struct
import termios
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from sidecar.web.context import Sidecar

__all__ = ["DrainGate", "Listener", "listen", "shut"]


class DrainGate:
    """WSGI middleware in front of the app: counts the requests inside it; while the server
    drains, sends every answer without Content-Length; and refuses a request whose connection
    has more than `unread_limit` bytes of earlier answers its client has not taken.

    With `threads` (the server's request threads) and `on_full`, a request that takes the last
    free thread calls `on_full()`: requests that arrive while every thread is busy have to
    wait for one.

    A WSGI app may not send `Connection: close` (a hop-by-hop header, PEP 3333; waitress
    refuses it). An HTTP/1.1 answer without Content-Length makes waitress send it chunked with
    `Connection: close` and close the connection once it is flushed, so during a drain every
    answer ends its connection. Checked when the answer starts, so a request that was already
    in the app when the drain began also ends its connection.

    A client that pipelines requests without reading the answers had waitress render every
    request of each 8 KiB it read (~180 pages of 250 KB for 8 KiB of requests) on the request
    threads, which slowed every other client (benchmark 6). A client that reads has taken its
    earlier answers before its next request is read, so the kernel holds none of them unsent;
    a request that finds more than `unread_limit` bytes waiting in its connection's send
    queue is answered 429 problem+json without Content-Length, which makes waitress close the
    connection after it and drop the requests pipelined behind it.
    """

    def __init__(
        self,
        app: WSGIApplication,
        sidecar: Sidecar,
        listener: Listener,
        unread_limit: int,
        *,
        threads: int = 0,
        on_full: Callable[[], None] | None = None,
    ) -> None:
        self._app = app
        self._sidecar = sidecar
        self._listener = listener
        self._unread_limit = unread_limit
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = threads  # 0: a count the gate never reaches once a request is in
        self._on_full = on_full
        self.refused = 0  # requests refused for unread answers, since the start

    @property
    def busy(self) -> int:
        """Requests inside the app: called and their answer not yet closed."""
        return self._busy

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sidecar = self._sidecar

        def answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if sidecar.draining:
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            return start_response(status, headers, exc_info)

        conn = self._listener.connection(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))
        if conn is not None and _not_sent(conn) > self._unread_limit:
            self.refused += 1
            start_response(
                "429 Too Many Requests",
                [("Content-Type", "application/problem+json"), ("Retry-After", "1")],
            )
            return iter((_UNREAD,))  # no len(): waitress adds no Content-Length
        with self._lock:
            self._busy += 1
            full = self._busy == self._threads
        try:
            if full and self._on_full is not None:
                self._on_full()
            body = self._app(environ, answer)
        except BaseException:
            self._leave()
            raise
        return _Counted(body, self._leave)


_UNREAD = json.dumps(
    {
        "type": "urn:sidecar:problem:unread-answers",
        "title": "Unread answers",
        "status": 429,
        "detail": "earlier answers on this connection are still unread; read them first",
    }
).encode()


class _Counted:
    """An answer's body that reports when the server closes it (PEP 3333: always, once).

    It has no `__len__`, so waitress does not add a Content-Length the gate left out.
    """

    __slots__ = ("_body", "_done")

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


class Listener(socket.socket):
    """A listening socket that remembers the connections it accepts.

    waitress has no API for its connections; it accepts through the socket passed in its
    documented `sockets` adjustment, so this socket's `accept` is where the drain learns
    which connections to end, with plain socket calls.
    """

    def __init__(self, family: socket.AddressFamily) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self._lock = threading.Lock()
        self._accepted: weakref.WeakValueDictionary[tuple[str, int], socket.socket] = (
            weakref.WeakValueDictionary()
        )
        self._refusing = False

    def accept(self) -> tuple[socket.socket, Any]:
        conn, addr = super().accept()
        if self._refusing:
            # Closed at once, and for the caller no connection was waiting (EAGAIN, which a
            # non-blocking accept may always answer): the listening socket itself stays open.
            conn.close()
            raise BlockingIOError(errno.EAGAIN, "not accepting: the server is stopping")
        with self._lock:
            self._accepted[(str(addr[0]), int(addr[1]))] = conn
        return conn, addr

    def refuse(self) -> None:
        """From now on, close every connection accepted, before anyone reads from it."""
        self._refusing = True

    def connection(self, host: object, port: object) -> socket.socket | None:
        """The open connection from a client's address (WSGI's REMOTE_ADDR and REMOTE_PORT)."""
        try:
            conn = self._accepted.get((str(host), int(str(port))))
        except ValueError:
            return None
        return conn if conn is not None and conn.fileno() != -1 else None

    def open_connections(self) -> list[socket.socket]:
        """Accepted connections not yet closed by waitress."""
        with self._lock:
            return [conn for conn in self._accepted.values() if conn.fileno() != -1]

    def sending(self) -> int:
        """Connections with answer bytes the client has not yet acknowledged."""
        return sum(1 for conn in self.open_connections() if _unsent(conn))


# struct tcp_info (linux/tcp.h, stable ABI): tcpi_notsent_bytes, a __u32 at byte 144.
_NOTSENT_OFFSET = 144
_TCP_INFO_SIZE = _NOTSENT_OFFSET + 4


def _not_sent(conn: socket.socket) -> int:
    """Bytes of `conn`'s answers still waiting in the kernel, not yet sent because its client
    stopped reading (Linux TCP_INFO's tcpi_notsent_bytes); 0 where unknown.

    Read on every request, so through getsockopt, which CPython calls holding the GIL: the
    ioctl of `_unsent` lets the GIL go and costs a thread switch per request under load
    (wrk, POST, side by side on 2026-12-03: 1,488-1,640 -> 1,571-1,823 req/s, server CPU
    per request 652-710 -> 584-656 us).
    """
    try:
        info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, ValueError, AttributeError):
        return 0  # closed meanwhile, or not Linux
    if len(info) < _TCP_INFO_SIZE:
        return 0  # a kernel older than 4.6
    return int(struct.unpack_from("I", info, _NOTSENT_OFFSET)[0])


def _unsent(conn: socket.socket) -> int:
    """Bytes in the kernel's send queue of `conn` (Linux SIOCOUTQ); 0 where unknown.

    A client that reads slowly keeps this above 0 while waitress still holds the rest of its
    answer; an idle keep-alive connection has 0.
    """
    try:
        queued = fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0  # closed meanwhile, or not supported here
    return int(struct.unpack("i", queued)[0])


def listen(host: str, port: int) -> Listener:
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = Listener(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def shut(conn: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):  # already closed by waitress, or the client is gone
        conn.shutdown(how)
