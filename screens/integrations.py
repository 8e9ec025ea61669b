"""Integration health: one pane per configured integration (failures, retries, backlog, latency, SLO)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Sequence

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Label, Sparkline, Static

from crmctl.integration_view import TREND_POINTS, Figure, IntegrationPane, Trend, build_integrations
from crmctl.model import CheckResult, utc
from crmctl.views import shorten
from screens.detail import CheckDetailScreen
from screens.widgets import ControlFooter, ControlHeader, status_markup
from screens.widgets.room import InTheRoom


HISTORY_AS_OF_LIMIT = 500
"""Results per check read for the trends of a historical view (then cut at the moment shown)."""


class TrendRow(Horizontal):
    """One sparkline with its label and newest value: "p95 · erp-sync.probe ▁▃▅▇ 912 ms"."""

    def __init__(self, trend: Trend) -> None:
        super().__init__()
        self.trend = trend

    def compose(self) -> ComposeResult:
        yield Label(shorten(self.trend.label, 30), classes="trend-label")
        yield Sparkline(list(self.trend.values), classes="trend-line")
        yield Label("one result so far: no trend yet", classes="trend-none")
        yield Label(self.trend.last_text, classes="trend-last")

    def on_mount(self) -> None:
        self._show_kind()

    def _show_kind(self) -> None:
        # One point would fill the whole line (it is its own maximum): say there is no trend yet.
        enough = len(self.trend.values) > 1
        self.query_one(".trend-line").display = enough
        self.query_one(".trend-none").display = not enough

    def show(self, trend: Trend) -> None:
        """Redraws the row with a newer trend."""
        self.trend = trend
        self._show_kind()
        self.query_one(".trend-label", Label).update(shorten(trend.label, 30))
        self.query_one(".trend-line", Sparkline).data = list(trend.values)
        self.query_one(".trend-last", Label).update(trend.last_text)


class IntegrationPaneWidget(Vertical, can_focus=True):
    """The pane of one integration; focusable, so tab walks the panes and enter drills in."""

    def __init__(self, pane_id: str) -> None:
        super().__init__(id=f"pane-{pane_id}", classes="integration-pane")
        self.pane_id = pane_id
        self.pane: IntegrationPane | None = None

    def compose(self) -> ComposeResult:
        yield Static(classes="pane-verdict")
        yield Static(classes="pane-figures")
        yield Vertical(classes="pane-trends")
        yield Static(classes="pane-checks")
        yield Static(classes="pane-error")

    def show(self, pane: IntegrationPane) -> None:
        """Redraws the pane in place (no remount: focus and scroll stay where the operator left them)."""
        self.pane = pane
        self.border_title = f"{pane.id} · {pane.title}" if pane.title != pane.id else pane.id
        self.border_subtitle = pane.updated_text
        self.query_one(".pane-verdict", Static).update(_verdict(pane))
        self.query_one(".pane-figures", Static).update(_figures(pane.figures))
        self._show_trends(pane)
        checks = self.query_one(".pane-checks", Static)
        checks.update(_checks(pane))
        checks.display = bool(pane.rows)
        error = self.query_one(".pane-error", Static)
        error.update(_error(pane))
        error.display = bool(pane.last_error or pane.keys or pane.note)

    def _show_trends(self, pane: IntegrationPane) -> None:
        box = self.query_one(".pane-trends", Vertical)
        rows = list(box.query(TrendRow))
        for row, trend in zip(rows, pane.trends):
            if row.trend != trend:
                row.show(trend)
        for row in rows[len(pane.trends):]:
            row.remove()
        if len(pane.trends) > len(rows):
            box.mount_all(TrendRow(trend) for trend in pane.trends[len(rows):])
        box.display = bool(pane.trends)


class IntegrationsScreen(InTheRoom, Screen[None]):
    """Every integration the cutover depends on, from the journalled results of its checks.

    The panes are built once (one per configured integration, plus one for the SLO queries)
    and redrawn in place on every snapshot and clock tick. Trends come from each check's
    result history, read in a worker whenever one of the checks has a newer result.
    """

    CSS_PATH = "integrations.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_detail", "Details", key_display="⏎", id="integrations.details",
                tooltip="The worst check of the focused integration, in full"),
        Binding("R", "rerun_pane", "Re-run", key_display="R", id="integrations.rerun",
                tooltip="Run the focused integration's checks once, now"),
        Binding("down,j", "next_pane", "Next", show=False, priority=True),
        Binding("up,k", "previous_pane", "Previous", show=False, priority=True),
    ]
    """Keys of this screen, on top of the app's; tab/shift+tab and the arrows walk the panes
    (priority: the scrolling container would otherwise take the arrows, and focus moving
    already scrolls the focused pane into view)."""

    def __init__(self) -> None:
        super().__init__()
        self.histories: dict[str, tuple[CheckResult, ...]] = {}
        """Earlier results per check id, oldest first (the trends)."""
        self._history_for: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield ControlHeader("Integrations")
        with VerticalScroll(id="integrations-body"):
            yield Static(id="integrations-empty")
        yield ControlFooter()

    def on_mount(self) -> None:
        body = self.query_one("#integrations-body")
        body.can_focus = False  # tab walks the panes, not their scrolling container
        panes = self.panes()
        body.mount_all(IntegrationPaneWidget(p.id) for p in panes)
        self.query_one("#integrations-empty").display = not panes
        self.follow(self.refresh_view)  # hidden (another mode): no redraw until shown
        self.call_after_refresh(self.refresh_view)

    # ----------------------------------------------------------------------------------------
    # rendering

    def panes(self) -> list[IntegrationPane]:
        """The panes at the current time (or the past moment shown)."""
        app = self.crmctl
        return build_integrations(app.room.config, app.snapshot.results, self.histories, app.now)

    def refresh_view(self) -> None:
        """Redraws every pane; reloads the trends of checks with a newer result."""
        app = self.crmctl
        panes = self.panes()
        self._maybe_load_histories(panes)
        with self.app.batch_update():
            for pane in panes:
                widget = self.query_one_optional(f"#pane-{pane.id}", IntegrationPaneWidget)
                if widget is not None and widget.is_mounted:
                    widget.show(pane)
            empty = self.query_one("#integrations-empty", Static)
            if not panes:
                empty.update(
                    Content.from_markup(
                        "[$text-muted]No integrations are configured: add them under integrations: in the"
                        " cutover config, with system_jobs or http_probe checks naming them.[/]"
                    )
                )
        body = self.query_one("#integrations-body")
        body.border_title = f"Integrations ({len(panes)})"
        body.border_subtitle = "as of the moment shown" if app.as_of else ""

    def _maybe_load_histories(self, panes: Sequence[IntegrationPane]) -> None:
        app = self.crmctl
        wanted = {cid for pane in panes for cid in pane.check_ids}
        stamp = {cid: (app.snapshot.results[cid].finished if cid in app.snapshot.results else None, app.as_of) for cid in wanted}
        stale = [cid for cid in wanted if self._history_for.get(cid) != stamp[cid] and stamp[cid][0] is not None]
        if stale:
            for cid in stale:
                self._history_for[cid] = stamp[cid]
            self._load_histories(tuple(stale), app.as_of)

    @work(group="integration-history", exit_on_error=False, description="Reading integration trends")
    async def _load_histories(self, check_ids: tuple[str, ...], as_of: datetime | None) -> None:
        """Reads each check's recent results from the journal (I/O, hence a worker)."""
        store = self.crmctl.room.store
        limit = TREND_POINTS if as_of is None else HISTORY_AS_OF_LIMIT
        loaded: dict[str, tuple[CheckResult, ...]] = {}
        for check_id in check_ids:
            history = await store.results_history(check_id, limit=limit)
            if as_of is not None:
                history = [r for r in history if utc(r.finished) <= utc(as_of)]
            loaded[check_id] = tuple(history[-TREND_POINTS:])
        if as_of != self.crmctl.as_of:
            return  # the operator moved on (to live, or another moment) while this was read
        self.histories.update(loaded)
        self.refresh_view()

    # ----------------------------------------------------------------------------------------
    # actions

    @property
    def focused_pane(self) -> IntegrationPaneWidget | None:
        """The pane with focus, if any."""
        focused = self.focused
        return focused if isinstance(focused, IntegrationPaneWidget) else None

    def _pane_or_first(self) -> IntegrationPaneWidget | None:
        if self.focused_pane is not None:
            return self.focused_pane
        panes = list(self.query(IntegrationPaneWidget))
        return panes[0] if panes else None

    def action_next_pane(self) -> None:
        """Moves focus to the next pane (scrolling it into view)."""
        self.focus_next(IntegrationPaneWidget)

    def action_previous_pane(self) -> None:
        """Moves focus to the previous pane."""
        self.focus_previous(IntegrationPaneWidget)

    def action_open_detail(self) -> None:
        """Opens the worst check of the focused integration (the first pane when none has focus)."""
        widget = self._pane_or_first()
        if widget is None or widget.pane is None or not widget.pane.rows:
            self.notify("This integration has no checks to show.", severity="warning")
            return
        worst = max(widget.pane.rows, key=lambda r: r.status.severity)
        self.app.push_screen(CheckDetailScreen(worst.check_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Re-running is greyed out in a read-only session and in a historical view."""
        if action == "rerun_pane" and (self.crmctl.room.read_only or self.crmctl.as_of is not None):
            return None
        return True

    def action_rerun_pane(self) -> None:
        """Runs the focused integration's checks once, now; results arrive through the journal feed."""
        widget = self._pane_or_first()
        if widget is None or widget.pane is None or not widget.pane.check_ids:
            self.notify("This integration has no checks to run.", severity="warning")
            return
        self.crmctl.run_checks(list(widget.pane.check_ids))


def _verdict(pane: IntegrationPane) -> Content:
    if pane.slo_ok is False:
        verdict = "[b reverse $error] $verdict [/]"
    elif pane.slo_ok:
        verdict = "[b $success]$verdict[/]"
    else:
        verdict = "[$text-muted]$verdict[/]"
    return Content.from_markup(
        f"{status_markup(pane.status)} {verdict}\n[$text-muted]SLO[/] $slo",
        verdict=pane.slo_verdict,
        slo=pane.slo_text,
    )


def _figures(figures: Sequence[Figure]) -> Content:
    parts = []
    for figure in figures:
        style = "b reverse $error" if figure.alarm else "b"
        mark = " ✖" if figure.alarm else ""
        parts.append(
            Content.from_markup(f"[$text-muted]$label[/] [{style}]$text$mark[/]", label=figure.label, text=figure.text, mark=mark)
        )
    return Content(" · ").join(parts)


def _checks(pane: IntegrationPane) -> Content:
    if not pane.rows:
        return Content("")
    width = max(len(r.check_id) for r in pane.rows)
    return Content("\n").join(
        Content.from_markup(
            f"{status_markup(row.status, pad=True)} [b]$id[/] [$text-muted]$age[/]  $why",
            id=row.check_id.ljust(width),
            age=row.age_text.rjust(12),
            why=shorten(row.explanation, 160),
        )
        for row in pane.rows
    )


def _error(pane: IntegrationPane) -> Content:
    lines = []
    if pane.note:
        lines.append(Content.from_markup("[i $text-muted]$note[/]", note=pane.note))
    if pane.last_error:
        lines.append(Content.from_markup("[b]Last error[/] $error", error=pane.last_error))
    for keys in pane.keys:
        lines.append(Content.from_markup("[b]$title[/] $keys", title=keys.title, keys=keys.text))
    return Content("\n").join(lines)


__all__ = ["IntegrationPaneWidget", "IntegrationsScreen", "TrendRow"]
