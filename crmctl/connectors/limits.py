"""One request budget and concurrency limit per target, shared by every check that talks to it.

Dataverse's service protection limits are per user and per web server: 6000 requests in a
sliding 5-minute window and 52 concurrent requests, answered with 429 + Retry-After when crossed.
crmctl runs many checks at once under one application user, so the limits must be enforced in
one place for the whole target, not per check; and once the server says "back off", *every*
caller has to wait, otherwise the next check's request extends the penalty for everybody.

Admission is fair between checks, not first come, first served. A check that must ask one
request after another (20 latency samples; a parent map, then the child merge) would otherwise
queue behind every page of every range scan at each step, and a sweep would end with its
longest chain rather than when the work is done. Each waiting request belongs to a caller (the
check that sends it: `request_owner`, set by the engine per check run, or `slot(owner=...)`);
a freed connection goes to the caller with the fewest requests in flight, ties to the one
served longest ago, and within one caller first come, first served. A check with nothing in
flight therefore never waits behind a check that already has a request on the wire.

Among callers holding equally many, the one with the longest chain still ahead goes first
(`request_chain`: how many requests it must still send one after another, declared by the
check). That is critical-path-first list scheduling: at the start of a sweep every check holds
nothing, and a latency check with 20 samples to take in a row would otherwise wait its turn
behind every other check's first page, again and again, and the sweep would end with it.
For the same reason a caller with more of its chain ahead keeps its connection for a moment
(`LEASE_S`) after each request: its next one follows as soon as the answer is read, and would
otherwise wait for some other request on the wire to end first, at every link of the chain.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from crmctl.connectors.errors import BudgetExhausted, DeadlineExceeded

request_owner: ContextVar[str | None] = ContextVar("crmctl_request_owner", default=None)
"""Who the requests sent from this context belong to (a check id), for fair admission.

The engine sets it around each check run's task, so every request the check sends, from any
task it starts, is counted as that check's. Requests sent outside a check (probes, the CLI)
belong to no one and share one turn.
"""

request_chain: ContextVar[int] = ContextVar("crmctl_request_chain", default=0)
"""How many requests the current caller must still send one after another (its critical path).

