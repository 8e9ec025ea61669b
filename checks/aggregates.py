"""Grouped `$apply` aggregates over any number of records, inside Dataverse's 50,000-record limit.

Dataverse refuses an aggregate over more than 50,000 input records (0x8004e023). The documented
workaround is to split the query by a filter and combine the results; here the split is by
`createdon` ranges, sized from the RetrieveTotalRecordCount hint and halved again while a range
is still refused. Counts and sums add up, minimums and maximums combine, so every supported
measure is exact across partitions. A range that cannot be split further (more than 50,000
records created within one second) is an honest failure, never a partial figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from crmctl.checking import CheckContext
from crmctl.connectors.errors import AggregateLimitExceeded, ConnectorError
from checks.common import CheckProblem
from checks.compare import gather_all
from checks.partitions import CREATED, created_bounds, instant, split
from checks.keys import attribute

PARTITION_TARGET = 40_000
"""Records per partition to aim for, comfortably under the 50,000 limit."""
AGGREGATES = ("count", "sum", "min", "max")
"""Measures that combine exactly across partitions (an average does not; divide two sums)."""


@dataclass(frozen=True)
class Measure:
    """One aggregated figure: `name` is its alias, `target` the attribute (None for a count)."""

    name: str
    agg: str
    target: str | None = None

    def expression(self) -> str:
        if self.agg == "count":
            return f"$count as {self.name}"
        return f"{self.target} with {self.agg} as {self.name}"


Groups = dict[tuple[Any, ...], dict[str, Any]]


def combine(agg: str, a: Any, b: Any) -> Any:
    """Two partitions' values of one measure, combined."""
    if a is None:
        return b
    if b is None:
        return a
    if agg in ("count", "sum"):
        return a + b
    return min(a, b) if agg == "min" else max(a, b)


class PartitionedAggregate:
    """Runs `filter(F)/groupby((g...),aggregate(...))`, split by `createdon` when Dynamics refuses it."""

    def __init__(
        self, ctx: CheckContext, entity_set: str, measures: Sequence[Measure],
        groupby: Sequence[str] = (), filter: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.entity_set = entity_set
        self.measures = list(measures)
        self.groupby = [attribute(g) for g in groupby]
        self.filter = filter
        self.partitions = 1
        self.method = "aggregate"

    async def run(self) -> Groups:
        try:
            return await self._apply(self.filter)
        except AggregateLimitExceeded:
            pass
        self.method = "partitioned aggregate"
        bounds = await created_bounds(self.ctx.dynamics, self.entity_set, self._and(f"{CREATED} ne null"), self.ctx.dynamics_log)
        if bounds is None:
            return await self._apply(self._and(f"{CREATED} eq null"))
        low, high = bounds
        parts = max(2, math.ceil((await self._hint()) / PARTITION_TARGET))
        self.partitions = 0
        undated = self._apply(self._and(f"{CREATED} eq null"))
        results = await gather_all(undated, *(self._range(a, b) for a, b in split(low, high + timedelta(seconds=1), parts)))
        merged: Groups = {}
        for groups in results:
            self._merge(merged, groups)
        return merged

    async def _range(self, low: datetime, high: datetime) -> Groups:
        condition = f"{CREATED} ge {instant(low)} and {CREATED} lt {instant(high)}"
        try:
            groups = await self._apply(self._and(condition))
            self.partitions += 1
            return groups
        except AggregateLimitExceeded:
            if high - low <= timedelta(seconds=1):
                raise CheckProblem(
                    f"More than 50,000 {self.entity_set} records were created within one second "
                    f"({instant(low)}): Dynamics cannot aggregate them and they cannot be split further."
                ) from None
        merged: Groups = {}
        for groups in await gather_all(*(self._range(a, b) for a, b in split(low, high, 2))):
            self._merge(merged, groups)
        return merged

    def _merge(self, into: Groups, groups: Groups) -> None:
        for key, row in groups.items():
            if key not in into:
                into[key] = dict(row)
                continue
            for m in self.measures:
                into[key][m.name] = combine(m.agg, into[key].get(m.name), row.get(m.name))

    def _and(self, condition: str) -> str:
        return condition if not self.filter else f"({self.filter}) and {condition}"

    async def _apply(self, filter_: str | None) -> Groups:
        aggregate = f"aggregate({','.join(m.expression() for m in self.measures)})"
        body = f"groupby(({','.join(self.groupby)}),{aggregate})" if self.groupby else aggregate
        apply = body if not filter_ else f"filter({filter_})/{body}"
        rows = await self.ctx.dynamics.aggregate(self.entity_set, apply, log=self.ctx.dynamics_log)
        groups: Groups = {}
        for row in rows:
            key = tuple(row.get(g) for g in self.groupby)
            values = {m.name: row.get(m.name) for m in self.measures}
            if key in groups:  # a partitioned answer never repeats a group, but stay exact if it does
                values = {m.name: combine(m.agg, groups[key].get(m.name), values[m.name]) for m in self.measures}
            groups[key] = values
        return groups

    async def _hint(self) -> int:
        name = self.ctx.entity.name if self.ctx.check.entity else None
        if not name:
            return 0
        try:
            counts = await self.ctx.dynamics.total_record_count([name], log=self.ctx.dynamics_log)
        except ConnectorError:
            return 0
        return int(counts.get(name, 0) or 0)
