"""Renders the evidence document as Markdown (evidence.md): readable as plain text, safe when rendered.

Markdown renderers pass raw HTML through and turn `[text](url)` into links, so every character
that could start markup is escaped: a lesson that says `<img src=x onerror=...>` or
`[click](javascript:...)` reads as exactly that, and does nothing.
"""

from __future__ import annotations

import re

from crmctl.evidence_doc import Block, Details, Document, Image, Para, Pre, Table
from crmctl.safetext import safe_text

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!{}()])")


def escape(text: str) -> str:
    """Inline text with every Markdown / HTML metacharacter escaped and every control character
    made visible (the model's text was scrubbed already; this holds even if a path forgot)."""
    return _SPECIAL.sub(r"\\\1", safe_text(text, limit=None)).replace("&", "&amp;")


def _cell(text: str) -> str:
    return escape(text).replace("\n", "<br>") or " "


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(doc: Document) -> str:
    """The whole document as Markdown text."""
    out = [f"# {escape(doc.title)}", "", escape(doc.subtitle), "", "## Contents", ""]
    for sec in doc.sections:
        out.append(f"- [{escape(sec.title)}](#{sec.id})")
    out.append("")
    for sec in doc.sections:
        out.append(f'<a id="{sec.id}"></a>')
        out.append("")
        out.append(f"## {escape(sec.title)}")
        out.append("")
        _blocks(out, sec.blocks, 3)
    return "\n".join(out).rstrip() + "\n"


def _blocks(out: list[str], blocks: tuple[Block, ...] | list[Block], level: int) -> None:
    for block in blocks:
        if isinstance(block, Para):
            text = escape(block.text).replace("\n", "  \n")
            out.append(f"_{text}_" if block.style == "note" else f"**{text}**" if block.style == "warn" else text)
            out.append("")
        elif isinstance(block, Pre):
            text = safe_text(block.text, limit=None)  # shown raw inside the fence: no ESC may reach a terminal
            fence = _fence(text)
            out.extend([fence + "text", text.rstrip("\n"), fence, ""])
        elif isinstance(block, Table):
            if block.caption:
                out.extend([f"*{escape(block.caption)}*", ""])
            rows, cut = block.shown()
            if cut:
                out.extend([f"_{escape(cut)}_", ""])
            out.append("| " + " | ".join(_cell(c) for c in block.columns) + " |")
            out.append("|" + "|".join("---" for _ in block.columns) + "|")
            for row in rows:
                out.append("| " + " | ".join(_cell(c) for c in row) + " |")
            out.append("")
        elif isinstance(block, Image):
            out.extend([f"![{escape(block.alt)}]({block.src})", ""])
        elif isinstance(block, Details):
            out.extend([f"{'#' * min(level, 6)} {escape(block.summary)}", ""])
            _blocks(out, block.blocks, level + 1)
