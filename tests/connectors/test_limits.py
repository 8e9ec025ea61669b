"""TargetLimiter: concurrency cap, sliding budget, server back-off for everyone, deadlines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from crmctl.connectors.errors import BudgetExhausted, DeadlineExceeded
from crmctl.connectors.limits import TargetLimiter, request_chain, request_owner


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


# -- fair admission between checks --------------------------------------------------------------


class Gate:
    """Holds every granted slot until released one at a time, recording the order of grants."""

    def __init__(self, limiter: TargetLimiter) -> None:
        self.limiter = limiter
        self.granted: list[str] = []
        self._releases: list[asyncio.Event] = []

    async def request(self, owner: str | None, label: str, *, by_context: bool = False) -> None:
        release = asyncio.Event()
        async with self.limiter.slot() if by_context else self.limiter.slot(owner=owner):
            self.granted.append(label)
            self._releases.append(release)
            await release.wait()

    async def release_oldest(self) -> None:
        """Ends the oldest request still holding a slot, then lets the loop hand the slot on."""
        self._releases.pop(0).set()
        await settle()


def spawn_as(owner: str, coro: Any) -> asyncio.Task[Any]:
    """Starts `coro` as a task of `owner`, the way the engine starts a check's run."""
    token = request_owner.set(owner)
    try:
        return asyncio.create_task(coro)
    finally:
        request_owner.reset(token)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_check_with_nothing_in_flight_goes_before_a_busy_one() -> None:
    # FIFO would serve the scan's four queued pages before the latency sample queued after them.
    limiter = TargetLimiter(2, 1000, 300.0)
    gate = Gate(limiter)
    tasks = [asyncio.create_task(gate.request("scan", f"scan-{i}")) for i in range(6)]
    await settle()
    assert gate.granted == ["scan-0", "scan-1"] and limiter.stats().waiting == 4
    tasks.append(asyncio.create_task(gate.request("latency", "latency-0")))
    await settle()
    await gate.release_oldest()
    assert gate.granted[-1] == "latency-0"
    while len(gate.granted) < 7:
        await gate.release_oldest()
    while gate._releases:
        await gate.release_oldest()
    await asyncio.gather(*tasks)
    assert gate.granted == ["scan-0", "scan-1", "latency-0", "scan-2", "scan-3", "scan-4", "scan-5"]
    assert limiter.stats().in_flight == 0 and limiter.stats().waiting == 0


async def test_waiting_checks_take_turns() -> None:
    # One connection; "a" queues all its requests first, then "b" and "c" queue theirs.
    limiter = TargetLimiter(1, 1000, 300.0)
    gate = Gate(limiter)
    tasks = [asyncio.create_task(gate.request("a", "a0"))]
    await settle()
    for owner, count in (("a", 3), ("b", 3), ("c", 3)):
        for i in range(count):
            tasks.append(asyncio.create_task(gate.request(owner, f"{owner}{i + (owner == 'a')}")))
    await settle()
    while len(gate.granted) < 10:
        await gate.release_oldest()
    await gate.release_oldest()
    await asyncio.gather(*tasks)
    # round-robin between owners, first come first served within each
    assert gate.granted == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2", "a3"]


async def test_the_owner_comes_from_the_context_the_engine_sets() -> None:
    limiter = TargetLimiter(1, 1000, 300.0)
    gate = Gate(limiter)
    tasks = [spawn_as("busy", gate.request("ignored", f"busy-{i}", by_context=True)) for i in range(4)]
    await settle()
    tasks.append(spawn_as("chain", gate.request("ignored", "chain-0", by_context=True)))
    await settle()
    await gate.release_oldest()
    assert gate.granted == ["busy-0", "chain-0"]
    while gate._releases or len(gate.granted) < 5:
        await gate.release_oldest()
    await asyncio.gather(*tasks)
    assert gate.granted == ["busy-0", "chain-0", "busy-1", "busy-2", "busy-3"]


async def test_among_equals_the_longest_chain_still_ahead_goes_first() -> None:
    # The start of a sweep: every check holds nothing. Without the chain, the latency check
    # (queued last, 20 samples in a row) would wait behind each scan's first page every time.
    limiter = TargetLimiter(1, 1000, 300.0)
    gate = Gate(limiter)
    tasks = [asyncio.create_task(gate.request("holder", "holder-0"))]
    await settle()

    async def chained(owner: str, label: str, chain: int) -> None:
        request_chain.set(chain)
        await gate.request(owner, label)

    for owner in ("scan-a", "scan-b"):
        tasks.append(asyncio.create_task(gate.request(owner, owner)))
    tasks.append(asyncio.create_task(chained("latency", "latency", 20)))
    tasks.append(asyncio.create_task(chained("orphans", "orphans", 2)))
    await settle()
    while len(gate.granted) < 5:
        before = len(gate.granted)
        await gate.release_oldest()  # a chain's connection is kept for it a moment (LEASE_S) first
        await wait_for(lambda: len(gate.granted) > before)
    await gate.release_oldest()
    await asyncio.gather(*tasks)
    assert gate.granted == ["holder-0", "latency", "orphans", "scan-a", "scan-b"]
    assert limiter.stats().waiting == 0 and not limiter._chain  # nothing kept for finished callers


