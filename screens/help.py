"""The help screen: every key the current screen answers to, read from the live bindings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from screens.widgets import ControlFooter


@dataclass(frozen=True)
class KeyHelp:
    """One line of the help: where a key works, the key, and what it does."""

    section: str
    key: str
    description: str
    enabled: bool = True
    tooltip: str = ""


NAVIGATION: tuple[KeyHelp, ...] = (
    KeyHelp("Navigation", "↑ ↓ pgup pgdn", "Move in tables and lists"),
    KeyHelp("Navigation", "tab", "Next pane"),
    KeyHelp("Navigation", "esc", "Close a dialog"),
    KeyHelp("Navigation", "ctrl+p", "Command palette: every screen, action and check"),
    KeyHelp("Navigation", "ctrl+q", "Quit"),
)
"""Keys that are not in any footer but every operator needs."""


def gather_keys(screen: Screen[object]) -> list[KeyHelp]:
    """The keys active on `screen` now, read from its binding chain (so help never goes stale).

    Bindings the footer hides (cursor moves, scrolling, focus) are covered by NAVIGATION.
    """
    app = screen.app
    keys: list[KeyHelp] = []
    seen: set[tuple[str, str]] = set()
    for active in screen.active_bindings.values():
        binding: Binding = active.binding
        if not binding.description or not binding.show:
            continue
        section = "Everywhere" if isinstance(active.node, App) else "This screen"
        key = app.get_key_display(binding)
        if (key, binding.description) in seen:
            continue
        seen.add((key, binding.description))
        keys.append(KeyHelp(section, key, binding.description, active.enabled, active.tooltip or binding.tooltip))
    keys.sort(key=lambda k: (k.section != "This screen", k.section))
    return keys + list(NAVIGATION)


class HelpScreen(ModalScreen[None]):
    """Lists keys; any of escape, ? or q closes it."""

    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", key_display="esc", id="help.close"),
    ]
    """Closing keys; q closes help rather than quitting, which is what a reader of help expects."""

    def __init__(self, keys: list[KeyHelp]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(self._render_keys(), id="help-keys")
        yield ControlFooter()

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "Keys"
        box.border_subtitle = "esc closes"

    def _render_keys(self) -> Content:
        width = max((len(k.key) for k in self.keys), default=4)
        lines: list[Content] = []
        section = None
        for k in self.keys:
            if k.section != section:
                if lines:
                    lines.append(Content(""))
                lines.append(Content.from_markup("[b $primary]$section[/]", section=k.section))
                section = k.section
            note = "  (not in this session)" if not k.enabled else ""
            lines.append(
                Content.from_markup(
                    "  [b]$key[/]  $desc[$text-muted]$note[/]", key=k.key.ljust(width), desc=k.description, note=note
                )
            )
        return Content("\n").join(lines)


__all__ = ["HelpScreen", "KeyHelp", "NAVIGATION", "gather_keys"]
