"""orphans: lookups the source sets but Dynamics lost, or that point at a different parent.

Dataverse lookups cannot dangle (a deleted parent cascades, nulls the link or is refused), so an
orphan of a migration is judged against the source (dataverse.md §9): for every record present
on both sides, the source's parent key is compared with the migration key of the record the
Dynamics lookup points at.

1. The parent entity is read once as (primary id, migration key), in concurrent key ranges,
   into a GUID -> key map (one entry per parent).
2. The child entity is merged by key exactly as `reconcile` does, carrying the source's parent
   key and the Dynamics lookup GUID as payloads (checks/compare.py).
3. For each matched child: source parent set and lookup null -> *lost*; lookup set and its
   parent's key differs from the source's (or the source has no parent) -> *wrong*.

Children missing from either side are `reconcile`'s business, not counted here. Thresholds are
the number of orphaned records (lost + wrong). A lookup to a parent without a migration key
reads as "wrong parent (none)". Polymorphic lookups (customer) are compared against the
configured parent entity only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec, EntityConfig, LookupConfig
from crmctl.exports import CsvExport, ExportPart
from crmctl.model import CheckResult
from checks.common import CheckProblem, exports_dir, first_n, guarded, key_list, primary_id
from checks.compare import Sides, compare, gather_all
from checks.keys import as_key, attribute, ensure_columns, fold, plan_ranges, source_count
from checks.merge import Window


@dataclass
class LookupDiff:
    """Orphans found in one key range of the child entity for one lookup."""

    parents: dict[str, str]
    first: int
    part: ExportPart | None
    field_name: str
    lost: int = 0
    wrong: int = 0
    first_lost: list[str] = field(default_factory=list)
    first_wrong: list[dict[str, Any]] = field(default_factory=list)

    def window(self, w: Window) -> None:
        keys, source_values, target_values = w.matched()
        expected = [v[0] for v in source_values]
        guids = [v[0] for v in target_values]
        parents = self.parents
        actual = [None if g is None else parents.get(g.lower() if type(g) is str else str(g).lower()) for g in guids]
        if expected == actual:
            return  # every parent as in the source (the common case), compared in C
        for key, exp, guid, act in zip(keys, expected, guids, actual):
            if exp == act:
                continue
            exp = None if exp is None or (isinstance(exp, str) and not exp.strip()) else as_key(exp)
            if guid is None:
                if exp is not None:
                    self._lost(key, exp)
                continue
            if exp is None or act is None or fold(act) != fold(exp):
                self._wrong(key, exp, act)

    def _lost(self, key: str, expected: str) -> None:
        self.lost += 1
        if len(self.first_lost) < self.first:
            self.first_lost.append(key)
        if self.part is not None:
            self.part.write([(self.field_name, key, "lost", expected, "")])

    def _wrong(self, key: str, expected: str | None, actual: str | None) -> None:
        self.wrong += 1
        if len(self.first_wrong) < self.first:
            self.first_wrong.append({"key": key, "expected": expected, "actual": actual})
        if self.part is not None:
            self.part.write([(self.field_name, key, "wrong", expected or "", actual or "")])

    def duplicate(self, side: str, key: str, value: Any) -> None:
        """Duplicate keys are reconcile's finding; the first occurrence is compared here."""


class Orphans:
    """Lost and wrong parent lookups, compared by the parent's migration key."""

    kind: ClassVar[str] = "orphans"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={"lookup": str, "first": int, "partitions": int, "export": bool},
        description="Lookups set in the source but null, or pointing at another parent, in Dynamics; "
        "thresholds count orphaned records.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _orphans(ctx), f"Could not check the lookups of {ctx.entity.name}")


def _lookups(ctx: CheckContext) -> list[LookupConfig]:
    entity = ctx.entity
    wanted = ctx.check.params.get("lookup")
    lookups = [lk for lk in entity.lookups if wanted is None or lk.field == wanted]
    if not lookups:
        known = ", ".join(lk.field for lk in entity.lookups) or "none"
        raise CheckProblem(
            f"Check {ctx.check.id}: entity {entity.name} has no lookup {wanted or ''} to check (lookups: {known})."
        )
    for lk in lookups:
        if not lk.source_field:
            raise CheckProblem(
                f"Check {ctx.check.id}: lookup {lk.field} of {entity.name} names no source_field "
                "(the source column holding the parent's key)."
            )
    return lookups


