"""The footer every screen carries: Textual's, made compact when the terminal is narrow."""

from __future__ import annotations

from textual import events
from textual.widgets import Footer

COMPACT_BELOW = 120
"""Columns under which the footer drops its padding, so 80 columns show every key."""


class ControlFooter(Footer):
    """A Footer that tightens itself on narrow terminals (80x24 over SSH) and relaxes on wide ones."""

    def on_resize(self, event: events.Resize) -> None:
        self.compact = event.size.width < COMPACT_BELOW
