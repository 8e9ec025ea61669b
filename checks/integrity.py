"""duplicates and nulls: unique columns that repeat and required columns that are empty, on both sides.

duplicates. Dataverse would group with `$apply=groupby((col),aggregate($count as n))`, but an
aggregate refuses more than 50,000 input rows, and for a unique column it returns one row per
distinct value anyway, i.e. as many rows as reading the column, and still not the keys of the
duplicated records. So Dynamics is read as a scan sorted by the column (`$orderby=col asc`),
split into value ranges that are read concurrently; equal values (case-insensitively, as
Dataverse compares them) are adjacent in that order and never straddle two ranges, because
Dynamics itself decides which range a value belongs to. That is exact at any size and names
every key. The source is asked for its `duplicates` intent: one SQL query on a SQL source
(`GROUP BY LOWER(col) HAVING COUNT(*) > 1`), an `$apply` group count and a read of the
repeated values' rows on an OData source.

nulls. Dynamics: `$filter=col eq null` (paged, sorted by key, so "first keys" are stable);
the source: the keys of rows where `col` is `blank` (null, or empty after trimming: Dataverse
stores an empty string as null).

Both judge the Dynamics side on an absolute number (duplicate groups, null values) against
`warn`/`breach`; the source side is reported so a defect that came with the data can be told
from one the migration made. Records without a migration key are named by their primary id.
"""

from __future__ import annotations

import asyncio
from itertools import compress
from operator import eq
from dataclasses import dataclass, field
from typing import Any, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec
from crmctl.connectors.sql import Condition
from crmctl.exports import CsvExport
from crmctl.model import CheckResult
from checks.common import column_map, exports_dir, first_n, guarded, key_list, plural, primary_id
from checks.compare import gather_all
from checks.keys import KeyRange, as_key, attribute, ensure_columns, fold, fold_all, plan_ranges, source_queries, source_count


@dataclass
class Groups:
    """Duplicate groups found on one side for one column."""

    groups: int = 0
    rows: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, value: Any, keys: list[str], limit: int) -> None:
        self.groups += 1
        self.rows += len(keys)
        if len(self.first) < limit:
            self.first.append({"value": value, "keys": sorted(keys)})


class Duplicates:
    """Repeated values of the entity's unique columns, in Dynamics and in the source."""

    kind: ClassVar[str] = "duplicates"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={"columns": (dict, list), "first": int, "partitions": int, "export": bool},
        description="Duplicate values of unique columns (Dynamics and source); thresholds count duplicate groups in Dynamics.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _duplicates(ctx), f"Could not look for duplicates in {ctx.entity.name}")


async def _duplicates(ctx: CheckContext) -> CheckResult:
    entity = ctx.entity
    columns = column_map(ctx, entity.unique, "unique")
    await ensure_columns(ctx, entity.source.table, [entity.source.key, *columns.values()])
    first = first_n(ctx)
    pid = await primary_id(ctx, entity)
    export = CsvExport(exports_dir(ctx), ctx.check.id, "duplicates", ["side", "column", "value", "key"]) if ctx.check.params.get("export", True) else None
    per_column: dict[str, dict[str, Any]] = {}
    try:
        results = await gather_all(*(
            _column_duplicates(ctx, i, attr, src, pid, first, export) for i, (attr, src) in enumerate(columns.items())
        ))
        exported = export.finish() if export is not None else None
    except BaseException:
        if export is not None:
            export.discard()
        raise
    totals = {"target_groups": 0, "target_rows": 0, "source_groups": 0, "source_rows": 0, "new_in_target": 0}
    for attr, (target, source, new) in zip(columns, results):
        per_column[attr] = {
            "source_column": columns[attr],
            "target_groups": target.groups,
            "target_rows": target.rows,
            "source_groups": source.groups,
            "source_rows": source.rows,
            "new_in_target": new,
            "first_target": target.first,
            "first_source": source.first,
        }
        totals["target_groups"] += target.groups
        totals["target_rows"] += target.rows
        totals["source_groups"] += source.groups
        totals["source_rows"] += source.rows
        totals["new_in_target"] += new
    status = judge(totals["target_groups"], ctx.check.warn, ctx.check.breach)
    values: dict[str, Any] = {
        "headline": f"{totals['target_groups']:,} duplicate groups in Dynamics · {totals['source_groups']:,} in source",
        **totals,
        "columns": per_column,
    }
    if exported is not None:
        values["exports"] = {"duplicates": exported.to_json()}
    return ctx.finish(status, _explain_duplicates(entity.name, per_column), values)


