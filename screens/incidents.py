"""The Incidents screen: the register with escalation countdowns, the selected incident's timeline and
evidence, notification outcomes, and the keys that move an incident on.

The screen does no I/O: a worker asks the control room for the incident and notification entries
written since the last look (whenever the journal moves), folds them into a `Register`, and the
countdowns are re-projected on every clock tick. Actions go through the room in workers and are
shown only once committed (the feed then brings them to every session).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Select, Static

from crmctl.incidents import (
    ACKNOWLEDGED,
    ESCALATED,
    Incident,
    IncidentRefused,
    Register,
    Severity,
    State,
    escalation_text,
)
from crmctl.views import format_age, format_time, shorten
from screens.widgets import ControlFooter, ControlHeader

if TYPE_CHECKING:
    from crmctl.journal import JournalEntry
    from screens.app import CrmctlApp

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("sev", "Sev"),
    ("state", "State"),
    ("escalation", "Escalation"),
    ("owner", "Owner"),
    ("check", "Check"),
    ("title", "Title"),
)
"""Most telling first: at 80 columns id, severity, state and the countdown are always on screen."""

SEVERITY_STYLE = {
    Severity.SEV1: "bold reverse",
    Severity.UNKNOWN: "bold reverse",
    Severity.SEV2: "bold",
    Severity.SEV3: "",
    Severity.SEV4: "dim",
}
"""Reverse video for what pages people (SEV1 and UNKNOWN): readable without colour."""

SEVERITY_OPTIONS = [("UNKNOWN (timed as SEV1)", "unknown"), ("SEV1", "sev1"), ("SEV2", "sev2"), ("SEV3", "sev3"),
                    ("SEV4", "sev4")]

NOTIFY_SHOWN = 4
"""Notification outcomes listed under the timeline (the journal has them all)."""


class IncidentsTable(DataTable):
    """The register; the screen's keys act on the incident under the cursor."""


