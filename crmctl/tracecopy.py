"""Plug-in trace exceptions copied into the journal before Dataverse's 24-hour purge deletes them.

Dataverse keeps `plugintracelog` rows for a day: a bulk-delete job removes everything older
than 24 hours (dataverse.md §8). The exception a plug-in threw at 19:05 during the cutover is
evidence the auditor may ask for next week, so each one is copied into the journal as an entry
of kind `plugin.trace`, one per trace, hash-chained like every other entry. The journal is also
where the copy remembers how far it got: the watermark is the newest `createdon` among the
copies, so no separate state exists that could disagree with the evidence.

Copies are de-duplicated by `plugintracelogid` before appending; two processes copying at the
very same moment could still both append one trace, so every reader here de-duplicates again
(at-least-once copy, exactly-once figures). Exception texts are third-party data: they are
scrubbed of credentials and of values substituted from the environment before they are written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from crmctl.connectors.errors import scrub
from crmctl.identity import Actor
from crmctl.model import parse_iso
from crmctl.safetext import safe_value
from crmctl.store import Store

TRACE_KIND = "plugin.trace"
"""Journal kind of one copied plug-in trace log."""
TRACE_COLUMNS = (
    "plugintracelogid",
    "createdon",
    "typename",
    "messagename",
    "primaryentity",
    "mode",
    "operationtype",
    "depth",
    "exceptiondetails",
    "messageblock",
    "performanceexecutionduration",
    "correlationid",
    "requestid",
    "pluginstepid",
)
"""The `plugintracelog` columns copied (dataverse.md §8)."""
MAX_TEXT = 32_000
"""Characters kept of `exceptiondetails` / `messageblock` (Dataverse keeps 10 KB of the block)."""

_TYPE = re.compile(r"^\s*([A-Za-z_][\w.`]*(?:\[[^\]\n]*\])?)\s*:")


def exception_type(details: str | None) -> str:
    """The exception's type name from the first line of `exceptiondetails` ("unknown" if none)."""
    match = _TYPE.match(details or "")
    return match.group(1) if match else "unknown"


def _clean(text: Any, redact: Callable[[str], str]) -> Any:
    """A long text scrubbed line by line (line breaks kept, each line's spacing collapsed)."""
    if not isinstance(text, str):
        return text
    lines = [scrub(redact(line), limit=MAX_TEXT) for line in text[:MAX_TEXT].splitlines()]
    cut = "\n…(cut)" if len(text) > MAX_TEXT else ""
    return "\n".join(lines) + cut


def trace_payload(row: Mapping[str, Any], *, check_id: str, redact: Callable[[str], str]) -> dict[str, Any]:
    """The journal payload for one trace row as Dataverse returned it."""
    payload: dict[str, Any] = {column: row.get(column) for column in TRACE_COLUMNS}
    payload["exceptiondetails"] = _clean(payload["exceptiondetails"], redact)
    payload["messageblock"] = _clean(payload["messageblock"], redact)
    payload["exception_type"] = exception_type(payload["exceptiondetails"])
    payload["copied_by"] = check_id
    # Every other column (typename, messagename…) is outside text too: controls made visible, bounded.
    return safe_value(payload, limit=MAX_TEXT + 100)


def has_exception(row: Mapping[str, Any]) -> bool:
    """True when the trace records a failure: a non-blank `exceptiondetails`."""
    details = row.get("exceptiondetails")
    return isinstance(details, str) and bool(details.strip())


@dataclass(frozen=True)
class CopiedTrace:
    """What the figures need of one copied trace."""

    id: str
    createdon: datetime
    typename: str | None
    exception_type: str
    seq: int


class TraceArchive:
    """The plug-in traces copied into one journal, read incrementally.

    Args:
        store: The cutover's journal.
        actor: Stamped on the entries this archive appends.
    """

    def __init__(self, store: Store, actor: Actor) -> None:
        self._store = store
        self._actor = actor
        self._traces: dict[str, CopiedTrace] = {}
        self._seen_seq = 0

    async def load(self) -> None:
        """Reads the copies journalled since the last load (by any process)."""
        for entry in await self._store.entries(self._seen_seq, kinds=[TRACE_KIND]):
            self._seen_seq = max(self._seen_seq, entry.seq)
            trace = _from_payload(entry.payload, entry.seq)
            if trace is not None and trace.id not in self._traces:
                self._traces[trace.id] = trace

    @property
    def watermark(self) -> datetime | None:
        """The newest `createdon` copied so far; None before the first copy."""
        return max((t.createdon for t in self._traces.values()), default=None)

    def __len__(self) -> int:
        return len(self._traces)

    def __contains__(self, trace_id: object) -> bool:
        return isinstance(trace_id, str) and trace_id.lower() in self._traces

    async def copy(
        self, rows: Iterable[Mapping[str, Any]], *, check_id: str, redact: Callable[[str], str]
    ) -> list[CopiedTrace]:
        """Appends the rows not copied yet (one entry each, one transaction); returns them.

        Rows without an exception or without an id are skipped: only failures are evidence here.
        """
        await self.load()  # another process may have copied some meanwhile
        fresh: dict[str, dict[str, Any]] = {}
        for row in rows:
            trace_id = row.get("plugintracelogid")
            if not isinstance(trace_id, str) or not has_exception(row):
                continue
            key = trace_id.lower()
            if key not in self._traces and key not in fresh:
                fresh[key] = trace_payload(row, check_id=check_id, redact=redact)
        if not fresh:
            return []
        entries = await self._store.append_many([(TRACE_KIND, p) for p in fresh.values()], actor=self._actor)
        added = []
        for entry in entries:
            self._seen_seq = max(self._seen_seq, entry.seq)
            trace = _from_payload(entry.payload, entry.seq)
            if trace is not None:
                self._traces[trace.id] = trace
                added.append(trace)
        return added

    def since(self, moment: datetime) -> list[CopiedTrace]:
        """Copied traces created at or after `moment`, oldest first."""
        return sorted((t for t in self._traces.values() if t.createdon >= moment), key=lambda t: (t.createdon, t.seq))


def _from_payload(payload: Mapping[str, Any], seq: int) -> CopiedTrace | None:
    trace_id, created = payload.get("plugintracelogid"), payload.get("createdon")
    if not isinstance(trace_id, str) or not isinstance(created, str):
        return None
    try:
        when = parse_iso(created)
    except ValueError:
        return None
    return CopiedTrace(
        id=trace_id.lower(),
        createdon=when,
        typename=payload.get("typename"),
        exception_type=str(payload.get("exception_type") or "unknown"),
        seq=seq,
    )
