"""Shared fixtures: an injected clock and a manager that never starts threads unless asked."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from missing import missing
from redis_server import RedisServer, require_redis_server

from sidecar.core.clock import ManualClock
from sidecar.core.config import ManagerConfig
from sidecar.core.manager import KNOWN_TRANSITIONS, SessionManager
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus
from sidecar.store import Cursor, InMemorySessionStore, SessionStore
from sidecar.worker import start_worker

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from prometheus_client import CollectorRegistry

    from sidecar.store.redis import RedisSessionStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def manager(clock: ManualClock) -> Iterator[SessionManager]:
    mgr = SessionManager(ManagerConfig(max_sessions=10), clock=clock)
    yield mgr
    mgr.shutdown()


def started(mgr: SessionManager) -> SessionManager:
    """`mgr` with its cleanup worker running (sidecar.worker)."""
    start_worker(mgr)
    return mgr


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`serve` configures the root logger; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def request_data() -> GenerationRequest:
    return GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)


MakeManager = Callable[..., SessionManager]


@pytest.fixture
def make_manager(clock: ManualClock) -> Iterator[MakeManager]:
    """make_manager(store=None, **config): managers on the shared clock, shut down after."""
    made: list[SessionManager] = []

    def make(*, store: SessionStore | None = None, **config: Any) -> SessionManager:
        mgr = SessionManager(ManagerConfig(**config), clock=clock, store=store)
        made.append(mgr)
        return mgr

    yield make
    for mgr in made:
        mgr.shutdown()


# The state machine's shortest path from pending to each status.
# Shorthands the manager and store tests share.
P, R, C, F = (
    GenerationStatus.PENDING,
    GenerationStatus.PROCESSING,
    GenerationStatus.COMPLETED,
    GenerationStatus.FAILED,
)
HOUR = 3600.0
MICRO = 0.000001  # one microsecond, in seconds

STATUS_PATHS: dict[GenerationStatus, tuple[GenerationStatus, ...]] = {
    GenerationStatus.PENDING: (),
    GenerationStatus.PROCESSING: (GenerationStatus.PROCESSING,),
    GenerationStatus.COMPLETED: (GenerationStatus.PROCESSING, GenerationStatus.COMPLETED),
    GenerationStatus.FAILED: (GenerationStatus.FAILED,),
}
MakeSession = Callable[..., GenerationSession]


def session_in(
    mgr: SessionManager, status: GenerationStatus | str, request: GenerationRequest
) -> GenerationSession:
    """A new session of `request` on `mgr`, taken along STATUS_PATHS to `status`."""
    session = mgr.create_session(request)
    for step in STATUS_PATHS[GenerationStatus(status)]:
        session = mgr.update_session_status(session.session_id, step)
    return session


@pytest.fixture
def make_session(request_data: GenerationRequest) -> MakeSession:
    """make_session(manager, status="pending", request=None): a new session driven to `status`."""

    def make(
        mgr: SessionManager,
        status: GenerationStatus | str = GenerationStatus.PENDING,
        request: GenerationRequest | None = None,
    ) -> GenerationSession:
        return session_in(mgr, status, request or request_data)

    return make


class WatchedDict(dict[str, GenerationSession]):
    """The sessions dict of a watched memory store: counts lookups and removals, and fails the
    test on any walk over it while `walks_allowed` is False (pytest.fail, which an `except
    Exception` in the code under test cannot swallow)."""

    def __init__(self) -> None:
        super().__init__()
        self.walks_allowed = True
        self.touched: Counter[str] = Counter()

    def _walk(self, what: str) -> None:
        if not self.walks_allowed:
            pytest.fail(f"a full scan of the store ({what})")

    def __iter__(self) -> Iterator[str]:
        self._walk("iteration")
        return super().__iter__()

    def values(self) -> Any:
        self._walk("values")
        return super().values()

    def items(self) -> Any:
        self._walk("items")
        return super().items()

    def keys(self) -> Any:
        self._walk("keys")
        return super().keys()

    def __getitem__(self, key: str) -> GenerationSession:
        self.touched["get"] += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.touched["get"] += 1
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.touched["contains"] += 1
        return super().__contains__(key)

    def pop(self, key: str, default: Any = None) -> Any:
        self.touched["removed"] += 1
        return super().pop(key, default)


class NoScanStore(InMemorySessionStore):
    """An in-memory store that fails the test when the code under test walks its sessions.

    Iterating over it always fails. While `scans_allowed` is False so does any walk over its
    sessions (values() here, or one inside the store): figures, expiry and eviction read the
    indexes instead. While `listing_allowed` is False page() fails too: a scrape reads kept
    figures and lists no session at all.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sessions = self.watched = WatchedDict()
        self.listing_allowed = True

    @property
    def scans_allowed(self) -> bool:
        return self.watched.walks_allowed

    @scans_allowed.setter
    def scans_allowed(self, allowed: bool) -> None:
        self.watched.walks_allowed = allowed

    def values(self) -> list[GenerationSession]:
        """Every session (a walk: fails while scans are not allowed)."""
        return list(self.watched.values())

    def __iter__(self) -> Iterator[GenerationSession]:
        pytest.fail("iteration over the store")

    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]:
        if not self.listing_allowed:
            pytest.fail("a page through the sessions")
        return super().page(status, after, limit)


