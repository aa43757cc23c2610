"""Several real `sidecar serve` replicas on one real redis-server.

Each test starts its own replicas (SIDECAR_STORE=redis://...) under a fresh key prefix and
talks to them over HTTP only. Waits are polls with deadlines; the one fixed wait is the
durability test's second, which is the guarantee under test (appendfsync everysec).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import SidecarProcess, SidecarSpawner, poll
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer, require_redis_server

pytestmark = pytest.mark.process

S = "/api/v1/sessions"
STORY = {"story_text": "Two lighthouses signal across the bay.", "num_scenes": 2}
TIMEOUT = 10  # seconds any one HTTP call may take here: far above the store timeout


def replicas(
    sidecars: SidecarSpawner, server: RedisServer, n: int, **settings: object
) -> list[SidecarProcess]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return [
        sidecars(store=server.url, store_prefix=prefix, threads=8, **settings) for _ in range(n)
    ]


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples at `url` whose labels include `labels`."""
    with requests.get(f"{url}/metrics", timeout=TIMEOUT) as response:
        response.raise_for_status()
        text = response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def create(url: str) -> requests.Response:
    return requests.post(f"{url}{S}", json=STORY, timeout=TIMEOUT)


def test_a_session_created_on_one_replica_is_read_and_updated_on_the_other(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    one, two = replicas(sidecars, redis_server, 2)

    sid = create(one.url).json()["session_id"]
    moved = requests.put(
        f"{two.url}{S}/{sid}/status", json={"status": "processing"}, timeout=TIMEOUT
    )
    seen = requests.get(f"{one.url}{S}/{sid}", timeout=TIMEOUT).json()

    assert moved.status_code == 200
    assert seen["status"] == "processing"
    # one store, one figure, under one label on both
    label = metric(one.url, "sidecar_sessions", status="processing")
    assert label == metric(two.url, "sidecar_sessions", status="processing") == 1


def get_calls(server: RedisServer) -> int:
    """How many GET commands the server has run (INFO commandstats): the shared settings'
    version check is the only GET the sidecar sends."""
    import redis

    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_only_requests_whose_answer_depends_on_a_setting_check_the_shared_settings(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    (one,) = replicas(sidecars, redis_server, 1)
    sid = create(one.url).json()["session_id"]
    base = f"{one.url}{S}/{sid}"
    before = get_calls(redis_server)

    # Reads and changes of one session: the same answer whatever the settings.
    for step in range(3):
        assert requests.get(base, timeout=TIMEOUT).status_code == 200
        progress = {"current_step": step, "total_steps": 3}
        assert requests.put(f"{base}/progress", json=progress, timeout=TIMEOUT).ok
    assert requests.put(f"{base}/status", json={"status": "processing"}, timeout=TIMEOUT).ok
    unchanged = get_calls(redis_server)
    # A create (capacity), the health (thresholds) and the config read do check.
    assert create(one.url).status_code == 201
    assert requests.get(f"{one.url}/api/v1/health", timeout=TIMEOUT).ok
    assert requests.get(f"{one.url}/api/v1/admin/config", timeout=TIMEOUT).ok

    assert unchanged == before
    assert get_calls(redis_server) == before + 3


def test_concurrent_creates_across_replicas_never_exceed_capacity(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    nodes = replicas(sidecars, redis_server, 3, max_sessions=20, capacity_policy="reject")

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda i: create(nodes[i % 3].url).status_code, range(60)))

    assert codes.count(201) == 20
    assert codes.count(429) == 40
    stats = requests.get(f"{nodes[0].url}/api/v1/stats", timeout=TIMEOUT).json()
    assert stats["total_sessions"] == 20
    assert sum(metric(n.url, "sidecar_sessions_created_total") for n in nodes) == 20


def test_racing_status_changes_have_one_winner_counted_once(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    one, two = replicas(sidecars, redis_server, 2)
    ids = [create(one.url).json()["session_id"] for _ in range(20)]
    for sid in ids:
        requests.put(f"{one.url}{S}/{sid}/status", json={"status": "processing"}, timeout=10)

    def race(sid: str) -> list[int]:
        start = threading.Barrier(2)

        def put(url: str, status: str) -> int:
            start.wait()
            body = {"status": status}
            return requests.put(f"{url}{S}/{sid}/status", json=body, timeout=TIMEOUT).status_code

        with ThreadPoolExecutor(2) as pool:
            done = pool.submit(put, one.url, "completed"), pool.submit(put, two.url, "failed")
            return sorted(f.result() for f in done)

    outcomes = [race(sid) for sid in ids]

    assert outcomes == [[200, 409]] * len(ids)
    finished = sum(
        metric(n.url, "sidecar_session_transitions_total", from_status="processing", to_status=s)
        for n in (one, two)
        for s in ("completed", "failed")
    )
    assert finished == len(ids)


def test_expiry_through_several_replicas_at_once_removes_and_counts_each_session_once(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    # The admin cleanup runs the store's `expire`, the worker's operation, on demand: the
    # smallest expiry age a worker takes is 60 s.
    nodes = replicas(sidecars, redis_server, 3)
    for _ in range(30):
        assert create(nodes[0].url).status_code == 201
    time.sleep(0.01)  # older than the 1 ms age asked for below

    def cleanup(url: str) -> int:
        body = {"scope": "expired", "max_age_seconds": 0.001}
        answer = requests.post(f"{url}/api/v1/admin/cleanup", json=body, timeout=TIMEOUT)
        removed: int = answer.json()["removed"]
        return removed

    with ThreadPoolExecutor(3) as pool:
        removed = list(pool.map(cleanup, [n.url for n in nodes]))

    assert sum(removed) == 30
    counted = sum(metric(n.url, "sidecar_sessions_removed_total") for n in nodes)
    assert counted == 30


def test_a_config_patch_through_one_replica_is_in_force_on_the_other(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    one, two = replicas(sidecars, redis_server, 2, capacity_policy="reject")
    assert create(two.url).status_code == 201

    patched = requests.patch(
        f"{one.url}/api/v1/admin/config", json={"max_sessions": 1}, timeout=TIMEOUT
    )

    assert patched.status_code == 200
    assert create(two.url).status_code == 429
    assert metric(two.url, "sidecar_sessions_capacity") == 1


def test_an_outage_answers_503_and_the_replica_serves_again_when_redis_returns(
    sidecars: SidecarSpawner, tmp_path: Path
) -> None:
    server = RedisServer(require_redis_server(), tmp_path).start()
    try:
        (node,) = replicas(sidecars, server, 1, store_timeout_seconds=0.5)
        sid = create(node.url).json()["session_id"]
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # a hung Redis: nothing answers at all

        read = requests.get(f"{node.url}{S}/{sid}", timeout=TIMEOUT)
        ready = requests.get(f"{node.url}/readyz", timeout=TIMEOUT)
        live = requests.get(f"{node.url}/livez", timeout=TIMEOUT)
        up = metric(node.url, "sidecar_store_up")

        assert read.status_code == 503
        assert read.json()["type"] == "urn:sidecar:problem:store-unavailable"
        assert read.headers["Retry-After"] == "1"
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"] is False
        assert live.status_code == 200
        assert up == 0

        server.process.send_signal(signal.SIGCONT)
        poll(
            lambda: True if requests.get(f"{node.url}/readyz", timeout=TIMEOUT).ok else None,
            timeout=15,
            what="/readyz 200 once Redis answers again",
        )
        assert requests.get(f"{node.url}{S}/{sid}", timeout=TIMEOUT).status_code == 200
        assert metric(node.url, "sidecar_store_up") == 1
        assert "Traceback" not in node.output()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        server.stop()


Acked = dict[str, tuple[int, float]]  # session id -> (highest step answered 2xx, when)


def load(url: str, acked: Acked, stop: threading.Event, workers: int = 4) -> None:
    """Create sessions and move their progress forward, noting each 2xx, until `stop`."""
    lock = threading.Lock()

    def note(sid: str, step: int) -> None:
        with lock:
            acked[sid] = (step, time.monotonic())

    def work() -> None:
        # closed on the way out: a pooled keep-alive socket left to the collector is a
        # ResourceWarning, an error at the end of the run (filterwarnings = error)
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    answer = http.post(f"{url}{S}", json=STORY, timeout=TIMEOUT)
                    if answer.status_code != 201:
                        continue
                    sid = answer.json()["session_id"]
                    note(sid, 0)
                    for step in (1, 2):
                        body = {"current_step": step, "total_steps": 2}
                        if http.put(f"{url}{S}/{sid}/progress", json=body, timeout=TIMEOUT).ok:
                            note(sid, step)
                except requests.RequestException:
                    if stop.is_set():
                        return

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    stop.wait(30)
    for thread in threads:
        thread.join(TIMEOUT + 5)


def missing(url: str, acked: Acked, before: float = float("inf")) -> list[str]:
    """The acknowledged mutations (noted before `before`) not present at `url`."""
    lost = []
    with requests.Session() as http:
        for sid, (step, when) in acked.items():
            if when >= before:
                continue
            answer = http.get(f"{url}{S}/{sid}", timeout=TIMEOUT)
            progress = answer.json().get("progress") if answer.ok else None
            have = progress["current_step"] if progress else 0
            if not answer.ok or have < step:
                lost.append(f"{sid}: step {step} acked, {answer.status_code} step {have}")
    return lost


def run_load_until(url: str, event: Callable[[Acked], None]) -> Acked:
    acked: Acked = {}
    stop = threading.Event()
    runner = threading.Thread(target=load, args=(url, acked, stop))
    runner.start()
    poll(lambda: True if len(acked) >= 40 else None, timeout=30, what="40 acked sessions")
    try:
        event(acked)
    finally:
        stop.set()
        runner.join(60)
    return acked


def test_sigkill_of_a_replica_under_load_loses_no_acknowledged_mutation(
    sidecars: SidecarSpawner, redis_server: RedisServer
) -> None:
    victim, survivor = replicas(sidecars, redis_server, 2, max_sessions=100_000)

    acked = run_load_until(victim.url, lambda _: victim.process.kill())

    assert victim.process.wait(TIMEOUT) == -signal.SIGKILL
    assert missing(survivor.url, acked) == []


def test_kill_9_of_redis_with_aof_everysec_keeps_what_was_acked_over_a_second_before(
    sidecars: SidecarSpawner, durable_redis_server: RedisServer
) -> None:
    # max_sessions far above the load: no acknowledged session is evicted
    (node,) = replicas(
        sidecars, durable_redis_server, 1, store_timeout_seconds=0.5, max_sessions=100_000
    )
    killed_at: list[float] = []

    def kill_redis(acked: Acked) -> None:
        # The guarantee is about time: load on until some mutations were acked 1.5 s ago.
        def old_enough() -> bool | None:
            first = min(when for _, when in list(acked.values()))
            return True if time.monotonic() - first > 1.5 else None

        poll(old_enough, timeout=30, what="a mutation acked 1.5 s ago")
        killed_at.append(time.monotonic())
        durable_redis_server.kill()

    acked = run_load_until(node.url, kill_redis)
    durable_redis_server.start()
    poll(
        lambda: True if requests.get(f"{node.url}/readyz", timeout=TIMEOUT).ok else None,
        timeout=15,
        what="/readyz 200 after the restart",
    )

    old = {sid for sid, (_, when) in acked.items() if when < killed_at[0] - 1.0}

    assert old, "no mutation was acked over a second before the kill"
    assert missing(node.url, acked, before=killed_at[0] - 1.0) == []
