"""The runbook screen: the checklist of the current run, its timing against the plan, and step actions."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from crmctl.runbook import StepState
from crmctl.timing import RunbookView, StepRow, build_runbook_view
from crmctl.views import shorten
from screens.widgets import ControlFooter, ControlHeader
from screens.widgets.status import theme_colour
from screens.widgets.form import FormDialog, FormField
from screens.widgets.journal_view import JournalView, keyed_table


COLUMNS: tuple[tuple[str, str], ...] = (
    ("status", "Status"),
    ("step", "Step"),
    ("planned", "Planned"),
    ("actual", "Actual"),
    ("drift", "Drift"),
    ("gate", "Gate"),
    ("owner", "Owner"),
    ("title", "Title"),
)
"""(key, label) of each checklist column, most telling first: at 80 columns state, step, planned,
actual, drift and gate are on screen; owner and title one scroll (or the step panel) away."""

TITLE_WIDTH = 34
"""Titles are cut in the table; the step panel below shows them whole."""

STATE_VARIABLES = {
    StepState.PENDING: ("foreground-muted", False),
    StepState.IN_PROGRESS: ("accent", False),
    StepState.DONE: ("success", False),
    StepState.FAILED: ("error", True),
    StepState.SKIPPED: ("foreground-muted", False),
    StepState.BLOCKED: ("warning", True),
}
"""Theme colour of each step state, and whether it is drawn in reverse video (needs attention)."""


def state_text(state: StepState, variables: dict[str, str]) -> Text:
    """The state badge for a table cell: glyph and word always, colour as a bonus."""
    name, alarm = STATE_VARIABLES[state]
    return Text(f" {state.label} ", style=Style(color=theme_colour(variables, name), bold=True, reverse=alarm), end="")


# --------------------------------------------------------------------------------------------
# the screen


class RunbookTable(DataTable):
    """The checklist; cursor keys move, the screen's keys act on the selected step."""


