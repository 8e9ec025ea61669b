"""Snapshots of states the demo's night does not show, on a small world with one result of each
status (ERROR, STALE and PENDING among them): the overview's red items at 80x24, a read-only
observer on a 200x50 wall screen, and the checks without colour. Every screen at 80x24 and
160x48 on the demo data: `test_snapshots_demo.py`.

Every time on screen comes from the room's FrozenClock and the results are fixed, so these are
pixel-stable. `snap_compare` runs its own event loop, so these are *sync* tests and the store is
opened (and closed) with `asyncio.run` around them. Update with `pytest --snapshot-update`, and
look at the SVGs before committing them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable, Iterator

import pytest
from textual.pilot import Pilot

from crmctl.clock import FrozenClock
from crmctl.control import ControlRoom
from crmctl.store import Store
from screens.app import CrmctlApp
from tests.ui.conftest import FAST, until
from tests.ui.world import ACTOR, NOW, build_config, fill_store, sample_results

SnapCompare = Callable[..., bool]


@pytest.fixture
def room(tmp_path: Path) -> Iterator[ControlRoom]:
    """A real room (no engine: snapshots run nothing) over the deterministic journal."""
    config = build_config(tmp_path)
    asyncio.run(fill_store(config.state, sample_results()))
    clock = FrozenClock(NOW)
    store = asyncio.run(Store.open(config.state, clock=clock))
    try:
        yield ControlRoom(config, store, None, actor=ACTOR, clock=clock)
    finally:
        asyncio.run(store.close())


def after_load(*keys: str) -> Callable[[Pilot[None]], object]:
    """A run_before that waits for the first journal read, then presses `keys`."""

    async def run_before(pilot: Pilot[None]) -> None:
        await until(lambda: pilot.app.snapshot.loaded)  # type: ignore[attr-defined]
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        # The detail loads its history in a worker; its height moves the scrollbar.
        await until(lambda: not [w for w in pilot.app.workers if w.group == "detail-history"])
        await pilot.pause()

    return run_before


def test_overview_80x24(snap_compare: SnapCompare, room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(room, **FAST), terminal_size=(80, 24), run_before=after_load())


def test_read_only_overview_200x50(snap_compare: SnapCompare, room: ControlRoom) -> None:
    observer = ControlRoom(room.config, room.store, None, actor=ACTOR, clock=room.clock, read_only=True)
    assert snap_compare(CrmctlApp(observer, **FAST), terminal_size=(200, 50), run_before=after_load())


def test_checks_no_color_80x24(snap_compare: SnapCompare, room: ControlRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    """With NO_COLOR, STALE, ERROR and BREACH still stand out: glyph, word and reverse video."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(CrmctlApp(room, **FAST), terminal_size=(80, 24), run_before=after_load("2"))
