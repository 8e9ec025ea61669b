"""The checks screen: every check with its status, value, threshold and age, updated in place."""

from __future__ import annotations

from time import monotonic
from typing import Any, ClassVar, cast

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.cache import LRUCache
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import var
from textual.widgets import DataTable, Static

from crmctl.model import Status
from crmctl.views import (
    CheckRow,
    check_rows,
    format_span,
    format_time,
    progress_bar,
    progress_line,
    shorten,
    updated_text,
)
from screens.detail import CheckDetailScreen
from screens.entity import EntityScreen
from screens.widgets import ControlFooter, ControlHeader, status_markup, status_text
from screens.widgets.journal_view import JournalView, keyed_table


COLUMNS: tuple[tuple[str, str], ...] = (
    ("status", "Status"),
    ("check", "Check"),
    ("age", "Age"),
    ("value", "Value"),
    ("threshold", "Threshold"),
    ("entity", "Entity"),
    ("kind", "Kind"),
    ("explanation", "Explanation"),
)
"""(key, label) of each column, most telling first: at 80 columns status, check, age and value
are on screen, the rest one scroll (or the summary under the table) away."""

COLUMN_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("status", ("status",)),
    ("check", ("check_id",)),
    ("age", ("age_text", "stale")),
    ("value", ("value_text",)),
    ("threshold", ("threshold_text",)),
    ("entity", ("entity",)),
    ("kind", ("kind",)),
    ("explanation", ("explanation",)),
)
"""The CheckRow fields each column is drawn from, in COLUMNS order (keep the two in step)."""
assert [c for c, _ in COLUMN_FIELDS] == [c for c, _ in COLUMNS]

EXPLANATION_WIDTH = 72
"""Explanations are cut in the table; the summary line and the detail show them whole."""


class ChecksTable(DataTable):
    """The checks table; enter opens the detail, and says so in the footer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Details", id="checks.details", tooltip="Values, thresholds and queries"),
    ]
    """DataTable's own enter is hidden from the footer; this one is shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._value_cache: LRUCache[tuple[Any, ...], tuple[object, Any]] = LRUCache(4096)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> Any:
        """DataTable's cell render, cached by the cell's *value* rather than the table's update count.

        Textual (8.2.8) keys its cell cache on a counter every `update_cell` bumps, so one new
        age re-renders every visible cell of every column; on a wall screen with 300 live checks
        that was most of the CPU. Unchanged cells keep their value object, so keying on it (the
        value is held by the cache entry, so its id cannot be reused meanwhile) renders only the
        cells that changed. Header and label cells take the normal path.
        """
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        value = self._data[row_key][column_key]
        key = (row_key, column_key, row_index, id(value), base_style, width, cursor, hover,
               self._show_hover_cursor, self._pseudo_class_state)
        held = self._value_cache.get(key)
        if held is None or held[0] is not value:
            held = (value, super()._render_cell(row_index, column_index, base_style, width, cursor, hover))
            self._value_cache[key] = held
        return held[1]


