"""Service protection per client token: requests, execution time, concurrency, Retry-After."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from crmctl.emulator.errors import CODE_CONCURRENCY, CODE_EXECUTION, CODE_REQUESTS, ApiError


@dataclass(frozen=True)
class ThrottleLimits:
    """Dataverse's per-user, per-web-server defaults (dataverse.md §5); tests shrink them."""

    requests: int = 6000
    window_s: float = 300
    execution_ms: int = 1_200_000
    concurrency: int = 52

    def requests_message(self) -> str:
        return (
            f"Number of requests exceeded the limit of {self.requests} over time window of "
            f"{_num(self.window_s)} seconds."
        )

    def execution_message(self) -> str:
        # The documented text has two spaces before "milliseconds"; kept verbatim.
        return (
            f"Combined execution time of incoming requests exceeded limit of "
            f"{self.execution_ms:,}  milliseconds over time window of {_num(self.window_s)} "
            "seconds. Decrease number of concurrent requests or reduce the duration of "
            "requests and try again later."
        )

    def concurrency_message(self) -> str:
        return f"Number of concurrent requests exceeded the limit of {self.concurrency}."


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def throttle_message(limits: ThrottleLimits, code: str) -> str:
    """The exact documented message for one of the three service protection codes."""
    return {
        CODE_REQUESTS: limits.requests_message(),
        CODE_EXECUTION: limits.execution_message(),
        CODE_CONCURRENCY: limits.concurrency_message(),
    }[code]


def too_many_requests(code: str, message: str, retry_after_s: int) -> ApiError:
    """A 429 with an integer-seconds Retry-After, as the Web API sends it."""
    return ApiError(429, code, message, {"Retry-After": str(max(1, int(retry_after_s)))})


@dataclass
class _Client:
    requests: deque[float] = field(default_factory=deque)
    executions: deque[tuple[float, float]] = field(default_factory=deque)
    execution_total_ms: float = 0.0
    in_flight: int = 0
    retry_after_until: float | None = None
    retry_after_issued: float | None = None
    last_code: str = CODE_REQUESTS
    last_message: str = ""


@dataclass(frozen=True)
class RetryAfterState:
    """The Retry-After a client was last given: when it was issued and when it expires."""

    issued: datetime
    until: datetime


class Throttle:
    """Admits or refuses requests per client; all times come from the emulator's clock."""

    def __init__(self, limits: ThrottleLimits) -> None:
        self.limits = limits
        self._clients: dict[str, _Client] = {}

    def _client(self, client: str) -> _Client:
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client()
        return state

    def _prune(self, state: _Client, now: float) -> None:
        horizon = now - self.limits.window_s
        while state.requests and state.requests[0] <= horizon:
            state.requests.popleft()
        while state.executions and state.executions[0][0] <= horizon:
            _, ms = state.executions.popleft()
            state.execution_total_ms -= ms

    def retry_after(self, client: str) -> RetryAfterState | None:
        """The Retry-After currently or last in force for `client`, if any was ever given."""
        state = self._clients.get(client)
        if state is None or state.retry_after_until is None or state.retry_after_issued is None:
            return None
        return RetryAfterState(
            issued=datetime.fromtimestamp(state.retry_after_issued, tz=timezone.utc),
            until=datetime.fromtimestamp(state.retry_after_until, tz=timezone.utc),
        )

    def impose(self, client: str, now: datetime, seconds: int, code: str, message: str) -> ApiError:
        """Records and returns a 429 for `client` (used by the limits and by throttle storms)."""
        state = self._client(client)
        t = now.timestamp()
        seconds = max(1, int(seconds))
        state.retry_after_issued = t
        state.retry_after_until = t + seconds
        state.last_code = code
        state.last_message = message
        return too_many_requests(code, message, seconds)

    def in_force(self, client: str, now: datetime) -> ApiError | None:
        """The 429 to repeat (with the seconds left) while a given Retry-After still runs."""
        state = self._clients.get(client)
        if state is None or state.retry_after_until is None:
            return None
        t = now.timestamp()
        if t >= state.retry_after_until:
            return None
        left = math.ceil(state.retry_after_until - t)
        return too_many_requests(state.last_code, state.last_message, left)

    def admit(self, client: str, now: datetime) -> ApiError | None:
        """Counts the request in, or returns the 429 to send; a refusal is not counted.

        A client still inside a Retry-After it was given is refused again with the time left:
        the real service keeps refusing while its window stays exceeded.
        """
        refusal = self.in_force(client, now)
        if refusal is not None:
            return refusal
        state = self._client(client)
        t = now.timestamp()
        self._prune(state, t)
        lim = self.limits
        if state.in_flight >= lim.concurrency:
            return self.impose(client, now, 1, CODE_CONCURRENCY, lim.concurrency_message())
        if len(state.requests) >= lim.requests:
            wait = state.requests[0] + lim.window_s - t
            return self.impose(client, now, math.ceil(wait), CODE_REQUESTS, lim.requests_message())
        if state.execution_total_ms > lim.execution_ms:
            excess = state.execution_total_ms - lim.execution_ms
            freed = 0.0
            wait = lim.window_s
            for end, ms in state.executions:
                freed += ms
                if freed >= excess:
                    wait = end + lim.window_s - t
                    break
            return self.impose(
                client, now, math.ceil(wait), CODE_EXECUTION, lim.execution_message()
            )
        state.requests.append(t)
        state.in_flight += 1
        return None

    def finish(self, client: str, now: datetime, duration_ms: float) -> None:
        """Releases an admitted request and charges its execution time to the window."""
        state = self._client(client)
        state.in_flight = max(0, state.in_flight - 1)
        state.executions.append((now.timestamp(), duration_ms))
        state.execution_total_ms += duration_ms

    def remaining(self, client: str, now: datetime) -> tuple[int, float]:
        """(requests left, execution ms left) in the window: the debug rate-limit headers."""
        state = self._client(client)
        self._prune(state, now.timestamp())
        return (
            max(0, self.limits.requests - len(state.requests)),
            max(0.0, self.limits.execution_ms - state.execution_total_ms),
        )
