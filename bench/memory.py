"""Benchmark 5: bytes per session at 100,000 sessions, beyond the raw text they hold.

Each measurement runs in a fresh interpreter (`python -m bench.memory --sessions N --mode M`),
so garbage left by the other benchmarks cannot blur it; the child prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import Figure, Log, Section, fmt, load_sessions
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest

STORY_CHARS = 2048
SCENES = 5
SCENE_CHARS = 200
RAW_CHARS = STORY_CHARS + SCENES * SCENE_CHARS
TARGET_OVERHEAD = 2048

_FILLER = (
    "The tide went out and did not come back; the town built boats for a sea that was "
    "no longer there, and the children learned to sail on sand. "
) * 40


def _text(i: int, tag: str, chars: int) -> str:
    """A distinct ASCII string of exactly `chars` characters (one byte each when stored)."""
    head = f"{tag}{i:08d} "
    return head + _FILLER[: chars - len(head)]


def _request(i: int) -> GenerationRequest:
    return GenerationRequest(story_text=_text(i, "story", STORY_CHARS), num_scenes=SCENES)


def _add_scenes(manager: SessionManager, session_id: str, i: int) -> None:
    manager.set_session_scenes(
        session_id,
        [
            {"scene_number": k, "prompt": _text(i, f"scene{k}-", SCENE_CHARS)}
            for k in range(1, SCENES + 1)
        ],
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * 4096


def measure(sessions: int, mode: str) -> dict[str, Any]:
    """Memory held by a manager with `sessions` sessions, by tracemalloc or by RSS."""
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start(1)
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss_bytes()
    manager, clock = load_sessions(sessions, request=_request, before_finish=_add_scenes)
    gc.collect()
    result: dict[str, Any] = {"sessions": manager.get_session_count()}
    if mode == "tracemalloc":
        held = tracemalloc.get_traced_memory()[0] - before
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        top = snapshot.statistics("lineno")[:8]
        result["top"] = [
            {"where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "bytes": s.size}
            for s in top
        ]
    else:
        held = _rss_bytes() - before
    result["held"] = held
    del manager, clock
    return result


def _child(sessions: int, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--sessions", str(sessions), "--mode", mode],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,  # where `bench` is importable from
    )
    return dict(json.loads(out.stdout))


def _short(where: str) -> str:
    """A source location without the install prefix."""
    for marker in ("/site-packages/", "/lib/python3.11/", "/main/", "/work/"):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


def run(quick: bool, log: Log) -> Section:
    sessions = 20_000 if quick else 100_000
    log(f"tracemalloc: {sessions:,} sessions with a {STORY_CHARS} B story and {SCENES} scenes")
    traced = _child(sessions, "tracemalloc")
    log(f"RSS: {sessions:,} sessions, without tracemalloc")
    rss = _child(sessions, "rss")
    for result in (traced, rss):
        if result["sessions"] != sessions:
            raise RuntimeError(f"expected {sessions} sessions, found {result['sessions']}")
    raw = sessions * RAW_CHARS
    rows = []
    per: dict[str, float] = {}
    for name, result in (("tracemalloc (bytes allocated)", traced), ("RSS delta", rss)):
        per[name] = (result["held"] - raw) / sessions
        rows.append(
            [
                name,
                f"{result['held'] / 2**20:,.1f} MiB",
                f"{raw / 2**20:,.1f} MiB",
                fmt(result["held"] / sessions),
                fmt(per[name]),
            ]
        )
    overhead = per["tracemalloc (bytes allocated)"]
    top = ", ".join(
        f"`{_short(t['where'])}` {t['bytes'] / sessions:,.0f} B" for t in traced["top"][:6]
    )
    return Section(
        number=5,
        title="Memory per session",
        method=[
            f"A fresh interpreter loads {sessions:,} sessions through the manager (statuses "
            "mixed, ages spread over 30 hours), each with its own "
            f"{STORY_CHARS}-character story and {SCENES} scenes of {SCENE_CHARS} characters "
            "(all distinct ASCII strings, so one byte per character), scenes set while the "
            "session is pending or processing.",
            "Held memory is measured twice, in two separate interpreters: the bytes allocated "
            "and still live according to tracemalloc (the judged figure: exact and "
            "independent of the allocator), and the growth of the resident set without "
            "tracemalloc (what the machine pays, allocator slack included). "
            f"The raw text, {RAW_CHARS:,} bytes per session, is subtracted; the store's "
            "indexes, ids, timestamps, models and string headers all count as overhead.",
        ],
        headers=["measured by", "held", "raw text", "bytes per session", "overhead per session"],
        rows=rows,
        figures=[
            Figure(
                f"overhead per session at {sessions // 1000}k (tracemalloc)",
                f"{overhead:,.0f} B",
                "<= 2,048 B",
                overhead <= TARGET_OVERHEAD,
            ),
            Figure(
                f"overhead per session at {sessions // 1000}k (RSS, reference)",
                f"{per['RSS delta']:,.0f} B",
                "reference",
                None,
            ),
        ],
        notes=[f"Where the live bytes were allocated (tracemalloc, per session): {top}."],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="measure one manager's memory; prints JSON")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--mode", choices=["tracemalloc", "rss"], required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.sessions, args.mode)))


if __name__ == "__main__":
    main()
