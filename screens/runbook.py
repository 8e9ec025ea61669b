"""The runbook screen: the checklist of the current run, its timing against the plan, and step actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Sequence, cast

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color, ColorParseError
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Select, Static

from crmctl.runbook import StepState
from crmctl.timing import RunbookView, StepRow, build_runbook_view
from crmctl.views import shorten
from screens.widgets import ControlFooter, ControlHeader
from screens.widgets.live import WhenShown

if TYPE_CHECKING:
    from screens.app import CrmctlApp

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


def _colour(variables: dict[str, str], name: str) -> Any:
    raw = variables.get(name)
    if not raw:
        return None
    try:
        return Color.parse(raw).rich_color
    except ColorParseError:
        return None


def state_text(state: StepState, variables: dict[str, str]) -> Text:
    """The state badge for a table cell: glyph and word always, colour as a bonus."""
    name, alarm = STATE_VARIABLES[state]
    return Text(f" {state.label} ", style=Style(color=_colour(variables, name), bold=True, reverse=alarm), end="")


# --------------------------------------------------------------------------------------------
# the form dialog shared by step actions, new runs and decisions


@dataclass(frozen=True)
class FormField:
    """One field of a `FormModal`."""

    name: str
    label: str
    options: Sequence[tuple[str, str]] = ()
    """(label, value) choices: a Select; empty: a text Input."""
    required: str = ""
    """The message shown when the field is left empty ("" means optional)."""
    placeholder: str = ""
    value: str = ""


Submit = Callable[[dict[str, str]], Awaitable[str]]
"""Journals the form; returns the acknowledgement, raises Refused or ReadOnlyError to refuse."""


class FormModal(ModalScreen[str | None]):
    """Asks for a few values, then submits them through the control room (in a worker).

    A refusal is shown inside the dialog with every typed value kept, so nothing is lost and
    the operator fixes what the message names; the dialog closes only once the journal has
    committed, dismissing with the acknowledgement.
    """

    CSS_PATH = "runbook.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "submit", "Submit", id="form.submit", tooltip="Journal it (enter in a text field too)"),
    ]

    def __init__(self, title: str, about: str, fields: Sequence[FormField], submit: Submit, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.form_title = title
        self.about = about
        self.fields = tuple(fields)
        self.submit = submit
        self.busy = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="form-box"):
            yield Static(Content(self.about), id="form-about")
            for f in self.fields:
                yield Static(Content.from_markup("[b]$label[/]", label=f.label), classes="form-label")
                if f.options:
                    yield Select(list(f.options), prompt=f.placeholder or "choose…", id=f"field-{f.name}",
                                 value=f.value if f.value else Select.NULL)
                else:
                    yield Input(value=f.value, placeholder=f.placeholder, id=f"field-{f.name}")
            yield Static("", id="form-error")
        yield ControlFooter()

    def on_mount(self) -> None:
        box = self.query_one("#form-box")
        box.border_title = self.form_title
        box.border_subtitle = "enter or ctrl+s journals · esc cancels"
        if self.app.is_headless:
            for widget in self.query(Input):
                widget.cursor_blink = False
        first = next((f for f in self.fields if not f.value), self.fields[0] if self.fields else None)
        if first is not None:
            self.query_one(f"#field-{first.name}").focus()

    def values(self) -> dict[str, str]:
        """The current value of every field ("" when empty)."""
        out: dict[str, str] = {}
        for f in self.fields:
            widget = self.query_one(f"#field-{f.name}")
            if isinstance(widget, Select):
                value = widget.value
                out[f.name] = "" if value is Select.NULL or value is None else str(value)
            else:
                out[f.name] = cast(Input, widget).value.strip()
        return out

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_submit(self) -> None:
        """Checks the required fields, then journals through the room in a worker."""
        if self.busy:
            return
        values = self.values()
        for f in self.fields:
            if f.required and not values[f.name]:
                self.show_error(f.required)
                self.query_one(f"#field-{f.name}").focus()
                return
        self.busy = True
        self.run_worker(self._submit(values), group="form-submit", exclusive=True, exit_on_error=False)

    async def _submit(self, values: dict[str, str]) -> None:
        from crmctl.control import ReadOnlyError
        from crmctl.runbook import Refused

        try:
            ack = await self.submit(values)
        except (Refused, ReadOnlyError) as exc:
            self.show_error(f"Refused: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a store failure: say so, keep the values
            self.show_error(f"Not journalled ({type(exc).__name__}): {exc}")
            return
        finally:
            self.busy = False
        self.dismiss(ack)

    def show_error(self, text: str) -> None:
        """Shows why the form was not journalled (the values stay as typed)."""
        self.query_one("#form-error", Static).update(Content.from_markup("[b $text-error]$t[/]", t=text))


# --------------------------------------------------------------------------------------------
# the screen


class RunbookTable(DataTable):
    """The checklist; cursor keys move, the screen's keys act on the selected step."""


