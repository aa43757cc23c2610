"""What the Redis benchmarks share: a fast loader and the app and manager on a Redis store.

Loading goes through the store's own scripts (sidecar/store/redis/lua: create.lua, update.lua),
the very scripts `RedisSessionStore.create` and `.update` run, with the arguments those methods
pass, but sent in pipelines of a few thousand calls instead of one round trip each: a million
sessions one call at a time take about ten minutes on two cores, pipelined a few. Nothing is
written that the scripts would not write, and `check_loaded` reads the result back through the
store's public reads (counts per status, a sample of sessions decoded) so that a change of the
scripts' arguments fails the load loudly instead of loading something else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib import resources
from typing import Any

import redis
from flask import Flask

from bench.common import FIXTURE_START, SPREAD_HOURS, STATUS_MIX, STORY, bench_config, status_path
from sidecar.core.clock import ManualClock, to_micros
from sidecar.core.config import ManagerConfig
from sidecar.core.ids import new_session_id
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationStatus, ScenePrompt
from sidecar.core.rules import EVICTION_ORDER, WORK_STATUSES, expiry_ages, expiry_rules, sources_of
from sidecar.settings import Settings
from sidecar.store.base import BATCH
from sidecar.store.redis import RedisSessionStore, connect
from sidecar.store.redis.codec import encode_request, encode_scenes
from sidecar.web.app import create_app

__all__ = [
    "CHUNK",
    "TIMEOUT",
    "Loaded",
    "check_loaded",
    "load_redis",
    "redis_app",
    "redis_manager",
    "redis_settings",
    "used_memory",
]

CHUNK = 2000  # sessions per pipeline
TIMEOUT = 30.0  # seconds a store call may take: a pipeline of CHUNK sessions is one call


def _script(client: redis.Redis, name: str) -> Any:
    lua = resources.files("sidecar.store.redis").joinpath("lua")
    text = lua.joinpath("_lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()
    return client.register_script(text)


def _csv(statuses: Sequence[GenerationStatus]) -> str:
    return ",".join(s.value for s in statuses)


class Loaded:
    """What a load put in: the clock at its end, how long it took, the expected counts."""

    def __init__(self, clock: ManualClock, seconds: float, counts: dict[GenerationStatus, int]):
        self.clock = clock
        self.seconds = seconds
        self.counts = counts


def load_redis(
    client: redis.Redis,
    prefix: str,
    n: int,
    *,
    config: ManagerConfig,
    request: Callable[[int], GenerationRequest] | None = None,
    scenes: Callable[[int], Sequence[ScenePrompt]] | None = None,
) -> Loaded:
    """Load `n` sessions under `prefix` as `bench.common.load_sessions` does (STATUS_MIX,
    creation spread over 30 hours from FIXTURE_START, transitions at the creation instant,
    `scenes(i)` set while pending or processing), pipelined through the store's scripts."""
    create, update = _script(client, "create"), _script(client, "update")
    keys = ["{" + prefix + "}"]
    start_us = to_micros(FIXTURE_START)
    step_us = SPREAD_HOURS * 3600 * 1_000_000 / n
    order = ";".join(_csv(group) for group in EVICTION_ORDER)
    shared_body = encode_request(STORY)
    counts = dict.fromkeys(GenerationStatus, 0)
    ages = expiry_ages(
        config.session_max_age_seconds,
        config.failed_max_age_seconds,
        config.completed_max_age_seconds,
    )
    started = time.perf_counter()
    for low in range(0, n, CHUNK):
        pipe = client.pipeline(transaction=False)
        expected: list[bytes] = []
        for i in range(low, min(n, low + CHUNK)):
            now_us = start_us + round(i * step_us)
            rules = expiry_rules(now_us, ages)
            sid = new_session_id()
            body = shared_body if request is None else encode_request(request(i))
            args: list[Any] = [sid, now_us, config.max_sessions, config.capacity_policy.value]
            args += [
                order,
                ";".join(
                    f"{'' if r.status is None else r.status.value}:{r.cutoff_us}" for r in rules
                ),
                BATCH,
                body,
                "",
                "",
                0,
                0,
            ]
            create(keys=keys, args=args, client=pipe)
            expected.append(b"created")
            path = status_path(STATUS_MIX[i % len(STATUS_MIX)])
            if path[:1] == ("processing",):
                _status(update, pipe, keys, sid, now_us, GenerationStatus.PROCESSING)
                expected.append(b"ok")
                path = path[1:]
            if scenes is not None:
                update(
                    keys=keys,
                    args=[
                        sid,
                        now_us,
                        "",
                        "",
                        _csv(WORK_STATUSES),
                        b"",
                        "",
                        "sc",
                        encode_scenes(scenes(i)),
                    ],
                    client=pipe,
                )
                expected.append(b"ok")
            for status in path:
                _status(update, pipe, keys, sid, now_us, GenerationStatus(status))
                expected.append(b"ok")
            counts[STATUS_MIX[i % len(STATUS_MIX)]] += 1
        replies = pipe.execute()
        got = [r[0] for r in replies]
        if got != expected:
            bad = next(k for k, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
            raise RuntimeError(f"load: call {bad} of a pipeline answered {replies[bad]!r}")
    seconds = time.perf_counter() - started
    clock = ManualClock(FIXTURE_START + timedelta(hours=SPREAD_HOURS))
    return Loaded(clock, seconds, counts)


def _status(
    update: Any,
    pipe: Any,
    keys: list[str],
    sid: str,
    now_us: int,
    status: GenerationStatus,
) -> None:
    args = [sid, now_us, status.value, _csv(sources_of(status)), _csv(WORK_STATUSES), b"", ""]
    update(keys=keys, args=args, client=pipe)


def check_loaded(store: RedisSessionStore, loaded: Loaded, sample: int = 200) -> None:
    """The store holds what the load meant to put in: counts per status, and sessions that
    decode, read back through the store's public reads."""
    figures = store.figures([], GenerationStatus.PROCESSING, 0)
    if figures.by_status != loaded.counts:
        raise RuntimeError(f"loaded {loaded.counts}, the store counts {figures.by_status}")
    for status, count in loaded.counts.items():
        if count:
            page = store.page(status, None, min(sample, count))
            if len(page) != min(sample, count) or any(s.status is not status for s in page):
                raise RuntimeError(f"reading back {status.value} sessions failed")


def redis_settings(url: str, prefix: str, max_sessions: int, **extra: Any) -> Settings:
    """Settings of a Redis-mode sidecar under `prefix` with the benchmarks' manager config
    (nothing loaded over 30 hours expires)."""
    config = bench_config(max_sessions)
    values: dict[str, Any] = {
        "max_sessions": config.max_sessions,
        "session_max_age_seconds": config.session_max_age_seconds,
        "failed_max_age_seconds": config.failed_max_age_seconds,
        "completed_max_age_seconds": config.completed_max_age_seconds,
    }
    return Settings(store=url, store_prefix=prefix, **values, **extra)


def redis_app(url: str, prefix: str, max_sessions: int, clock: ManualClock) -> Flask:
    """The real app in Redis mode, as `sidecar serve` builds it from SIDECAR_STORE (observed
    store, shared live settings, cleanup worker), on the loaded sessions' clock."""
    return create_app(redis_settings(url, prefix, max_sessions), clock=clock)


def redis_manager(
    url: str, prefix: str, max_sessions: int, clock: ManualClock
) -> tuple[SessionManager, RedisSessionStore]:
    """A bare manager on a Redis store (no app, no worker), and the store."""
    store = RedisSessionStore(connect(url, TIMEOUT), prefix)
    return SessionManager(bench_config(max_sessions), clock=clock, store=store), store


def used_memory(client: redis.Redis) -> int:
    """INFO memory's used_memory: the bytes Redis's allocator holds for data and itself."""
    return int(client.info("memory")["used_memory"])
