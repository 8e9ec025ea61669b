"""Text from outside crmctl made safe to keep, show and export: the one rule every boundary uses.

Record names, job names, plug-in trace messages, server error bodies and operator input can
hold anything: a megabyte of name, ESC sequences that clear the operator's terminal (`ESC [ 2J`)
or write the clipboard (OSC 52), hyperlinks (OSC 8), BEL, bidirectional overrides that reorder
what is read, JSON nested thousands deep. Textual passes ESC through to the terminal as it is,
and a journal entry opened with `cat` does the same, so the text is neutralised where it enters
the model (`CheckContext.finish`) and again where it is projected for a screen (`crmctl.views`)
or written into the evidence pack (`crmctl.scrubber`, whose control-character rule this module
shares): old journal entries and other writers are covered too, and one rule means the TUI, the
journal and the pack show the same visible `\\x1b`.

What this module does not do is escape Rich/Textual markup: the core never imports either, and
markup is a screen concern. Screens render outside text as content, never as markup (Textual's
`Content.from_markup("…$name…", name=text)` substitutes it literally; `rich.text.Text(text)`).
"""

from __future__ import annotations

from typing import Any, Mapping

from crmctl.scrubber import neutralise

MAX_TEXT = 4000
"""Longest text kept in a result (explanation, a string value): enough for any honest sentence or
server message, and a 1 MB record name then costs the journal 4 KB, not a megabyte per run."""
MAX_KEY = 200
"""Longest mapping key kept in a result's values."""
MAX_DEPTH = 12
"""Deepest nesting of values kept; deeper parts are replaced by a note. Results are serialised
(canonical JSON, hashed) and rendered recursively: unbounded depth would end in RecursionError."""
ELLIPSIS = "…"
TOO_DEEP = "… (nested too deeply to show)"


def safe_text(value: object, *, limit: int | None = MAX_TEXT, multiline: bool = True) -> str:
    """`value` as text with every control character made visible (`\\x1b`) and cut to `limit`.

    Cut before neutralising (a 1 MB string is never scanned whole) and again after, since a
    visible escape is longer than the character it replaces; a cut ends in "…".
    """
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    text = neutralise(text, multiline=multiline)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return text


def one_line(value: object, width: int | None = None) -> str:
    """`value` on one line for a table cell or a header: whitespace runs (newlines, tabs) become one
    space, controls become visible, and the result is at most `width` characters, ending in "…"
    when cut."""
    text = value if isinstance(value, str) else str(value)
    if width is not None and len(text) > 4 * width + 64:  # never split a megabyte to show 80 characters
        text = text[: 4 * width + 64]
    flat = neutralise(" ".join(text.split()), multiline=False)
    if width is not None and len(flat) > width:
        return flat[: max(0, width - 1)] + ELLIPSIS
    return flat


def safe_value(value: Any, *, limit: int = MAX_TEXT, depth: int = 0) -> Any:
    """A result's values (JSON-like) with every string made safe, keys bounded, nesting capped.

    Numbers, booleans and None are kept as they are, and so are the container types.
    """
    if isinstance(value, str):
        return safe_text(value, limit=limit)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, Mapping):
        return {
            safe_text(k, limit=MAX_KEY, multiline=False): safe_value(v, limit=limit, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        items = [safe_value(v, limit=limit, depth=depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value  # anything else (a datetime) is the check's own, not outside text


def is_safe(text: str) -> bool:
    """True when `text` holds no character `safe_text` would neutralise (tabs and newlines allowed)."""
    return neutralise(text) == text.replace("\r\n", "\n")
