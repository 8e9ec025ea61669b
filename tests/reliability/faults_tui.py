"""Driving and reading the headless app without Pilot's idle waits.

`pilot.press` waits until the process looks idle (up to a second, twice per key). With checks
busy in the background that measures Pilot's patience rather than the app, and makes a test of
twenty keys take a minute. Keys are handed to the app here exactly as a terminal's input thread
hands them over (a message from the driver), and the effect is polled for.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from textual import events
from textual.app import App

FROZE_AFTER_S = 60.0
"""A key whose effect has not shown after this long means the app froze (a bound, not a target)."""


def send_key(app: App, key: str) -> None:
    """Hands `key` to the app as the driver does for a real terminal."""
    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    app._driver.send_message(event)  # type: ignore[union-attr]


async def wait_for(effect: Callable[[], bool], what: str, timeout: float = FROZE_AFTER_S) -> float:
    """Polls until `effect()` holds; returns the seconds it took, fails after `timeout`."""
    began = time.perf_counter()
    while not effect():
        if time.perf_counter() - began > timeout:
            raise AssertionError(f"{what} had no visible effect within {timeout:.0f} s: the app froze")
        await asyncio.sleep(0.002)
    return time.perf_counter() - began


async def press_and_wait(app: App, key: str, effect: Callable[[], bool]) -> float:
    """Sends `key` and returns the seconds until `effect()` holds (press to screen)."""
    began = time.perf_counter()
    send_key(app, key)
    await wait_for(effect, f"key {key!r}")
    return time.perf_counter() - began


def rendered(app: App) -> str:
    """The bytes a real terminal would receive for the whole current screen.

    The headless driver discards output, so the full frame is rendered from the compositor the
    way `App._display` renders it for a real terminal.
    """
    update = app.screen._compositor.render_update(full=True)
    return update.render_segments(app.console)
