"""Injectable clocks, so that timers, staleness and snapshots can be tested on a frozen time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """Tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FrozenClock:
    """A clock that only moves when told to: for tests and snapshots."""

    def __init__(self, at: datetime) -> None:
        self._at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        """Moves the frozen time forward by `delta`."""
        self._at += delta


class OffsetClock:
    """Wall-clock time shifted so that it reads `start_at` at construction, then ticks in real time.

    Rehearsals and the demo replay a cutover night whose timeline (freeze, watermark, point of
    no return) is fixed in the data; shifting the clock keeps that story consistent on any day.
    """

    def __init__(self, start_at: datetime, base: Clock | None = None) -> None:
        self._base = base or SystemClock()
        self._offset = start_at - self._base.now()

    def now(self) -> datetime:
        return self._base.now() + self._offset
