"""The evidence pack as a small document model: sections of paragraphs, tables and preformatted text.

One model, several renderings (index.html, evidence.md, JSON, one CSV per table): whatever the
auditor opens, it says the same thing, because it was built once. Every string that enters the
model has already passed the scrubber (secrets out, control characters made visible); the
renderers only escape for their format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

NONE_RECORDED = "None recorded."
DISPLAY_ROWS = 500
"""index.html and evidence.md show at most this many rows of a table (the newest, for logs): a
night of hypercare journals tens of thousands of results, and a report nobody can open proves
nothing. The CSV and JSON files always hold every row."""


@dataclass(frozen=True)
class Para:
    text: str
    style: str = ""
    """"" or "note" (muted), "warn" (attention), "ok" (good news)."""


@dataclass(frozen=True)
class Pre:
    text: str


@dataclass(frozen=True)
class Table:
    """A table; `id` names its CSV file (data/<section>-<id>.csv)."""

    id: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def shown(self, limit: int = DISPLAY_ROWS) -> tuple[tuple[tuple[str, ...], ...], str]:
        """The rows a report shows (the last `limit`) and the note saying what was left out."""
        if len(self.rows) <= limit:
            return self.rows, ""
        left = len(self.rows) - limit
        return self.rows[-limit:], f"The first {left:,} of {len(self.rows):,} rows are left out here; the CSV file holds every row."


@dataclass(frozen=True)
class Details:
    """A collapsible group (an HTML <details>; a sub-heading in Markdown)."""

    summary: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Image:
    src: str
    """Relative to the pack folder."""
    alt: str


Block = Para | Pre | Table | Details | Image


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self

    def none_recorded(self, what: str = "") -> Section:
        """The explicit "nothing here" every empty section carries (never a silently empty one)."""
        return self.add(Para(f"{what} none recorded." if what else NONE_RECORDED, "note"))


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)

    def section(self, id: str, title: str) -> Section:
        sec = Section(id, title)
        self.sections.append(sec)
        return sec

    def tables(self) -> list[tuple[str, Table]]:
        """Every table with its CSV name `<section>-<table>`, nested ones included."""
        out: list[tuple[str, Table]] = []

        def walk(prefix: str, blocks: Sequence[Block]) -> None:
            for block in blocks:
                if isinstance(block, Table):
                    out.append((f"{prefix}-{block.id}", block))
                elif isinstance(block, Details):
                    walk(prefix, block.blocks)

        for sec in self.sections:
            walk(sec.id, sec.blocks)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "subtitle": self.subtitle, "sections": [_section_json(s) for s in self.sections]}


def _section_json(sec: Section) -> dict[str, Any]:
    return {"id": sec.id, "title": sec.title, "blocks": [_block_json(b) for b in sec.blocks]}


def _block_json(block: Block) -> dict[str, Any]:
    if isinstance(block, Para):
        return {"type": "para", "text": block.text, "style": block.style}
    if isinstance(block, Pre):
        return {"type": "pre", "text": block.text}
    if isinstance(block, Table):
        return {
            "type": "table",
            "id": block.id,
            "caption": block.caption,
            "columns": list(block.columns),
            "rows": [list(r) for r in block.rows],
        }
    if isinstance(block, Image):
        return {"type": "image", "src": block.src, "alt": block.alt}
    return {"type": "details", "summary": block.summary, "blocks": [_block_json(b) for b in block.blocks]}


def slug(text: str) -> str:
    """A file- and anchor-safe name: lower case letters, digits and dashes."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:60] or "x"
