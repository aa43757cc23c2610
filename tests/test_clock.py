"""Injected time: exact microsecond arithmetic and a manual clock that moves only when told."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sidecar.core.clock import EPOCH, ManualClock, SystemClock, to_micros


@pytest.mark.parametrize(
    ("moment", "micros"),
    [
        (EPOCH, 0),
        (EPOCH + timedelta(microseconds=1), 1),
        (EPOCH - timedelta(microseconds=1), -1),
        (datetime(2026, 1, 1, tzinfo=UTC), 1_767_225_600_000_000),
        (datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), 1_767_225_600_999_999),
        (datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))), 1_767_225_600_000_000),
    ],
)
def test_to_micros_is_exact_integer_microseconds(moment: datetime, micros: int) -> None:
    result = to_micros(moment)
    assert type(result) is int
    assert result == micros


def test_to_micros_keeps_one_microsecond_apart_far_from_the_epoch() -> None:
    # A float timestamp loses microseconds this far out; integer arithmetic must not.
    far = datetime(9999, 12, 31, 23, 59, 59, 999_998, tzinfo=UTC)
    assert to_micros(far + timedelta(microseconds=1)) - to_micros(far) == 1


def test_manual_clock_starts_at_2026_utc_by_default() -> None:
    assert ManualClock().now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_manual_clock_converts_its_start_to_utc() -> None:
    start = datetime(2026, 5, 1, 9, 0, tzinfo=timezone(timedelta(hours=-3)))
    now = ManualClock(start).now()
    assert now == start
    assert now.tzinfo is UTC


def test_manual_clock_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="aware"):
        ManualClock(datetime(2026, 1, 1))


def test_manual_clock_stands_still_until_advanced(clock: ManualClock) -> None:
    first = clock.now()
    assert clock.now() == first
    assert clock.now() == first


@pytest.mark.parametrize(
    ("seconds", "kwargs", "step"),
    [
        (1.5, {}, timedelta(seconds=1.5)),
        (0, {"microseconds": 1}, timedelta(microseconds=1)),
        (0, {"hours": 24}, timedelta(days=1)),
        (60, {"minutes": 1}, timedelta(minutes=2)),
        (0, {}, timedelta(0)),
    ],
)
def test_manual_clock_advances_by_seconds_and_timedelta_keywords(
    clock: ManualClock, seconds: float, kwargs: dict[str, float], step: timedelta
) -> None:
    start = clock.now()
    returned = clock.advance(seconds, **kwargs)
    assert returned == start + step
    assert clock.now() == start + step


@pytest.mark.parametrize(
    ("seconds", "kwargs"),
    [(-1, {}), (-0.000001, {}), (0, {"microseconds": -1}), (10, {"minutes": -1})],
)
def test_manual_clock_never_goes_backwards(
    clock: ManualClock, seconds: float, kwargs: dict[str, float]
) -> None:
    start = clock.now()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(seconds, **kwargs)
    assert clock.now() == start


def test_manual_clock_loses_no_advance_across_threads(clock: ManualClock) -> None:
    start = clock.now()
    threads, steps = 8, 500
    barrier = threading.Barrier(threads)

    def tick() -> None:
        barrier.wait(timeout=10)
        for _ in range(steps):
            clock.advance(microseconds=1)

    workers = [threading.Thread(target=tick) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert not any(worker.is_alive() for worker in workers)
    assert clock.now() - start == timedelta(microseconds=threads * steps)


def test_system_clock_tells_aware_utc_wall_time() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert before <= now <= after
