"""The overview: the one-glance war-room screen (phase, clock, countdowns, red items, recommendation)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Digits, Static

from crmctl.views import (
    PROVISIONAL_NOTE,
    STATUS_ORDER,
    Countdown,
    OverviewView,
    Verdict,
    build_overview,
    format_time,
)
from screens.widgets import ControlFooter, ControlHeader, status_content, status_markup
from screens.widgets.room import InTheRoom


VERDICT_VARIABLES = {Verdict.GO: "success", Verdict.HOLD: "warning", Verdict.ROLLBACK: "error"}
"""Theme colour of each verdict badge (always in reverse video, so it reads without colour)."""


class OverviewScreen(InTheRoom, Screen[None]):
    """Where the cutover stands, for the lead and the wall screen.

    Every figure is re-projected from the app's journal snapshot and clock by
    `crmctl.views.build_overview`; this screen only lays the view model out.
    """

    CSS_PATH = "overview.tcss"
    BINDINGS: ClassVar[list[BindingType]] = []
    """The overview is read-only at a glance: the app's keys (1/2, r, ?, q) are all it needs."""

    def compose(self) -> ComposeResult:
        yield ControlHeader("Overview")
        with Vertical(id="overview-body"):
            with Horizontal(id="overview-top"):
                with Container(id="cutover", classes="panel"):
                    yield Static(id="cutover-lines")
                    with Horizontal(id="ponr-big"):
                        yield Digits("", id="ponr-digits")
                        yield Static("to the point\nof no return", id="ponr-caption")
                yield Static(id="recommendation", classes="panel")
            with VerticalScroll(id="checks-panel", classes="panel"):
                yield UnitsLine(id="status-counts")
                yield Static(id="red-list")
                yield Static(id="board")
        yield ControlFooter()

    def on_mount(self) -> None:
        self.query_one("#cutover").border_title = "Cutover"
        self.query_one("#recommendation").border_title = "Recommendation"
        self.query_one("#checks-panel").border_title = "Checks"
        self.follow(self.refresh_view)  # hidden (another mode): no redraw until shown
        self.refresh_view()

    def refresh_view(self) -> None:
        """Re-projects the snapshot at the current time and redraws every panel."""
        app = self.crmctl
        view = build_overview(app.room.config, app.snapshot, app.now)
        with self.app.batch_update():
            self._show_cutover(view)
            self._show_recommendation(view)
            self._show_checks(view)

    def _show_cutover(self, view: OverviewView) -> None:
        lines = [Content.from_markup("[b]Phase[/]       $phase", phase=view.phase)]
        for countdown in view.countdowns:
            lines.append(_countdown_line(countdown, view))
        if view.forecast and view.forecast_warning:
            # The forecast itself is the alarm (reverse video: it reads without colour too); the
            # warning's sentence says the same at twice the length, which 80 columns would cut.
            lines.append(Content.from_markup("[b]Forecast[/]    [b reverse $error] ⚠ $forecast [/]", forecast=view.forecast))
        elif view.forecast:
            lines.append(Content.from_markup("[b]Forecast[/]    $forecast", forecast=view.forecast))
        elif view.forecast_warning:
            lines.append(Content.from_markup("[b reverse $error] ⚠ $warning [/]", warning=view.forecast_warning))
        self.query_one("#cutover-lines", Static).update(Content("\n").join(lines))
        panel = self.query_one("#cutover")
        panel.border_subtitle = view.updated_text
        ponr = view.countdowns[0]
        digits = self.query_one("#ponr-digits", Digits)
        big = self.query_one("#ponr-big")
        if ponr.at is not None and not ponr.passed:
            digits.update(_hms(ponr.at - view.now))
            big.remove_class("-none")
        else:
            digits.update("")
            big.add_class("-none")

    def _show_recommendation(self, view: OverviewView) -> None:
        rec = view.recommendation
        badge = f"[b reverse ${VERDICT_VARIABLES[rec.verdict]}] {rec.verdict.value} [/]"
        text = Content.from_markup(f"{badge} $reason", reason=rec.reason)
        if rec.provisional:
            text = text + Content("\n") + Content.from_markup("[$text-muted i]$note[/]", note=PROVISIONAL_NOTE)
        widget = self.query_one("#recommendation", Static)
        widget.update(text)
        widget.border_title = "Recommendation · provisional" if rec.provisional else "Recommendation"
        widget.border_subtitle = view.updated_text

    def _show_checks(self, view: OverviewView) -> None:
        self.query_one("#status-counts", UnitsLine).show([
            Content.from_markup(f"{status_markup(status)} [b]$n[/]", n=str(view.counts[status])) for status in STATUS_ORDER
        ])
        if view.red_items:
            lines = [Content.from_markup(f"[b]Red items ({len(view.red_items)})[/]")]
            for row in view.red_items:
                lines.append(
                    Content.from_markup(
                        f"{status_markup(row.status, pad=True)} [b]$id[/]  $why", id=row.check_id, why=row.explanation
                    )
                )
        elif view.total:
            lines = [Content.from_markup("[$text-muted]No red items: nothing in BREACH, ERROR or STALE.[/]")]
        else:
            lines = [Content.from_markup("[$text-muted]No checks are configured.[/]")]
        self.query_one("#red-list", Static).update(Content("\n").join(lines))
        self._show_board(view)
        panel = self.query_one("#checks-panel")
        panel.border_title = f"Checks ({view.total})"
        panel.border_subtitle = view.updated_text


    def _show_board(self, view: OverviewView) -> None:
        """Every check, one line each, below the red items: the wall screen's full picture."""
        rows = view.rows
        if not rows or not self.crmctl.snapshot.loaded:
            # Before the first journal read every check would be drawn PENDING only to be redrawn
            # a moment later: the board waits for the data (the panel says "loading…").
            self.query_one("#board", Static).update("")
            return
        width = max(len(r.check_id) for r in rows)
        lines = [Content.from_markup("[b]All checks[/]")]
        # Assembled, not parsed from markup: a wall screen's board has hundreds of lines, redrawn
        # every second (the TUI benchmark's first screen).
        for row in rows:
            lines.append(
                Content.assemble(
                    status_content(row.status, pad=True),
                    " ",
                    (row.check_id.ljust(width), "bold"),
                    "  ",
                    (row.age_text.rjust(12), "$text-muted"),
                    "  ",
                    row.value_text,
                )
            )
        self.query_one("#board", Static).update(Content("\n").join(lines))


