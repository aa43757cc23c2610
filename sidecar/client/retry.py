"""When a call is tried again, and how long to wait first: pure decisions, no I/O.

Only calls that are safe to repeat are retried: GET, PUT and DELETE, and a POST that carries an
Idempotency-Key (the client sends one with every create). They are retried when no answer came
(a refused, reset or dropped connection, a timeout) and on 503 and 429, waiting an exponential
backoff with jitter, or the server's Retry-After when that is longer, as long as the wait ends
within the policy's total deadline. Both clients drive the same `Attempts`; they only differ in
how they sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.client.errors import (
    ProblemError,
    RemoteCapacityError,
    SidecarClientError,
    TransportError,
    UnavailableError,
)

__all__ = ["IDEMPOTENT_METHODS", "NO_RETRY", "Attempts", "RetryPolicy", "is_retryable", "may_retry"]

IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long a safe call is retried.

    The n-th wait (n from 1) is `backoff * multiplier ** (n - 1)`, at most `max_backoff`, with
    its upper `jitter` share drawn at random (1: anywhere from 0 to the full wait); a longer
    Retry-After replaces it. No wait may end past `deadline` seconds after the first try.
    """

    attempts: int = 4
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 5.0
    jitter: float = 0.5
    deadline: float = 20.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.deadline < 0 or self.multiplier < 1:
            raise ValueError("backoff, max_backoff and deadline must be >= 0, multiplier >= 1")

    def backoff_for(self, retry: int, draw: float) -> float:
        """The wait before retry number `retry` (1 is the first retry); `draw` is in [0, 1)."""
        full = min(self.backoff * self.multiplier ** (retry - 1), self.max_backoff)
        return full * (1 - self.jitter) + full * self.jitter * draw


NO_RETRY = RetryPolicy(attempts=1)


def may_retry(method: str, idempotency_key: str | None) -> bool:
    """True for calls that are safe to send twice: GET, PUT, DELETE, or a POST with a key."""
    return method in IDEMPOTENT_METHODS or (method == "POST" and idempotency_key is not None)


def is_retryable(error: SidecarClientError) -> bool:
    """True for the failures a repeat may cure: no answer, 503 and 429."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, ProblemError) and error.status in RETRY_STATUSES


class Attempts:
    """The retry state of one call: ask `wait_after(error)` after each failed try."""

    def __init__(
        self,
        policy: RetryPolicy,
        retryable: bool,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._retryable = retryable
        self._clock = clock
        self._draw = draw
        self._started = clock()
        self.tries = 1

    def wait_after(self, error: SidecarClientError) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise `error`."""
        policy = self._policy
        if not self._retryable or not is_retryable(error) or self.tries >= policy.attempts:
            return None
        wait = policy.backoff_for(self.tries, self._draw())
        if isinstance(error, UnavailableError | RemoteCapacityError) and error.retry_after:
            wait = max(wait, error.retry_after)
        if self._clock() - self._started + wait > policy.deadline:
            return None
        self.tries += 1
        return wait
