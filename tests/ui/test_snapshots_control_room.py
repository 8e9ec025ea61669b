"""Snapshots of mode 5 (integrations, with trends), time travel and running checks,
at 80x24 (SSH, tmux) and 160x48 (wall screen), on the integration world with a frozen clock.

Sync tests (snap_compare runs its own loop). Update with `pytest --snapshot-update` and look at
the SVGs (e.g. `chromium --headless --screenshot=x.png file://…svg`) before keeping them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from crmctl.checking import CheckProgress
from crmctl.clock import FrozenClock
from crmctl.control import ControlRoom
from crmctl.store import Store
from screens.app import CrmctlApp
from tests.ui.conftest import FAST, until
from tests.ui.integration_world import build_integration_config, fill_store_timed, integration_results
from tests.ui.world import ACTOR, NOW

SnapCompare = Callable[..., bool]


@pytest.fixture
def room(tmp_path: Path) -> Iterator[ControlRoom]:
    """A real room (no engine) over the integration world's journal."""
    config = build_integration_config(tmp_path)
    asyncio.run(fill_store_timed(config.state, integration_results()))
    clock = FrozenClock(NOW)
    store = asyncio.run(Store.open(config.state, clock=clock))
    try:
        yield ControlRoom(config, store, None, actor=ACTOR, clock=clock)
    finally:
        asyncio.run(store.close())


def steps(*keys: str, typed: str | None = None, then: tuple[str, ...] = ()) -> Callable[[Pilot[None]], object]:
    """A run_before: wait for the journal, press `keys`, optionally type into the focused Input
    and press `then`, then wait until every worker (history, trends, moments) has finished."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        await until(lambda: app.snapshot.loaded)  # type: ignore[attr-defined]
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        if typed is not None:
            app.screen.query_one(Input).value = typed
        if then:
            await pilot.press(*then)
        await until(lambda: not [w for w in app.workers if w.group != "journal" and w.is_running])
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()

    return run_before


def app_for(room: ControlRoom) -> CrmctlApp:
    return CrmctlApp(room, **FAST)


def test_integrations_80x24(snap_compare: SnapCompare, room: ControlRoom) -> None:
    assert snap_compare(app_for(room), terminal_size=(80, 24), run_before=steps("5"))


def test_integrations_160x48(snap_compare: SnapCompare, room: ControlRoom) -> None:
    assert snap_compare(app_for(room), terminal_size=(160, 48), run_before=steps("5"))


def test_integrations_no_color_80x24(snap_compare: SnapCompare, room: ControlRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without colour the SLO breach, BREACH and the alarming figures still stand out (reverse video)."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(app_for(room), terminal_size=(80, 24), run_before=steps("5"))


def test_time_travel_dialog_80x24(snap_compare: SnapCompare, room: ControlRoom) -> None:
    assert snap_compare(app_for(room), terminal_size=(80, 24), run_before=steps("t"))


def test_overview_as_of_80x24(snap_compare: SnapCompare, room: ControlRoom) -> None:
    """The banner on the overview: the past, unmistakably (reverse video, whole line)."""
    assert snap_compare(app_for(room), terminal_size=(80, 24), run_before=steps("t", typed="21:08", then=("enter",)))


def test_checks_as_of_160x48(snap_compare: SnapCompare, room: ControlRoom) -> None:
    assert snap_compare(app_for(room), terminal_size=(160, 48), run_before=steps("t", typed="21:08", then=("enter", "2")))


def test_checks_running_80x24(snap_compare: SnapCompare, room: ControlRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long check in flight: its bar, rows, pages and ETA, and `x Cancel run` in the footer."""
    monkeypatch.setattr("screens.checks.monotonic", lambda: 1010.0)
    room.progress["account.count"] = CheckProgress(
        "account.count", NOW - timedelta(seconds=10), started=1000.0, updated=1010.0, rows=15_000, pages=3, total=40_000
    )
    room.progress_version += 1
    assert snap_compare(app_for(room), terminal_size=(80, 24), run_before=steps("2"))
