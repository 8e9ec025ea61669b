"""The Incidents screen: the register with escalation countdowns, the selected incident's timeline and
evidence, notification outcomes, and the keys that move an incident on.

The screen does no I/O: a worker asks the control room for the incident and notification entries
written since the last look (whenever the journal moves), folds them into a `Register`, and the
countdowns are re-projected on every clock tick. Actions go through the room in workers and are
shown only once committed (the feed then brings them to every session).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Static

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
from screens.widgets.form import text_dialog
from screens.widgets.journal_view import JournalFeedView, keyed_table

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


class IncidentsScreen(JournalFeedView):
    """Triage: who owns what, what escalates when, what happened, and whether Teams heard of it."""

    CSS_PATH = "incidents.tcss"
    TABLE_ID = "incidents-table"
    FEED_GROUP = "incidents-feed"
    FEED_DESCRIPTION = "Reading incidents"
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

    def compose(self) -> ComposeResult:
        yield ControlHeader("Incidents")
        with Vertical(id="incidents-body"):
            yield keyed_table(IncidentsTable(id=self.TABLE_ID, cursor_type="row", zebra_stripes=True, classes="panel"), COLUMNS)
            with VerticalScroll(id="incident-detail", classes="panel"):
                yield Static(id="incident-lines")
        yield ControlFooter()

    @property
    def selected(self) -> Incident | None:
        key = self.selected_key
        if key is None:
            return None
        number = int(key)
        return self.register.get(number) if number in self.register else None

    def on_mount(self) -> None:
        self.query_one("#incident-detail").border_title = "Incident"
        self.follow_feed()

    # ----------------------------------------------------------------------------------------
    # data

    async def read_feed(self, after_seq: int, until: Any) -> list[JournalEntry]:
        return await self.crmctl.room.incident_entries(after_seq, until=until)

    def restart_feed(self) -> None:
        self.register, self.deliveries = Register(), []

    def absorb(self, entries: list[JournalEntry]) -> None:
        for entry in entries:
            if entry.kind.startswith("incident."):
                self.register.apply(entry)
            else:
                self.deliveries.append(entry)
        self.deliveries = self.deliveries[-50:]

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
        with self.app.batch_update():
            self.reconcile([(str(i.number), self._cells(i, severities)) for i in rows], COLUMNS,
                           order_by=("id", lambda text: text.removeprefix("INC-")))
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
            self.app.push_screen(text_dialog(f"Resolve {incident.id}", "How was it resolved?", journal,
                                             required="Say how it was resolved."), self._acknowledged)
        else:
            self.app.push_screen(text_dialog(f"Note on {incident.id}", "Note", journal, required="Type the note."),
                                 self._acknowledged)

    def action_raise_incident(self) -> None:
        room = self.crmctl.room

        async def journal(text: str, severity: str | None) -> str:
            incident = await room.raise_incident(text, severity=severity)
            return f"{incident.id} raised ({incident.severity.value})"

        self.app.push_screen(text_dialog("Raise an incident", "What is wrong?", journal, required="Give it a title.",
                                         severity=SEVERITY_OPTIONS), self._acknowledged)

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


__all__ = ["COLUMNS", "IncidentsScreen", "IncidentsTable", "raise_from_check"]
