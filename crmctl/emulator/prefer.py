"""Parsing of the `Prefer` request header(s) and of `odata.include-annotations` patterns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from crmctl.emulator.paging import MAX_PAGE_SIZE

_PREF_RE = re.compile(r'\s*([A-Za-z][\w.\-]*)\s*(?:=\s*("[^"]*"|[^,]*))?\s*(?:,|$)')


@dataclass(frozen=True)
class Preferences:
    """What the client asked for; `applied()` is the Preference-Applied echo."""

    max_page_size: int | None = None
    annotations: tuple[str, ...] = ()
    annotations_raw: str | None = None
    track_changes: bool = False
    other: dict[str, str] = field(default_factory=dict)

    def wants(self, annotation: str) -> bool:
        """True if `annotation` (e.g. Microsoft.Dynamics.CRM.totalrecordcount) was requested."""
        included = False
        for pattern in self.annotations:
            negative = pattern.startswith("-")
            pat = pattern[1:] if negative else pattern
            if (
                pat == "*"
                or pat == annotation
                or (pat.endswith(".*") and annotation.startswith(pat[:-1]))
                or (pat.endswith("*") and annotation.startswith(pat[:-1]))
            ):
                if negative:
                    return False
                included = True
        return included

    def applied(self) -> str | None:
        parts: list[str] = []
        if self.max_page_size is not None:
            parts.append(f"odata.maxpagesize={self.max_page_size}")
        if self.annotations_raw is not None:
            parts.append(f"odata.include-annotations={self.annotations_raw}")
        return ",".join(parts) or None


def parse_prefer(values: Iterable[str]) -> Preferences:
    """Reads every `Prefer` header; several preferences may share one header, comma separated.

    `odata.maxpagesize` above 5000 is clamped to 5000 (the documented maximum; the real
    service's exact reaction is unconfirmed) and a non-positive or non-integer value is ignored.
    """
    max_page: int | None = None
    annotations: tuple[str, ...] = ()
    raw_ann: str | None = None
    track = False
    other: dict[str, str] = {}
    for header in values:
        pos = 0
        while pos < len(header):
            m = _PREF_RE.match(header, pos)
            if not m or m.end() == pos:
                break
            pos = m.end()
            name, value = m.group(1).lower(), (m.group(2) or "").strip()
            if name == "odata.maxpagesize":
                try:
                    n = int(value)
                except ValueError:
                    continue
                if n > 0:
                    max_page = min(n, MAX_PAGE_SIZE)
            elif name == "odata.include-annotations":
                raw_ann = value
                inner = value.strip('"')
                annotations = tuple(p.strip() for p in inner.split(",") if p.strip())
            elif name == "odata.track-changes":
                track = True
            else:
                other[name] = value
    return Preferences(max_page, annotations, raw_ann, track, other)
