"""A traffic simulator: plays a story-to-scene generation service against a running sidecar.

Each simulated generation is created, moved to processing, reports progress and one scene per
step, and then completes or fails; a share is left stuck in processing. The run stops by itself
after `duration` seconds of creating plus a bounded grace for jobs already started.
Only the standard library is used, so the simulator ships with the sidecar.
"""

from __future__ import annotations

import heapq
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.tokens import TOKEN_CHARACTERS, sendable_token

__all__ = ["SimulationConfig", "SimulationReport", "Simulator", "SimulatorError"]

STORIES = (
    "A lighthouse keeper adopts a gull that can read the weather.",
    "Two rival bakers must share one oven during a city-wide blackout.",
    "A cartographer discovers a street that appears only on Tuesdays.",
    "An old robot teaches a village to grow tea on the moon.",
    "A girl trades her shadow for a map of the sea floor.",
)
MEDIA_TYPES = ("cinematic", "anime", "comic", "storybook", "photorealistic", "watercolor")


class SimulatorError(Exception):
    """The sidecar could not be reached or answered in a way the simulator cannot go on from."""


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate; `validate` explains the first bad value."""

    url: str
    rate: float = 2.0  # new sessions per second
    failure_ratio: float = 0.1
    stuck_ratio: float = 0.05
    duration: float = 60.0  # seconds of creating new sessions
    step_seconds: float = 0.5  # time between two updates of one session
    token: str | None = None
    seed: int | None = None
    timeout: float = 5.0

    def validate(self) -> None:
        example = "an http(s) URL such as http://127.0.0.1:8000"
        try:
            parts = urllib.parse.urlsplit(self.url)
            parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
        except ValueError as exc:
            raise ValueError(f"--url must be {example}, not {self.url!r} ({exc})") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"--url must be {example}, not {self.url!r}")
        if self.token and not sendable_token(self.token):
            # The token is not repeated: it goes into a header, and into no message.
            raise ValueError(f"the API token must be {TOKEN_CHARACTERS}")
        if not 0 < self.rate <= 10_000:
            raise ValueError(f"--rate must be above 0 and at most 10000, not {self.rate}")
        for name, ratio in (
            ("--failure-ratio", self.failure_ratio),
            ("--stuck-ratio", self.stuck_ratio),
        ):
            if not 0 <= ratio <= 1:
                raise ValueError(f"{name} must be between 0 and 1, not {ratio}")
        if self.failure_ratio + self.stuck_ratio > 1:
            raise ValueError("--failure-ratio plus --stuck-ratio must not exceed 1")
        if not 0 < self.duration <= 7 * 86400:
            raise ValueError(f"--duration must be above 0 and at most a week, not {self.duration}")
        if not 0 < self.timeout <= 300:
            raise ValueError(f"--timeout must be above 0 and at most 300, not {self.timeout}")
        if not 0 < self.step_seconds <= 3600:
            raise ValueError(
                f"--step-seconds must be above 0 and at most 3600, not {self.step_seconds}"
            )


@dataclass(slots=True)
class SimulationReport:
    """What happened, counted by the simulator's side."""

    created: int = 0
    completed: int = 0
    failed: int = 0
    stuck: int = 0
    abandoned: int = 0  # jobs still open when the grace period ended
    http_errors: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "completed": self.completed,
            "failed": self.failed,
            "stuck": self.stuck,
            "abandoned": self.abandoned,
            "http_errors": {str(k): v for k, v in sorted(self.http_errors.items())},
        }


@dataclass(slots=True)
class _Job:
    session_id: str
    num_scenes: int
    fate: str  # completed, failed or stuck
    step: int = 0


class _Client:
    """One keep-alive connection to the sidecar."""

    def __init__(self, config: SimulationConfig) -> None:
        parts = urllib.parse.urlsplit(config.url)
        conn_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        # An explicit port: http.client would read the last group of a bare IPv6 host as one.
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._conn = conn_class(parts.hostname or "127.0.0.1", port, timeout=config.timeout)
        self._base = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        # A kept-alive connection the server closed is retried once, but only for idempotent
        # requests: a POST that may have arrived must not create a second session.
        attempts = 1 if method == "POST" else 2
        for attempt in range(1, attempts + 1):
            try:
                self._conn.request(method, self._base + path, body=payload, headers=self._headers)
                response = self._conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self._conn.close()
                if attempt == attempts:
                    raise SimulatorError(f"cannot reach the sidecar: {exc}") from exc
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return response.status, data

    def close(self) -> None:
        self._conn.close()


