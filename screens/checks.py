"""The checks screen: every check with its status, value, threshold and age, updated in place."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Static

from crmctl.model import Status
from crmctl.views import CheckRow, check_rows, format_span, format_time, shorten, updated_text
from screens.detail import CheckDetailScreen
from screens.widgets import ControlFooter, ControlHeader, status_markup, status_text

if TYPE_CHECKING:
    from screens.app import CrmctlApp

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

EXPLANATION_WIDTH = 72
"""Explanations are cut in the table; the summary line and the detail show them whole."""


class ChecksTable(DataTable):
    """The checks table; enter opens the detail, and says so in the footer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Details", id="checks.details", tooltip="Values, thresholds and queries"),
    ]
    """DataTable's own enter is hidden from the footer; this one is shown."""


class ChecksScreen(Screen[None]):
    """Run and re-run checks, read values and ages, and drill into one check.

    The table is reconciled by check id on every snapshot and clock tick: rows are updated in
    place, never cleared, so the cursor, the selection and the scroll position survive a flood
    of results.
    """

    CSS_PATH = "checks.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("R", "rerun_check", "Re-run", key_display="R", id="checks.rerun", tooltip="Run the selected check once, now"),
        Binding("f", "toggle_problems", "Problems", id="checks.filter", tooltip="Show only checks that are not OK"),
    ]
    """Keys of this screen, on top of the app's."""

    problems_only: var[bool] = var(False, init=False)
    """When True the table shows only checks whose effective status is not OK."""

    def compose(self) -> ComposeResult:
        yield ControlHeader("Checks")
        with Vertical(id="checks-body"):
            table = ChecksTable(id="checks-table", cursor_type="row", zebra_stripes=True, classes="panel")
            for key, label in COLUMNS:
                table.add_column(label, key=key)
            yield table
            yield Static(id="check-summary", classes="panel")
        yield ControlFooter()

    @property
    def crmctl(self) -> CrmctlApp:
        """The app, typed."""
        return cast("CrmctlApp", self.app)

    @property
    def table(self) -> ChecksTable:
        """The checks table."""
        return self.query_one("#checks-table", ChecksTable)

    @property
    def selected_check(self) -> str | None:
        """The check id under the cursor, if any."""
        table = self.table
        if not table.row_count:
            return None
        try:
            key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:  # noqa: BLE001 - cursor on a row being removed
            return None
        return cast(str, key.value)

    def on_mount(self) -> None:
        self.query_one("#check-summary").border_title = "Selected"
        self.watch(self.crmctl, "snapshot", self.refresh_view, init=False)
        self.watch(self.crmctl, "now", self.refresh_view, init=False)
        self.watch(self.crmctl, "theme", self._rebuild, init=False)
        self.refresh_view()

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
            for row in rows:
                cells = self._cells(row, variables)
                if row.key in table.rows:
                    for (column, _), value in zip(COLUMNS, cells):
                        if table.get_cell(row.key, column) != value:
                            table.update_cell(row.key, column, value, update_width=True)
                else:
                    table.add_row(*cells, key=row.key)
            if [row.key.value for row in table.ordered_rows] != wanted:
                # A row that came back (filter on, check turned red again) was appended at the
                # end: put it back in config order.
                order = {key: index for index, key in enumerate(wanted)}
                table.sort("check", key=lambda cell: order[cell.plain])
            if selected in wanted and selected != self.selected_check:
                table.move_cursor(row=table.get_row_index(selected))
            self._show_titles(len(rows), len(all_rows))
            self._show_summary({row.key: row for row in rows})

    def _rebuild(self) -> None:
        """Clears and refills the table (after a filter or theme change), cursor kept by key."""
        selected = self.selected_check
        self.table.clear()
        self.refresh_view()
        if selected is not None and selected in self.table.rows:
            self.table.move_cursor(row=self.table.get_row_index(selected))

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
        summary.update(
            Content.from_markup(f"{status_markup(row.status)} [b]$title[/]\n$why", title=row.title, why=row.explanation)
        )
        summary.border_title = row.check_id
        summary.border_subtitle = " · ".join(facts)

    # ----------------------------------------------------------------------------------------
    # events and actions

    @on(DataTable.RowHighlighted, "#checks-table")
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        self._show_summary()

    @on(DataTable.RowSelected, "#checks-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.open_detail(cast(str, event.row_key.value))

    def open_detail(self, check_id: str) -> None:
        """Opens the drill-down of one check over this screen."""
        self.app.push_screen(CheckDetailScreen(check_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Re-running is greyed out in a read-only session, and with no check selected."""
        if action == "rerun_check":
            if self.crmctl.room.read_only:
                return None
            return True if self.selected_check else None
        return True

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
