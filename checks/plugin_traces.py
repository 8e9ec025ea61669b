"""plugin_traces: plug-in exceptions, copied into the journal before Dataverse purges them.

Each run reads `plugintracelogs` with an exception created since the newest copy already in
the journal (minus a small overlap, because async plug-ins can write a trace stamped a little
earlier than one already read; copies are de-duplicated by id), appends every new one to the
journal (`crmctl.tracecopy`), and then reports from the journal, not from Dataverse: how many
exceptions fall in the window (default 24 h) and which was the newest. A trace Dataverse has
since deleted therefore still counts, and still sits in the evidence pack.

The copies go into the cutover's state file (`config.state`), the same journal the engine
writes results to; the store is built for several writers, so the check opens its own handle.
If reading Dataverse fails part-way, what was copied stays copied, and the result is ERROR.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec, format_duration
from crmctl.connectors.errors import ConnectorError
from crmctl.identity import current_actor
from crmctl.model import CheckResult, iso
from crmctl.store import Store, StoreError
from crmctl.tracecopy import TRACE_COLUMNS, TraceArchive
from checks.integration import span_text

ENTITY_SET = "plugintracelogs"
DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_OVERLAP = timedelta(minutes=5)


class PluginTraces:
    """Copies new plug-in exceptions into the journal; grades the number in the window."""

    kind: ClassVar[str] = "plugin_traces"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=False,
        params={"window": timedelta, "overlap": timedelta},
        description="Plug-in trace exceptions copied into the journal (before the 24 h purge); count in window.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        window = ctx.check.params.get("window") or DEFAULT_WINDOW
        overlap = ctx.check.params.get("overlap") or DEFAULT_OVERLAP
        try:
            store = await Store.open(ctx.config.state)
        except (StoreError, OSError) as exc:
            return ctx.error(f"Cannot open the journal to copy plug-in traces into: {exc}")
        try:
            archive = TraceArchive(store, ctx.actor or current_actor())
            await archive.load()
            watermark = archive.watermark
            filter_ = "exceptiondetails ne null"
            if watermark is not None:
                filter_ += f" and createdon ge {(watermark - overlap).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            copied = 0
            try:
                async for rows in ctx.dynamics.pages(
                    ENTITY_SET,
                    select=TRACE_COLUMNS,
                    filter=filter_,
                    orderby="createdon asc,plugintracelogid asc",
                    log=ctx.dynamics_log,
                ):
                    copied += len(await archive.copy(rows, check_id=ctx.check.id, redact=ctx.config.redact))
            except ConnectorError as exc:
                kept = f"; the {copied} read before that are kept in the journal" if copied else ""
                return ctx.error(f"Could not read the plug-in trace logs: {exc}{kept}", {"copied": copied})
            since = ctx.clock.now() - window
            recent = archive.since(since)
            stored = len(archive)
        finally:
            await store.close()
        return _judge(ctx, window, recent, copied, stored)


def _judge(ctx: CheckContext, window: timedelta, recent: list[Any], copied: int, stored: int) -> CheckResult:
    warn, breach = ctx.check.warn, ctx.check.breach
    if warn is None and breach is None:
        warn = 0.0  # unconfigured: any plug-in exception is worth a look, none is a breach
    newest = recent[-1] if recent else None
    span = span_text(window)
    values: dict[str, Any] = {
        "exceptions": len(recent),
        "window": format_duration(window),
        "copied": copied,
        "archived": stored,
        "newest_exception_type": newest.exception_type if newest else None,
        "newest_plugin": newest.typename if newest else None,
        "newest_at": iso(newest.createdon) if newest else None,
        "by_plugin": dict(sorted(Counter(t.typename or "unknown" for t in recent).items())),
        "by_exception": dict(sorted(Counter(t.exception_type for t in recent).items())),
    }
    threshold = {k: v for k, v in (("warn", warn), ("breach", breach)) if v is not None}
    status = judge(float(len(recent)), warn, breach)
    if newest is None:
        text = f"No plug-in exceptions in the last {span}"
    else:
        text = (
            f"{len(recent)} plug-in exception{'s' if len(recent) != 1 else ''} in the last {span}; "
            f"newest {newest.exception_type} in {newest.typename or 'an unknown plug-in'} "
            f"at {newest.createdon:%H:%M:%S}Z"
        )
    text += f" ({copied} newly copied, {stored} kept in the journal)."
    return ctx.finish(status, text, values, threshold)
