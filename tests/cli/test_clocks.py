"""The demo's shifted clock and how `crmctl demo` resumes it after an earlier session."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from crmctl.runtime import journal_end as _journal_end
from crmctl.clock import FrozenClock, OffsetClock
from crmctl.identity import Actor
from crmctl.store import Store

NIGHT = datetime(2026, 11, 28, 21, 30, tzinfo=timezone.utc)


def test_offset_clock_starts_at_the_given_moment_and_ticks_with_its_base() -> None:
    base = FrozenClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    clock = OffsetClock(NIGHT, base)
    assert clock.now() == NIGHT
    base.advance(timedelta(minutes=5))
    assert clock.now() == NIGHT + timedelta(minutes=5)


def test_journal_end_lets_a_second_demo_session_continue_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    assert _journal_end(state).year == 1970

    async def write() -> None:
        async with await Store.open(state, clock=FrozenClock(NIGHT + timedelta(minutes=40))) as store:
            await store.append("note", {"text": "x"}, actor=Actor("a", "h"))

    asyncio.run(write())
    assert _journal_end(state) == NIGHT + timedelta(minutes=40)
    assert max(NIGHT, _journal_end(state)) > NIGHT
