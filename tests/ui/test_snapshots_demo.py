"""Every screen of the control room, at 80x24 (SSH, tmux) and 160x48 (wall screen), on the demo.

The journal is the demo's cutover night (`tests/ui/demo_journal.py`): every demo check run once
for real against a freshly seeded demo world at the config's `clock_start`, then a few operator
actions, all on a FrozenClock, so the pictures hold on every run and machine. The run happens
once per test session; each test opens its own copy of the journal. A change to what a check
says (its explanation, values or queries) changes these pictures: look, then update them.

Sync tests (snap_compare runs its own event loop). Update with `pytest --snapshot-update` only
after looking at the SVGs (e.g. `chromium --headless --screenshot=x.png file://…svg`).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import pytest
from textual.pilot import Pilot

from crmctl.clock import FrozenClock
from crmctl.config import Config
from crmctl.control import ControlRoom
from crmctl.store import Store
from screens.app import CrmctlApp
from tests.conftest import DEMO_CONFIG
from tests.ui.conftest import FAST, until
from tests.ui.demo_journal import LEAD, demo_config_in, run_demo_checks, write_demo_journal

SnapCompare = Callable[..., bool]

SCREENS: dict[str, tuple[str, ...]] = {
    "overview": (),
    "checks": ("2",),
    "detail": ("2", "enter"),
    "entity": ("2", "e"),
    "runbook": ("3",),
    "rollback": ("4",),
    "integrations": ("5",),
    "incidents": ("6",),
    "hypercare": ("7",),
    "evidence": ("8",),
    "help": ("question_mark",),
}
"""Each screen and the keys that lead to it from the start (every mode, the drill-downs, help)."""

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture(scope="session")
def demo_night(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, datetime]:
    """(config, journal file, the picture's time): the demo's journal, built once per session.

    On a world of its own, seeded here: the session's shared demo world (`demo_dir`) is used by
    tests that drift its data under a fault scenario, and the pictures must not depend on
    which of them ran first.
    """
    from crmctl.demo_world import ensure_world

    folder = tmp_path_factory.mktemp("demo-night")
    shutil.copy(DEMO_CONFIG, folder / "crmctl.yaml")
    ensure_world(folder / "world")
    config = demo_config_in(folder, folder)
    results = asyncio.run(run_demo_checks(config))
    journal = folder / "journal.db"
    shown_at = asyncio.run(write_demo_journal(config, results, journal))
    return config, journal, shown_at


@pytest.fixture
def room(demo_night: tuple[Config, Path, datetime], tmp_path: Path) -> Iterator[ControlRoom]:
    """A real room (no engine: snapshots run nothing) over a private copy of the demo journal."""
    config, journal, shown_at = demo_night
    state = tmp_path / "state.db"
    for suffix in ("", "-wal", "-shm"):  # closed cleanly there are none, but a copy must be whole
        if Path(f"{journal}{suffix}").exists():
            shutil.copy(f"{journal}{suffix}", f"{state}{suffix}")
    clock = FrozenClock(shown_at)
    store = asyncio.run(Store.open(state, clock=clock))
    try:
        yield ControlRoom(replace(config, state=state), store, None, actor=LEAD, clock=clock)
    finally:
        asyncio.run(store.close())


def visit(*keys: str) -> Callable[[Pilot[None]], object]:
    """A run_before: wait for the journal, press `keys`, then wait until every screen worker
    (incident and hypercare feeds, detail history, entity trends) has finished drawing."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        await until(lambda: app.snapshot.loaded, timeout=30)  # type: ignore[attr-defined]
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await until(lambda: not [w for w in app.workers if w.group != "journal" and w.is_running], timeout=30)
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()

    return run_before


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare: SnapCompare, room: ControlRoom, screen: str, size: str) -> None:
    assert snap_compare(CrmctlApp(room, **FAST), terminal_size=SIZES[size], run_before=visit(*SCREENS[screen]))