class RunbookScreen(JournalView):
    """The checklist of the current run: state, owner, planned and actual time, drift and gate.

    Rows are reconciled by step id on every snapshot and clock tick, never cleared, so the
    cursor stays on its step. Every action goes through `ControlRoom` in a worker and shows
    only once the journal has committed it (the row changes through the journal feed, like
    every other session's); a refusal shows the rule's message and changes nothing.
    """

    CSS_PATH = "runbook.tcss"
    TABLE_ID = "runbook-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "step('start')", "Start", id="runbook.start", tooltip="Start the selected step"),
        Binding("d", "step('done')", "Done", id="runbook.done", tooltip="Complete it (its gate must be OK)"),
        Binding("f", "fail", "Fail", id="runbook.fail", tooltip="Mark it failed, with what went wrong"),
        Binding("k", "skip", "Skip", id="runbook.skip", tooltip="Skip it (asks the reason)"),
        Binding("b", "block", "Block", id="runbook.block", tooltip="Mark it blocked (asks the reason)"),
        Binding("o", "override", "Override", id="runbook.override",
                tooltip="Complete despite a gate that is not OK (authority and reason)"),
        Binding("n", "new_run", "New run", id="runbook.new-run", tooltip="Start a new named run (rehearsal-2, production)"),
    ]
    """Keys of this screen, on top of the app's."""

    ACTIONS = frozenset({"step", "fail", "skip", "block", "override", "new_run"})

    def compose(self) -> ComposeResult:
        yield ControlHeader("Runbook")
        with Vertical(id="runbook-body"):
            yield Static(id="runbook-summary", classes="panel")
            yield keyed_table(RunbookTable(id=self.TABLE_ID, cursor_type="row", zebra_stripes=True, classes="panel"), COLUMNS)
            yield Static(id="step-detail", classes="panel")
        yield ControlFooter()

    @property
    def selected_step(self) -> str | None:
        """The step id under the cursor, if any."""
        return self.selected_key

    def on_mount(self) -> None:
        self.query_one("#runbook-summary").border_title = "Run"
        self.query_one("#step-detail").border_title = "Step"
        self.follow(self.refresh_view)  # hidden (another mode, a dialog): redraw when shown
        self.refresh_view()

    # ---------------------------------------------------------------------------- rendering

    def view(self) -> RunbookView:
        """The checklist projected from the journal snapshot at the app's time."""
        app = self.crmctl
        return build_runbook_view(app.room.config, app.snapshot.runbook, app.snapshot.results, app.now)

    def refresh_view(self) -> None:
        view = self.view()
        variables = self.app.theme_variables
        with self.app.batch_update():
            self.reconcile([(row.key, self._cells(row, variables)) for row in view.rows], COLUMNS)
            self._show_summary(view)
            self._show_detail({row.key: row for row in view.rows})
        self._rows = {row.key: row for row in view.rows}

    def _cells(self, row: StepRow, variables: dict[str, str]) -> tuple[Text, ...]:
        muted = theme_colour(variables, "foreground-muted")
        warn = theme_colour(variables, "warning")
        step = ("↩ " if row.runbook == "rollback" else "") + row.step_id
        gate_style = Style() if row.gate_ok is None else Style(color=theme_colour(variables, "success" if row.gate_ok else "error"))
        return (
            state_text(row.state, variables),
            Text(step, style=Style(bold=row.critical, underline=row.critical)),
            Text(row.planned_text, justify="right"),
            Text(row.actual_text, justify="right"),
            Text(row.drift_text, justify="right", style=Style(color=warn, bold=True) if row.late else Style()),
            Text(row.gate_text, style=gate_style),
            Text(shorten(row.owner, 20)),
            Text(shorten(row.title, TITLE_WIDTH if self.app.size.width < 120 else 2 * TITLE_WIDTH),
                 style=Style(color=muted) if row.runbook == "rollback" else Style()),
        )

    def _show_summary(self, view: RunbookView) -> None:
        lines = [
            Content.from_markup("[b]Phase[/] $phase · $run", run=view.run_text, phase=view.phase),
            Content.from_markup("[b]Forecast[/] $forecast · $drift", forecast=view.forecast_text, drift=view.drift_text),
            Content.from_markup("[b]Critical path[/] $path", path=view.critical_text),
        ]
        if view.sla is not None:
            lines.append(Content.from_markup("[b]Rollback SLA[/] $sla", sla=view.sla.text))
        for warning in (view.warning, view.rollback_warning):
            if warning:
                lines.append(Content.from_markup("[b reverse $error] ⚠ $w [/]", w=warning))
        summary = self.query_one("#runbook-summary", Static)
        summary.update(Content("\n").join(lines))
        summary.border_title = f"Run {view.run}"
        summary.border_subtitle = f"no return {view.ponr.text}"
        done = sum(1 for r in view.rows if r.state.finished and r.runbook == "cutover")
        total = sum(1 for r in view.rows if r.runbook == "cutover")
        self.table.border_title = f"Checklist ({done}/{total} done)"
        self.table.border_subtitle = ("ready: " + ", ".join(view.ready)) if view.ready else ""

    def _show_detail(self, rows: dict[str, StepRow]) -> None:
        panel = self.query_one("#step-detail", Static)
        step_id = self.selected_step
        row = rows.get(step_id) if step_id else None
        if row is None:
            panel.update(Content.from_markup("[$text-muted]No step selected.[/]"))
            panel.border_title = "Step"
            return
        head = Content.from_markup("[b]$title[/]  [$text-muted]$owner · $phase · $late[/]", title=row.title,
                                   owner=row.owner, phase=row.phase, late=row.late or row.state.value.lower())
        panel.update(Content("\n").join([head, *(Content(line) for line in row.detail)]))
        panel.border_title = f"{row.step_id} ({row.runbook})"

    @on(DataTable.RowHighlighted, "#runbook-table")
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        rows = getattr(self, "_rows", None)
        if rows is not None:
            self._show_detail(rows)

    # ---------------------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Actions are greyed out in a read-only session and in a historical view."""
        if action in self.ACTIONS:
            app = self.crmctl
            if not self.live:
                return None
            if action != "new_run" and self.selected_step is None:
                return None
        return True

    def _can_act(self) -> str | None:
        """The selected step, or None after saying why nothing can be done."""
        app = self.crmctl
        if app.room.read_only:
            app.notify("This session is read-only: steps are ticked in the operators' sessions.", severity="warning")
            return None
        if getattr(app, "as_of", None) is not None:
            app.notify("This is a historical view: return to live (t) before acting.", severity="warning")
            return None
        step_id = self.selected_step
        if step_id is None:
            app.notify("No step selected.", severity="warning")
        return step_id

    def action_step(self, action: str) -> None:
        """Starts or completes the selected step (no questions asked: the rules decide)."""
        step_id = self._can_act()
        if step_id is not None:
            self.run_worker(self._journal(action, step_id), group="runbook-action", exit_on_error=False)

    async def _journal(self, action: str, step_id: str, **kwargs: Any) -> None:
        from crmctl.control import ReadOnlyError
        from crmctl.runbook import Refused

        app = self.crmctl
        try:
            entry = await app.room.step_action(action, step_id, **kwargs)
        except (Refused, ReadOnlyError) as exc:
            app.notify(str(exc), title="Refused", severity="error", timeout=10)
            return
        app.notify(acknowledgement(action, step_id, entry), title="Journalled", timeout=4)

    def _ask(self, action: str, title: str, about: str, fields: Sequence[FormField], **fixed: Any) -> None:
        step_id = self._can_act()
        if step_id is None:
            return
        room = self.crmctl.room

        async def submit(values: dict[str, str]) -> str:
            kwargs = {**fixed, **{k: v or None for k, v in values.items()}}
            entry = await room.step_action(action, step_id, **kwargs)
            return acknowledgement(action, step_id, entry)

        self.app.push_screen(FormDialog(title.format(step=step_id), about, fields, submit), callback=self._acknowledged)

    def _acknowledged(self, ack: str | None) -> None:
        if ack:
            self.crmctl.notify(ack, title="Journalled", timeout=4)

    def action_fail(self) -> None:
        """Marks the selected step failed, asking what went wrong."""
        self._ask("fail", "Fail step {step}", "What went wrong? (journalled with the failure)",
                  [FormField("reason", "Reason", placeholder="e.g. delta load aborted: ORA-01555")])

    def action_skip(self) -> None:
        """Skips the selected step; a reason is required."""
        self._ask("skip", "Skip step {step}", "A skipped step counts as finished for the steps after it.",
                  [FormField("reason", "Reason (required)", required="A reason is required to skip a step.",
                             placeholder="e.g. not applicable in this rehearsal")])

    def action_block(self) -> None:
        """Marks the selected step blocked; a reason is required."""
        self._ask("block", "Block step {step}", "Blocked: nobody can proceed until it is started again.",
                  [FormField("reason", "Reason (required)", required="A reason is required to block a step.",
                             placeholder="e.g. waiting for the DBA")])

    def action_override(self) -> None:
        """Completes the selected step despite a gate that is not OK, by a named authority with a reason."""
        from crmctl.runbook import authorities, evaluate_gate

        app = self.crmctl
        config = app.room.config
        names = authorities(config, for_override=True)
        step = next((s for s in config.runbook if s.id == self.selected_step), None)
        shut = ""
        if step is not None and step.gate:
            checks = {c.id: c for c in config.checks}
            gate = [g for g in evaluate_gate(step.gate, checks, app.snapshot.results, app.now) if not g.ok]
            shut = ("Not OK now: " + ", ".join(f"{g.check_id} {g.status.value}" for g in gate) + ". ") if gate else ""
        self._ask(
            "done", "Override the gate of {step}",
            f"{shut}Completes the step although its gate is not OK. The authority, the reason and the checks"
            " that were not OK are journalled with it and marked in the evidence.",
            [
                FormField("override_authority", "Authority", options=[(n, n) for n in names],
                          required="Choose the authority who allows the override.", placeholder="Authority…"),
                FormField("reason", "Reason (required)", required="An override needs a reason.",
                          placeholder="e.g. 37 accounts accepted as known defects (INC-12)"),
            ],
        )

    def action_new_run(self) -> None:
        """Starts a new named run (asks its name)."""
        app = self.crmctl
        if app.room.read_only or getattr(app, "as_of", None) is not None:
            app.notify("Runs are started from a live operator session.", severity="warning")
            return
        room = app.room

        async def submit(values: dict[str, str]) -> str:
            entry = await room.start_run(values["name"])
            return f"Run {entry.payload['run']!r} started (entry #{entry.seq}); step actions now go to it."

        self.app.push_screen(
            FormDialog("Start a new run", "Each rehearsal (and production) is a named run with its own timings.",
                      [FormField("name", "Run name", required="A run needs a name.", placeholder="rehearsal-2")],
                      submit),
            callback=self._acknowledged,
        )


def acknowledgement(action: str, step_id: str, entry: Any) -> str:
    """What the operator is told once the journal has committed a step action."""
    verb = {"start": "started", "done": "completed", "fail": "marked failed", "skip": "skipped",
            "block": "marked blocked"}[action]
    extra = " with the gate OVERRIDDEN" if "override" in entry.payload else ""
    return f"Step {step_id!r} {verb}{extra} in run {entry.payload.get('run')!r} (entry #{entry.seq})."


__all__ = ["COLUMNS", "RunbookScreen", "RunbookTable", "acknowledgement", "state_text"]
