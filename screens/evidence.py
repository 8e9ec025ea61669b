"""The Evidence & sign-off screen: closure (business and technical sign-off), lessons learned,
and the audit evidence pack (export it, verify it)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from crmctl.views import format_time, shorten
from screens.widgets.form import FormDialog, FormField
from screens.screenshots import render_screens
from screens.widgets import ControlFooter, ControlHeader
from screens.widgets.room import InTheRoom


SIGNOFF_COLUMNS: tuple[tuple[str, str], ...] = (
    ("when", "Signed"),
    ("role", "Role"),
    ("name", "Name"),
    ("statement", "Statement"),
    ("head", "At entry"),
)
LESSON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "#"),
    ("category", "Category"),
    ("text", "Lesson"),
    ("action", "Action"),
    ("owner", "Owner"),
)
STATEMENT_WIDTH = 60


class EvidenceScreen(InTheRoom, Screen[None]):
    """For the cutover lead and the auditor: who signed what, what was learned, and the pack.

    Everything shown is read from the journal through the control room in a worker (so a
    sign-off recorded in another session appears here within a feed interval); every action
    goes through the room too, and is shown only once the journal has committed it.
    """

    CSS_PATH = "evidence.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sign_off", "Sign off", id="evidence.sign-off", tooltip="Record a business or technical sign-off"),
        Binding("l", "add_lesson", "Lesson", id="evidence.lesson", tooltip="Record a lesson learned"),
        Binding("x", "export_pack", "Export pack", id="evidence.export",
                tooltip="Write the audit evidence pack (report, data, screens, journal, manifest)"),
        Binding("v", "verify_pack", "Verify", id="evidence.verify", tooltip="Re-check the last pack's hashes and journal"),
    ]
    """Keys of this screen, on top of the app's."""

    def __init__(self, *, screenshots: Any = render_screens) -> None:
        super().__init__()
        self.screenshots = screenshots
        """Renders the screens for the pack (a test may pass None to leave them out)."""
        self.records: Any = None
        self.verified: dict[str, str] = {}
        """Pack path -> what the last verification in this session found."""
        self._loaded_seq = -1

    def compose(self) -> ComposeResult:
        yield ControlHeader("Evidence")
        with Vertical(id="evidence-body"):
            yield Static(id="closure", classes="panel")
            signoffs = DataTable(id="signoff-table", cursor_type="row", zebra_stripes=True, classes="panel")
            for key, label in SIGNOFF_COLUMNS:
                signoffs.add_column(label, key=key)
            yield signoffs
            lessons = DataTable(id="lesson-table", cursor_type="row", zebra_stripes=True, classes="panel")
            for key, label in LESSON_COLUMNS:
                lessons.add_column(label, key=key)
            yield lessons
            yield Static(id="export-panel", classes="panel")
        yield ControlFooter()

    def on_mount(self) -> None:
        self.query_one("#closure").border_title = "Closure"
        self.query_one("#signoff-table").border_title = "Sign-offs"
        self.query_one("#lesson-table").border_title = "Lessons learned"
        self.query_one("#export-panel").border_title = "Evidence pack"
        self.watch(self.crmctl, "snapshot", self._journal_moved, init=False)
        self._redraw()
        self.reload_records()

    def _journal_moved(self) -> None:
        if self.crmctl.snapshot.last_seq != self._loaded_seq:
            self.reload_records()

    # ---------------------------------------------------------------------------- reading

    def reload_records(self) -> None:
        """Re-reads sign-offs, lessons and exports from the journal (in a worker)."""
        self._read_journal(self.crmctl.snapshot.last_seq, getattr(self.crmctl, "as_of", None))

    @work(exclusive=True, group="evidence-load", exit_on_error=False, description="Reading sign-offs and lessons")
    async def _read_journal(self, seq: int, as_of: datetime | None) -> None:
        records = await self.crmctl.room.closure_state(as_of)
        self._loaded_seq = seq
        if records == self.records:
            return  # check results moved the journal on, not these: keep cursors where they are
        self.records = records
        self._redraw()

    def _redraw(self) -> None:
        state = self.records
        with self.app.batch_update():
            self._show_closure(state)
            self._show_signoffs(state)
            self._show_lessons(state)
            self._show_export(state)

    def _show_closure(self, state: Any) -> None:
        from crmctl.signoff import closure

        panel = self.query_one("#closure", Static)
        if state is None:
            panel.update(Content("Reading the journal…"))
            return
        lines = []
        for role, record in closure(list(state.signoffs)).items():
            if record is None:
                lines.append(Content.from_markup(f"[b reverse $warning] ✖ {role.upper()} [/] not signed yet"))
            else:
                who = record.name + (f", {record.title}" if record.title else "")
                lines.append(Content.from_markup(
                    f"[b reverse $success] ✔ {role.upper()} [/] $who · $when",
                    who=who, when=format_time(record.ts, self.crmctl.now),
                ))
        verdict = "closed: both sign-offs recorded" if state.closed else "open: closure needs business and technical sign-off"
        lines.append(Content.from_markup("[$text-muted]$v[/]", v=f"Sprint 4.4.4 closure {verdict}."))
        panel.update(Content("\n").join(lines))

    def _show_signoffs(self, state: Any) -> None:
        table = self.query_one("#signoff-table", DataTable)
        table.clear()
        records = state.signoffs if state is not None else ()
        for r in reversed(records):
            table.add_row(
                format_time(r.ts, self.crmctl.now, seconds=False), r.role, r.name,
                shorten(r.statement, STATEMENT_WIDTH), f"#{r.head_seq}", key=str(r.seq),
            )
        if state is not None and not records:
            table.add_row("—", "", "none recorded", "press s to sign off", "", key="none")
        table.border_subtitle = f"{len(records)} recorded"

    def _show_lessons(self, state: Any) -> None:
        table = self.query_one("#lesson-table", DataTable)
        table.clear()
        records = state.lessons if state is not None else ()
        for r in reversed(records):
            table.add_row(f"#{r.seq}", r.category, shorten(r.text, STATEMENT_WIDTH), shorten(r.action, 40), r.owner, key=str(r.seq))
        if state is not None and not records:
            table.add_row("—", "", "none recorded", "press l to add one", "", key="none")
        table.border_subtitle = f"{len(records)} recorded"

    def _show_export(self, state: Any) -> None:
        panel = self.query_one("#export-panel", Static)
        exports = state.exports if state is not None else ()
        if not exports:
            panel.update(Content.from_markup("[$text-muted]No evidence pack exported yet: press x to write one.[/]"))
            return
        last = exports[-1]
        p = last.payload
        path = str(p.get("path", "?"))
        checked = self.verified.get(path, "not verified in this session (press v)")
        lines = [
            Content.from_markup("[b]Last export[/] $when by $who · $n files", when=format_time(last.ts, self.crmctl.now),
                                who=last.operator, n=str(p.get("files", "?"))),
            Content.from_markup("[b]Folder[/] $path", path=path),
            Content.from_markup("[b]Froze[/] journal entry $seq · manifest SHA-256 $sha",
                                seq=str(p.get("head_seq")), sha=str(p.get("manifest_sha256", ""))[:16] + "…"),
            Content.from_markup("[b]Verify[/] $v", v=checked),
        ]
        if len(exports) > 1:
            earlier = len(exports) - 1
            lines.append(Content.from_markup("[$text-muted]$n in the journal.[/]",
                                             n=f"{earlier} earlier export{'s' if earlier != 1 else ''}"))
        panel.update(Content("\n").join(lines))

    # ---------------------------------------------------------------------------- acting

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Sign-offs and lessons are greyed out in a read-only session and in a historical view."""
        if action in ("sign_off", "add_lesson") and not self.live:
            return None
        return True

    def action_sign_off(self) -> None:
        """Asks role, name, title and statement, then journals the sign-off through the room."""
        if not self.live:
            self.crmctl.notify("Sign-offs are recorded from a live operator session.", severity="warning")
            return
        room = self.crmctl.room
        fields = [
            FormField("role", "Role", options=[("Business acceptance", "business"), ("Technical (data, integrations, monitoring)", "technical")],
                      required="Choose business or technical."),
            FormField("name", "Signed by", value=room.actor.operator, required="Say who signs."),
            FormField("title", "Title", placeholder="e.g. Business Owner, Migration Lead"),
            FormField("statement", "Statement (required)", required="A sign-off needs a statement.",
                      placeholder="what is accepted, and on what basis"),
        ]
        about = ("The sign-off is journalled with the journal head it signs and the check statuses of this moment, "
                 "so the record shows exactly what evidence was in front of you.")

        async def submit(values: dict[str, str]) -> str:
            record = await room.record_signoff(values["role"], values["statement"], name=values["name"], title=values["title"])
            return f"{record.role.capitalize()} sign-off by {record.name} recorded (entry #{record.seq})."

        self.app.push_screen(FormDialog("Sign off", about, fields, submit, id="signoff-form"), callback=self._acknowledged)

    def action_add_lesson(self) -> None:
        """Asks for a lesson (and its action and owner), then journals it."""
        if not self.live:
            self.crmctl.notify("Lessons are recorded from a live operator session.", severity="warning")
            return
        room = self.crmctl.room
        fields = [
            FormField("text", "Lesson (required)", required="A lesson needs some text.", placeholder="what happened, what we learned"),
            FormField("category", "Category", options=[("To improve", "improve"), ("Went well", "went-well"), ("Action item", "action")],
                      value="improve"),
            FormField("action", "Action", placeholder="what we will do about it"),
            FormField("owner", "Owner", placeholder="who owns the action"),
        ]

        async def submit(values: dict[str, str]) -> str:
            lesson = await room.record_lesson(values["text"], category=values["category"] or "improve",
                                              action=values["action"], owner=values["owner"])
            return f"Lesson recorded (entry #{lesson.seq})."

        self.app.push_screen(FormDialog("Lesson learned", "Recorded in the journal and in every evidence pack.", fields,
                                       submit, id="lesson-form"), callback=self._acknowledged)

    def _acknowledged(self, ack: str | None) -> None:
        if ack:
            self.crmctl.notify(ack, title="Journalled", timeout=6)
            self.reload_records()

    def action_export_pack(self) -> None:
        """Writes the evidence pack beside the state file, then verifies it."""
        self._export_pack()

    @work(exclusive=True, group="evidence-export", exit_on_error=False, description="Exporting the evidence pack")
    async def _export_pack(self) -> None:
        from crmctl.evidence import EvidenceError

        app = self.crmctl
        app.notify("Writing the evidence pack…", title="Evidence", timeout=3)
        try:
            result = await app.room.export_evidence(screenshots=self.screenshots)
        except (EvidenceError, OSError) as exc:
            app.notify(f"{exc}", title="Evidence pack NOT written", severity="error", timeout=15)
            return
        report = await app.room.verify_evidence(result.path)
        self.verified[str(result.path)] = _verdict(report)
        severity = "information" if result.journal_ok and report.ok else "error"
        app.notify(
            f"{result.path} ({result.files} files, journal entry {result.head_seq}); {self.verified[str(result.path)]}",
            title="Evidence pack written", severity=severity, timeout=10,
        )
        self.reload_records()

    def action_verify_pack(self) -> None:
        """Re-checks the last exported pack (every hash, the journal chain and head)."""
        state = self.records
        if state is None or not state.exports:
            self.crmctl.notify("No evidence pack exported yet.", severity="warning")
            return
        self._verify_pack(str(state.exports[-1].payload.get("path", "")))

    @work(exclusive=True, group="evidence-verify", exit_on_error=False, description="Verifying the evidence pack")
    async def _verify_pack(self, path: str) -> None:
        report = await self.crmctl.room.verify_evidence(Path(path))
        self.verified[path] = _verdict(report)
        self.crmctl.notify(self.verified[path], title="Evidence pack", severity="information" if report.ok else "error",
                           timeout=10)
        self._redraw()


def _verdict(report: Any) -> str:
    """One line on what a verification found."""
    if report.ok:
        return f"✔ intact: {report.files} files match, journal chain verified to entry {report.head_seq}"
    first = report.problems[0] if report.problems else "unknown problem"
    more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
    return f"✖ DOES NOT VERIFY: {first}{more}"


__all__ = ["EvidenceScreen"]
