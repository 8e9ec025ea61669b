"""The command palette provider: every screen, every action and every check, by name."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from screens.app import CrmctlApp


class ControlRoomCommands(Provider):
    """Lets the palette (ctrl+p) reach what the footer has no room for, e.g. one check by id."""

    @property
    def crmctl(self) -> CrmctlApp:
        """The app, typed."""
        return cast("CrmctlApp", self.app)

    def commands(self) -> list[tuple[str, Callable[[], object], str]]:
        """(name, callback, help) of every command, screens first."""
        from screens.app import SCREENS

        app = self.crmctl
        items: list[tuple[str, Callable[[], object], str]] = [
            (f"Screen: {title}", partial(app.switch_mode, mode), f"Key {key}: {about}")
            for key, mode, title, about in SCREENS
        ]
        items.append(("Run all checks now", app.action_run_checks, "Key r"))
        if app.as_of is None:
            items.append(("Time travel: view as of a past moment", app.action_time_travel, "Key t"))
        else:
            items.append(("Back to live", app.action_back_to_live, "Key t or esc"))
        items.append(("Show keys (help)", app.action_help, "Key ?"))
        items.append(("Quit crmctl", app.action_quit, "Key q"))
        for check in app.room.config.checks:
            title = getattr(check, "title", "") or check.kind
            items.append((f"Check: {check.id}", partial(app.action_show_check, check.id), title))
        from crmctl.views import entities_of

        for entity in entities_of(tuple(app.room.config.checks)):
            if entity != "—":
                items.append((f"Entity: {entity}", partial(app.action_show_entity, entity), "Every check of it (Checks, e)"))
        return items

    async def discover(self) -> Hits:
        for name, callback, help_text in self.commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self.commands():
            score = matcher.match(f"{name} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


__all__ = ["ControlRoomCommands"]
