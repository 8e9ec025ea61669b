"""kpi_parity: the business figures the owner signs off on (open pipeline by stage, its value) agree.

Each configured measure (`count`, `sum`, `min`, `max` of a column) is computed on both sides,
per group: the source with its `aggregate` intent (SQL `GROUP BY` on a SQL source, `$apply` or a
streamed fold on an OData source; an optional `source_where` of plain comparisons joined by AND,
which any source can apply; other SQL only on a SQL source), Dynamics with
`$apply=filter(...)/groupby((...),aggregate(...))` (an optional `target_filter`), split by
`createdon` when more than 50,000 records fall under it (checks/aggregates.py). Source group
values are translated with the group's `map` (e.g. stage 'Qualify' -> stepname '1-Qualify')
and compared case-insensitively.

Per group and measure the deviation is |Dynamics - source| / |source| (1 when the source is
0 and Dynamics is not; differences within the measure's absolute `tolerance`, default 0.005,
count as none, so float sums never raise a false alarm). The largest deviation is graded
against `warn`/`breach` (fractions, e.g. breach: 0.01 = 1 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec
from crmctl.connectors.sql import SourceMeasure, SqlSource
from crmctl.model import CheckResult
from checks.aggregates import AGGREGATES, Measure, PartitionedAggregate, combine
from checks.common import CheckProblem, guarded
from checks.conditions import parse_where
from checks.keys import attribute, column, ensure_columns, fold, source_queries

NONE = "(none)"
ALL = "all"
DEFAULT_TOLERANCE = 0.005


@dataclass(frozen=True)
class KpiMeasure:
    name: str
    agg: str
    source: str | None
    target: str | None
    tolerance: float


@dataclass(frozen=True)
class Grouping:
    source: str
    target: str
    mapping: Mapping[str, Any]


def _measures(ctx: CheckContext) -> list[KpiMeasure]:
    raw = ctx.check.params.get("measures") or [{"name": "count", "agg": "count"}]
    out: list[KpiMeasure] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise CheckProblem(f"Check {ctx.check.id}: each measure must be a mapping with name and agg.")
        agg = str(item.get("agg", "count"))
        if agg not in AGGREGATES:
            raise CheckProblem(f"Check {ctx.check.id}: measure agg {agg!r} is not one of {', '.join(AGGREGATES)}.")
        name = str(item.get("name", agg))
        source, target = item.get("source"), item.get("target")
        if agg != "count" and (not source or not target):
            raise CheckProblem(f"Check {ctx.check.id}: measure {name!r} ({agg}) needs source: and target: columns.")
        try:
            attribute(name)
            out.append(KpiMeasure(
                name, agg,
                str(source) if source else None, attribute(str(target)) if target else None,
                float(item.get("tolerance", DEFAULT_TOLERANCE)),
            ))
            if source:
                column(str(source))
        except ValueError as exc:
            raise CheckProblem(f"Check {ctx.check.id}: {exc}.") from None
    if len({m.name for m in out}) != len(out):
        raise CheckProblem(f"Check {ctx.check.id}: measure names must be unique.")
    return out


def _grouping(ctx: CheckContext) -> Grouping | None:
    raw = ctx.check.params.get("group")
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "source" not in raw or "target" not in raw:
        raise CheckProblem(f"Check {ctx.check.id}: group needs source: (a column) and target: (an attribute).")
    mapping = raw.get("map") or {}
    if not isinstance(mapping, Mapping):
        raise CheckProblem(f"Check {ctx.check.id}: group map must map source values to Dynamics values.")
    try:
        column(str(raw["source"]))
        return Grouping(str(raw["source"]), attribute(str(raw["target"])), {str(k): v for k, v in mapping.items()})
    except ValueError as exc:
        raise CheckProblem(f"Check {ctx.check.id}: {exc}.") from None


def _label(value: Any) -> str:
    return NONE if value is None else str(value)


class KpiParity:
    """Business aggregates per group, source vs Dynamics, within a tolerance."""

    kind: ClassVar[str] = "kpi_parity"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={"measures": list, "group": dict, "source_where": str, "target_filter": str},
        description="Aggregates (count/sum/min/max) per group on both sides; thresholds are the largest "
        "relative deviation (0.01 = 1 %).",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _kpi(ctx), f"Could not compute the KPIs of {ctx.entity.name}")


async def _kpi(ctx: CheckContext) -> CheckResult:
    entity = ctx.entity
    measures = _measures(ctx)
    grouping = _grouping(ctx)
    await ensure_columns(ctx, entity.source.table, [
        *([grouping.source] if grouping else []), *(str(m.source) for m in measures if m.source)])
    source = await _source_figures(ctx, measures, grouping)
    aggregate = PartitionedAggregate(
        ctx, entity.target.entity_set,
        [Measure(m.name, m.agg, m.target) for m in measures],
        [grouping.target] if grouping else [],
        ctx.check.params.get("target_filter"),
    )
    target_rows = await aggregate.run()
    target = {fold(_label(k[0]) if k else ALL): (_label(k[0]) if k else ALL, row) for k, row in target_rows.items()}
    groups: dict[str, dict[str, Any]] = {}
    worst: tuple[float, str, str] = (0.0, "", "")
    signed = 0.0
    for folded in sorted(set(source) | set(target)):
        label = target[folded][0] if folded in target else source[folded][0]
        s_row = source.get(folded, (label, {}))[1]
        t_row = target.get(folded, (label, {}))[1]
        figures: dict[str, Any] = {}
        for m in measures:
            s, t = _number(s_row.get(m.name), m.agg), _number(t_row.get(m.name), m.agg)
            deviation = _deviation(s, t, m.tolerance)
            figures[m.name] = {
                "source": s, "target": t,
                "difference": None if s is None or t is None else round(t - s, 6),
                "deviation_pct": round(deviation * 100, 4),
            }
            if deviation > worst[0]:
                worst = (deviation, label, m.name)
                signed = deviation if (t or 0) >= (s or 0) else -deviation
        groups[label] = figures
    status = judge(worst[0], ctx.check.warn, ctx.check.breach)
    values: dict[str, Any] = {
        "headline": (f"worst: {worst[1]} {worst[2]} {signed * 100:+.2f} %" if worst[0] else "all figures agree"),
        "max_deviation_pct": round(worst[0] * 100, 4),
        "worst": {"group": worst[1], "measure": worst[2]} if worst[0] else None,
        "groups": groups,
        "method": aggregate.method,
        "partitions": aggregate.partitions,
    }
    return ctx.finish(status, _explain(entity.name, groups, worst, measures), values)


def _number(value: Any, agg: str) -> Any:
    if value is None:
        return 0 if agg == "count" else None
    if isinstance(value, float):
        return round(value, 4)
    return value


def _deviation(source: Any, target: Any, tolerance: float) -> float:
    if source is None and target is None:
        return 0.0
    if source is None or target is None:
        return 1.0
    try:
        difference = abs(float(target) - float(source))
    except (TypeError, ValueError):
        return 0.0 if str(source) == str(target) else 1.0
    if difference <= tolerance:
        return 0.0
    return difference / abs(float(source)) if float(source) else 1.0


def _explain(name: str, groups: dict[str, Any], worst: tuple[float, str, str], measures: list[KpiMeasure]) -> str:
    if not worst[0]:
        return f"Every {name} figure ({', '.join(m.name for m in measures)}) agrees in all {len(groups)} groups."
    off = [
        f"{g} {m}: {f['source']} vs {f['target']}"
        for g, row in groups.items() for m, f in row.items() if f["deviation_pct"]
    ]
    shown = "; ".join(off[:4]) + (f"; and {len(off) - 4} more" if len(off) > 4 else "")
    return (f"{len(off)} {name} figures differ between source and Dynamics (largest: {worst[1]} {worst[2]}, "
            f"{worst[0] * 100:.2f} %): {shown}.")


async def _source_figures(
    ctx: CheckContext, measures: list[KpiMeasure], grouping: Grouping | None
) -> dict[str, tuple[str, dict[str, Any]]]:
    entity = ctx.entity
    queries = source_queries(ctx)
    figures_of = [SourceMeasure(m.name, m.agg, m.source if m.agg != "count" else None) for m in measures]
    group_by = [grouping.source] if grouping else []
    where_text = ctx.check.params.get("source_where")
    where = parse_where(str(where_text)) if where_text else []
    if where is None:
        if not isinstance(queries, SqlSource):
            raise CheckProblem(
                f"Check {ctx.check.id}: source_where {where_text!r} is SQL the source cannot run; on an OData "
                "source write it as plain comparisons joined by AND (e.g. status = 'open' AND value > 0)."
            )
        rows = await queries.aggregate(entity.source.table, figures_of, group_by, log=ctx.source_log,
                                       sql_where=str(where_text))
    else:
        rows = await queries.aggregate(entity.source.table, figures_of, group_by, where, log=ctx.source_log)
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for row in rows:
        raw = row.get(grouping.source) if grouping else None
        label = _label(grouping.mapping.get(str(raw), raw) if raw is not None else raw) if grouping else ALL
        figures = {m.name: row.get(m.name) for m in measures}
        folded = fold(label)
        if folded in found:  # two source values mapped onto one Dynamics value: add them up
            merged = {m.name: combine(m.agg, found[folded][1].get(m.name), figures.get(m.name)) for m in measures}
            found[folded] = (found[folded][0], merged)
        else:
            found[folded] = (label, figures)
    return found
