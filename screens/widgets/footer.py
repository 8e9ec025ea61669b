"""The footer every screen carries: Textual's, made compact when the terminal is narrow."""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby
from typing import Iterable, Iterator

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup

COMPACT_BELOW = 120
"""Columns under which the footer drops its padding, so 80 columns show every key."""

PALETTE_WIDTH = 12
"""Columns the command-palette key takes at the right ("▏^p palette")."""

Shown = tuple[object, Binding, bool, str]
"""(node, binding, enabled, tooltip) of one key the footer shows."""


class ControlFooter(Footer):
    """A Footer that tightens itself on narrow terminals (80x24 over SSH) and relaxes on wide ones.

    When the keys do not fit on one line (a screen with many actions at 80 columns), it takes a
    second line rather than cutting keys off: this screen's keys above, the app-wide keys (screens,
    history, help, quit) below. Every action keeps its key on screen, as the house rules demand.
    """

    DEFAULT_CSS = """
    ControlFooter.-two-rows {
        height: 2;
        layout: vertical;
    }
    ControlFooter .footer-row {
        height: 1;
        width: 100%;
    }
    """

    def on_resize(self, event: events.Resize) -> None:
        self.compact = event.size.width < COMPACT_BELOW
        if self._bindings_ready and self.has_class("-two-rows") != self._needs_two_rows():
            self.call_after_refresh(self.recompose)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        if not self._needs_two_rows():
            self.remove_class("-two-rows")
            yield from super().compose()
            return
        self.add_class("-two-rows")
        local, app_wide = self._split(self._shown())
        with HorizontalGroup(classes="footer-row"):
            yield from self._keys(local)
        with HorizontalGroup(classes="footer-row"):
            yield from self._keys(app_wide)
            yield from self._palette_key()

    # ----------------------------------------------------------------------------------------

    def _shown(self) -> list[Shown]:
        return [
            (node, binding, enabled, tooltip)
            for (node, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        ]

    @staticmethod
    def _split(shown: list[Shown]) -> tuple[list[Shown], list[Shown]]:
        local = [item for item in shown if not isinstance(item[0], App)]
        return local, [item for item in shown if isinstance(item[0], App)]

    def _needs_two_rows(self) -> bool:
        """True when one line cannot hold every key (estimated as Textual lays keys out)."""
        width = self.size.width or self.app.size.width
        if not width:
            return False
        return self._width(self._shown()) + PALETTE_WIDTH > width

    @staticmethod
    def _grouped(shown: Iterable[Shown]) -> Iterator[tuple[Binding.Group | None, list[list[Shown]]]]:
        """The keys as Textual's Footer groups them: one entry per action, runs of the same
        group together; yields (group or None, [entries of one action, ...])."""
        by_action: dict[str, list[Shown]] = defaultdict(list)
        for item in shown:
            by_action[item[1].action].append(item)
        for group, members in groupby(by_action.values(), lambda items: items[0][1].group):
            listed = list(members)
            yield (group if group is not None and len(listed) > 1 else None), listed

    def _width(self, shown: Iterable[Shown]) -> int:
        """The columns the keys take on one compact line: "key description" plus one blank each."""
        total = 0
        for group, members in self._grouped(shown):
            if group is not None:
                keys = [self.app.get_key_display(items[0][1]) for items in members]
                total += sum(len(k) + 1 for k in keys) + 1 + len(group.description) + 1
            else:
                for items in members:
                    binding = items[0][1]
                    total += len(self.app.get_key_display(binding)) + 1 + len(binding.description) + 2
        return total

    def _keys(self, shown: list[Shown]) -> Iterator[Widget]:
        """Footer keys for `shown`, grouped as Textual's Footer groups them."""
        for group, members in self._grouped(shown):
            if group is not None:
                with KeyGroup(classes="-compact" if group.compact else ""):
                    for items in members:
                        _node, binding, enabled, tooltip = items[0]
                        yield FooterKey(
                            binding.key,
                            self.app.get_key_display(binding),
                            "",
                            binding.action,
                            disabled=not enabled,
                            tooltip=tooltip or binding.description,
                            classes="-grouped",
                        ).data_bind(compact=Footer.compact)
                yield FooterLabel(group.description)
            else:
                for items in members:
                    _node, binding, enabled, tooltip = items[0]
                    yield FooterKey(
                        binding.key,
                        self.app.get_key_display(binding),
                        binding.description,
                        binding.action,
                        disabled=not enabled,
                        tooltip=tooltip,
                    ).data_bind(compact=Footer.compact)

    def _palette_key(self) -> Iterator[Widget]:
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE):
            return
        try:
            _node, binding, enabled, tooltip = self.screen.active_bindings[self.app.COMMAND_PALETTE_BINDING]
        except KeyError:
            return
        yield FooterKey(
            binding.key,
            self.app.get_key_display(binding),
            binding.description,
            binding.action,
            classes="-command-palette",
            disabled=not enabled,
            tooltip=binding.tooltip or binding.description,
        )
