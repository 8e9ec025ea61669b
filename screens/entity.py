"""The drill-down of one entity: every check about it, with values, thresholds, keys and queries."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from crmctl.model import Status
from crmctl.views import STATUS_ORDER, CheckDetail, EntityView, build_entity, entities_of, shorten, updated_text
from screens.widgets import ControlFooter, status_markup
from screens.widgets.room import InTheRoom


QUERIES_SHOWN = 8
"""Queries listed per check here; the check's own detail (Checks, enter) lists them all."""


class EntityScreen(InTheRoom, ModalScreen[None]):
    """One entity's side of the reconciliation, live, worst check first.

    The sections (one per check of the entity) are built once and redrawn in place, so the
    scroll position survives every new result; n and p walk to the next and previous entity.
    """

    CSS_PATH = "entity.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", id="entity.close"),
        Binding("n", "step(1)", "Next entity", id="entity.next", tooltip="The next entity's checks"),
        Binding("p", "step(-1)", "Previous", id="entity.previous", tooltip="The previous entity's checks"),
        Binding("R", "rerun_entity", "Re-run", key_display="R", id="entity.rerun",
                tooltip="Run every check of this entity once, now"),
    ]
    """Escape closes; n/p change entity; R re-runs the entity's checks."""

    def __init__(self, entity: str) -> None:
        super().__init__()
        self.entity = entity

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="entity-box"):
            yield Static(id="entity-head")
        yield ControlFooter()

    def on_mount(self) -> None:
        self.follow(self.refresh_view)
        self._build()

    def view(self) -> EntityView:
        """The entity at the current time (or the past moment shown)."""
        app = self.crmctl
        return build_entity(self.entity, tuple(app.room.config.checks), app.snapshot.results, app.now)

    def _build(self) -> None:
        """(Re)creates one section per check of the entity, then fills them."""
        box = self.query_one("#entity-box", VerticalScroll)
        box.query(".entity-check").remove()
        box.mount_all(
            Vertical(
                Static(classes="entity-facts"),
                Static(classes="entity-queries"),
                id=f"check-{_dom_id(d.row.check_id)}",
                classes="entity-check subpanel",
            )
            for d in self.view().details
        )
        box.scroll_home(animate=False)
        self.call_after_refresh(self.refresh_view)

    def refresh_view(self) -> None:
        """Redraws the head and every section from the snapshot, in place."""
        app = self.crmctl
        view = self.view()
        box = self.query_one("#entity-box")
        box.border_title = f"Entity: {view.entity}"
        box.border_subtitle = updated_text(app.snapshot, app.now)
        counts = "  ".join(f"{status_markup(s)} [b]{view.counts[s]}[/]" for s in STATUS_ORDER if view.counts[s])
        self.query_one("#entity-head", Static).update(
            Content.from_markup(
                f"{status_markup(view.status)} [b]$entity[/] · {len(view.details)} checks  {counts}",
                entity=view.entity,
            )
        )
        with self.app.batch_update():
            for detail in view.details:
                section = self.query_one_optional(f"#check-{_dom_id(detail.row.check_id)}", Vertical)
                if section is None or not section.children:
                    continue
                section.border_title = detail.row.check_id
                section.border_subtitle = detail.row.age_text
                section.query_one(".entity-facts", Static).update(_facts(detail))
                queries = section.query_one(".entity-queries", Static)
                queries.update(_queries(detail))
                queries.display = bool(detail.queries)

    def action_step(self, delta: int) -> None:
        """Shows the next (1) or previous (-1) entity."""
        entities = [e for e in entities_of(tuple(self.crmctl.room.config.checks)) if e != "—"]
        if not entities:
            return
        index = entities.index(self.entity) if self.entity in entities else 0
        self.entity = entities[(index + delta) % len(entities)]
        self._build()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Re-running is greyed out in a read-only session and in a historical view."""
        if action == "rerun_entity" and (self.crmctl.room.read_only or self.crmctl.as_of is not None):
            return None
        return True

    def action_rerun_entity(self) -> None:
        """Runs every check of this entity once, now."""
        ids = [d.row.check_id for d in self.view().details]
        if ids:
            self.crmctl.run_checks(ids)


def _dom_id(check_id: str) -> str:
    """A check id as a DOM id (dots and other punctuation are not allowed there)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in check_id)


def _facts(detail: CheckDetail) -> Content:
    """Status, explanation, values, thresholds and key lists (wrapped: every word matters)."""
    row = detail.row
    lines = [
        Content.from_markup(f"{status_markup(row.status)} [b]$title[/]", title=row.title),
        Content.from_markup("$why", why=row.explanation),
    ]
    if detail.values:
        lines.append(_pairs("Values", detail.values))
    if detail.thresholds:
        lines.append(_pairs("Thresholds", detail.thresholds, prefix=">"))
    for keys in detail.key_lists:
        lines.append(Content.from_markup("[b]$title[/]: $keys", title=keys.title, keys=keys.text))
    if not detail.queries and row.status is not Status.PENDING:
        lines.append(Content.from_markup("[$text-muted]No queries recorded.[/]"))
    return Content("\n").join(lines)


def _queries(detail: CheckDetail) -> Content:
    """The queries that ran, one line each (cut at the edge: the check's detail has them whole)."""
    lines = []
    if detail.queries:
        lines.append(Content.from_markup(f"[b]Queries[/] [$text-muted]({len(detail.queries)}, $n requests)[/]",
                                         n=str(detail.requests)))
        if detail.query_base:
            lines.append(Content.from_markup("[$text-muted]  relative to $base[/]", base=detail.query_base))
        for query in detail.queries[:QUERIES_SHOWN]:
            alarm = query.status_text not in ("200", "204", "—")
            lines.append(
                Content.from_markup(
                    f"  $method [{'b reverse $warning' if alarm else 'b'}]$status[/] $took  $url$error",
                    method=query.method.ljust(4),
                    status=query.status_text.rjust(3),
                    took=query.duration_text.rjust(8),
                    url=shorten(query.url, 100),
                    error=f"  ({query.error})" if query.error else "",
                )
            )
        if len(detail.queries) > QUERIES_SHOWN:
            lines.append(Content.from_markup(
                "  [$text-muted]… $more more: the check's detail (Checks, enter) lists them all[/]",
                more=str(len(detail.queries) - QUERIES_SHOWN)))
    return Content("\n").join(lines)


def _pairs(label: str, pairs: tuple[tuple[str, str], ...], prefix: str = "") -> Content:
    def one(key: str, value: str) -> str:
        sign = prefix if key in ("warn", "breach") else ""
        return f"{key} {sign}{value}"

    text = " · ".join(one(k, v) for k, v in pairs)
    return Content.from_markup(f"[b]{label}[/] $text", text=text)


__all__ = ["EntityScreen"]