@pytest.fixture
def no_scan_store() -> NoScanStore:
    return NoScanStore()


# The gauges that describe the store and carry its `store` label (sidecar.metrics).
STATE_GAUGES = frozenset(
    {
        "sidecar_sessions",
        "sidecar_sessions_by_age",
        "sidecar_sessions_stuck",
        "sidecar_stuck_after_seconds",
        "sidecar_sessions_capacity",
        "sidecar_sessions_utilization_ratio",
        "sidecar_health_state",
        "sidecar_session_oldest_created_timestamp_seconds",
    }
)


def with_store(name: str, labels: dict[str, str], store: str) -> dict[str, str]:
    """`labels`, plus `store` when `name` is a state gauge."""
    return {"store": store, **labels} if name in STATE_GAUGES else labels


def memory_store_name(url: str) -> str:
    """The `store` label a memory-mode sidecar serving at `url` gives its state gauges."""
    import socket
    from urllib.parse import urlsplit

    return f"memory:{socket.gethostname()}:{urlsplit(url).port}"


def transition_counts(registry: CollectorRegistry) -> dict[tuple[str, str], float | None]:
    """sidecar_session_transitions_total for every transition the core knows, by (from, to).

    Tests compare it with a literal dict of all of them, so a missing series fails too.
    """
    return {
        (src.value, dst.value): registry.get_sample_value(
            "sidecar_session_transitions_total",
            {"from_status": src.value, "to_status": dst.value},
        )
        for src, dst in KNOWN_TRANSITIONS
    }


def require_binary(name: str, package: str = "prometheus") -> str:
    """Path of an external tool; under CI (CI=true) a missing one fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: {package}); .ci/run installs it"
        missing(message)
    return path


@pytest.fixture
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture
def amtool() -> str:
    return require_binary("amtool", package="prometheus-alertmanager")


# ---------------------------------------------------------------------- the web layer


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SIDECAR_* variable from the outer environment leaks into a test."""
    for name in list(os.environ):
        if name.startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    return monkeypatch


MakeApp = Callable[..., "Flask"]


