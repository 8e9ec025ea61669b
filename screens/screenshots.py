"""SVG screenshots of the control room's key screens, for the evidence pack.

`crmctl/evidence.py` must not import Textual, so the composition root (`crmctl/cli.py`) or the
app hands it `render_screens` as a callable. It runs in a worker thread with an event loop of
its own: a headless copy of the app, read-only, over the pack's journal copy, visits every
screen in the app's SCREENS table and exports each as SVG. Reading the copy (not the live
file) means the pictures show exactly the journal head the pack records.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from crmctl.clock import Clock, SystemClock
from crmctl.control import ControlRoom
from crmctl.identity import Actor
from crmctl.store import Store

SIZE = (160, 48)
"""A wall-screen size: every panel side by side, nothing cut that 80 columns would hide."""
LOAD_TIMEOUT_S = 10.0


def render_screens(config: Any, state: Path, *, clock: Clock | None = None, size: tuple[int, int] = SIZE) -> list[tuple[str, str, str]]:
    """[(mode, title, svg)] for every screen of the app, rendered from the journal at `state`."""
    return asyncio.run(_render(config, Path(state), clock or SystemClock(), size))


async def _render(config: Any, state: Path, clock: Clock, size: tuple[int, int]) -> list[tuple[str, str, str]]:
    from screens.app import SCREENS, CrmctlApp

    store = await Store.open(state, readonly=True, clock=clock)
    try:
        room = ControlRoom(
            config, store, None, actor=Actor("evidence", "export"), clock=clock, read_only=True
        )
        # The copy never changes: a long feed interval keeps the app idle, so each pause is short.
        app = CrmctlApp(room, auto_run=False, poll_interval=3600.0, clock_tick=3600.0)
        shots: list[tuple[str, str, str]] = []
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + LOAD_TIMEOUT_S
            while not app.snapshot.loaded and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            for _key, mode, title, _about in SCREENS:
                await app.switch_mode(mode)
                await pilot.pause()
                await _settle(app)
                shots.append((mode, title, app.export_screenshot(title=f"crmctl - {title}")))
            app.workers.cancel_all()
        return shots
    finally:
        await store.close()


async def _settle(app: Any) -> None:
    """Waits (briefly) for screen workers that load data, so the picture is not half-drawn."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        busy = [w for w in app.workers if w.group not in ("journal", "scheduler") and w.is_running]
        if not busy:
            return
        await asyncio.sleep(0.02)