class ChecksScreen(JournalView):
    """Run and re-run checks, read values and ages, and drill into one check.

    The table is reconciled by check id on every snapshot and clock tick: rows are updated in
    place, never cleared, so the cursor, the selection and the scroll position survive a flood
    of results.
    """

    CSS_PATH = "checks.tcss"
    TABLE_ID = "checks-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("R", "rerun_check", "Re-run", key_display="R", id="checks.rerun", tooltip="Run the selected check once, now"),
        Binding("i", "raise_incident", "Incident", id="checks.incident",
                tooltip="Raise an incident from the selected BREACH/ERROR check, its result as evidence"),
        Binding("f", "toggle_problems", "Problems", id="checks.filter", tooltip="Show only checks that are not OK"),
        Binding("e", "open_entity", "Entity", id="checks.entity",
                tooltip="Every check of the selected check's entity: values, thresholds, keys, queries"),
        Binding("x", "cancel_check", "Cancel run", id="checks.cancel",
                tooltip="Cancel the selected check's run in this session (journalled as ERROR)"),
    ]
    """Keys of this screen, on top of the app's."""

    problems_only: var[bool] = var(False, init=False)
    """When True the table shows only checks whose effective status is not OK."""

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._drawn: dict[str, CheckRow] = {}
        """The row each table row was last drawn from: unchanged rows cost nothing on an update."""

    def compose(self) -> ComposeResult:
        yield ControlHeader("Checks")
        with Vertical(id="checks-body"):
            yield keyed_table(ChecksTable(id=self.TABLE_ID, cursor_type="row", zebra_stripes=True, classes="panel"), COLUMNS)
            yield Static(id="check-progress", classes="panel")
            yield Static(id="check-summary", classes="panel")
        yield ControlFooter()

    @property
    def table(self) -> ChecksTable:
        """The checks table."""
        return self.query_one(f"#{self.TABLE_ID}", ChecksTable)

    @property
    def selected_check(self) -> str | None:
        """The check id under the cursor, if any."""
        return self.selected_key

    def on_mount(self) -> None:
        self.query_one("#check-summary").border_title = "Selected"
        self.follow(self.refresh_view)  # hidden (another mode): no redraw until shown
        self.watch(self.crmctl, "theme", self._rebuild, init=False)
        self.watch(self.crmctl, "progress", self._show_progress, init=False)
        self.refresh_view()
        self._show_progress()

    # ----------------------------------------------------------------------------------------
    # rendering

    def all_rows(self) -> list[CheckRow]:
        """Every check's row at the current time, in config order."""
        app = self.crmctl
        return check_rows(tuple(app.room.config.checks), app.snapshot.results, app.now)

    def rows(self, all_rows: list[CheckRow] | None = None) -> list[CheckRow]:
        """The rows to show now (filtered when `problems_only`)."""
        rows = self.all_rows() if all_rows is None else all_rows
        if self.problems_only:
            rows = [row for row in rows if row.status is not Status.OK]
        return rows

    def refresh_view(self) -> None:
        """Reconciles the table with the current projection, keeping the cursor on its check."""
        all_rows = self.all_rows()
        rows = self.rows(all_rows)
        table = self.table
        selected = self.selected_check
        wanted = [row.key for row in rows]
        variables = self.app.theme_variables
        with self.app.batch_update():
            for gone in [k for k in table.rows if k.value not in wanted]:
                table.remove_row(gone)
            drawn = self._drawn
            for gone in [k for k in drawn if k not in table.rows]:
                del drawn[gone]
            for row in rows:
                held = drawn.get(row.key)
                if held == row:
                    continue  # nothing about this check changed since it was drawn
                if row.key in table.rows and held is not None:
                    # Only the columns whose inputs changed (on a clock tick: the age alone).
                    for column, value in self._changed_cells(held, row, variables):
                        # Measuring a cell is costly (300 rows a second on a wall screen): only
                        # a value wider than its column can change the column's width.
                        grow = value.cell_len > table.columns[column].content_width  # type: ignore[index]
                        table.update_cell(row.key, column, value, update_width=grow)
                elif row.key in table.rows:
                    for (column, _), value in zip(COLUMNS, self._cells(row, variables)):
                        if table.get_cell(row.key, column) != value:
                            table.update_cell(row.key, column, value, update_width=True)
                else:
                    table.add_row(*self._cells(row, variables), key=row.key)
                drawn[row.key] = row
            if [row.key.value for row in table.ordered_rows] != wanted:
                # A row that came back (filter on, check turned red again) was appended at the
                # end: put it back in config order.
                order = {key: index for index, key in enumerate(wanted)}
                table.sort("check", key=lambda cell: order[cell.plain])
            if selected in wanted and selected != self.selected_check:
                table.move_cursor(row=table.get_row_index(selected))
            self._show_titles(len(rows), len(all_rows))
            self._show_summary({row.key: row for row in rows})
            if self.crmctl.progress:
                self._show_progress()

    def _rebuild(self) -> None:
        """Clears and refills the table (after a filter or theme change), cursor kept by key."""
        selected = self.selected_check
        self.table.clear()
        self._drawn.clear()
        self.refresh_view()
        if selected is not None and selected in self.table.rows:
            self.table.move_cursor(row=self.table.get_row_index(selected))

    def _changed_cells(self, held: CheckRow, row: CheckRow, variables: dict[str, str]) -> list[tuple[str, Text]]:
        """(column, cell) for the columns whose source fields differ between two rows."""
        cells = None
        changed = []
        for index, (column, fields) in enumerate(COLUMN_FIELDS):
            if any(getattr(held, f) != getattr(row, f) for f in fields):
                cells = cells or self._cells(row, variables)
                changed.append((column, cells[index]))
        return changed

    def _cells(self, row: CheckRow, variables: dict[str, str]) -> tuple[Text, ...]:
        # Rich Text, never str: DataTable parses strings as markup, and an explanation quoting
        # "[missing]" keys must print as written.
        return (
            status_text(row.status, variables),
            Text(row.check_id, style="bold"),
            Text(row.age_text.removesuffix(" ago"), style="bold" if row.stale else ""),
            Text(shorten(row.value_text, 28)),
            Text(row.threshold_text),
            Text(row.entity),
            Text(row.kind),
            Text(shorten(row.explanation, EXPLANATION_WIDTH)),
        )

    def _show_titles(self, shown: int, total: int) -> None:
        app = self.crmctl
        table = self.table
        table.border_title = f"Checks · problems only ({shown} of {total})" if self.problems_only else f"Checks ({total})"
        table.border_subtitle = updated_text(app.snapshot, app.now)

    def _show_summary(self, rows: dict[str, CheckRow] | None = None) -> None:
        """The selected check, whole: the table cuts long explanations, this does not."""
        summary = self.query_one("#check-summary", Static)
        check_id = self.selected_check
        if rows is None:
            rows = {row.key: row for row in self.rows()}
        row = rows.get(check_id) if check_id else None
        if row is None:
            summary.update(Content.from_markup("[$text-muted]No check selected.[/]"))
            summary.border_title = "Selected"
            summary.border_subtitle = ""
            return
        app = self.crmctl
        facts = [f"every {format_span(row.every)}" if row.every else "not in config"]
        if row.finished is not None:
            facts.append(f"last run {format_time(row.finished, app.now)} ({row.age_text})")
            facts.append(f"{row.requests} requests")
        content = Content.from_markup(f"{status_markup(row.status)} [b]$title[/]\n$why", title=row.title, why=row.explanation)
        held = getattr(summary, "content", None)
        if content != held:
            # Same length, same wrapping, same height: redraw without a layout pass (a layout
            # of the whole screen costs more than the table's update on a busy wall screen).
            same_size = isinstance(held, Content) and len(held.plain) == len(content.plain)
            summary.update(content, layout=not same_size)
        summary.border_title = row.check_id
        summary.border_subtitle = " · ".join(facts)

    def _show_progress(self) -> None:
        """One bar per check running in this session: rows, pages, ETA; ▶ marks the selected one.

        Progress lives in memory (it is never journalled), so a run in another session shows
        here only once its result lands.
        """
        panel = self.query_one("#check-progress", Static)
        running = self.crmctl.progress
        panel.display = bool(running)
        self.refresh_bindings()
        if not running:
            return
        at = monotonic()
        selected = self.selected_check
        width = max(len(cid) for cid in running)
        lines = []
        for check_id in sorted(running):
            line = progress_line(running[check_id], at)
            mark = "▶" if check_id == selected else " "
            lines.append(
                Content.from_markup(
                    "$mark [b]$id[/] $bar $text",
                    mark=mark,
                    id=check_id.ljust(width),
                    bar=progress_bar(line.fraction),
                    text=line.text,
                )
            )
        panel.update(Content("\n").join(lines))
        panel.border_title = f"Running ({len(running)})"
        panel.border_subtitle = "x cancels the selected run"

    # ----------------------------------------------------------------------------------------
    # events and actions

    @on(DataTable.RowHighlighted, "#checks-table")
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        self._show_summary()
        if self.crmctl.progress:
            self._show_progress()

    @on(DataTable.RowSelected, "#checks-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.open_detail(cast(str, event.row_key.value))

    def open_detail(self, check_id: str) -> None:
        """Opens the drill-down of one check over this screen."""
        self.app.push_screen(CheckDetailScreen(check_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Re-running is greyed out in a read-only session, in a historical view, and with no
        check selected; "Cancel run" is only in the footer while this session runs a check."""
        if action == "rerun_check":
            if self.crmctl.room.read_only or self.crmctl.as_of is not None:
                return None
            return True if self.selected_check else None
        if action == "cancel_check":
            if self.crmctl.room.read_only or not self.crmctl.progress:
                return False
            return True if self.selected_check in self.crmctl.progress else None
        if action == "open_entity":
            return True if self.selected_check else None
        if action == "raise_incident":
            if self.crmctl.room.read_only or self.crmctl.as_of is not None:
                return None
            row = next((r for r in self.all_rows() if r.check_id == self.selected_check), None)
            return True if row is not None and row.status in (Status.BREACH, Status.ERROR) else None
        return True

    def action_open_entity(self) -> None:
        """Opens the drill-down of the selected check's entity (every check about it)."""
        check_id = self.selected_check
        if check_id is None:
            return
        row = next((r for r in self.all_rows() if r.check_id == check_id), None)
        if row is None or row.entity == "—":
            self.notify(f"{check_id} is about no entity; enter shows the check itself.", severity="warning")
            return
        self.app.push_screen(EntityScreen(row.entity))

    def action_cancel_check(self) -> None:
        """Cancels the selected check's run in this session; its ERROR result names the operator."""
        check_id = self.selected_check
        if check_id is not None:
            self.crmctl.cancel_check(check_id)

    def action_raise_incident(self) -> None:
        """Raises an incident from the selected red check (ControlRoom.raise_incident_from_check)."""
        from screens.incidents import raise_from_check

        check_id = self.selected_check
        if check_id is not None:
            raise_from_check(self.crmctl, check_id)

    def action_rerun_check(self) -> None:
        """Runs the selected check once, now; its new result arrives through the journal feed."""
        check_id = self.selected_check
        if check_id is not None:
            self.crmctl.run_checks([check_id])

    def action_toggle_problems(self) -> None:
        """Shows only checks that are not OK, or all of them again."""
        self.problems_only = not self.problems_only

    def watch_problems_only(self) -> None:
        self._rebuild()


__all__ = ["COLUMNS", "ChecksScreen", "ChecksTable"]