class RunbookScreen(Screen[None]):
    """The checklist of the current run: state, owner, planned and actual time, drift and gate.

    Rows are reconciled by step id on every snapshot and clock tick, never cleared, so the
    cursor stays on its step. Every action goes through `ControlRoom` in a worker and shows
    only once the journal has committed it (the row changes through the journal feed, like
    every other session's); a refusal shows the rule's message and changes nothing.
    """

    CSS_PATH = "runbook.tcss"
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
            table = RunbookTable(id="runbook-table", cursor_type="row", zebra_stripes=True, classes="panel")
            for key, label in COLUMNS:
                table.add_column(label, key=key)
            yield table
            yield Static(id="step-detail", classes="panel")
        yield ControlFooter()

    @property
    def crmctl(self) -> CrmctlApp:
        """The app, typed."""
        return cast("CrmctlApp", self.app)

    @property
    def table(self) -> RunbookTable:
        return self.query_one("#runbook-table", RunbookTable)

    @property
    def selected_step(self) -> str | None:
        """The step id under the cursor, if any."""
        table = self.table
        if not table.row_count:
            return None
        try:
            key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:  # noqa: BLE001 - cursor on a row being removed
            return None
        return cast(str, key.value)

    def on_mount(self) -> None:
        self.query_one("#runbook-summary").border_title = "Run"
        self.query_one("#step-detail").border_title = "Step"
        news = WhenShown(self, self.refresh_view)  # hidden (another mode, a dialog): redraw when shown
        self.watch(self.crmctl, "snapshot", news, init=False)
        self.watch(self.crmctl, "now", news, init=False)
        self.refresh_view()

    # ---------------------------------------------------------------------------- rendering

    def view(self) -> RunbookView:
        """The checklist projected from the journal snapshot at the app's time."""
        app = self.crmctl
        return build_runbook_view(app.room.config, app.snapshot.runbook, app.snapshot.results, app.now)

    def refresh_view(self) -> None:
        view = self.view()
        table = self.table
        variables = self.app.theme_variables
        wanted = [row.key for row in view.rows]
        with self.app.batch_update():
            for gone in [k for k in table.rows if k.value not in wanted]:
                table.remove_row(gone)
            for row in view.rows:
                cells = self._cells(row, variables)
                if row.key in table.rows:
                    for (column, _), value in zip(COLUMNS, cells):
                        if table.get_cell(row.key, column) != value:
                            table.update_cell(row.key, column, value, update_width=True)
                else:
                    table.add_row(*cells, key=row.key)
            self._show_summary(view)
            self._show_detail({row.key: row for row in view.rows})
        self._rows = {row.key: row for row in view.rows}

    def _cells(self, row: StepRow, variables: dict[str, str]) -> tuple[Text, ...]:
        muted = _colour(variables, "foreground-muted")
        warn = _colour(variables, "warning")
        step = ("↩ " if row.runbook == "rollback" else "") + row.step_id
        gate_style = Style() if row.gate_ok is None else Style(color=_colour(variables, "success" if row.gate_ok else "error"))
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
            if app.room.read_only or getattr(app, "as_of", None) is not None:
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

        self.app.push_screen(FormModal(title.format(step=step_id), about, fields, submit), callback=self._acknowledged)

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
            FormModal("Start a new run", "Each rehearsal (and production) is a named run with its own timings.",
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


__all__ = ["COLUMNS", "FormField", "FormModal", "RunbookScreen", "RunbookTable", "acknowledgement", "state_text"]