@pytest.fixture
def make_app(clean_env: pytest.MonkeyPatch, manager: SessionManager) -> Iterator[MakeApp]:
    """make_app(manager=None, **settings): apps on `manager` (or another), closed after."""
    from sidecar.settings import Settings
    from sidecar.web.app import create_app, get_sidecar

    made: list[Flask] = []

    def make(mgr: SessionManager | None = None, **settings: Any) -> Flask:
        app = create_app(Settings(**settings), manager=mgr or manager)
        made.append(app)
        return app

    yield make
    for app in made:
        get_sidecar(app).close()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    """An app without tokens on the `manager` fixture (ManualClock, max_sessions=10)."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# ---------------------------------------------------------------------- polling and real processes

T = TypeVar("T")


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.1,
) -> T:
    """Call `probe` until it returns something other than None; fail naming `what` at the deadline.

    For whatever answers in its own time (a worker thread, a real process): no fixed sleeps, a
    bounded wait. `what` may be a callable, to describe the state the probe last saw.
    """
    deadline = time.monotonic() + timeout
    idle = threading.Event()  # never set: a bounded pause between probes
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            waited_for = what() if callable(what) else what
            pytest.fail(f"gave up after {timeout:g} s waiting for {waited_for}")
        idle.wait(interval)


def wait_for_200(url: str, *, timeout: float) -> None:
    """Poll `url` until it answers 200; fail at the deadline."""
    import requests

    def ok() -> bool | None:
        try:
            with requests.get(url, timeout=2) as response:
                return True if response.status_code == 200 else None
        except requests.ConnectionError:
            return None

    poll(ok, timeout=timeout, what=f"200 from {url}")


@dataclass
class ChildProcess:
    """A process started by a test, its output (stdout and stderr) going to a file."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, args: list[str], *, log: Path, env: dict[str, str] | None = None
    ) -> ChildProcess:
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return cls(process, log)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def lines(self) -> list[str]:
        return self.output().splitlines()

    def wait_for_line(self, pattern: re.Pattern[str], *, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern`; fails if the process exits first."""

        def probe() -> re.Match[str] | None:
            found = pattern.search(self.output())
            if found is None and self.process.poll() is not None:
                pytest.fail(
                    f"{self.process.args!r} exited with {self.process.returncode}:\n"
                    + self.output()
                )
            return found

        return poll(probe, timeout=timeout, what=f"{pattern.pattern!r} in {self.log.name}")

    def wait(self, timeout: float) -> int:
        """The exit code of a process that ends by itself within `timeout`; fails otherwise."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.process.args!r} still runs after {timeout:g} s:\n" + self.output())

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (both the sidecar and Prometheus stop cleanly on it), SIGKILL past `timeout`."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class SidecarProcess(ChildProcess):
    """`sidecar serve` on a loopback port, answering at `url`."""

    url: str


STARTUP_SECONDS = 30.0  # from exec to the listening line: imports on a busy 2-core machine
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class SidecarSpawner:
    """Starts real `sidecar serve` processes, each logging to its own file, and stops them all."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._started: list[ChildProcess] = []

    def __call__(self, **settings: object) -> SidecarProcess:
        """A sidecar on 127.0.0.1, a port the kernel picks, logging at info; ready.

        Settings are given as keyword arguments named like the fields of Settings and become
        SIDECAR_* variables.
        """
        defaults = {"host": "127.0.0.1", "port": 0, "log_level": "info"}
        return self.wait_ready(self._start([], {**defaults, **settings}, console_script=False))

    def start(self, *args: str, console_script: bool = False, **settings: object) -> ChildProcess:
        """`sidecar serve *args` with exactly the given SIDECAR_* variables; not waited for.

        It runs as `python -m sidecar`, or as the installed `sidecar` console script next to
        this interpreter.
        """
        return self._start(list(args), settings, console_script=console_script)

    def _start(
        self, args: list[str], settings: dict[str, object], *, console_script: bool
    ) -> ChildProcess:
        if console_script:
            script = Path(sys.executable).with_name("sidecar")
            assert script.exists(), f"{script} missing: install the project (pip install -e .)"
            command = [str(script)]
        else:
            command = [sys.executable, "-m", "sidecar"]
        # No SIDECAR_* variable of the outer environment leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        env.update({f"SIDECAR_{name.upper()}": str(value) for name, value in settings.items()})
        log = self._tmp_path_factory.mktemp("sidecar") / "sidecar.log"
        child = ChildProcess.start([*command, "serve", *args], log=log, env=env)
        self._started.append(child)
        return child

    def wait_ready(self, child: ChildProcess) -> SidecarProcess:
        """`child` once it logged the loopback URL it listens on and its /readyz answers 200."""
        url = child.wait_for_line(_LISTENING, timeout=STARTUP_SECONDS).group(1)
        wait_for_200(f"{url}/readyz", timeout=15)
        return SidecarProcess(child.process, child.log, url)

    def stop_all(self) -> None:
        for child in self._started:
            child.stop()


@pytest.fixture(scope="module")
def spawn_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarSpawner]:
    """spawn_sidecar(**settings): a real sidecar, ready; every one stopped after the module."""
    spawner = SidecarSpawner(tmp_path_factory)
    yield spawner
    spawner.stop_all()


@pytest.fixture
def sidecars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarSpawner]:
    """Like spawn_sidecar, but every sidecar the test starts is stopped after the test."""
    spawner = SidecarSpawner(tmp_path_factory)
    yield spawner
    spawner.stop_all()


# ---------------------------------------------------------------------- a real Redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server (no persistence) for the whole run; tests use their own key prefixes."""
    server = RedisServer(require_redis_server(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def durable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, with appendonly yes and appendfsync everysec."""
    server = RedisServer(require_redis_server(), tmp_path, appendonly=True).start()
    yield server
    server.stop()


# ---------------------------------------------------------------------- stores, for contracts

MakeStore = Callable[[], SessionStore]


@contextmanager
def redis_stores(url: str) -> Iterator[Callable[[], RedisSessionStore]]:
    """make(): Redis stores on one fresh prefix, each with its own connection pool (a
    replica); the prefix is cleared and the pools closed on exit."""
    import redis

    from sidecar.store.redis import RedisSessionStore

    prefix = f"t{uuid.uuid4().hex[:12]}"
    clients: list[redis.Redis] = []

    def make() -> RedisSessionStore:
        client = redis.Redis.from_url(url, socket_timeout=5)
        clients.append(client)
        return RedisSessionStore(client, prefix)

    try:
        yield make
    finally:
        if clients:
            RedisSessionStore(clients[0], prefix).clear()
        for client in clients:
            client.close()


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """make_store(): stores sharing one set of sessions (for Redis: one prefix, each store with
    its own connection pool, as replicas would)."""
    if request.param == "memory":
        shared = InMemorySessionStore()
        yield lambda: shared
        return
    with redis_stores(request.getfixturevalue("redis_server").url) as make:
        yield make


@pytest.fixture
def store(make_store: MakeStore) -> SessionStore:
    return make_store()
