"""Fixtures for the UI tests: a real Store on a temporary file, a real ControlRoom, a frozen clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from textual.content import Content
from textual.widget import Widget

from crmctl.clock import FrozenClock
from crmctl.config.sections import Config
from crmctl.control import ControlRoom
from crmctl.engine import Engine, Targets
from crmctl.store import Store
from screens.app import CrmctlApp
from tests.ui.world import ACTOR, NOW, CannedCheck, build_config, canned_registry, fill_store, sample_results

FAST = {"auto_run": False, "poll_interval": 0.05, "clock_tick": 3600.0}
"""App settings for tests: no scheduler, a quick change feed, and a clock that never ticks by
itself (ticks are driven with `app.tick()`), so `pilot.pause()` finds the app idle fast."""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return build_config(tmp_path)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture(autouse=True)
def _reset_canned() -> None:
    CannedCheck.calls.clear()


@pytest.fixture(autouse=True)
def _colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots are taken in colour whatever the runner's environment says (the App reads, and
    pops, NO_COLOR when it is built); the NO_COLOR snapshot sets it itself."""
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
async def room(config: Config, clock: FrozenClock) -> AsyncIterator[ControlRoom]:
    """A real ControlRoom over a state file holding one result of each status.

    Its Engine is real too; only the check kind is canned (answers OK at once), so `r` and `R`
    go through the engine, the store and the change feed exactly as in production.
    """
    await fill_store(config.state, sample_results())
    store = await Store.open(config.state, clock=clock)
    engine = Engine(config, canned_registry(), store, Targets(dynamics=None, source=None), actor=ACTOR, clock=clock)
    try:
        yield ControlRoom(config, store, engine, actor=ACTOR, clock=clock)
    finally:
        await store.close()


@pytest.fixture
def make_app(room: ControlRoom) -> Callable[..., CrmctlApp]:
    """Builds the app on the room with test-speed settings (overridable by keyword)."""

    def build(**overrides: object) -> CrmctlApp:
        return CrmctlApp(room, **{**FAST, **overrides})  # type: ignore[arg-type]

    return build


def text_of(widget: Widget) -> str:
    """The plain text a Static/Label shows."""
    content = getattr(widget, "content", "")
    return content.plain if isinstance(content, Content) else str(content)


async def until(predicate: Callable[[], object], timeout: float = 2.0) -> float:
    """Waits (letting the app run) until `predicate()` is true; returns the seconds it took."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def after_load(*press: str) -> Callable[[Any], object]:
    """A snapshot's run_before: waits for the first journal read, presses `press`, lets it settle."""

    async def run_before(pilot: Any) -> None:
        await until(lambda: pilot.app.snapshot.loaded)
        await pilot.press(*press)
        await pilot.pause()

    return run_before


async def loaded(app: CrmctlApp) -> None:
    """Waits for the first journal read."""
    await until(lambda: app.snapshot.loaded)
