"""write_freeze and delta: writes to the source after the freeze, and whether the final delta caught up.

write_freeze: every source row whose last-modified column is later than the freeze instant
(`since`), per entity, with the first keys, who wrote them (an optional `writer` column such as
`updated_by`) and the latest write. A freeze that was announced but not enforced shows up here
as an integration account still writing. Source only: it costs one query per entity (SQL, or
paged OData reads).

delta: every source row modified since the last watermark (`watermark`, or the value of
`watermark_sql` read from the ETL's control table; SQL sources only) must be in Dynamics with a `modifiedon` at
least as new as the source change. Rows that are older in Dynamics are *behind* (with the lag),
rows absent are *missing*. Dynamics is asked by key, in batches of `or`-ed equalities (one
request per `batch` keys), unless the changed rows are so many that one sorted scan of the
whole entity is cheaper, in which case the key merge of `reconcile` is used. Either way the
comparison is exact.

Both judge an absolute number of rows against `warn`/`breach` (write_freeze: writes after the
freeze; delta: behind + missing).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec, EntityConfig
from crmctl.connectors.sql import Condition
from crmctl.exports import CsvExport, ExportPart
from crmctl.model import CheckResult, iso
from checks.common import CheckProblem, exports_dir, first_n, guarded, key_list, plural, stamp
from checks.compare import Sides, compare, gather_all
from checks.keys import as_key, attribute, ensure_columns, fold, odata_string, plan_ranges, source_queries, source_count
from checks.merge import Window
from checks.sampling import parse_options
from checks.sourcetime import After, after, parse_time

DEFAULT_BATCH = 50
"""Keys per Dynamics request in the delta's key lookups (an `or` of 50 equalities, about 2.5 KB of URL)."""


