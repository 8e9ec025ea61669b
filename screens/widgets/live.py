"""Redraw a screen on news only while it can be seen; catch up the moment it is shown again."""

from __future__ import annotations

from typing import Callable

from textual.screen import Screen


class WhenShown:
    """A watcher callback (`screen.watch(app, "snapshot", WhenShown(screen, redraw))`) that
    redraws at once when `screen` is on view (current, or visible under a modal) and otherwise
    only remembers that it missed something, redrawing when it comes back.

    Screens persist across mode switches and every one of them watches the app's snapshot and
    clock: without this, the overview would rebuild its 300-line board every second while the
    operator looks at the checks table (the TUI benchmark showed it).
    """

    def __init__(self, screen: Screen[object], redraw: Callable[[], object]) -> None:
        self.screen = screen
        self.redraw = redraw
        self.missed = False
        self.pending = False
        screen.app.screen_change_signal.subscribe(screen, self._shown)

    def __call__(self) -> None:
        if not self.screen.is_current:
            self.missed = True
            return
        # Coalesced: the clock and the snapshot usually move in the same handler (the app moves
        # its clock with every snapshot), and one redraw shows both.
        if not self.pending:
            self.pending = True
            self.screen.call_later(self._redraw)

    def _redraw(self) -> None:
        self.pending = False
        if self.screen.is_current:
            self.missed = False
            self.redraw()
        else:
            self.missed = True

    def _shown(self, _screen: Screen[object]) -> None:
        if self.missed and self.screen.is_current:
            self.missed = False
            self.redraw()
