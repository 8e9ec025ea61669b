"""The overview's status counts at 80 columns: wrapped between badges, never cut or split."""

from __future__ import annotations

from textual.content import Content

from crmctl.model import Status
from crmctl.views import STATUS_ORDER
from screens.overview import wrap_units
from screens.widgets.status import status_markup


def counts(n: int) -> list[Content]:
    return [Content.from_markup(f"{status_markup(s)} [b]$n[/]", n=str(n)) for s in STATUS_ORDER]


def test_the_six_counts_fit_one_line_when_they_can() -> None:
    line = wrap_units(counts(7), 120)
    assert "\n" not in line.plain
    assert line.plain == " ✔ OK  7   ▲ WARN  7   ✖ BREACH  7   ⚠ ERROR  7   ◌ STALE  7   … PENDING  7"


def test_at_80_columns_the_counts_wrap_between_badges_and_pending_is_whole() -> None:
    line = wrap_units(counts(300), 74)  # an 80-column overview: border, padding, scrollbar
    lines = line.plain.split("\n")
    assert len(lines) == 2 and all(len(text) <= 74 for text in lines)
    assert lines[1].endswith(" … PENDING  300")
    for status in Status:  # every badge with its count, none split over two lines
        label = status.value
        assert any(label in text for text in lines)


def test_a_unit_wider_than_the_line_still_stands_alone() -> None:
    assert wrap_units([Content("x" * 10), Content("y")], 4).plain == "x" * 10 + "\ny"
