"""The one-line header every screen carries: who, where, what mode, and what time it is."""

from __future__ import annotations

from datetime import datetime

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from crmctl.views import format_clock
from screens.widgets.room import InTheRoom


class ControlHeader(InTheRoom, Vertical):
    """Project, screen name, operator@host, READ-ONLY badge, activity and the UTC clock.

    Textual's own `Header` reads the wall clock; this one shows the room's injected clock, so a
    frozen clock gives a frozen header (snapshots) and a rehearsal clock gives rehearsal time.
    While the app shows the journal as of a past moment (time travel), a second line under it
    says so on every screen, in reverse video so that it reads without colour too.
    """

    def __init__(self, screen_title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._screen_title = screen_title

    def compose(self) -> ComposeResult:
        room = self.crmctl.room
        actor = room.actor
        with Horizontal(id="hdr-row"):
            yield Label(room.config.project, id="hdr-project")
            yield Label(self._screen_title, id="hdr-screen")
            yield Label("", id="hdr-activity")
            yield Label(f"{actor.operator}@{actor.host}", id="hdr-actor")
            if room.read_only:
                yield Label(" READ-ONLY ", id="hdr-readonly")
            yield Label(format_clock(self.crmctl.wall), id="hdr-clock")
        yield Label("", id="hdr-asof")

    def on_mount(self) -> None:
        self.watch(self.crmctl, "wall", self._show_time)
        self.watch(self.crmctl, "running", self._show_activity)
        self.watch(self.crmctl, "as_of", self._show_as_of)

    def _show_time(self, now: datetime) -> None:
        # Always 23 columns ("2026-11-28 21:14:03 UTC"): no layout pass for a ticking clock.
        self.query_one("#hdr-clock", Label).update(format_clock(now), layout=False)

    def _show_as_of(self, as_of: datetime | None) -> None:
        label = self.query_one("#hdr-asof", Label)
        label.update(f"{self.crmctl.as_of_text} · t/esc: live" if as_of else "")
        self.set_class(as_of is not None, "-as-of")

    def _show_activity(self, running: int) -> None:
        label = self.query_one("#hdr-activity", Label)
        label.update("running checks…" if running else "")
        label.display = bool(running)