A check that can only go one request at a time (api_latency's samples) sets it before each
request; ties in fair admission go to the longest remaining chain. 0 (the default) claims
nothing: a scan whose pages go out in parallel does not need to.
"""


LEASE_S = 0.05
"""How long a connection waits for its chain's next request before it goes to someone else."""


class MonotonicClock(Protocol):
    """Monotonic seconds and a way to sleep on them; deadlines are expressed in this time base."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemMonotonic:
    """`time.monotonic()` and `asyncio.sleep`: the time base of every deadline in crmctl."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of a limiter's counters, for benchmarks and the health screen."""

    requests: int
    """Slots granted, i.e. requests started through this limiter."""
    throttled: int
    """How many times the server said 429 (calls to `defer_until`)."""
    waited_s: float
    """Total time callers spent waiting for a slot (concurrency, budget and back-off)."""
    refused: int
    """Slots refused with BudgetExhausted / DeadlineExceeded."""
    in_flight: int
    max_in_flight: int
    in_window: int
    """Requests started within the current sliding window."""
    waiting: int = 0
    """Callers queued for a connection right now."""


class TargetLimiter:
    """Concurrency cap + sliding-window request budget + server back-off for one target.

    Args:
        concurrency: At most this many requests in flight at once.
        requests_per_window: At most this many requests may *start* within any `window_s` span.
        window_s: Length of the sliding window (Dataverse: 300 s).
        clock: Monotonic time source; deadlines passed to `slot()` are in its time base
            (`time.monotonic()` by default).
        name: How the target is named in error sentences.

    Use ``async with limiter.slot(deadline): <send one request>``; call `defer_until` when the
    server answers 429 so that no request to the target starts before the Retry-After expires.
    """

    def __init__(
        self,
        concurrency: int,
        requests_per_window: int,
        window_s: float = 300.0,
        *,
        clock: MonotonicClock | None = None,
        name: str = "Dynamics",
    ) -> None:
        if concurrency < 1 or requests_per_window < 1 or window_s <= 0:
            raise ValueError("concurrency and requests_per_window must be >= 1 and window_s > 0")
        self.concurrency = concurrency
        self.requests_per_window = requests_per_window
        self.window_s = window_s
        self.clock: MonotonicClock = clock or SystemMonotonic()
        self.name = name
        self._free = concurrency
        """Connections not held by anyone (and not yet handed to a waiter)."""
        self._queues: dict[str | None, deque[asyncio.Future[None]]] = {}
        """Waiters per owner, oldest first; an owner is present only while it has waiters."""
        self._held: dict[str | None, int] = {}
        """Connections held per owner (handed over, not yet released)."""
        self._leases: dict[str | None, list[asyncio.TimerHandle]] = {}
        """Connections kept for a chain's next request (still counted as held by its owner)."""
        self._chain: dict[str | None, int] = {}
        """Per waiting owner, the chain it declared when it last queued (`request_chain`)."""
        self._served_at: dict[str | None, float] = {}
        """Per owner, the admission tick of its latest grant (or of joining the queue): ties go
        to the least recent, so owners holding equally many connections take turns."""
        self._tick = 0
        self._starts: deque[float] = deque()
        self._defer_until = float("-inf")
        self._requests = 0
        self._throttled = 0
        self._waited = 0.0
        self._refused = 0
        self._in_flight = 0
        self._max_in_flight = 0

    # -- public API -----------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, deadline: float | None = None, *, owner: str | None = None) -> AsyncIterator[None]:
        """Holds one concurrency slot and one request of the budget for the body of the block.

        `owner` names the caller for fair admission (default: `request_owner` of the current
        context, i.e. the running check).

        Raises:
            DeadlineExceeded: the deadline has passed, or passed while waiting for a free slot.
            BudgetExhausted: the budget or a server back-off would keep us waiting past the
                deadline; raised as soon as that is known, never after waiting in vain.
        """
        who = owner if owner is not None else request_owner.get()
        chain = request_chain.get()
        t0 = self.clock.monotonic()
        try:
            self._refuse_if_hopeless(deadline, t0)
            await self._acquire_concurrency(deadline, who, chain)
        except BaseException:
            self._waited += self.clock.monotonic() - t0
            raise
        try:
            await self._acquire_budget(deadline)
        except BaseException:
            self._release(who)
            self._waited += self.clock.monotonic() - t0
            raise
        self._waited += self.clock.monotonic() - t0
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            if chain > 1 and who is not None:
                self._lease(who)
            else:
                self._release(who)

    def defer_until(self, monotonic_ts: float) -> None:
        """After a 429: no request to this target starts before `monotonic_ts` (for every caller)."""
        self._throttled += 1
        self._defer_until = max(self._defer_until, monotonic_ts)

    def deadline_after(self, seconds: float) -> float:
        """A deadline `seconds` from now in this limiter's time base."""
        return self.clock.monotonic() + seconds

    @property
    def deferred_until(self) -> float | None:
        """The active back-off's end, or None when requests may start now."""
        return self._defer_until if self._defer_until > self.clock.monotonic() else None

    @property
    def requests(self) -> int:
        return self._requests

    @property
    def throttled(self) -> int:
        return self._throttled

    @property
    def waited_s(self) -> float:
        return self._waited

    def stats(self) -> LimiterStats:
        now = self.clock.monotonic()
        self._purge(now)
        return LimiterStats(
            requests=self._requests,
            throttled=self._throttled,
            waited_s=self._waited,
            refused=self._refused,
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            in_window=len(self._starts),
            waiting=sum(len(q) for q in self._queues.values()),
        )

    # -- internals ------------------------------------------------------------------------

    def _purge(self, now: float) -> None:
        horizon = now - self.window_s
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()

    def _earliest_start(self, now: float) -> tuple[float, str | None]:
        """When the next request could start, and what holds it back ("backoff", "budget")."""
        self._purge(now)
        start, reason = now, None
        if self._defer_until > start:
            start, reason = self._defer_until, "backoff"
        if len(self._starts) >= self.requests_per_window:
            # The request may start once the budget-th most recent start leaves the window.
            free_at = self._starts[-self.requests_per_window] + self.window_s
            if free_at > start:
                start, reason = free_at, "budget"
        return start, reason

    def _refuse_if_hopeless(self, deadline: float | None, now: float) -> None:
        if deadline is None:
            return
        if now >= deadline:
            self._refused += 1
            raise DeadlineExceeded(f"The check's deadline passed before its next request to {self.name} could start.")
        start, reason = self._earliest_start(now)
        if start > deadline:
            self._refused += 1
            raise BudgetExhausted(self._hopeless_sentence(reason, start - now))

    def _hopeless_sentence(self, reason: str | None, wait: float) -> str:
        if reason == "backoff":
            return (
                f"{self.name} asked crmctl to back off for another {wait:.0f} s (429 Retry-After), "
                "which is past this check's deadline."
            )
        return (
            f"The request budget for {self.name} ({self.requests_per_window} per {self.window_s:g} s) "
            f"is spent for another {wait:.0f} s, which is past this check's deadline."
        )

    async def _acquire_concurrency(self, deadline: float | None, owner: str | None, chain: int = 0) -> None:
        kept = self._leases.get(owner)
        if kept:  # a connection kept for this chain: it is still counted as held by the owner
            kept.pop(0).cancel()
            if not kept:
                del self._leases[owner]
            self._tick += 1
            self._served_at[owner] = self._tick
            return
        if self._free > 0 and not self._queues:
            self._grant(owner)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chain[owner] = chain
        if owner not in self._served_at:
            # A caller new to the rotation goes behind those waiting since before the latest
            # grant, but ahead of the owner of that grant: it has just had its turn.
            self._served_at[owner] = self._tick - 0.5
        self._queues.setdefault(owner, deque()).append(waiter)
        self._dispatch()  # a connection may be free (e.g. all waiters before us were cancelled)
        try:
            if deadline is None:
                await waiter
                return
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release(owner)  # granted just as we gave up: hand it on
            else:
                waiter.cancel()
                self._forget(owner, waiter)
            if isinstance(exc, TimeoutError):
                self._refused += 1
                raise DeadlineExceeded(
                    f"The check's deadline passed while waiting for one of the {self.concurrency} "
                    f"connections to {self.name}."
                ) from None
            raise

    def _grant(self, owner: str | None) -> None:
        self._free -= 1
        self._held[owner] = self._held.get(owner, 0) + 1
        self._tick += 1
        self._served_at[owner] = self._tick

    def _lease(self, owner: str | None) -> None:
        """Keeps the owner's connection for its next request for up to `LEASE_S`, then hands it on."""
        queue = self._queues.get(owner)
        while queue:  # the chain's next request is already waiting: the connection goes straight to it
            waiter = queue.popleft()
            if not queue:
                del self._queues[owner]
                self._chain.pop(owner, None)
            if not waiter.done():
                waiter.set_result(None)
                self._tick += 1
                self._served_at[owner] = self._tick
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._release(owner)
            return
        kept = self._leases.setdefault(owner, [])
        handle: asyncio.TimerHandle = loop.call_later(LEASE_S, lambda: self._end_lease(owner, handle))
        kept.append(handle)

    def _end_lease(self, owner: str | None, handle: asyncio.TimerHandle) -> None:
        """The chain did not come back in time: its connection goes to whoever waits."""
        kept = self._leases.get(owner)
        if kept is None or handle not in kept:
            return
        kept.remove(handle)
        if not kept:
            del self._leases[owner]
        self._release(owner)

    def _release(self, owner: str | None) -> None:
        held = self._held.get(owner, 0) - 1
        if held > 0:
            self._held[owner] = held
        else:
            self._held.pop(owner, None)
            if owner not in self._queues:
                self._served_at.pop(owner, None)  # forget finished callers: memory stays bounded
        self._free += 1
        self._dispatch()

    def _forget(self, owner: str | None, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(owner)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            pass
        if not queue:
            del self._queues[owner]
            self._chain.pop(owner, None)
            if owner not in self._held:
                self._served_at.pop(owner, None)

    def _next_owner(self) -> str | None:
        """The waiting owner with the fewest connections held; ties: the longest chain still ahead,
        then the one served longest ago."""
        return min(
            self._queues,
            key=lambda o: (self._held.get(o, 0), -self._chain.get(o, 0), self._served_at.get(o, 0)),
        )

    def _dispatch(self) -> None:
        """Hands free connections to waiters, fairest first (see the module docstring)."""
        while self._free > 0 and self._queues:
            owner = self._next_owner()
            queue = self._queues[owner]
            waiter = queue.popleft()
            if not queue:
                del self._queues[owner]
                self._chain.pop(owner, None)
            if waiter.done():  # cancelled while queued: skip it, and forget an owner left idle
                if owner not in self._queues and owner not in self._held:
                    self._served_at.pop(owner, None)
                continue
            waiter.set_result(None)
            self._grant(owner)

    async def _acquire_budget(self, deadline: float | None) -> None:
        # Re-evaluated after every sleep: another caller may have taken the freed request, or a
        # 429 elsewhere may have pushed the back-off further out in the meantime.
        while True:
            now = self.clock.monotonic()
            start, reason = self._earliest_start(now)
            if start <= now:
                self._starts.append(now)
                self._requests += 1
                return
            if deadline is not None and start > deadline:
                self._refused += 1
                raise BudgetExhausted(self._hopeless_sentence(reason, start - now))
            await self.clock.sleep(start - now)

    def __repr__(self) -> str:
        return (
            f"TargetLimiter({self.name!r}, concurrency={self.concurrency}, "
            f"requests_per_window={self.requests_per_window}, window_s={self.window_s:g})"
        )
