"""`python -m bench`: run the benchmarks, print a table and write bench/results.md."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    churn,
    client,
    http_overhead,
    memory,
    mutations,
    redis_http,
    redis_memory,
    redis_mutations,
    redis_replicas,
    redis_scrape,
    resilience,
    scrape,
)
from bench.common import Log, Section, machine_info

BENCHMARKS: dict[int, Callable[[bool, Log], Section]] = {
    1: scrape.run,
    2: mutations.run,
    3: http_overhead.run,
    4: churn.run,
    5: memory.run,
    6: resilience.run,
    7: client.run,
    8: redis_scrape.run,
    9: redis_http.run,
    10: redis_mutations.run,
    11: redis_memory.run,
    12: redis_replicas.run,
}
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.md"
PARTIAL = HERE / "results-partial.md"


def _log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _verdict(met: bool | None) -> str:
    return "reference" if met is None else "met" if met else "NOT MET"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _summary_rows(sections: Sequence[Section]) -> list[list[str]]:
    return [
        [f"{s.number}. {s.title}", f.name, f.value, f.target, _verdict(f.met)]
        for s in sections
        for f in s.figures
    ]


SUMMARY_HEADERS = ["benchmark", "figure", "value", "target", "verdict"]


def render_markdown(
    sections: Sequence[Section],
    command: str,
    started: datetime,
    seconds: float,
    quick: bool,
    machine: dict[str, str],
) -> str:
    """The whole results document; `machine` as machine_info() told it before the run."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); see [README.md](README.md) for what each "
        "benchmark does and how to read it. Every figure is a median over interleaved rounds, and "
        "every judged figure is a ratio of two things measured side by side in the same run. "
        "Profiles and proposed fixes for any target not met: "
        "[docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')} (run took {seconds / 60:.1f} min)",
        f"- command: `{command}`" + (" (quick: smaller, fewer rounds)" if quick else ""),
        "",
        "## Machine",
        "",
        *_table(["what", "value"], [[k, v] for k, v in machine.items()]),
        "",
        "## Summary",
        "",
        *_table(SUMMARY_HEADERS, _summary_rows(sections)),
    ]
    for section in sections:
        lines += ["", f"## {section.number}. {section.title}", ""]
        for paragraph in section.method:
            lines += [paragraph, ""]
        lines += _table(section.headers, section.rows)
        for note in section.notes:
            lines += ["", note]
        for paragraph, headers, rows in section.extra:
            lines += ["", paragraph, "", *_table(headers, rows)]
    return "\n".join(lines) + "\n"


def _print_summary(sections: Sequence[Section]) -> None:
    rows = [SUMMARY_HEADERS, *_summary_rows(sections)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_HEADERS))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and fewer rounds, for development"
    )
    parser.add_argument(
        "--only",
        type=int,
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="N",
        help="run only these benchmarks (1 scrape, 2 mutations, 3 http, 4 churn, 5 memory, "
        "6 resilience, 7 client; Redis mode: 8 scrape, 9 http, 10 mutations, 11 memory, "
        "12 replicas)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the results (default: bench/results.md for a full run, "
        "bench/results-partial.md for --quick or --only)",
    )
    args = parser.parse_args(argv)
    # The manager logs each eviction as a warning; at capacity that is one line per create.
    # Keep the sidecar's log records out of the timings and the terminal.
    logging.getLogger("sidecar").setLevel(logging.ERROR)

    chosen = sorted(set(args.only or BENCHMARKS))
    if {3, 9, 12} & set(chosen) and shutil.which("wrk") is None:
        parser.error(
            "benchmarks 3, 9 and 12 need wrk (Debian: apt-get install wrk); "
            "or run the others with --only 1 2 4 5 6 7 8 10 11"
        )
    partial = args.quick or len(chosen) < len(BENCHMARKS)
    output: Path = args.output or (PARTIAL if partial else RESULTS)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.now(UTC)
    machine = machine_info()  # its load average is the one at the start, before any benchmark
    clock_start = time.perf_counter()
    sections = []
    for number in chosen:
        print(f"benchmark {number} ...", file=sys.stderr, flush=True)
        bench_start = time.perf_counter()
        sections.append(BENCHMARKS[number](args.quick, _log))
        _log(f"benchmark {number} took {time.perf_counter() - bench_start:.0f} s")
    seconds = time.perf_counter() - clock_start
    output.write_text(
        render_markdown(sections, command, started, seconds, args.quick, machine), encoding="utf-8"
    )
    print()
    _print_summary(sections)
    print(f"\nwritten to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