def _short(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class WriteFreeze:
    """Source rows written after the freeze instant."""

    kind: ClassVar[str] = "write_freeze"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=False,
        params={"since": datetime, "entities": list, "writer": str, "first": int, "timezone": str, "export": bool},
        references={"entities": "entities"},
        description="Source rows modified after the write freeze (count, first keys, writers); "
        "thresholds count rows.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _write_freeze(ctx), "Could not read the source's writes since the freeze")


def _freeze_entities(ctx: CheckContext) -> list[EntityConfig]:
    names = ctx.check.params.get("entities") or ([ctx.check.entity] if ctx.check.entity else None)
    try:
        chosen = [ctx.config.entity(str(n)) for n in names] if names else [
            e for e in ctx.config.entities if e.source.modified
        ]
    except KeyError as exc:
        raise CheckProblem(f"Check {ctx.check.id}: {exc.args[0]}.") from None
    for entity in chosen:
        if not entity.source.modified:
            raise CheckProblem(f"Check {ctx.check.id}: entity {entity.name} has no source.modified column.")
    if not chosen:
        raise CheckProblem(f"Check {ctx.check.id}: no entity has a source.modified column to check.")
    return chosen


@dataclass
class Writes:
    count: int = 0
    first: list[str] = field(default_factory=list)
    latest: datetime | None = None


async def _write_freeze(ctx: CheckContext) -> CheckResult:
    since = ctx.check.params.get("since")
    if not isinstance(since, datetime):
        raise CheckProblem(f"Check {ctx.check.id} needs since: the freeze instant (e.g. 2026-11-28T18:00:00Z).")
    entities = _freeze_entities(ctx)
    writer = ctx.check.params.get("writer")
    zone = parse_options(ctx.check.params, ctx.check.id).zone
    first = first_n(ctx)
    export = CsvExport(exports_dir(ctx), ctx.check.id, "writes", ["entity", "key", "modified", "writer"]) if ctx.check.params.get("export", True) else None
    by_entity: dict[str, Writes] = {}
    by_writer: Counter[str] = Counter()
    try:
        for index, entity in enumerate(entities):
            by_entity[entity.name] = await _entity_writes(
                ctx, entity, since, zone, writer, first, by_writer, export.part(index) if export else None
            )
        exported = export.finish() if export is not None else None
    except BaseException:
        if export is not None:
            export.discard()
        raise
    total = sum(w.count for w in by_entity.values())
    latest = max((w.latest for w in by_entity.values() if w.latest), default=None)
    status = judge(total, ctx.check.warn, ctx.check.breach)
    values: dict[str, Any] = {
        "headline": f"{total:,} writes after the freeze",
        "since": stamp(since),
        "writes": total,
        "by_entity": {n: w.count for n, w in by_entity.items()},
        "first": {n: w.first for n, w in by_entity.items() if w.first},
        "latest_write": stamp(latest),
    }
    if writer:
        values["by_writer"] = dict(by_writer.most_common())
    if exported is not None:
        values["exports"] = {"writes": exported.to_json()}
    if not total:
        text = f"No source record was written after the freeze at {_short(since)}."
    else:
        parts = ", ".join(f"{n} {w.count:,}" for n, w in by_entity.items() if w.count)
        text = f"{plural(total, 'source record')} written after the freeze at {_short(since)} ({parts})"
        if by_writer:
            who, n = by_writer.most_common(1)[0]
            text += f", {n:,} of them by {who}"
        text += f"; latest at {_short(latest)}." if latest else "."
    return ctx.finish(status, text, values)


async def _entity_writes(
    ctx: CheckContext, entity: EntityConfig, since: datetime, zone: Any, writer: Any, first: int,
    by_writer: Counter[str], part: ExportPart | None,
) -> Writes:
    modified = str(entity.source.modified)
    await ensure_columns(ctx, entity.source.table, [entity.source.key, modified, *([str(writer)] if writer else [])])
    condition = await after(ctx, entity.source.table, modified, since, zone)
    names = list(dict.fromkeys([entity.source.key, modified, *([str(writer)] if writer else [])]))
    found = Writes()
    async for records in source_queries(ctx).records(
        entity.source.table, names, key=entity.source.key, where=condition.conditions, log=ctx.source_log
    ):
        for record in records:
            row = (record[entity.source.key], record[modified], record[str(writer)] if writer else None)
            moment = parse_time(row[1], zone)
            if moment is None or moment <= since:
                continue
            key = as_key(row[0])
            found.count += 1
            if len(found.first) < first:
                found.first.append(key)
            found.latest = moment if found.latest is None or moment > found.latest else found.latest
            who = str(row[2]) if writer and row[2] is not None else ""
            if writer:
                by_writer[who or "(unknown)"] += 1
            if part is not None:
                part.write([(entity.name, key, stamp(moment), who)])
    return found


class Delta:
    """Source rows changed since the watermark that Dynamics does not have, or has older."""

    kind: ClassVar[str] = "delta"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={
            "watermark": datetime, "watermark_sql": str, "first": int, "timezone": str, "batch": int,
            "partitions": int, "export": bool,
        },
        description="Every source row changed since the watermark is in Dynamics and at least as new; "
        "thresholds count rows behind or missing.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _Delta(ctx).run(), f"Could not check the delta of {ctx.entity.name}")


@dataclass
class DeltaDiff:
    """Applied / behind / missing changed rows, for one key range (or the whole key lookup)."""

    watermark: datetime
    zone: Any
    first: int
    part: ExportPart | None
    changed: int = 0
    applied: int = 0
    behind: int = 0
    missing: int = 0
    max_stale_s: float = 0.0
    """The largest gap between a source change and the older Dynamics `modifiedon`."""
    oldest_pending: datetime | None = None
    """The earliest source change that Dynamics does not have yet."""
    first_behind: list[dict[str, Any]] = field(default_factory=list)
    first_missing: list[str] = field(default_factory=list)

    def changed_at(self, value: Any) -> datetime | None:
        """The source change time when it is after the watermark, else None (not part of the delta)."""
        moment = parse_time(value, self.zone)
        return moment if moment is not None and moment > self.watermark else None

    def pair(self, key: str, source_value: Any, target_value: Any) -> None:
        changed = self.changed_at(source_value)
        if changed is None:
            return
        self.changed += 1
        seen = parse_time(target_value)
        if seen is not None and seen >= changed:
            self.applied += 1
            return
        self.behind += 1
        self._pending(changed)
        stale = (changed - seen).total_seconds() if seen is not None else None
        if stale is not None:
            self.max_stale_s = max(self.max_stale_s, stale)
        if len(self.first_behind) < self.first:
            self.first_behind.append({"key": key, "source": stamp(changed), "target": stamp(seen), "stale_s": stale})
        if self.part is not None:
            self.part.write([(key, "behind", stamp(changed), stamp(seen) or "", "" if stale is None else stale)])

    def _pending(self, changed: datetime) -> None:
        if self.oldest_pending is None or changed < self.oldest_pending:
            self.oldest_pending = changed

    def absent(self, key: str, source_value: Any) -> None:
        changed = self.changed_at(source_value)
        if changed is None:
            return
        self.changed += 1
        self.missing += 1
        self._pending(changed)
        if len(self.first_missing) < self.first:
            self.first_missing.append(key)
        if self.part is not None:
            self.part.write([(key, "missing", stamp(changed), "", "")])

    def window(self, w: Window) -> None:
        keys, source_values, target_values = w.matched()
        for key, (s,), (t,) in zip(keys, source_values, target_values):
            self.pair(key, s, t)
        if not w.aligned:
            missing, _ = w.split()
            for i in missing:
                self.absent(w.source_keys[i], w.source_values[i][0] if w.source_values is not None else None)

    def duplicate(self, side: str, key: str, value: Any) -> None:
        """Duplicate keys are reconcile's finding."""


class _Delta:
    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.entity = ctx.entity
        if not self.entity.source.modified or not self.entity.target.modified:
            raise CheckProblem(
                f"Check {ctx.check.id}: entity {self.entity.name} needs source.modified and target.modified."
            )
        self.zone = parse_options(ctx.check.params, ctx.check.id).zone
        self.first = first_n(ctx)
        self.batch = max(1, int(ctx.check.params.get("batch", DEFAULT_BATCH)))

    async def watermark(self) -> datetime:
        params = self.ctx.check.params
        given = params.get("watermark")
        if isinstance(given, datetime):
            return given
        sql = params.get("watermark_sql")
        if not sql:
            raise CheckProblem(f"Check {self.ctx.check.id} needs watermark: (a timestamp) or watermark_sql: (a query).")
        value = await self.ctx.source.scalar(str(sql), log=self.ctx.source_log)
        moment = parse_time(value, self.zone)
        if moment is None:
            raise CheckProblem(f"Check {self.ctx.check.id}: watermark_sql returned {value!r}, not a timestamp.")
        return moment

    async def run(self) -> CheckResult:
        ctx, entity = self.ctx, self.entity
        await ensure_columns(ctx, entity.source.table, [entity.source.key, str(entity.source.modified)])
        watermark = await self.watermark()
        condition = await after(ctx, entity.source.table, str(entity.source.modified), watermark, self.zone)
        export = CsvExport(exports_dir(ctx), ctx.check.id, "delta", ["key", "state", "source_modified", "target_modified", "stale_s"]) if ctx.check.params.get("export", True) else None
        try:
            diffs, method = await self._compare(watermark, condition, export)
            exported = export.finish() if export is not None else None
        except BaseException:
            if export is not None:
                export.discard()
            raise
        return self._result(watermark, diffs, method, exported)

    async def _compare(self, watermark: datetime, condition: After, export: CsvExport | None) -> tuple[list[DeltaDiff], str]:
        ctx, entity = self.ctx, self.entity
        changed = await source_count(ctx, entity.source.table, entity.source.key, condition.conditions)
        rows = await source_count(ctx, entity.source.table, entity.source.key)
        page = ctx.config.target.limits.page_size
        if not condition.in_python and math.ceil(changed / self.batch) <= math.ceil(rows / page):
            diff = DeltaDiff(watermark, self.zone, self.first, export.part(0) if export else None)
            await self._lookups(condition, diff)
            return [diff], "key lookups"
        wanted = ctx.check.params.get("partitions")
        ranges = await plan_ranges(ctx, entity.source.table, entity.source.key, rows, int(wanted) if wanted else None)
        sides = Sides(
            entity.source.table, entity.source.key, entity.target.entity_set, attribute(entity.target.key),
            source_columns=[str(entity.source.modified)], target_attributes=[attribute(str(entity.target.modified))],
            source_where=condition.conditions,
        )
        made: list[int] = []

        def make(i: int) -> DeltaDiff:
            made.append(i)
            return DeltaDiff(watermark, self.zone, self.first, export.part(i) if export else None)

        def restart() -> None:
            if export is not None:
                export.discard_parts(made)

        comparison = await compare(ctx, sides, ranges, make, restart)
        return comparison.consumers, comparison.method

    async def _lookups(self, condition: After, diff: DeltaDiff) -> None:
        """Asks Dynamics for the changed keys, `batch` at a time, several batches at once."""
        ctx, entity = self.ctx, self.entity
        key, modified = entity.source.key, str(entity.source.modified)
        where = [Condition(key, "not_null"), *condition.conditions]
        in_flight = asyncio.Semaphore(max(1, ctx.config.target.limits.concurrency))
        results: list[tuple[list[tuple[Any, ...]], asyncio.Task[dict[str, Any]]]] = []

        async def ask(keys: list[str]) -> dict[str, Any]:
            async with in_flight:
                return await self._target_modified(keys)

        try:
            async for records in source_queries(ctx).records(
                entity.source.table, [key, modified], key=key, where=where, log=ctx.source_log, batch=self.batch
            ):
                rows = [(r[key], r[modified]) for r in records]
                results.append((rows, asyncio.ensure_future(ask([as_key(r[0]) for r in rows]))))
            await gather_all(*(task for _, task in results))
        finally:
            for _, task in results:
                task.cancel()
        for rows, task in results:  # in key order, whatever order the answers came in
            seen = task.result()
            for key, modified in rows:
                target = seen.get(fold(as_key(key)), _ABSENT)
                if target is _ABSENT:
                    diff.absent(as_key(key), modified)
                else:
                    diff.pair(as_key(key), modified, target)

    async def _target_modified(self, keys: list[str]) -> dict[str, Any]:
        """Folded key -> newest Dynamics modifiedon for a batch of keys (one request per page)."""
        ctx, entity = self.ctx, self.entity
        tk, tm = attribute(entity.target.key), attribute(str(entity.target.modified))
        condition = " or ".join(f"{tk} eq {odata_string(k)}" for k in keys)
        found: dict[str, Any] = {}
        async for page in ctx.dynamics.pages(entity.target.entity_set, select=[tk, tm], filter=condition, log=ctx.dynamics_log):
            for row in page:
                if row.get(tk) is None:
                    continue
                folded = fold(as_key(row[tk]))
                value = row.get(tm)
                previous = found.get(folded)
                if previous is None or (value is not None and str(value) > str(previous)):
                    found[folded] = value
        return found

    def _result(self, watermark: datetime, diffs: list[DeltaDiff], method: str, exported: Any) -> CheckResult:
        ctx, name = self.ctx, self.entity.name
        changed = sum(d.changed for d in diffs)
        applied = sum(d.applied for d in diffs)
        behind = sum(d.behind for d in diffs)
        missing = sum(d.missing for d in diffs)
        max_stale = max((d.max_stale_s for d in diffs), default=0.0)
        oldest = min((d.oldest_pending for d in diffs if d.oldest_pending), default=None)
        waiting = max(0.0, (ctx.clock.now() - oldest).total_seconds()) if oldest else 0.0
        first_behind = [b for d in diffs for b in d.first_behind][: self.first]
        first_missing = [k for d in diffs for k in d.first_missing][: self.first]
        status = judge(behind + missing, ctx.check.warn, ctx.check.breach)
        values: dict[str, Any] = {
            "headline": f"{behind:,} behind · {missing:,} missing of {changed:,} changed",
            "watermark": iso(watermark).replace(".000000Z", "Z"),
            "changed": changed,
            "applied": applied,
            "behind": behind,
            "missing": missing,
            "max_stale_s": max_stale,
            "oldest_pending": stamp(oldest),
            "lag_s": round(waiting, 1),
            "first_behind": first_behind,
            "first_missing": first_missing,
            "method": method,
        }
        if exported is not None:
            values["exports"] = {"delta": exported.to_json()}
        since = _short(watermark)
        if not behind and not missing:
            text = f"All {plural(changed, name + ' record')} changed in the source since {since} are in Dynamics and up to date."
        else:
            clauses = []
            if behind:
                clauses.append(f"{behind:,} are older in Dynamics ({key_list([b['key'] for b in first_behind], behind)})")
            if missing:
                clauses.append(f"{missing:,} are not in Dynamics ({key_list(first_missing, missing)})")
            text = (f"Of {plural(changed, name + ' record')} changed in the source since {since}, "
                    + " and ".join(clauses) + f"; the oldest change still missing is from {_short(oldest)}")
            text += f" ({_span(waiting)} ago)." if waiting else "." 
        return ctx.finish(status, text, values)


_ABSENT = object()
