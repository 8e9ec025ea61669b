"""row_count: the exact number of records per entity in the source and in Dynamics.

Dataverse caps every cheap way of counting: `$count=true` stops at 5,000 and aggregates refuse
more than 50,000 input records (0x8004e023). RetrieveTotalRecordCount is a snapshot up to a day
old. None of those may be the figure a cutover is signed off on, so Dynamics is counted with an
aggregate, and when that is refused the entity is split into `createdon` ranges that each stay
under the limit (the documented workaround), down to a key scan for a range that cannot be
split any further. The snapshot figure is kept only as a labelled hint.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import Any, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec
from crmctl.connectors.errors import AggregateLimitExceeded, ConnectorError
from crmctl.model import CheckResult, Status
from checks.partitions import CREATED, created_bounds, instant, split
from checks.keys import source_queries

AGGREGATE_LIMIT = 50_000
"""Dataverse's aggregate input limit; partitions aim well below it."""
PARTITION_TARGET = 40_000
"""Records per partition to aim for when a snapshot hint says how many there are."""


class RowCount:
    """Counts an entity on both sides and grades the difference as a fraction of the source."""

    kind: ClassVar[str] = "row_count"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={"hint": bool},
        description="Exact record count per entity, source vs Dynamics (above every Dataverse cap).",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        entity = ctx.entity
        want_hint = bool(ctx.check.params.get("hint", True))
        try:
            queries = source_queries(ctx)
        except ConnectorError as exc:
            return ctx.error(f"Could not count {entity.name}: {exc}")
        source_task = asyncio.create_task(queries.count(entity.source.table, log=ctx.source_log))
        counter = DataverseCounter(ctx, entity.target.entity_set)
        try:
            target, source = await asyncio.gather(counter.count(), source_task)
        except ConnectorError as exc:
            source_task.cancel()
            return ctx.error(f"Could not count {entity.name}: {exc}")
        hint = await _snapshot_hint(ctx, entity.name) if want_hint else None
        source = int(source)
        difference = target - source
        fraction = abs(difference) / source if source else (1.0 if target else 0.0)
        status = judge(fraction, ctx.check.warn, ctx.check.breach)
        values: dict[str, Any] = {
            "headline": f"{source:,} → {target:,} ({difference:+,})",
            "source": source,
            "target": target,
            "difference": difference,
            "difference_pct": round(fraction * 100, 4),
            "method": counter.method,
            "partitions": counter.partitions,
        }
        if hint is not None:
            values["snapshot_hint"] = hint
        return ctx.finish(status, _explain(entity.name, source, target, counter, hint), values)


def _explain(name: str, source: int, target: int, counter: DataverseCounter, hint: int | None) -> str:
    """One sentence a cutover lead can read aloud."""
    if target == source:
        text = f"{name}: {source:,} in source and in Dynamics"
    elif target < source:
        text = f"Dynamics has {source - target:,} fewer {name} records than source ({target:,} vs {source:,})"
    else:
        text = f"Dynamics has {target - source:,} more {name} records than source ({target:,} vs {source:,})"
    text += f"; counted by {counter.method}"
    if counter.partitions > 1:
        text += f" over {counter.partitions} partitions"
    if hint is not None and hint != target:
        text += f" (snapshot hint says {hint:,}, not used)"
    return text + "."


async def _snapshot_hint(ctx: CheckContext, logical_name: str) -> int | None:
    """RetrieveTotalRecordCount's figure, shown as a hint only; failure to get it costs nothing."""
    try:
        counts = await ctx.dynamics.total_record_count([logical_name], log=ctx.dynamics_log)
    except ConnectorError:
        return None
    value = counts.get(logical_name)
    return int(value) if value is not None else None


class DataverseCounter:
    """Counts one entity set exactly, within the aggregate limit, as cheaply as it can."""

    def __init__(self, ctx: CheckContext, entity_set: str) -> None:
        self._ctx = ctx
        self._set = entity_set
        self.method = "aggregate"
        self.partitions = 1
        self.counted = 0
        """Records counted so far (partitions and scanned pages): the progress the screen shows."""

    async def count(self) -> int:
        try:
            return await self._aggregate(None)
        except AggregateLimitExceeded:
            pass
        self.method = "partitioned aggregate"
        bounds = await created_bounds(self._ctx.dynamics, self._set, f"{CREATED} ne null", self._ctx.dynamics_log)
        if bounds is None:
            self.method = "key scan"
            return await self._scan(None)
        low, high = bounds
        hint = await _snapshot_hint(self._ctx, self._ctx.entity.name)
        parts = max(2, math.ceil((hint or 0) / PARTITION_TARGET))
        ranges = split(low, high + timedelta(seconds=1), parts)
        self.partitions = 0
        counts = await asyncio.gather(self._count_undated(), *(self._count_range(a, b) for a, b in ranges))
        return sum(counts)

    async def _count_undated(self) -> int:
        """Records without a createdon fall outside every range; they are counted on their own."""
        filter_ = f"{CREATED} eq null"
        try:
            return await self._aggregate(filter_)
        except AggregateLimitExceeded:
            self.method = "partitioned aggregate + key scan"
            return await self._scan(filter_)

    async def _count_range(self, low: datetime, high: datetime) -> int:
        """Counts createdon in [low, high), halving the range while Dynamics refuses it."""
        filter_ = f"{CREATED} ge {instant(low)} and {CREATED} lt {instant(high)}"
        try:
            count = await self._aggregate(filter_)
            self.partitions += 1
            self.counted += count
            self._ctx.report_progress(rows=self.counted, pages=self.partitions)
            return count
        except AggregateLimitExceeded:
            if high - low <= timedelta(seconds=1):
                # More than 50,000 records created within one second: only a key scan is exact.
                self.method = "partitioned aggregate + key scan"
                self.partitions += 1
                return await self._scan(filter_)
        halves = split(low, high, 2)
        counts = await asyncio.gather(*(self._count_range(a, b) for a, b in halves))
        return sum(counts)

    async def _aggregate(self, filter_: str | None) -> int:
        apply = "aggregate($count as n)" if filter_ is None else f"filter({filter_})/aggregate($count as n)"
        rows = await self._ctx.dynamics.aggregate(self._set, apply, log=self._ctx.dynamics_log)
        if not rows:
            return 0
        return int(rows[0].get("n", 0) or 0)

    async def _scan(self, filter_: str | None) -> int:
        total = 0
        key = self._ctx.entity.target.key
        async for page in self._ctx.dynamics.pages(self._set, select=[key], filter=filter_, log=self._ctx.dynamics_log):
            total += len(page)
            self.counted += len(page)
            self._ctx.report_progress(rows=self.counted, pages=self.partitions)
        return total
