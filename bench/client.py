"""Benchmark 6: creates per second through SidecarClient against raw httpx.Client.post.

One real sidecar subprocess; both sides send `POST /api/v1/sessions` from the same threads over
the same connection pool (one httpx.HTTPTransport shared by both clients), each thread sending
one request of each in turn, so both meet the same load at every moment (on a shared machine
the load drifts faster than separate runs can average out). The raw side posts bytes
serialized once and only checks the status; the client also serializes the request, adds a
fresh Idempotency-Key, runs its retry bookkeeping and reads the answer into a
GenerationSession. The judged figure is the median over rounds of the client's rate over the
raw rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from bench.common import Figure, Log, Section, fmt, median
from bench.http_overhead import Server, free_port, sidecar_command
from sidecar.client import NO_RETRY, SidecarClient
from sidecar.core.models import GenerationRequest

TARGET_SHARE = 0.90
SENDERS = 4  # client threads, each with its requests in turn on the shared pool
MAX_SESSIONS = 1_000_000  # so no create evicts and both sides do the same work


def _paired_rates(
    first: Callable[[], None], second: Callable[[], None], seconds: float
) -> tuple[float, float]:
    """Requests per second of `first` and of `second`, sent in turn by SENDERS threads.

    Each thread alternates one request of each (swapping which goes first every time), so both
    meet the same load on the server and the machine at every moment; each side's rate is its
    requests over the time its own requests took, per thread.
    """
    spent = [[0.0, 0.0] for _ in range(SENDERS)]
    counts = [0] * SENDERS
    stop = threading.Event()
    clock = time.perf_counter

    def worker(i: int) -> None:
        times = spent[i]
        while not stop.is_set():
            flip = counts[i] % 2
            for side in (flip, 1 - flip):
                start = clock()
                (first, second)[side]()
                times[side] += clock() - start
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    total = sum(counts)
    rates = [total / (sum(t[side] for t in spent) / SENDERS) for side in (0, 1)]
    return rates[0], rates[1]


def run(quick: bool, log: Log) -> Section:
    rounds, seconds = (3, 1.0) if quick else (10, 2.0)
    request = GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)
    body = b'{"story_text":"A fox finds a lantern in the snow.","num_scenes":3}'
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    env = {"SIDECAR_MAX_SESSIONS": str(MAX_SESSIONS), "SIDECAR_LOG_LEVEL": "warning"}
    raw_rates: list[float] = []
    client_rates: list[float] = []
    with (
        Server("sidecar", sidecar_command(port), port, "/readyz", env),
        httpx.HTTPTransport(limits=limits) as pool,
        httpx.Client(base_url=url, transport=pool) as raw,
        SidecarClient(url, transport=pool, retry=NO_RETRY) as client,
    ):

        def post_raw() -> None:
            response = raw.post(
                "/api/v1/sessions", content=body, headers={"Content-Type": "application/json"}
            )
            if response.status_code != 201:
                raise RuntimeError(f"raw create answered {response.status_code}")

        def post_client() -> None:
            client.create_session(request)

        _paired_rates(post_raw, post_client, 0.5)  # warm up: connections open, code hot
        for _ in range(rounds):
            raw_rate, client_rate = _paired_rates(post_raw, post_client, seconds)
            raw_rates.append(raw_rate)
            client_rates.append(client_rate)
        log(f"{rounds} rounds: raw {median(raw_rates):.0f}/s, client {median(client_rates):.0f}/s")
    shares = [c / r for c, r in zip(client_rates, raw_rates, strict=True)]
    share = median(shares)
    return Section(
        number=7,
        title="Client overhead",
        method=[
            __doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
            f"{SENDERS} threads, {rounds} rounds of {seconds:g} s, sidecar with "
            f"max_sessions {MAX_SESSIONS:,} (no evictions), default 8 waitress threads.",
        ],
        headers=["rounds", "raw httpx creates/s", "SidecarClient creates/s", "client / raw"],
        rows=[
            ["median", fmt(median(raw_rates)), fmt(median(client_rates)), f"{share:.1%}"],
            ["lowest round", "", "", f"{min(shares):.1%}"],
            ["highest round", "", "", f"{max(shares):.1%}"],
        ],
        figures=[
            Figure(
                "creates/s through SidecarClient over raw httpx.Client.post",
                f"{share:.1%}",
                f">= {TARGET_SHARE:.0%}",
                share >= TARGET_SHARE,
            )
        ],
    )
