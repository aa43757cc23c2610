"""Benchmark 11: what Redis holds per session, at 100,000 sessions with 2 KB stories and 5
scenes (benchmark 5's sessions), by INFO memory's used_memory before and after the load."""

from __future__ import annotations

from collections.abc import Sequence

from bench.common import Figure, Log, Section, bench_config, fmt
from bench.memory import RAW_CHARS, SCENE_CHARS, SCENES, STORY_CHARS, _request, _text
from bench.redis_common import TIMEOUT, check_loaded, load_redis, used_memory
from bench.redis_server import temporary_redis
from sidecar.core.models import ScenePrompt
from sidecar.store.redis import RedisSessionStore, connect


def _scenes(i: int) -> Sequence[ScenePrompt]:
    return [
        ScenePrompt(scene_number=k, prompt=_text(i, f"scene{k}-", SCENE_CHARS))
        for k in range(1, SCENES + 1)
    ]


def run(quick: bool, log: Log) -> Section:
    sizes = (1_000, 10_000) if quick else (1_000, 100_000)
    rows: list[list[str]] = []
    per: dict[int, float] = {}
    with temporary_redis() as server, connect(server.url, TIMEOUT) as client:
        for n in sizes:
            prefix = f"bench11-{n}"
            before = used_memory(client)
            log(f"loading {n:,} sessions with 2 KB stories and {SCENES} scenes")
            loaded = load_redis(
                client, prefix, n, config=bench_config(n), request=_request, scenes=_scenes
            )
            check_loaded(RedisSessionStore(client, prefix), loaded)
            grown = used_memory(client) - before
            per[n] = grown / n
            rows.append(
                [
                    f"{n:,}",
                    f"{grown / 2**20:,.1f}",
                    fmt(per[n]),
                    fmt(per[n] - RAW_CHARS),
                    f"{loaded.seconds:.1f}",
                ]
            )
            log(f"{n:,}: {per[n]:,.0f} B per session")
    large = sizes[-1]
    return Section(
        number=11,
        title="Redis memory per session",
        method=[
            "One redis-server (Debian's, free loopback port, no persistence, default "
            "allocator); for each size, sessions under a prefix of their own, loaded through "
            f"the store's own create and update scripts, pipelined: a {STORY_CHARS:,}-character "
            f"story and {SCENES} scenes of {SCENE_CHARS} characters each, all distinct (benchmark "
            f"5's sessions: {RAW_CHARS:,} bytes of raw text), in benchmark 1's status mix. "
            "Figure: the growth of INFO memory's used_memory over the load, divided by the "
            "number of sessions (everything Redis holds for a session: its hash, its entries in "
            "the store's indexes, the allocator's rounding). Reported, no target; "
            "benchmark 5 gives the memory store's figure for the same sessions.",
        ],
        headers=[
            "sessions",
            "used_memory growth (MiB)",
            "bytes per session",
            "beyond the raw text",
            "load (s)",
        ],
        rows=rows,
        figures=[
            Figure(
                f"Redis used_memory per session at {large:,} (2 KB story, 5 scenes)",
                f"{per[large]:,.0f} B ({per[large] - RAW_CHARS:,.0f} B beyond the raw text)",
                "reported",
                None,
            )
        ],
    )