class IncidentForm(ModalScreen[str | None]):
    """Asks for a title/note (and a severity), journals through the room, closes only on commit.

    A refusal (another operator acknowledged first) is shown in the dialog with the text kept.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="incident-form.cancel"),
        Binding("ctrl+s", "submit", "Submit", id="incident-form.submit"),
    ]

    def __init__(
        self,
        title: str,
        label: str,
        submit: Callable[[str, str | None], Awaitable[str]],
        *,
        required: str = "",
        severity: bool = False,
    ) -> None:
        super().__init__()
        self.form_title = title
        self.label = label
        self.submit = submit
        self.required = required
        self.with_severity = severity
        self.busy = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="incident-form"):
            yield Static(Content.from_markup("[b]$label[/]", label=self.label))
            yield Input(id="incident-form-text")
            if self.with_severity:
                yield Static(Content.from_markup("[b]Severity[/] (when unsure, UNKNOWN: it escalates like SEV1)"))
                yield Select(SEVERITY_OPTIONS, value="unknown", allow_blank=False, id="incident-form-severity")
            yield Static("", id="incident-form-error")
        yield ControlFooter()

    def on_mount(self) -> None:
        box = self.query_one("#incident-form")
        box.border_title = self.form_title
        box.border_subtitle = "enter journals · esc cancels"
        text = self.query_one("#incident-form-text", Input)
        text.cursor_blink = not self.app.is_headless
        text.focus()

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_submit(self) -> None:
        if self.busy:
            return
        text = self.query_one("#incident-form-text", Input).value.strip()
        if self.required and not text:
            self.show_error(self.required)
            return
        severity = None
        if self.with_severity:
            severity = str(self.query_one("#incident-form-severity", Select).value)
        self.busy = True
        self.run_worker(self._submit(text, severity), group="incident-form", exclusive=True, exit_on_error=False)

    async def _submit(self, text: str, severity: str | None) -> None:
        from crmctl.control import ReadOnlyError

        try:
            ack = await self.submit(text, severity)
        except (IncidentRefused, ReadOnlyError, ValueError) as exc:
            self.show_error(f"Refused: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a store failure: say so, keep the text
            self.show_error(f"Not journalled ({type(exc).__name__}): {exc}")
            return
        finally:
            self.busy = False
        self.dismiss(ack)

    def show_error(self, text: str) -> None:
        self.query_one("#incident-form-error", Static).update(Content.from_markup("[b $text-error]$t[/]", t=text))


class IncidentsScreen(Screen[None]):
    """Triage: who owns what, what escalates when, what happened, and whether Teams heard of it."""

    CSS_PATH = "incidents.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "act('ack')", "Ack", id="incidents.ack", tooltip="Acknowledge: take ownership, stop the timer"),
        Binding("m", "act('mitigate')", "Mitigating", id="incidents.mitigate", tooltip="Mark as being mitigated"),
        Binding("s", "act('resolve')", "Resolve", id="incidents.resolve", tooltip="Resolved (say how)"),
        Binding("c", "act('close')", "Close", id="incidents.close", tooltip="Close a resolved incident"),
        Binding("n", "act('note')", "Note", id="incidents.note", tooltip="Add a line to the timeline"),
        Binding("i", "raise_incident", "Raise", id="incidents.raise", tooltip="Open a new incident by hand"),
        Binding("f", "toggle_all", "All/active", id="incidents.filter", tooltip="Show resolved and closed too"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register = Register()
        """Every incident folded so far (live journal, or as of the time-travel moment)."""
        self.deliveries: list[JournalEntry] = []
        """Notification outcomes, oldest first (bounded)."""
        self.show_all = False
        self._seen = 0
        self._as_of: Any = None
        self._fetching = False
        self._again = False
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield ControlHeader("Incidents")
        with Vertical(id="incidents-body"):
            table = IncidentsTable(id="incidents-table", cursor_type="row", zebra_stripes=True, classes="panel")
            for key, label in COLUMNS:
                table.add_column(label, key=key)
            yield table
            with VerticalScroll(id="incident-detail", classes="panel"):
                yield Static(id="incident-lines")
        yield ControlFooter()

    @property
    def crmctl(self) -> CrmctlApp:
        return cast("CrmctlApp", self.app)

    @property
    def table(self) -> IncidentsTable:
        return self.query_one("#incidents-table", IncidentsTable)

    @property
    def selected(self) -> Incident | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:  # noqa: BLE001 - cursor on a row being removed
            return None
        number = int(str(key.value))
        return self.register.get(number) if number in self.register else None

    def on_mount(self) -> None:
        self.query_one("#incident-detail").border_title = "Incident"
        self.watch(self.crmctl, "snapshot", self._journal_moved, init=False)
        self.watch(self.crmctl, "now", self.refresh_view, init=False)
        self.refresh_view()
        self.fetch()

    # ----------------------------------------------------------------------------------------
    # data

    def _journal_moved(self) -> None:
        self.fetch()

    def fetch(self) -> None:
        """Reads what the journal gained since the last look (coalesced: one read at a time)."""
        if self._fetching:
            self._again = True
            return
        self._fetching = True
        self._fetch()

    @work(group="incidents-feed", exit_on_error=False, description="Reading incidents")
    async def _fetch(self) -> None:
        try:
            while True:
                self._again = False
                as_of = getattr(self.crmctl.snapshot, "as_of", None)
                if as_of != self._as_of:  # into or out of a historical view: fold again from scratch
                    self.register, self.deliveries, self._seen, self._as_of = Register(), [], 0, as_of
                entries = await self.crmctl.room.incident_entries(self._seen, until=as_of)
                for entry in entries:
                    if entry.kind.startswith("incident."):
                        self.register.apply(entry)
                    else:
                        self.deliveries.append(entry)
                    self._seen = max(self._seen, entry.seq)
                self.deliveries = self.deliveries[-50:]
                self.loaded = True
                self.refresh_view()
                if not self._again:
                    break
        finally:
            self._fetching = False

    # ----------------------------------------------------------------------------------------
    # rendering

    def incidents(self) -> list[Incident]:
        return self.register.all() if self.show_all else self.register.active()

    def refresh_view(self) -> None:
        """Reconciles the table by incident number; the cursor stays on its incident."""
        app = self.crmctl
        severities = app.room.config.incidents.severities
        rows = self.incidents()
        table = self.table
        selected = self.selected
        wanted = [str(i.number) for i in rows]
        with self.app.batch_update():
            for gone in [k for k in table.rows if k.value not in wanted]:
                table.remove_row(gone)
            for incident in rows:
                cells = self._cells(incident, severities)
                key = str(incident.number)
                if key in table.rows:
                    for (column, _), value in zip(COLUMNS, cells):
                        if table.get_cell(key, column) != value:
                            table.update_cell(key, column, value, update_width=True)
                else:
                    table.add_row(*cells, key=key)
            if [r.key.value for r in table.ordered_rows] != wanted:
                order = {k: n for n, k in enumerate(wanted)}
                table.sort("id", key=lambda cell: order.get(cell.plain.removeprefix("INC-"), 0))
            if selected is not None and str(selected.number) in wanted and self.selected != selected:
                table.move_cursor(row=table.get_row_index(str(selected.number)))
            active = len(self.register.active())
            total = len(self.register)
            table.border_title = f"Incidents · {active} active" + (f" of {total}" if self.show_all else "")
            overdue = sum(1 for i in self.register.active()
                          if (due := i.escalation_due(severities)) is not None and due <= app.now)
            table.border_subtitle = f"{overdue} overdue" if overdue else ("loading…" if not self.loaded else "")
            self._show_detail()
        self.refresh_bindings()

    def _cells(self, incident: Incident, severities: Any) -> tuple[Text, ...]:
        now = self.crmctl.now
        escalation = escalation_text(incident, severities, now)
        return (
            Text(incident.id, style="bold"),
            Text(f" {incident.severity.value} ", style=SEVERITY_STYLE[incident.severity]),
            Text(incident.state.value, style="bold" if incident.state is State.OPEN else ""),
            Text(escalation, style="bold reverse" if escalation.startswith("OVERDUE") else ""),
            Text(incident.owner or "—"),
            Text(incident.check or "—"),
            Text(shorten(incident.title, 60)),
        )

    def _show_detail(self) -> None:
        widget = self.query_one("#incident-lines", Static)
        panel = self.query_one("#incident-detail")
        panel.border_subtitle = self._notify_summary()
        incident = self.selected
        if incident is None:
            text = "No incidents. A red check raises one with i on the Checks screen." if not self.register.active() \
                else "No incident selected."
            widget.update(Content.from_markup("[$text-muted]$t[/]", t=text) + self._deliveries_text(None))
            panel.border_title = "Incident"
            return
        now = self.crmctl.now
        lines = [Content.from_markup("[b]$title[/]", title=incident.title)]
        facts = [f"raised {format_time(incident.raised_at, now)} by {incident.raised_by} ({incident.source})"]
        if incident.step:
            facts.append(f"step {incident.step}")
        if incident.criterion:
            facts.append(f"criterion {incident.criterion}")
        lines.append(Content.from_markup("[$text-muted]$f[/]", f=" · ".join(facts)))
        evidence = incident.evidence
        if evidence:
            lines.append(Content.from_markup(
                "[b]Evidence[/] $status $why", status=str(evidence.get("status", "")),
                why=str(evidence.get("explanation", ""))))
            lines.append(Content.from_markup(
                "[$text-muted]result seq $seq · $hash…[/]", seq=str(evidence.get("result_seq", "?")),
                hash=str(evidence.get("result_hash", ""))[:16]))
        lines.append(Content.from_markup("[b]Timeline[/]"))
        for item in incident.timeline:
            style = "b" if item.kind in (ESCALATED, ACKNOWLEDGED) else ""
            text = Content.from_markup("$at $who $what", at=format_time(item.ts, now), who=item.operator, what=item.text)
            lines.append(text.stylize(style) if style else text)
        widget.update(Content("\n").join(lines) + self._deliveries_text(incident))
        panel.border_title = f"{incident.id} · {incident.severity.value} · {incident.state.value}"

    def _deliveries_text(self, incident: Incident | None) -> Content:
        shown = [e for e in self.deliveries if incident is None or e.payload.get("incident") == incident.number]
        if not shown:
            return Content("")
        lines = [Content("\n"), Content.from_markup("[b]Notifications[/]")]
        for entry in shown[-NOTIFY_SHOWN:]:
            lines.append(_delivery_line(entry, self.crmctl.now))
        return Content("\n").join(lines)

    def _notify_summary(self) -> str:
        """The bottom line: the last outcome per channel, and what this session has queued."""
        last: dict[str, JournalEntry] = {}
        for entry in self.deliveries:
            last[str(entry.payload.get("channel"))] = entry
        parts = []
        for channel, entry in sorted(last.items()):
            ok = entry.kind == "notify.delivered"
            parts.append(f"{channel} {'✔ delivered' if ok else '✖ FAILED'} {format_age(entry.ts, self.crmctl.now)}")
        notifier = getattr(self.crmctl.room, "_notifier", None)
        pending = notifier.pending if notifier is not None else 0
        if pending:
            parts.append(f"{pending} sending…")
        return " · ".join(parts)

    # ----------------------------------------------------------------------------------------
    # actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Greys out what the rules would refuse now (the rules still decide, at commit)."""
        if action not in ("act", "raise_incident"):
            return True
        app = self.crmctl
        if app.room.read_only or getattr(app.snapshot, "as_of", None) is not None:
            return None
        if action == "raise_incident":
            return True
        incident = self.selected
        if incident is None:
            return None
        allowed = {
            "ack": incident.state is State.OPEN,
            "mitigate": incident.state is State.ACKNOWLEDGED,
            "resolve": incident.state in (State.ACKNOWLEDGED, State.MITIGATING),
            "close": incident.state is State.RESOLVED,
            "note": incident.state is not State.CLOSED,
        }
        return True if allowed.get(str(parameters[0]), False) else None

    def action_act(self, action: str) -> None:
        incident = self.selected
        if incident is None:
            return
        room = self.crmctl.room
        number = incident.number

        async def journal(text: str, severity: str | None) -> str:
            done = await room.incident_action(action, number, note=text or None, severity=severity)
            return f"{done.id} {done.state.value}" if action != "note" else f"{done.id}: note added"

        if action in ("ack", "mitigate", "close"):
            self._act_now(journal)
        elif action == "resolve":
            self.app.push_screen(IncidentForm(f"Resolve {incident.id}", "How was it resolved?", journal,
                                              required="Say how it was resolved."), self._acknowledged)
        else:
            self.app.push_screen(IncidentForm(f"Note on {incident.id}", "Note", journal, required="Type the note."),
                                 self._acknowledged)

    def action_raise_incident(self) -> None:
        room = self.crmctl.room

        async def journal(text: str, severity: str | None) -> str:
            incident = await room.raise_incident(text, severity=severity)
            return f"{incident.id} raised ({incident.severity.value})"

        self.app.push_screen(IncidentForm("Raise an incident", "What is wrong?", journal, required="Give it a title.",
                                          severity=True), self._acknowledged)

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.refresh_view()

    def _acknowledged(self, ack: str | None) -> None:
        if ack:
            self.app.notify(ack, title="Incident", timeout=4)
            self.fetch()

    @work(group="incident-actions", exit_on_error=False, description="Journalling an incident action")
    async def _act_now(self, journal: Callable[[str, str | None], Awaitable[str]]) -> None:
        from crmctl.control import ReadOnlyError

        try:
            ack = await journal("", None)
        except (IncidentRefused, ReadOnlyError) as exc:
            self.app.notify(str(exc), title="Refused", severity="warning", timeout=8)
            self.fetch()
            return
        self._acknowledged(ack)

    @on(DataTable.RowHighlighted, "#incidents-table")
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        self._show_detail()
        self.refresh_bindings()