class Simulator:
    """Runs one simulation; `stop()` may be called from another thread (a signal handler)."""

    def __init__(
        self,
        config: SimulationConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        config.validate()
        self._config = config
        self._random = random.Random(config.seed)
        self._monotonic = monotonic
        self._stop = threading.Event()
        self.report = SimulationReport()

    def stop(self) -> None:
        self._stop.set()

    def _fate(self) -> str:
        draw = self._random.random()
        if draw < self._config.failure_ratio:
            return "failed"
        if draw < self._config.failure_ratio + self._config.stuck_ratio:
            return "stuck"
        return "completed"

    def _expect(self, status: int, wanted: tuple[int, ...]) -> bool:
        if status in wanted:
            return True
        self.report.http_errors[status] += 1
        if status in (401, 403):
            raise SimulatorError(f"the sidecar refused the token (HTTP {status}); pass --token")
        return False

    def _create(self, client: _Client) -> _Job | None:
        num_scenes = self._random.randint(2, 6)
        body = {
            "story_text": self._random.choice(STORIES),
            "media_type": self._random.choice(MEDIA_TYPES),
            "num_scenes": num_scenes,
        }
        status, data = client.call("POST", "/api/v1/sessions", body)
        if not self._expect(status, (201,)) or not isinstance(data, dict):
            return None
        self.report.created += 1
        return _Job(str(data["session_id"]), num_scenes, self._fate())

    def _advance(self, client: _Client, job: _Job) -> bool:
        """One step of a job; True while it has more steps to take."""
        path = f"/api/v1/sessions/{job.session_id}"
        if job.step == 0:
            status, _ = client.call("PUT", f"{path}/status", {"status": "processing"})
            if not self._expect(status, (200,)):
                return False
            if job.fate == "stuck":
                self.report.stuck += 1
                return False  # left in processing, never updated again
        elif job.step <= job.num_scenes:
            n = job.step
            if job.fate == "failed" and n > job.num_scenes // 2:
                status, _ = client.call(
                    "PUT",
                    f"{path}/status",
                    {"status": "failed", "error_message": "simulated model error"},
                )
                if self._expect(status, (200,)):
                    self.report.failed += 1
                return False
            status, _ = client.call(
                "PUT",
                f"{path}/progress",
                {"current_step": n, "total_steps": job.num_scenes, "description": f"scene {n}"},
            )
            if not self._expect(status, (200,)):
                return False
            status, _ = client.call(
                "PUT",
                f"{path}/scenes/{n}",
                {
                    "scene_number": n,
                    "prompt": f"Scene {n}: wide shot, soft morning light",
                    "title": f"Scene {n}",
                },
            )
            if not self._expect(status, (200, 201)):
                return False
        else:
            status, _ = client.call("PUT", f"{path}/status", {"status": "completed"})
            if self._expect(status, (200,)):
                self.report.completed += 1
            return False
        job.step += 1
        return True

    def run(self) -> SimulationReport:
        """Create sessions at `rate` for `duration` seconds, then let open jobs finish briefly."""
        cfg = self._config
        client = _Client(cfg)
        start = self._monotonic()
        stop_creating = start + cfg.duration
        grace_end = stop_creating + cfg.step_seconds * 8 + 1
        queue: list[tuple[float, int, _Job | None]] = [(start, 0, None)]  # None: create next
        order = 1
        slots = 0  # creates scheduled so far; each due time is computed, not accumulated
        try:
            while queue and not self._stop.is_set():
                due, _, job = queue[0]
                now = self._monotonic()
                if now > grace_end:
                    break
                if due > now:
                    self._stop.wait(min(due - now, 0.5))
                    continue
                heapq.heappop(queue)
                if job is None:
                    if due < stop_creating:
                        new = self._create(client)
                        if new is not None:
                            heapq.heappush(queue, (due + cfg.step_seconds, order, new))
                            order += 1
                        slots += 1
                        heapq.heappush(queue, (start + slots / cfg.rate, order, None))
                        order += 1
                elif self._advance(client, job):
                    heapq.heappush(queue, (due + cfg.step_seconds, order, job))
                    order += 1
        finally:
            client.close()
        self.report.abandoned = sum(1 for _, _, j in queue if j is not None)
        return self.report