async def _orphans(ctx: CheckContext) -> CheckResult:
    entity = ctx.entity
    lookups = _lookups(ctx)
    first = first_n(ctx)
    export = (
        CsvExport(exports_dir(ctx), ctx.check.id, "orphans", ["lookup", "key", "kind", "expected_parent", "actual_parent"])
        if ctx.check.params.get("export", True) else None
    )
    try:
        found = [await _lookup_orphans(ctx, entity, lk, n, first, export) for n, lk in enumerate(lookups)]
        exported = export.finish() if export is not None else None
    except BaseException:
        if export is not None:
            export.discard()
        raise
    per_lookup: dict[str, Any] = {}
    lost = wrong = 0
    for lk, (parts, method) in zip(lookups, found):
        lk_lost = sum(p.lost for p in parts)
        lk_wrong = sum(p.wrong for p in parts)
        lost += lk_lost
        wrong += lk_wrong
        per_lookup[lk.field] = {
            "parent": lk.entity,
            "lost": lk_lost,
            "wrong": lk_wrong,
            "first_lost": [k for p in parts for k in p.first_lost][:first],
            "first_wrong": [w for p in parts for w in p.first_wrong][:first],
            "method": method,
        }
    status = judge(lost + wrong, ctx.check.warn, ctx.check.breach)
    values: dict[str, Any] = {
        "headline": f"{lost:,} lost · {wrong:,} wrong parent",
        "orphans": lost + wrong,
        "lost": lost,
        "wrong": wrong,
        "lookups": per_lookup,
    }
    if exported is not None:
        values["exports"] = {"orphans": exported.to_json()}
    return ctx.finish(status, _explain(entity.name, per_lookup), values)


def _explain(name: str, per_lookup: dict[str, Any]) -> str:
    clauses = []
    for fld, v in per_lookup.items():
        if not v["lost"] and not v["wrong"]:
            clauses.append(f"every {name} {fld} matches the source")
            continue
        parts = []
        if v["lost"]:
            parts.append(f"{v['lost']:,} lost ({key_list(v['first_lost'], v['lost'])})")
        if v["wrong"]:
            parts.append(f"{v['wrong']:,} pointing at another {v['parent']} "
                         f"({key_list([w['key'] for w in v['first_wrong']], v['wrong'])})")
        clauses.append(f"{name} {fld}: " + ", ".join(parts))
    text = "; ".join(clauses) + "."
    return text[0].upper() + text[1:]


async def _lookup_orphans(
    ctx: CheckContext, entity: EntityConfig, lookup: LookupConfig, index: int, first: int, export: CsvExport | None
) -> tuple[list[LookupDiff], str]:
    try:
        parent = ctx.config.entity(lookup.entity)
    except KeyError:
        raise CheckProblem(f"Check {ctx.check.id}: lookup {lookup.field} points at {lookup.entity!r}, "
                           "which is not an entity of the config.") from None
    await ensure_columns(ctx, entity.source.table, [entity.source.key, str(lookup.source_field)])
    await ensure_columns(ctx, parent.source.table, [parent.source.key])
    parents = await _parent_keys(ctx, parent)
    rows = await source_count(ctx, entity.source.table, entity.source.key)
    wanted = ctx.check.params.get("partitions")
    ranges = await plan_ranges(ctx, entity.source.table, entity.source.key, rows, int(wanted) if wanted else None)
    sides = Sides(
        entity.source.table, entity.source.key, entity.target.entity_set, attribute(entity.target.key),
        source_columns=[str(lookup.source_field)], target_attributes=[attribute(lookup.field)],
    )

    made: list[int] = []

    def make(i: int) -> LookupDiff:
        made.append(index * 10_000 + i)
        part = export.part(made[-1]) if export is not None else None
        return LookupDiff(parents, first, part, lookup.field)

    def restart() -> None:
        if export is not None:
            export.discard_parts(made)
        made.clear()

    comparison = await compare(ctx, sides, ranges, make, restart)
    return comparison.consumers, comparison.method


async def _parent_keys(ctx: CheckContext, parent: EntityConfig) -> dict[str, str]:
    """GUID (lower case) -> migration key of every keyed record of the parent entity."""
    pid = await primary_id(ctx, parent)
    key = attribute(parent.target.key)
    rows = await source_count(ctx, parent.source.table, parent.source.key)
    ranges = await plan_ranges(ctx, parent.source.table, parent.source.key, rows)
    mapping: dict[str, str] = {}

    async def scan(condition: str) -> None:
        async for page in ctx.dynamics.pages(
            parent.target.entity_set, select=[key, pid], filter=condition, log=ctx.dynamics_log
        ):
            for row in page:
                guid, value = row.get(pid), row.get(key)
                if guid is not None and value is not None:
                    mapping[str(guid).lower()] = as_key(value)

    await gather_all(*(scan(r.odata(key)) for r in ranges))
    return mapping
