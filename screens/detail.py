"""The drill-down of one check: values, thresholds, explanation, the queries that ran, their cost."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from crmctl.model import CheckResult
from crmctl.views import CheckDetail, build_detail, updated_text
from screens.widgets import ControlFooter, status_markup
from screens.widgets.room import InTheRoom


HISTORY_LIMIT = 8
"""How many earlier results the detail lists."""


class CheckDetailScreen(InTheRoom, ModalScreen[None]):
    """Everything known about one check, live: it follows the journal while it is open."""

    CSS_PATH = "detail.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", id="detail.close"),
        Binding("R", "rerun_check", "Re-run", key_display="R", id="detail.rerun", tooltip="Run this check once, now"),
    ]
    """Escape closes; R re-runs the check shown."""

    def __init__(self, check_id: str) -> None:
        super().__init__()
        self.check_id = check_id
        self._history: tuple[CheckResult, ...] = ()
        self._history_for: Any = None
        self._queries_for: Any = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-box"):
            yield Static(id="detail-head")
            yield Static(id="detail-facts")
            with Horizontal(id="detail-numbers"):
                yield Static(id="detail-values", classes="subpanel")
                yield Static(id="detail-thresholds", classes="subpanel")
            yield Static(id="detail-keys", classes="subpanel")
            queries = DataTable(id="detail-queries", cursor_type="row", classes="subpanel")
            # The URL is what differs between queries: it gets the room, the target goes last.
            for key in ("method", "status", "duration", "url", "target"):
                queries.add_column(key.capitalize() if key != "url" else "URL", key=key)
            yield queries
            yield Static(id="detail-history", classes="subpanel")
        yield ControlFooter()

    def on_mount(self) -> None:
        box = self.query_one("#detail-box")
        box.border_title = self.check_id
        self.query_one("#detail-values").border_title = "Values"
        self.query_one("#detail-thresholds").border_title = "Thresholds"
        self.query_one("#detail-history").border_title = "Earlier results"
        self.query_one("#detail-keys").border_title = "Keys behind the difference"
        self.follow(self.refresh_view)
        self.refresh_view()

    def _check(self) -> Any:
        return next((c for c in self.crmctl.room.config.checks if c.id == self.check_id), None)

    def refresh_view(self) -> None:
        """Redraws from the snapshot; reloads the history when a new result has landed."""
        app = self.crmctl
        result = app.snapshot.results.get(self.check_id)
        if result is not None and result.finished != self._history_for:
            self._history_for = result.finished
            self._load_history()
        earlier = tuple(h for h in self._history if result is None or h.finished < result.finished)
        detail = build_detail(self._check(), result, app.now, earlier[:HISTORY_LIMIT])
        with self.app.batch_update():
            self._show(detail)
        self.query_one("#detail-box").border_subtitle = updated_text(app.snapshot, app.now).replace(
            "updated", "journal updated"
        )

    def _show(self, detail: CheckDetail) -> None:
        row = detail.row
        head = Content.from_markup(
            f"{status_markup(row.status)} [b]$title[/]  [$text-muted]$kind · $entity[/]\n$why",
            title=row.title,
            kind=row.kind,
            entity=row.entity,
            why=row.explanation,
        )
        self.query_one("#detail-head", Static).update(head)
        facts = Content.from_markup(
            "[b]Started[/]  $started   [b]Finished[/] $finished\n"
            "[b]Cadence[/]  $cadence   [b]Took[/] $took   [b]Cost[/] $cost",
            cadence=detail.cadence_text,
            started=detail.started_text,
            finished=detail.finished_text,
            took=detail.duration_text,
            cost=f"{detail.requests} requests",
        )
        self.query_one("#detail-facts", Static).update(facts)
        self.query_one("#detail-values", Static).update(_pairs(detail.values, "no values yet"))
        self.query_one("#detail-thresholds", Static).update(_pairs(detail.thresholds, "none configured"))
        keys = self.query_one("#detail-keys", Static)
        keys.display = bool(detail.key_lists)
        keys.update(
            Content("\n").join(
                Content.from_markup("[b]$title[/]\n$keys", title=k.title, keys=k.text) for k in detail.key_lists
            )
        )

        table = self.query_one("#detail-queries", DataTable)
        table.border_title = f"Queries ({len(detail.queries)}) · {detail.requests} requests"
        table.border_subtitle = f"URLs relative to {detail.query_base}" if detail.query_base else ""
        if detail.row.finished == self._queries_for and table.row_count == len(detail.queries):
            # Same result as drawn: leave the table (and the operator's cursor in it) alone.
            self._show_history(detail)
            return
        self._queries_for = detail.row.finished
        table.clear()
        for query in detail.queries:
            url = query.url + (f"  ({query.error})" if query.error else "")
            table.add_row(
                Text(query.method),
                Text(query.status_text, style="bold" if query.status_text not in ("200", "204") else ""),
                Text(query.duration_text, justify="right"),
                Text(url),
                Text(query.target),
            )
        self._show_history(detail)

    def _show_history(self, detail: CheckDetail) -> None:
        history = self.query_one("#detail-history", Static)
        if detail.history:
            history.update(
                Content("\n").join(
                    Content.from_markup("$when  $label  $value", when=h.finished_text, label=h.status_label, value=h.value_text)
                    for h in detail.history
                )
            )
        else:
            history.update(Content.from_markup("[$text-muted]none journalled[/]"))

    @work(exclusive=True, group="detail-history", exit_on_error=False, description="Loading check history")
    async def _load_history(self) -> None:
        """Reads the check's earlier results from the journal (I/O, hence a worker)."""
        history = await self.crmctl.room.store.results_history(self.check_id, limit=HISTORY_LIMIT + 1)
        self._history = tuple(sorted(history, key=lambda r: r.finished, reverse=True))
        self.refresh_view()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Re-running is greyed out in a read-only session."""
        if action == "rerun_check" and self.crmctl.room.read_only:
            return None
        return True

    def action_rerun_check(self) -> None:
        """Runs this check once, now."""
        self.crmctl.run_checks([self.check_id])


def _pairs(pairs: tuple[tuple[str, str], ...], empty: str) -> Content:
    if not pairs:
        return Content.from_markup("[$text-muted]$empty[/]", empty=empty)
    width = max(len(k) for k, _ in pairs)
    return Content("\n").join(
        Content.from_markup("[b]$key[/] $value", key=k.ljust(width), value=v) for k, v in pairs
    )


__all__ = ["CheckDetailScreen", "HISTORY_LIMIT"]
