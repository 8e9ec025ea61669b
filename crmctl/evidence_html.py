"""Renders the evidence document as one self-contained, script-free HTML page (index.html).

No JavaScript, no external fetches (a Content-Security-Policy forbids both), inline CSS: the
page opens from a USB stick in an air-gapped auditor's browser and shows the same thing in ten
years. Everything is escaped with `html.escape`; the only markup is the one written here.
"""

from __future__ import annotations

from html import escape as _html_escape

from crmctl.evidence_doc import Block, Details, Document, Image, Para, Pre, Table
from crmctl.safetext import safe_text
from crmctl.views import STATUS_GLYPHS

def escape(text: str) -> str:
    """HTML-escaped text with every control character made visible: a browser ignores most of
    them, but "view source" in a terminal and copy-paste do not."""
    return _html_escape(safe_text(text, limit=None))


CSP = "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STYLE = """
:root { color-scheme: light; --ink:#1d232b; --muted:#5b6572; --line:#d5dbe2; --band:#f3f5f8;
  --ok:#1f7a3a; --warn:#8a5a00; --bad:#a3222b; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
  margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { border-bottom: 2px solid var(--line); padding-bottom: 4px;
  margin-top: 36px; } h3 { margin-top: 20px; }
p.sub, p.note { color: var(--muted); } p.warn { color: var(--bad); font-weight: 600; }
p.ok { color: var(--ok); font-weight: 600; }
nav ol { columns: 2; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 6px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; white-space: pre-wrap; }
th { background: var(--band); } tr:nth-child(even) td { background: #fafbfc; }
caption { text-align: left; color: var(--muted); padding: 4px 0; }
td.s-ok { color: var(--ok); font-weight: 600; } td.s-warn { color: var(--warn); font-weight: 600; }
td.s-bad { color: var(--bad); font-weight: 700; }
pre { background: var(--band); border: 1px solid var(--line); padding: 10px; overflow-x: auto;
  font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
details { border: 1px solid var(--line); border-radius: 4px; padding: 4px 10px; margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
figure { margin: 12px 0 24px; } figure img { width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); }
"""

_GOOD = {STATUS_GLYPHS[s] for s in STATUS_GLYPHS if s.value == "OK"}
_WARN = {STATUS_GLYPHS[s] for s in STATUS_GLYPHS if s.value in ("WARN", "PENDING")}
_BAD = {STATUS_GLYPHS[s] for s in STATUS_GLYPHS if s.value in ("BREACH", "ERROR", "STALE")}


def _cell_class(text: str) -> str:
    head = text[:1]
    if head in _GOOD:
        return ' class="s-ok"'
    if head in _WARN:
        return ' class="s-warn"'
    if head in _BAD:
        return ' class="s-bad"'
    return ""


def render_html(doc: Document) -> str:
    """The whole document as an HTML page."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(doc.title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>{escape(doc.title)}</h1><p class=\"sub\">{escape(doc.subtitle)}</p></header>",
        '<nav aria-label="Contents"><h2>Contents</h2><ol>',
    ]
    for sec in doc.sections:
        out.append(f'<li><a href="#{escape(sec.id)}">{escape(sec.title)}</a></li>')
    out.append("</ol></nav><main>")
    for sec in doc.sections:
        out.append(f'<section id="{escape(sec.id)}"><h2>{escape(sec.title)}</h2>')
        _blocks(out, sec.blocks)
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _blocks(out: list[str], blocks: tuple[Block, ...] | list[Block]) -> None:
    for block in blocks:
        if isinstance(block, Para):
            cls = f' class="{block.style}"' if block.style else ""
            out.append(f"<p{cls}>{escape(block.text)}</p>")
        elif isinstance(block, Pre):
            out.append(f"<pre>{escape(block.text)}</pre>")
        elif isinstance(block, Table):
            rows, cut = block.shown()
            if cut:
                out.append(f'<p class="note">{escape(cut)}</p>')
            out.append(f'<table id="t-{escape(block.id)}">')
            if block.caption:
                out.append(f"<caption>{escape(block.caption)}</caption>")
            out.append("<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in block.columns) + "</tr></thead><tbody>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td{_cell_class(c)}>{escape(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(block, Image):
            out.append(
                f'<figure><img src="{escape(block.src)}" alt="{escape(block.alt)}">'
                f"<figcaption>{escape(block.alt)}</figcaption></figure>"
            )
        elif isinstance(block, Details):
            out.append(f"<details><summary>{escape(block.summary)}</summary>")
            _blocks(out, block.blocks)
            out.append("</details>")