def _explain_duplicates(name: str, per_column: dict[str, dict[str, Any]]) -> str:
    clauses = []
    for attr, c in per_column.items():
        if not c["target_groups"] and not c["source_groups"]:
            clauses.append(f"no {name} shares a {attr}")
            continue
        text = f"{plural(c['target_groups'], 'value')} of {attr} repeat in Dynamics ({c['target_rows']:,} records)"
        if c["source_groups"]:
            text += f", {c['source_groups']:,} already in the source"
        if c["new_in_target"]:
            text += f", {c['new_in_target']:,} only in Dynamics"
        if c["first_target"]:
            sample = c["first_target"][0]
            text += f"; e.g. {sample['value']!r}: {key_list(sample['keys'], len(sample['keys']), 3)}"
        clauses.append(text)
    sentence = "; ".join(clauses) + "."
    return sentence[0].upper() + sentence[1:]


async def _column_duplicates(
    ctx: CheckContext, index: int, attr: str, source_col: str, pid: str, first: int, export: CsvExport | None
) -> tuple[Groups, Groups, int]:
    entity = ctx.entity
    source, source_values = await _source_groups(ctx, source_col, first, export, index)
    rows = await source_count(ctx, entity.source.table, source_col)
    wanted = ctx.check.params.get("partitions")
    ranges = await plan_ranges(ctx, entity.source.table, source_col, rows, int(wanted) if wanted else None)
    parts = await gather_all(*(
        _target_range(ctx, attr, pid, r, first, export, index * 10_000 + i + 1) for i, r in enumerate(ranges)
    ))
    target = Groups()
    new = 0
    for groups, values in parts:
        target.groups += groups.groups
        target.rows += groups.rows
        target.first.extend(groups.first[: max(0, first - len(target.first))])
        new += sum(1 for v in values if v not in source_values)
    return target, source, new


async def _target_range(
    ctx: CheckContext, attr: str, pid: str, key_range: KeyRange, first: int, export: CsvExport | None, part: int
) -> tuple[Groups, list[str]]:
    """Duplicate groups within one value range of a scan sorted by the column.

    Equal neighbours are found with one C-level comparison per page; only the rows of a
    duplicate group are looked at one by one.
    """
    entity = ctx.entity
    key = attribute(entity.target.key)
    groups = Groups()
    folded_values: list[str] = []
    run: list[Any] = []  # the rows of the current group of equal values, carried across pages
    run_folded: str | None = None

    def close(rows: list[Any]) -> None:
        if len(rows) > 1:
            names = [as_key(r.get(key) or r.get(pid)) for r in rows]
            value = rows[0].get(attr)
            groups.add(value, names, first)
            folded_values.append(fold(as_key(value)))
            if export is not None:
                export.part(part).write(("target", attr, value, n) for n in sorted(names))

    async for page in ctx.dynamics.pages(
        entity.target.entity_set, select=[attr, key, pid], filter=key_range.odata(attr), orderby=f"{attr} asc",
        log=ctx.dynamics_log,
    ):
        rows = [r for r in page if r.get(attr) is not None]
        if not rows:
            continue
        values = [r[attr] for r in rows]
        folded = fold_all(values if not set(map(type, values)) - {str} else [as_key(v) for v in values])
        run = _groups_in_page(rows, folded, run, run_folded, close)
        run_folded = folded[-1]
    close(run)
    return groups, folded_values


def _groups_in_page(
    rows: list[Any], folded: list[str], carried: list[Any], carried_folded: str | None, close: Any
) -> list[Any]:
    """Closes every complete group of equal neighbours in one page; returns the group left open.

    `carried` holds the rows of the group open at the end of the previous page (value
    `carried_folded`). Only the positions equal to their predecessor are visited in Python.
    """
    same = list(map(eq, folded, [carried_folded, *folded[:-1]]))
    group: list[Any] | None = None
    last = -1
    if not same[0]:
        close(carried)
    for i in compress(range(len(rows)), same):
        if i == 0:
            group, last = carried + [rows[0]], 0
        elif group is not None and last == i - 1:
            group.append(rows[i])
            last = i
        else:
            if group is not None:
                close(group)
            group, last = [rows[i - 1], rows[i]], i
    if group is not None and last == len(rows) - 1:
        return group  # may continue on the next page
    if group is not None:
        close(group)
    return [rows[-1]]