class UnitsLine(Static):
    """A line of units (a status badge and its count) that wraps between units, never inside one,
    and again whenever its width changes (a scrollbar appearing takes two columns)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._units: list[Content] = []

    def show(self, units: list[Content]) -> None:
        self._units = units
        self._wrap()

    def on_resize(self) -> None:
        self._wrap()

    def _wrap(self) -> None:
        # Before the first layout there is no width: estimate it from the terminal's (the
        # panel's border and padding, and a scrollbar, take 6 columns).
        self.update(wrap_units(self._units, self.content_size.width or self.app.size.width - 6))


def wrap_units(units: list[Content], width: int, gap: str = "  ") -> Content:
    """`units` on as few lines as `width` allows, never breaking one (a status badge and its
    count stay together): at 80 columns the six status counts take two lines, not a cut one."""
    lines: list[list[Content]] = [[]]
    used = 0
    for unit in units:
        need = unit.cell_length + (len(gap) if lines[-1] else 0)
        if lines[-1] and used + need > width:
            lines.append([])
            used, need = 0, unit.cell_length
        lines[-1].append(unit)
        used += need
    return Content("\n").join(Content(gap).join(line) for line in lines)


def _countdown_line(countdown: Countdown, view: OverviewView) -> Content:
    label = {"Point of no return": "No return", "Go-live": "Go-live"}.get(countdown.label, countdown.label)
    if countdown.at is None:
        return Content.from_markup(f"[b]{label:<11}[/] [$text-muted]not set[/]")
    when = format_time(countdown.at, view.now, seconds=False)
    if countdown.passed:
        return Content.from_markup(
            f"[b]{label:<11}[/] $when · [b reverse $warning] $text [/]", when=when, text=countdown.text.upper()
        )
    return Content.from_markup(f"[b]{label:<11}[/] $when · [b]$text[/]", when=when, text=countdown.text)


def _hms(delta: timedelta) -> str:
    """A countdown for the big digits: "HH:MM:SS", hours running past 24."""
    total = max(0, int(delta.total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


__all__ = ["OverviewScreen", "wrap_units"]
