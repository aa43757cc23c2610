"""Part of benchmark 6: resident memory after filling 100,000 sessions and after 1,000,000
evictions at capacity (issue 12), each allocator setting in a fresh interpreter.

`python -m bench.rss --sessions N --evictions M` prints one JSON object: RSS (VmRSS from
/proc/self/status) at start, full, and after the evictions, in bytes. The parent runs it with
the default allocator and with the settings an operator can make without a rebuild
(`MALLOC_ARENA_MAX=2`, `PYTHONMALLOC=malloc`), so a growth that is the allocator's shows as
a difference between them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sidecar.core.config import CapacityPolicy, ManagerConfig
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest

STORY = "The tide went out and did not come back; the town built boats for sand. " * 4
ALLOCATORS: dict[str, dict[str, str]] = {
    "default (pymalloc, glibc arenas)": {},
    "MALLOC_ARENA_MAX=2": {"MALLOC_ARENA_MAX": "2"},
    "PYTHONMALLOC=malloc": {"PYTHONMALLOC": "malloc"},
}


def rss_bytes() -> int:
    """This process's resident set size (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


CHECKPOINTS = 4  # RSS is also taken after each quarter of the evictions: growth or plateau


def measure(sessions: int, evictions: int) -> dict[str, Any]:
    """Fill a manager to capacity, then create `evictions` more (each evicts the oldest)."""
    start = rss_bytes()
    config = ManagerConfig(max_sessions=sessions, capacity_policy=CapacityPolicy.EVICT_OLDEST)
    manager = SessionManager(config)
    request = GenerationRequest(story_text=STORY, num_scenes=5)
    for _ in range(sessions):
        manager.create_session(request)
    gc.collect()
    full = rss_bytes()
    steps = []
    for _ in range(CHECKPOINTS):
        for _ in range(evictions // CHECKPOINTS):
            manager.create_session(request)
        gc.collect()
        steps.append(rss_bytes())
    assert manager.get_session_count() == sessions
    manager.shutdown()
    return {"start": start, "full": full, "after": steps[-1], "steps": steps}


def run_child(sessions: int, evictions: int, env: dict[str, str]) -> dict[str, Any]:
    """`measure` in a fresh interpreter with `env` added to this one's environment."""
    child = subprocess.run(
        [sys.executable, "-m", "bench.rss", "--sessions", str(sessions), "--evictions",
         str(evictions)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(child.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--evictions", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.sessions, args.evictions)))


if __name__ == "__main__":
    main()
