"""The scaffolding the control room's screens share: a keyed table reconciled in place beside a
detail panel, redrawn live as the journal and the clock move, and (for screens whose data is a
slice of the journal the app's snapshot does not hold) a coalesced reader of that slice.

Checks, Runbook, Rollback, Incidents and Hypercare are all built this way; each says only what
its rows are and how a row is drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence, cast

from rich.text import Text
from textual.screen import Screen
from textual.widgets import DataTable

from screens.widgets.room import InTheRoom

if TYPE_CHECKING:
    from crmctl.journal import JournalEntry

Columns = Sequence[tuple[str, str]]
"""(key, label) of each table column, most telling first (what 80 columns show)."""


def keyed_table(table: DataTable, columns: Columns) -> DataTable:
    """`table` with `columns` added (key, label): what every screen's compose does with its table."""
    for key, label in columns:
        table.add_column(label, key=key)
    return table


class JournalView(InTheRoom, Screen[None]):
    """A screen of the control room showing a projection of the journal in a keyed table.

    Rows are reconciled by key on every redraw, never cleared, so the cursor stays on its row
    and a refresh keeps the selection and scroll. Subclasses name their table (`TABLE_ID`).
    """

    TABLE_ID: ClassVar[str] = ""
    """The id of the screen's keyed DataTable."""

    @property
    def table(self) -> DataTable:
        """The screen's keyed table."""
        return self.query_one(f"#{self.TABLE_ID}", DataTable)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        table = self.table
        if not table.row_count:
            return None
        try:
            key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:  # noqa: BLE001 - cursor on a row being removed
            return None
        return cast(str, key.value)

    def reconcile(
        self,
        rows: Sequence[tuple[str, Sequence[Text]]],
        columns: Columns,
        *,
        order_by: tuple[str, Callable[[str], str]] | None = None,
    ) -> None:
        """Makes the table show `rows` ((key, cells), in order), touching only what changed.

        Rows no longer wanted are removed, changed cells updated, new rows added. With
        `order_by` (a column and how its cell's text maps back to the row key), rows that came
        back (a filter turned off) are put back in order. The cursor stays on its row.
        """
        table = self.table
        selected = self.selected_key
        wanted = [key for key, _ in rows]
        for gone in [k for k in table.rows if k.value not in wanted]:
            table.remove_row(gone)
        for key, cells in rows:
            if key in table.rows:
                for (column, _), value in zip(columns, cells):
                    if table.get_cell(key, column) != value:
                        table.update_cell(key, column, value, update_width=True)
            else:
                table.add_row(*cells, key=key)
        if order_by is not None and [r.key.value for r in table.ordered_rows] != wanted:
            column, key_of = order_by
            order = {k: n for n, k in enumerate(wanted)}
            table.sort(column, key=lambda cell: order.get(key_of(cell.plain), 0))
        if selected is not None and selected in wanted and self.selected_key != selected:
            table.move_cursor(row=table.get_row_index(selected))


class JournalFeedView(JournalView):
    """A JournalView whose rows come from a slice of the journal read by the screen itself
    (incidents, hypercare runs): read in a worker after the last entry seen, whenever the
    journal moves, one read at a time; a change of "as of" (time travel) reads again from
    the start, up to that moment.
    """

    FEED_GROUP: ClassVar[str] = "journal-view-feed"
    FEED_DESCRIPTION: ClassVar[str] = "Reading the journal"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loaded = False
        """True once the first read has come back (until then panels say "loading…")."""
        self._seen = 0
        self._as_of: Any = None
        self._fetching = False
        self._again = False

    async def read_feed(self, after_seq: int, until: Any) -> list[JournalEntry]:
        """The entries of this screen's slice after `after_seq` (up to `until`), oldest first."""
        raise NotImplementedError

    def restart_feed(self) -> None:
        """Forgets everything read (before reading again from the start)."""

    def absorb(self, entries: list[JournalEntry]) -> None:
        """Folds newly read entries into the screen's state."""

    def refresh_view(self) -> None:
        """Redraws from the screen's state."""

    def follow_feed(self) -> None:
        """Reads on every journal move and redraws on every clock tick; starts the first read."""
        self.watch(self.crmctl, "snapshot", self.fetch, init=False)
        self.watch(self.crmctl, "now", self.refresh_view, init=False)
        self.refresh_view()
        self.fetch()

    def fetch(self) -> None:
        """Reads what the journal gained since the last look (coalesced: one read at a time)."""
        if self._fetching:
            self._again = True
            return
        self._fetching = True
        self.run_worker(self._fetch(), group=self.FEED_GROUP, exit_on_error=False, description=self.FEED_DESCRIPTION)

    async def _fetch(self) -> None:
        try:
            while True:
                self._again = False
                as_of = getattr(self.crmctl.snapshot, "as_of", None)
                if as_of != self._as_of:  # into or out of a historical view: fold again from scratch
                    self._seen, self._as_of = 0, as_of
                    self.restart_feed()
                entries = await self.read_feed(self._seen, as_of)
                if entries:
                    self.absorb(entries)
                    self._seen = max(self._seen, *(e.seq for e in entries))
                self.loaded = True
                self.refresh_view()
                if not self._again:
                    break
        finally:
            self._fetching = False


__all__ = ["Columns", "JournalFeedView", "JournalView", "keyed_table"]