def _delivery_line(entry: JournalEntry, now: Any) -> Content:
    p = entry.payload
    when = format_time(entry.ts, now)
    if entry.kind == "notify.delivered":
        return Content.from_markup("$when $ch ✔ $event delivered (attempt $n)", when=when, ch=str(p.get("channel")),
                                   event=str(p.get("event")), n=str(p.get("attempts")))
    return Content.from_markup("[b reverse $error] $when $ch ✖ $event FAILED [/] $why", when=when,
                               ch=str(p.get("channel")), event=str(p.get("event")), why=str(p.get("reason", "")))


def raise_from_check(app: CrmctlApp, check_id: str) -> None:
    """The Checks screen's `i`: raises an incident from the selected red check, in a worker.

    The toast appears only after the journal commit; a refusal (an incident is already open
    for the check) says which one.
    """

    async def work() -> None:
        from crmctl.control import ReadOnlyError

        try:
            incident = await app.room.raise_incident_from_check(check_id)
        except (IncidentRefused, ReadOnlyError) as exc:
            app.notify(str(exc), title="Incident not raised", severity="warning", timeout=8)
            return
        app.notify(f"{incident.id} raised from {check_id} ({incident.severity.value}); key 6 shows it.",
                   title="Incident", timeout=6)

    app.run_worker(work(), group="incident-actions", exit_on_error=False, description="Raising an incident")


__all__ = ["COLUMNS", "IncidentForm", "IncidentsScreen", "IncidentsTable", "raise_from_check"]
