"""The Hypercare screen: the go-live baseline, the Day 1 / 7 / 30 checkpoints, the drift table, and
the drift of the selected metric over time (a Sparkline over every daily status run).

No I/O here: a worker reads the hypercare entries the journal gained (whenever it moves), and
`crmctl.hypercare.build_view` projects them at the app's clock. Freezing a baseline and running
the pack now go through the control room in workers; both show only once journalled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import DataTable, Sparkline, Static

from crmctl.hypercare import (
    Drift,
    HypercareView,
    build_view,
    format_drift,
    format_tolerance,
)
from crmctl.views import format_number, format_time
from screens.widgets import ControlFooter, ControlHeader
from screens.widgets.form import text_dialog
from screens.widgets.journal_view import JournalFeedView, keyed_table

if TYPE_CHECKING:
    from crmctl.journal import JournalEntry

COLUMNS: tuple[tuple[str, str], ...] = (
    ("verdict", "Verdict"),
    ("metric", "Metric"),
    ("drift", "Drift"),
    ("baseline", "Baseline"),
    ("latest", "Latest"),
    ("tolerance", "Tolerance"),
    ("category", "Category"),
)

STATE_STYLE = {
    "PASS": "bold",
    "FAIL": "bold reverse",
    "ERROR": "bold reverse",
    "NO BASELINE": "bold reverse",
    "MISSED": "bold reverse",
    "DUE": "bold",
    "UPCOMING": "dim",
}
STATE_GLYPH = {"PASS": "✔", "FAIL": "✖", "ERROR": "⚠", "NO BASELINE": "⚠", "MISSED": "✖", "DUE": "…", "UPCOMING": "◌"}
"""Glyph and word: a checkpoint reads the same without colour."""


class HypercareScreen(JournalFeedView):
    """Daily reconciliation against what was signed off, for hypercare and the wall screen."""

    CSS_PATH = "hypercare.tcss"
    TABLE_ID = "hc-drift"
    FEED_GROUP = "hypercare-feed"
    FEED_DESCRIPTION = "Reading hypercare status"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h", "run_hypercare", "Run now", id="hypercare.run", tooltip="Re-run the pack and journal today's status"),
        Binding("b", "freeze_baseline", "Baseline", id="hypercare.baseline",
                tooltip="Freeze the go-live baseline from the newest results"),
        Binding("f", "toggle_all", "All/drifted", id="hypercare.filter", tooltip="Show unchanged metrics too"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entries: list[JournalEntry] = []
        self.show_all = False
        self.running = False
        self.view: HypercareView | None = None

    def compose(self) -> ComposeResult:
        yield ControlHeader("Hypercare")
        with Vertical(id="hypercare-body"):
            with Horizontal(id="hc-top"):
                yield Static(id="hc-baseline", classes="panel")
                yield Static(id="hc-checkpoints", classes="panel")
            yield keyed_table(DataTable(id=self.TABLE_ID, cursor_type="row", zebra_stripes=True, classes="panel"), COLUMNS)
            with Vertical(id="hc-plot", classes="panel"):
                yield Sparkline([], id="hc-spark", summary_function=max)
                yield Static(id="hc-spark-caption")
        yield ControlFooter()

    @property
    def selected_metric(self) -> str | None:
        return self.selected_key

    def on_mount(self) -> None:
        self.query_one("#hc-baseline").border_title = "Go-live baseline"
        self.query_one("#hc-checkpoints").border_title = "Checkpoints"
        self.query_one("#hc-plot").border_title = "Drift over time"
        self.follow_feed()

    # ----------------------------------------------------------------------------------------
    # data

    async def read_feed(self, after_seq: int, until: Any) -> list[JournalEntry]:
        return await self.crmctl.room.hypercare_entries(after_seq, until=until)

    def restart_feed(self) -> None:
        self.entries = []

    def absorb(self, entries: list[JournalEntry]) -> None:
        self.entries.extend(entries)

    # ----------------------------------------------------------------------------------------
    # rendering

    def refresh_view(self) -> None:
        app = self.crmctl
        view = build_view(app.room.config, self.entries, app.now)
        self.view = view
        with self.app.batch_update():
            self._show_baseline(view)
            self._show_checkpoints(view)
            self._show_drift(view)
            self._show_plot(view)
        self.refresh_bindings()

    def _show_baseline(self, view: HypercareView) -> None:
        widget = self.query_one("#hc-baseline", Static)
        now = self.crmctl.now
        if not view.configured:
            widget.update(Content.from_markup("[$text-muted]No hypercare section in the config.[/]"))
            return
        lines = [Content.from_markup("[b]Go-live[/] $d · Day $n", d=str(view.go_live), n=str(view.day))]
        b = view.baseline
        if b is None:
            text = "loading…" if not self.loaded else "None frozen yet: it freezes at sign-off, or press b."
            lines.append(Content.from_markup("[$text-muted]$t[/]", t=text))
        else:
            at = b.ts.strftime("%m-%d %H:%M UTC")
            lines.append(Content.from_markup("[b]Frozen[/] $at · $who", at=at, who=b.operator))
            lines.append(Content.from_markup("$n metrics · entry $seq · $reason", n=str(len(b.metrics)), seq=str(b.seq),
                                             reason=b.reason))
            if b.intact:
                lines.append(Content.from_markup("✔ sha256 $h… verified", h=b.content_hash[:12]))
            else:
                lines.append(Content.from_markup("[b reverse $error] ✖ CONTENT DOES NOT MATCH ITS HASH [/]"))
        widget.update(Content("\n").join(lines))
        latest = view.latest
        widget.border_subtitle = f"last run {format_time(latest.ts, now)}" if latest else "no run yet"

    def _show_checkpoints(self, view: HypercareView) -> None:
        widget = self.query_one("#hc-checkpoints", Static)
        if not view.checkpoints:
            widget.update(Content.from_markup("[$text-muted]—[/]"))
            return
        lines = []
        for c in view.checkpoints:
            badge = f"{STATE_GLYPH.get(c.state, '?')} {c.state}"
            style = STATE_STYLE.get(c.state, "")
            lines.append(Content.from_markup(
                f"[b]$label[/] [{style}] $badge [/] $detail" if style else "[b]$label[/] $badge $detail",
                label=c.label.ljust(6), badge=badge, detail=c.detail))
        widget.update(Content("\n").join(lines))

    def visible_drift(self, view: HypercareView) -> list[Drift]:
        rows = list(view.drift)
        return rows if self.show_all else [d for d in rows if d.changed or not d.ok]

    def _show_drift(self, view: HypercareView) -> None:
        table = self.table
        rows = self.visible_drift(view)
        self.reconcile([(d.metric, _cells(d)) for d in rows], COLUMNS, order_by=("metric", str))
        failing = sum(1 for d in view.drift if not d.ok)
        shown = "all metrics" if self.show_all else "drifted metrics"
        table.border_title = f"Drift against the baseline · {shown} ({len(rows)})"
        table.border_subtitle = f"{failing} out of tolerance" if failing else ("" if view.latest else "no status run yet")

    def _show_plot(self, view: HypercareView) -> None:
        spark = self.query_one("#hc-spark", Sparkline)
        caption = self.query_one("#hc-spark-caption", Static)
        metric = self.selected_metric
        series = list(view.series.get(metric, ())) if metric else []
        # Drawn from the baseline itself (drift 0 at go-live), so the first run already shows
        # which way the metric went.
        spark.data = [0.0, *series] if series else []
        if not metric:
            caption.update(Content.from_markup("[$text-muted]Select a metric to see its drift run by run.[/]"))
            return
        if not series:
            caption.update(Content.from_markup("$m: [$text-muted]no status run against this baseline yet[/]", m=metric))
            return
        caption.update(Content.from_markup(
            "$m: drift at each of $n runs · min $lo · max $hi · latest $last", m=metric, n=str(len(series)),
            lo=format_number(min(series)), hi=format_number(max(series)), last=format_number(series[-1])))

    # ----------------------------------------------------------------------------------------
    # actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("run_hypercare", "freeze_baseline"):
            app = self.crmctl
            if app.room.read_only or getattr(app.snapshot, "as_of", None) is not None or app.room.engine is None and action == "run_hypercare":
                return None
            if action == "run_hypercare" and self.running:
                return None
        return True

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.refresh_view()

    def action_freeze_baseline(self) -> None:
        room = self.crmctl.room
        replace = self.view is not None and self.view.baseline is not None

        async def journal(reason: str, _: str | None) -> str:
            baseline = await room.freeze_baseline(reason=reason or "manual", replace=replace)
            return f"Baseline frozen: {len(baseline.metrics)} metrics (entry {baseline.seq})"

        label = "Why replace the baseline everyone signed off on?" if replace else "Why now (sign-off, manual, …)?"
        self.app.push_screen(
            text_dialog("Replace the go-live baseline" if replace else "Freeze the go-live baseline", label, journal,
                        required="A replacement needs a reason." if replace else ""),
            self._acknowledged,
        )

    def action_run_hypercare(self) -> None:
        self.running = True
        self.refresh_bindings()
        self._run()

    @work(group="hypercare-run", exit_on_error=False, description="Running the hypercare pack")
    async def _run(self) -> None:
        try:
            run = await self.crmctl.room.run_hypercare()
        finally:
            self.running = False
        status = run.status
        severity = "information" if status.verdict == "PASS" else "warning"
        self.app.notify(f"Day {status.day}: {status.verdict} (entry {status.seq})", title="Hypercare",
                        severity=severity, timeout=6)
        self.fetch()

    def _acknowledged(self, ack: str | None) -> None:
        if ack:
            self.app.notify(ack, title="Hypercare", timeout=5)
            self.fetch()

    @on(DataTable.RowHighlighted, "#hc-drift")
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        if self.view is not None:
            self._show_plot(self.view)


def _cells(d: Drift) -> tuple[Text, ...]:
    verdict = Text(" ✔ ok " if d.ok else " ✖ FAIL ", style="bold" if d.ok else "bold reverse")
    return (
        verdict,
        Text(d.metric),
        Text(format_drift(d), style="bold" if d.changed else "dim"),
        Text(format_number(d.baseline)),
        Text(format_number(d.current)),
        Text(format_tolerance(d.tolerance)),
        Text(d.category),
    )


__all__ = ["COLUMNS", "HypercareScreen"]
