"""TargetLimiter: concurrency cap, sliding budget, server back-off for everyone, deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest

from crmctl.connectors.errors import BudgetExhausted, DeadlineExceeded
from crmctl.connectors.limits import TargetLimiter


class VirtualClock:
    """Monotonic time that only moves when someone sleeps: a 300 s window tested in no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def test_concurrency_is_capped() -> None:
    limiter = TargetLimiter(3, 1000, 300.0)
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1

    await asyncio.gather(*(one() for _ in range(12)))
    assert peak == 3
    stats = limiter.stats()
    assert stats.requests == 12 and stats.max_in_flight == 3 and stats.in_flight == 0
    assert stats.waited_s > 0  # nine of them had to queue


async def test_sliding_window_budget_on_virtual_time() -> None:
    clock = VirtualClock()
    limiter = TargetLimiter(10, 5, 300.0, clock=clock)
    starts = []
    for _ in range(12):
        async with limiter.slot():
            starts.append(clock.now - 1000.0)
    # five at once, then each next start waits until the oldest start leaves the 300 s window
    assert starts[:5] == [0.0] * 5
    assert starts[5:10] == [300.0] * 5
    assert starts[10:] == [600.0] * 2
    for i, t in enumerate(starts):  # never more than 5 starts in any window (t-300, t]
        assert sum(1 for s in starts[: i + 1] if s > t - 300.0) <= 5
    assert limiter.stats().in_window == 2


async def test_sliding_window_budget_in_real_time() -> None:
    limiter = TargetLimiter(10, 3, 0.3)
    t0 = time.monotonic()
    times = []

    async def one() -> None:
        async with limiter.slot():
            times.append(time.monotonic() - t0)

    await asyncio.gather(*(one() for _ in range(5)))
    times.sort()
    assert max(times[:3]) < 0.1
    assert min(times[3:]) >= 0.3 - 0.005
    assert limiter.waited_s >= 0.5


async def test_defer_until_holds_every_caller() -> None:
    limiter = TargetLimiter(8, 1000, 300.0)
    resume = time.monotonic() + 0.4
    limiter.defer_until(resume)
    started: list[float] = []

    async def caller() -> None:
        async with limiter.slot():
            started.append(time.monotonic())

    await asyncio.gather(*(caller() for _ in range(6)))
    assert len(started) == 6
    assert min(started) >= resume
    assert limiter.throttled == 1


async def test_defer_extends_for_callers_already_waiting() -> None:
    limiter = TargetLimiter(8, 1000, 300.0)
    limiter.defer_until(time.monotonic() + 0.1)
    started: list[float] = []

    async def caller() -> None:
        async with limiter.slot():
            started.append(time.monotonic())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    later = time.monotonic() + 0.3  # a second 429 elsewhere pushes the back-off out
    limiter.defer_until(later)
    await task
    assert started[0] >= later


async def test_defer_never_moves_backwards() -> None:
    limiter = TargetLimiter(2, 10, 300.0)
    far = time.monotonic() + 60
    limiter.defer_until(far)
    limiter.defer_until(time.monotonic() + 1)
    assert limiter.deferred_until == far


async def test_backoff_past_deadline_is_refused_at_once() -> None:
    limiter = TargetLimiter(2, 1000, 300.0)
    limiter.defer_until(time.monotonic() + 30)
    t0 = time.monotonic()
    with pytest.raises(BudgetExhausted, match="back off"):
        async with limiter.slot(deadline=time.monotonic() + 5):
            pass
    assert time.monotonic() - t0 < 0.05
    assert limiter.stats().refused == 1 and limiter.requests == 0


async def test_budget_past_deadline_is_refused_at_once() -> None:
    clock = VirtualClock()
    limiter = TargetLimiter(4, 2, 300.0, clock=clock)
    for _ in range(2):
        async with limiter.slot():
            pass
    with pytest.raises(BudgetExhausted, match=r"request budget for Dynamics \(2 per 300 s\)"):
        async with limiter.slot(deadline=clock.now + 100):
            pass
    assert clock.sleeps == []  # refused without waiting in vain
    async with limiter.slot(deadline=clock.now + 400):  # a deadline that allows the wait
        pass
    assert clock.sleeps == [300.0]


async def test_deadline_already_passed() -> None:
    limiter = TargetLimiter(2, 10, 300.0)
    with pytest.raises(DeadlineExceeded):
        async with limiter.slot(deadline=time.monotonic() - 1):
            pass


async def test_concurrency_wait_stops_at_deadline() -> None:
    limiter = TargetLimiter(1, 100, 300.0)
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="1 connections"):
        async with limiter.slot(deadline=t0 + 0.15):
            pass
    assert 0.1 < time.monotonic() - t0 < 0.5
    release.set()
    await task
    async with limiter.slot(deadline=time.monotonic() + 1):  # the slot was not leaked
        pass
    assert limiter.stats().in_flight == 0


async def test_failed_body_releases_the_slot() -> None:
    limiter = TargetLimiter(1, 100, 300.0)
    with pytest.raises(RuntimeError):
        async with limiter.slot():
            raise RuntimeError("boom")
    async with limiter.slot(deadline=time.monotonic() + 0.5):
        pass


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        TargetLimiter(0, 10)
    with pytest.raises(ValueError):
        TargetLimiter(1, 0)