async def _source_groups(
    ctx: CheckContext, source_col: str, first: int, export: CsvExport | None, index: int
) -> tuple[Groups, set[str]]:
    """Duplicate groups in the source, and their folded values (to tell groups new in Dynamics)."""
    entity = ctx.entity
    groups = Groups()
    values: set[str] = set()
    current: str | None = None
    value: Any = None
    keys: list[str] = []

    def close() -> None:
        if len(keys) > 1 and current is not None:
            groups.add(value, keys, first)
            values.add(fold(current))
            if export is not None:
                export.part(index * 10_000).write(("source", source_col, value, k) for k in sorted(keys))

    async for rows in source_queries(ctx).duplicates(entity.source.table, source_col, entity.source.key, log=ctx.source_log):
        for lowered, raw, key in rows:
            if lowered != current:
                close()
                current, value, keys = lowered, raw, []
            keys.append(as_key(key))
    close()
    return groups, values


class Nulls:
    """Required columns without a value, in Dynamics and in the source."""

    kind: ClassVar[str] = "nulls"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={"columns": (dict, list), "first": int, "export": bool},
        description="Null values in required columns (Dynamics and source); thresholds count null values in Dynamics.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _nulls(ctx), f"Could not look for nulls in {ctx.entity.name}")


@dataclass
class NullCount:
    count: int = 0
    first: list[str] = field(default_factory=list)


async def _nulls(ctx: CheckContext) -> CheckResult:
    entity = ctx.entity
    columns = column_map(ctx, entity.required, "required")
    await ensure_columns(ctx, entity.source.table, [entity.source.key, *columns.values()])
    first = first_n(ctx)
    pid = await primary_id(ctx, entity)
    export = CsvExport(exports_dir(ctx), ctx.check.id, "nulls", ["side", "column", "key"]) if ctx.check.params.get("export", True) else None
    try:
        found = await gather_all(*(
            asyncio.gather(
                _target_nulls(ctx, attr, pid, first, export, 2 * i),
                _source_nulls(ctx, src, first, export, 2 * i + 1),
            )
            for i, (attr, src) in enumerate(columns.items())
        ))
        exported = export.finish() if export is not None else None
    except BaseException:
        if export is not None:
            export.discard()
        raise
    per_column = {
        attr: {"source_column": columns[attr], "target": t.count, "source": s.count,
               "first_target": t.first, "first_source": s.first}
        for attr, (t, s) in zip(columns, found)
    }
    target_total = sum(t.count for t, _ in found)
    source_total = sum(s.count for _, s in found)
    status = judge(target_total, ctx.check.warn, ctx.check.breach)
    values: dict[str, Any] = {
        "headline": f"{target_total:,} nulls in Dynamics · {source_total:,} in source",
        "target": target_total,
        "source": source_total,
        "columns": per_column,
    }
    if exported is not None:
        values["exports"] = {"nulls": exported.to_json()}
    clauses = []
    for attr, c in per_column.items():
        text = f"{attr} is empty in {plural(c['target'], entity.name + ' record')} in Dynamics"
        if c["first_target"]:
            text += f" ({key_list(c['first_target'], c['target'])})"
        if c["source"]:
            text += f" and in {c['source']:,} in the source"
        clauses.append(text)
    explanation = "; ".join(clauses) + "."
    return ctx.finish(status, explanation[0].upper() + explanation[1:], values)


async def _target_nulls(ctx: CheckContext, attr: str, pid: str, first: int, export: CsvExport | None, part: int) -> NullCount:
    entity = ctx.entity
    key = attribute(entity.target.key)
    result = NullCount()
    async for rows in ctx.dynamics.pages(
        entity.target.entity_set, select=[key, pid], filter=f"{attr} eq null", orderby=f"{key} asc", log=ctx.dynamics_log
    ):
        names = [as_key(r.get(key) or r.get(pid)) for r in rows]
        result.count += len(names)
        result.first.extend(names[: max(0, first - len(result.first))])
        if export is not None:
            export.part(part).write(("target", attr, n) for n in names)
    return result


async def _source_nulls(ctx: CheckContext, source_col: str, first: int, export: CsvExport | None, part: int) -> NullCount:
    entity = ctx.entity
    result = NullCount()
    async for rows in source_queries(ctx).keys(
        entity.source.table, entity.source.key, [Condition(source_col, "blank")], log=ctx.source_log
    ):
        names = [as_key(k) for k in rows]
        result.count += len(names)
        result.first.extend(names[: max(0, first - len(result.first))])
        if export is not None:
            export.part(part).write(("source", source_col, n) for n in names)
    return result