async def test_a_chain_keeps_its_connection_for_its_next_request() -> None:
    # One connection, a scan waiting: between two samples of a chain the scan must not slip in,
    # or every sample would wait for a whole page; a chain that does not come back loses it.
    limiter = TargetLimiter(1, 1000, 300.0)
    gate = Gate(limiter)

    async def sample(label: str, ahead: int) -> None:
        request_chain.set(ahead)
        await gate.request("latency", label)

    first = asyncio.create_task(sample("latency-0", 3))
    await settle()
    scan = asyncio.create_task(gate.request("scan", "scan-0"))
    await settle()
    await gate.release_oldest()  # latency-0 ends; its chain has more ahead: the scan waits
    assert gate.granted == ["latency-0"] and limiter.stats().in_flight == 0
    second = asyncio.create_task(sample("latency-1", 2))
    await settle()
    assert gate.granted == ["latency-0", "latency-1"]  # straight onto the kept connection
    await gate.release_oldest()  # latency-1 ends; nobody comes back: after LEASE_S the scan goes
    await wait_for(lambda: gate.granted[-1] == "scan-0")
    await gate.release_oldest()
    await asyncio.gather(first, second, scan)
    assert limiter.stats().in_flight == 0 and not limiter._leases
    async with limiter.slot(deadline=time.monotonic() + 1):  # no connection was lost on the way
        pass


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    """Polls `condition` until true; the timeout only bounds a broken test, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_a_chain_does_not_overtake_a_check_with_nothing_in_flight() -> None:
    # Fewest held still comes first: a chain that already holds a connection (samples taken two
    # at a time) cannot crowd out a check that holds none.
    limiter = TargetLimiter(3, 1000, 300.0)
    gate = Gate(limiter)

    async def chained(label: str) -> None:
        request_chain.set(10)
        await gate.request("latency", label)

    tasks = [asyncio.create_task(chained("latency-0"))]
    tasks += [asyncio.create_task(gate.request("scan", f"scan-{i}")) for i in range(2)]
    await settle()
    tasks += [asyncio.create_task(chained("latency-1")), asyncio.create_task(gate.request("other", "other-0"))]
    await settle()
    await gate.release_oldest()  # latency-0 ends: latency holds 0 like other -> the chain first
    assert gate.granted[-1] == "latency-1"
    tasks.append(asyncio.create_task(chained("latency-2")))
    await settle()
    await gate.release_oldest()  # scan-0 ends: latency holds 1, other 0 -> other first
    assert gate.granted[-1] == "other-0"
    while gate._releases:
        await gate.release_oldest()
    await asyncio.gather(*tasks)
    assert gate.granted == ["latency-0", "scan-0", "scan-1", "latency-1", "other-0", "latency-2"]


async def test_a_cancelled_waiter_neither_holds_nor_loses_a_slot() -> None:
    limiter = TargetLimiter(1, 1000, 300.0)
    gate = Gate(limiter)
    first = asyncio.create_task(gate.request("a", "a0"))
    await settle()
    doomed = asyncio.create_task(gate.request("b", "b0"))
    later = asyncio.create_task(gate.request("c", "c0"))
    await settle()
    doomed.cancel()
    await settle()
    await gate.release_oldest()
    assert gate.granted == ["a0", "c0"]
    await gate.release_oldest()
    await asyncio.gather(first, later)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    stats = limiter.stats()
    assert stats.in_flight == 0 and stats.waiting == 0 and stats.requests == 2
    async with limiter.slot(deadline=time.monotonic() + 1):  # the connection was not leaked
        pass


async def test_fair_admission_keeps_the_deadline_and_the_backoff() -> None:
    limiter = TargetLimiter(1, 1000, 300.0)
    gate = Gate(limiter)
    holder = asyncio.create_task(gate.request("scan", "scan-0"))
    await settle()
    with pytest.raises(DeadlineExceeded):
        async with limiter.slot(deadline=time.monotonic() + 0.05, owner="latency"):
            pass
    assert limiter.stats().waiting == 0
    resume = time.monotonic() + 0.2
    limiter.defer_until(resume)  # a 429 while the scan holds the only connection
    started: list[float] = []

    async def sample() -> None:
        async with limiter.slot(owner="latency"):
            started.append(time.monotonic())

    waiter = asyncio.create_task(sample())
    await settle()
    await gate.release_oldest()
    await asyncio.gather(holder, waiter)
    assert started and started[0] >= resume  # admitted first, yet still held by the back-off
