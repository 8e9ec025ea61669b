"""The time-travel dialog: choose the past moment every screen is shown "as of"."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from crmctl.timetravel import JournalMoment, journal_moments, parse_as_of
from screens.widgets import ControlFooter
from screens.widgets.room import InTheRoom


class TimeTravelScreen(InTheRoom, ModalScreen[datetime | None]):
    """Type a time ("02:14", UTC) or a journal seq ("#1234"), or pick a recent moment.

    Dismisses with the chosen moment, or None (escape). Reading the journal (the recent
    moments, a seq's timestamp) happens in workers, like every other I/O of the app.
    """

    CSS_PATH = "timetravel.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="history.cancel", tooltip="Stay where you are"),
        Binding("down", "focus_moments", "Moments", show=False),
    ]
    """Escape closes without travelling; enter (in the field or on a moment) travels."""

    def __init__(self) -> None:
        super().__init__()
        self.moments: list[JournalMoment] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="tt-box"):
            yield Static(
                Content.from_markup(
                    "Show every screen as the journal stood at a past moment.\n"
                    "[$text-muted]HH:MM or HH:MM:SS (UTC), 2026-11-28 02:14, or a journal seq #123[/]"
                ),
                id="tt-help",
            )
            yield Input(placeholder="02:14  or  #1234", id="tt-input")
            yield Static("", id="tt-error")
            yield OptionList(id="tt-moments")
        yield ControlFooter()

    def on_mount(self) -> None:
        box = self.query_one("#tt-box")
        box.border_title = "Time travel: view as of…"
        box.border_subtitle = "enter travels · esc cancels"
        self.query_one("#tt-moments", OptionList).border_title = "Recent moments (newest first)"
        if self.app.is_headless:
            self.query_one(Input).cursor_blink = False
        self._load_moments()

    @work(exclusive=True, group="history-moments", exit_on_error=False, description="Reading recent journal moments")
    async def _load_moments(self) -> None:
        entries = await self.crmctl.room.recent_entries()
        self.moments = journal_moments(entries, self.crmctl.wall)
        options = self.query_one("#tt-moments", OptionList)
        options.clear_options()
        if self.moments:
            options.add_options(Option(m.text, id=str(m.seq)) for m in self.moments)
        else:
            options.add_option(Option("The journal is empty: there is no past to visit yet.", disabled=True))
        if options.has_focus and options.highlighted is None and self.moments:
            options.highlighted = 0  # Down was pressed before the moments were read: as if after

    def action_focus_moments(self) -> None:
        """Down from the field goes to the list of moments, on the newest one."""
        options = self.query_one("#tt-moments", OptionList)
        options.focus()
        if options.highlighted is None and options.option_count:
            options.highlighted = 0

    @on(Input.Submitted, "#tt-input")
    def _typed(self, event: Input.Submitted) -> None:
        try:
            request = parse_as_of(event.value, self.crmctl.wall)
        except ValueError as exc:
            self._error(str(exc))
            return
        if request.at is not None:
            self.dismiss(request.at)
        else:
            self._resolve_seq(cast(int, request.seq))

    @work(exclusive=True, group="history-seq", exit_on_error=False, description="Finding a journal entry")
    async def _resolve_seq(self, seq: int) -> None:
        entry = await self.crmctl.room.entry_at(seq)
        if entry is None:
            last = await self.crmctl.room.store.last_seq()
            self._error(f"There is no journal entry #{seq} (the journal holds #1 to #{last}).")
            return
        self.dismiss(entry.ts)

    @on(OptionList.OptionSelected, "#tt-moments")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        moment = next((m for m in self.moments if str(m.seq) == event.option.id), None)
        if moment is not None:
            self.dismiss(moment.at)

    def _error(self, text: str) -> None:
        self.query_one("#tt-error", Static).update(Content.from_markup("[b $text-error]$t[/]", t=text))


__all__ = ["TimeTravelScreen"]
