"""The rollback screen: the decision matrix live, the clocks that bound it, and recorded decisions."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from crmctl.decision import CriterionRow, Outcome, RollbackView, build_rollback_view
from crmctl.views import format_time, shorten
from screens.widgets import ControlFooter, ControlHeader
from screens.widgets.status import theme_colour
from screens.widgets.form import FormDialog, FormField
from screens.widgets.journal_view import JournalView, keyed_table


COLUMNS: tuple[tuple[str, str], ...] = (
    ("criterion", "Criterion"),
    ("outcome", "Outcome"),
    ("value", "Live value"),
    ("age", "Evidence age"),
    ("check", "Check"),
    ("expression", "Expression"),
)
"""(key, label) of each matrix column, most telling first: at 80 columns criterion, outcome,
value and evidence age are on screen; check and expression one scroll (or the panel) away."""

OUTCOME_VARIABLES = {Outcome.GO: "success", Outcome.HOLD: "warning", Outcome.ROLLBACK: "error"}
"""Theme colour of each outcome; HOLD and ROLLBACK are also drawn in reverse video."""


def outcome_text(outcome: Outcome, variables: dict[str, str]) -> Text:
    """The outcome badge for a table cell: glyph and word always, colour as a bonus."""
    style = Style(color=theme_colour(variables, OUTCOME_VARIABLES[outcome]), bold=True, reverse=outcome is not Outcome.GO)
    return Text(f" {outcome.label} ", style=style, end="")


class RollbackScreen(JournalView):
    """For the decision authority: every criterion with its value, outcome and evidence; the point
    of no return and (once a rollback is decided) the rollback SLA; and `D` to record a decision.

    The matrix recommends, people decide: the recommendation is drawn as large as it matters,
    but only an authority named in the config can record the decision, with a rationale.
    """

    CSS_PATH = "rollback.tcss"
    TABLE_ID = "matrix-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("D", "decide", "Decide", key_display="D", id="rollback.decide",
                tooltip="Record a go / hold / rollback decision (authority and rationale)"),
    ]
    """Keys of this screen, on top of the app's."""

    def compose(self) -> ComposeResult:
        yield ControlHeader("Rollback")
        with Vertical(id="rollback-body"):
            yield Static(id="rollback-summary", classes="panel")
            yield keyed_table(DataTable(id=self.TABLE_ID, cursor_type="row", zebra_stripes=True, classes="panel"), COLUMNS)
            yield Static(id="rollback-detail", classes="panel")
        yield ControlFooter()

    @property
    def selected(self) -> str | None:
        return self.selected_key

    def on_mount(self) -> None:
        self.follow(self.refresh_view)  # hidden (another mode, a dialog): redraw when shown
        self.refresh_view()

    def view(self) -> RollbackView:
        app = self.crmctl
        return build_rollback_view(app.room.config, app.snapshot.runbook, app.snapshot.results, app.now)

    def refresh_view(self) -> None:
        view = self.view()
        self._view = view
        table = self.table
        variables = self.app.theme_variables
        with self.app.batch_update():
            self.reconcile([(row.criterion_id, self._cells(row, variables)) for row in view.matrix.rows], COLUMNS)
            table.border_title = f"Decision matrix ({len(view.matrix.rows)} criteria)"
            table.border_subtitle = f"run {view.run}"
            self._show_summary(view)
            self._show_detail(view)

    def _cells(self, row: CriterionRow, variables: dict[str, str]) -> tuple[Text, ...]:
        stale = row.status.value in ("STALE", "ERROR", "PENDING")
        return (
            Text(row.criterion_id, style="bold"),
            outcome_text(row.outcome, variables),
            Text(shorten(row.value_text, 28)),
            Text(row.age_text.removesuffix(" ago"), style="bold" if stale else ""),
            Text(row.check_id),
            Text(shorten(row.expression, 60 if self.app.size.width < 120 else 100)),
        )

    def _show_summary(self, view: RollbackView) -> None:
        overall = view.matrix.overall
        badge = f"[b reverse ${OUTCOME_VARIABLES[overall]}] {overall.label} [/]"
        lines = [
            Content.from_markup(f"[b]Recommendation[/] {badge} $reason", reason=view.matrix.reason),
            Content.from_markup("[b]No return[/] $ponr · [b]forecast[/] $forecast", ponr=view.ponr_text,
                                forecast=view.forecast_text),
        ]
        if view.sla_text:
            lines.append(Content.from_markup("[b]Rollback SLA[/] $sla · $text", sla=view.sla_text, text=view.rollback_text))
        for warning in (view.warning, view.rollback_warning):
            if warning:
                lines.append(Content.from_markup("[b reverse $error] ⚠ $w [/]", w=warning))
        panel = self.query_one("#rollback-summary", Static)
        panel.update(Content("\n").join(lines))
        panel.border_title = "Rollback decision"
        who = ", ".join(view.authorities) or "nobody (no rollback.authority)"
        panel.border_subtitle = f"decided by {who}" + (" · two-person rule" if view.two_person else "")

    def _show_detail(self, view: RollbackView) -> None:
        rows = {r.criterion_id: r for r in view.matrix.rows}
        row = rows.get(self.selected or "")
        lines: list[Content] = []
        if row is not None:
            if row.finished is not None:
                where = f"evidence: {row.check_id} result of {format_time(row.finished, self.crmctl.now)}"
            else:
                where = f"no result of {row.check_id}"
            lines.append(Content.from_markup("[b]$id[/] $title: $reason [$text-muted]($where)[/]", id=row.criterion_id,
                                             title=row.title, reason=row.reason, where=where))
        if view.pending is not None:
            p = view.pending
            lines.append(Content.from_markup("[b reverse $warning] WAITING FOR APPROVAL [/] $what",
                                             what=f"{p.decision.upper()} proposed by {p.authority} ({p.who}): {p.rationale}"))
        shown = [line for line in view.decisions if "WAITING FOR APPROVAL" not in line]  # the badge says it
        if shown:
            lines.extend(Content(line) for line in shown[:4])
        elif view.pending is None:
            lines.append(Content.from_markup("[$text-muted]No decision recorded in run $run yet.[/]", run=view.run))
        panel = self.query_one("#rollback-detail", Static)
        panel.update(Content("\n").join(lines))
        panel.border_title = "Criterion and decisions"

    @on(DataTable.RowHighlighted, "#matrix-table")
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        view = getattr(self, "_view", None)
        if view is not None:
            self._show_detail(view)

    # ---------------------------------------------------------------------------- deciding

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Deciding is greyed out in a read-only session and in a historical view."""
        if action == "decide" and not self.live:
            return None
        return True

    def action_decide(self) -> None:
        """Asks decision, authority and rationale (and an override reason after the point of no
        return), then journals it through the room; refusals stay in the dialog."""
        app = self.crmctl
        if not self.live:
            app.notify("Decisions are recorded from a live operator session.", severity="warning")
            return
        view = getattr(self, "_view", None) or self.view()
        fields = [
            FormField("decision", "Decision", options=[("GO", "go"), ("HOLD", "hold"), ("ROLLBACK", "rollback")],
                      value=view.recommended, required="Choose go, hold or rollback."),
            FormField("authority", "Authority", options=[(a, a) for a in view.authorities],
                      required="Choose the authority taking the decision.", placeholder="Authority…"),
        ]
        if view.pending is not None:
            fields.append(FormField("mode", "Record as", options=[
                (f"Approval of the waiting {view.pending.decision.upper()} by {view.pending.authority}", "approve"),
                ("A new decision (the waiting proposal lapses)", "record"),
            ], value="approve"))
        else:
            fields.append(FormField("mode", "Record as", options=[
                ("The decision", "record"),
                ("A proposal: a second authority approves it (two-person rule)", "propose"),
            ], value="propose" if view.two_person else "record"))
        fields.append(FormField("rationale", "Rationale (required)", required="A decision needs a rationale.",
                                placeholder="why, on what evidence"))
        if view.ponr_passed:
            fields.append(FormField("override", "Override reason (after the point of no return)",
                                    required="After the point of no return a decision needs an override reason.",
                                    placeholder="why deciding now is still right"))
        about = (f"The matrix recommends {view.matrix.overall.value}. The decision, its authority, its rationale"
                 " and the matrix with its evidence are journalled together.")
        if view.two_person and view.pending is None:
            about += " Two-person rule: this records a proposal; a second authority approves it."
        room = app.room

        async def submit(values: dict[str, str]) -> str:
            entry = await room.decide(values["decision"], authority=values["authority"], rationale=values["rationale"],
                                      approve=values.get("mode") == "approve", propose=values.get("mode") == "propose",
                                      override_reason=values.get("override") or None)
            return decision_ack(entry)

        self.app.push_screen(FormDialog("Record a decision", about, fields, submit, id="decision-form"),
                             callback=self._acknowledged)

    def _acknowledged(self, ack: str | None) -> None:
        if ack:
            self.crmctl.notify(ack, title="Journalled", timeout=6)


def decision_ack(entry: Any) -> str:
    """What the authority is told once the journal has committed a decision or proposal."""
    payload = entry.payload
    verb = "proposed; a second authority must approve it" if entry.kind == "decision.proposed" else "recorded"
    return f"{payload['decision'].upper()} {verb} by {payload['authority']} in run {payload['run']!r} (entry #{entry.seq})."


__all__ = ["COLUMNS", "RollbackScreen", "decision_ack", "outcome_text"]
