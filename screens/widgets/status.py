"""How a check status is drawn: glyph and word always, colour only as a bonus.

Colours come from the theme (its variables), never from literals, so a theme switch or NO_COLOR
(Textual's monochrome filter) keeps every status readable: the glyph and the word carry the
meaning, and reverse video makes BREACH, ERROR and STALE stand out even in black and white.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

from rich.color import Color as RichColor
from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError
from textual.content import Content

from crmctl.model import Status
from crmctl.views import ALARM_STATUSES, status_label

STATUS_VARIABLES: Mapping[Status, str] = {
    Status.OK: "success",
    Status.WARN: "warning",
    Status.BREACH: "error",
    Status.ERROR: "error",
    Status.STALE: "warning",
    Status.PENDING: "foreground-muted",
}
"""The theme variable each status is coloured with. OK is the only one drawn in green."""


BADGE_WIDTH = max(len(status_label(s)) for s in Status)
"""Width of the widest label ("… PENDING"), so that padded badges line up in lists."""


def status_markup(status: Status, *, pad: bool = False) -> str:
    """Textual markup for a status badge, e.g. `[bold reverse $error] ✖ BREACH [/]`.

    With `pad`, every badge has the same width, so check ids after it line up.
    """
    variable = STATUS_VARIABLES[status]
    style = f"bold reverse ${variable}" if status in ALARM_STATUSES else f"bold ${variable}"
    label = status_label(status).ljust(BADGE_WIDTH) if pad else status_label(status)
    return f"[{style}] {label} [/]"


def status_content(status: Status, *, pad: bool = False) -> Content:
    """The badge of `status_markup` as Content, built without parsing markup.

    For long lists (the wall screen's board of every check): assembling is some forty times
    cheaper than `Content.from_markup` per line, and draws exactly the same.
    """
    variable = STATUS_VARIABLES[status]
    style = f"bold reverse ${variable}" if status in ALARM_STATUSES else f"bold ${variable}"
    label = status_label(status).ljust(BADGE_WIDTH) if pad else status_label(status)
    return Content.assemble((f" {label} ", style))


def status_text(status: Status, variables: Mapping[str, str]) -> Text:
    """A Rich `Text` badge for places that take Rich renderables (DataTable cells).

    `variables` are the app's theme variables (`App.theme_variables`); a colour that does not
    parse is dropped rather than guessed, since the glyph and word already say everything.
    """
    style = _badge_style(status, variables.get(STATUS_VARIABLES[status]))
    return Text(f" {status_label(status)} ", style=style, no_wrap=True, end="")


@lru_cache(maxsize=64)
def _rich_colour(raw: str | None) -> RichColor | None:
    if not raw:
        return None
    try:
        return Color.parse(raw).rich_color
    except ColorParseError:
        return None


def theme_colour(variables: Mapping[str, str], name: str) -> RichColor | None:
    """The theme variable `name` as a Rich colour for DataTable cells; None (no colour, the glyph
    and word still say it all) when the theme lacks it or it does not parse."""
    return _rich_colour(variables.get(name))


@lru_cache(maxsize=64)
def _badge_style(status: Status, raw: str | None) -> Style:
    """The style of a badge, per status and theme colour (parsed once, not per cell and redraw)."""
    return Style(color=_rich_colour(raw), bold=True, reverse=status in ALARM_STATUSES)
