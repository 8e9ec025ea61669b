"""reconcile: which records are missing in Dynamics, which are extra, by migration key; exact at any size.

A count can agree while records differ (one lost, one duplicated). Reconciliation compares the
keys themselves: the source's keys (`SELECT key ... ORDER BY key`) and Dynamics' legacy keys
(`$select=key&$orderby=key asc`) are merged as two sorted streams (checks/merge.py), range by
range and concurrently within the target's shared limiter (checks/compare.py). Memory is
bounded by pages, not by the table; the requests are the pages of the key column and nothing
else: no aggregate, so no 50,000 limit, and no `$count`, so no 5,000 cap.

The result names the first N missing and extra keys, Dynamics rows without a migration key
(created there, e.g. by an integration), and duplicate keys on either side; the full lists are
written as CSV files beside the state file and referenced (path, rows, SHA-256) from the
values. Optionally a field-level compare of a seeded random sample of matched records runs
on top (checks/sampling.py).

Status: the deviation is (missing + extra + unkeyed + duplicate keys in Dynamics) as a
fraction of the source's keyed rows, graded by `warn`/`breach`; the sample's mismatch rate is
graded by `sample_warn` (default 0: any mismatch is worth a look) and `sample_breach`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec
from crmctl.exports import CsvExport, ExportedFile
from crmctl.model import CheckResult
from checks.common import CheckProblem, exports_dir, first_n, guarded, key_list, pct, plural, primary_id
from checks.compare import Comparison, Sides, compare
from crmctl.connectors.sql import Condition
from checks.keys import attribute, ensure_columns, plan_ranges, source_queries, source_count
from checks.merge import Window, without
from checks.sampling import Sampler, compare_sample, parse_fields, parse_options


@dataclass
class KeyDiff:
    """The comparison of one key range: counts, the first keys of each list, the export parts."""

    index: int
    first: int
    missing_export: CsvExport | None
    extra_export: CsvExport | None
    sampler: Sampler | None
    progress: Callable[[int], None] | None = None
    """Told how many source keys each window settled (the run's progress report)."""
    matched: int = 0
    missing: int = 0
    extra: int = 0
    first_missing: list[str] = field(default_factory=list)
    first_extra: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=lambda: {"source": 0, "Dynamics": 0})
    first_duplicates: dict[str, list[str]] = field(default_factory=lambda: {"source": [], "Dynamics": []})

    def window(self, w: Window) -> None:
        if self.progress is not None:
            self.progress(len(w.source_keys))
        if w.aligned:
            self.matched += len(w.source_folded)
            if self.sampler is not None:
                self.sampler.offer(w.source_keys)
            return
        missing, extra = w.split()
        self.matched += len(w.source_keys) - len(missing)
        if self.sampler is not None:
            self.sampler.offer(without(w.source_keys, missing))
        self._note(missing, w.source_keys, "missing", self.missing_export)
        self._note(extra, w.target_keys, "extra", self.extra_export)

    def _note(self, indexes: list[int], keys: list[str], which: str, export: CsvExport | None) -> None:
        if not indexes:
            return
        found = [keys[i] for i in indexes]
        setattr(self, which, getattr(self, which) + len(found))
        shown: list[str] = getattr(self, f"first_{which}")
        if len(shown) < self.first:
            shown.extend(found[: self.first - len(shown)])
        if export is not None:
            export.part(self.index).write([k] for k in found)

    def duplicate(self, side: str, key: str, value: Any) -> None:
        self.duplicates[side] += 1
        if len(self.first_duplicates[side]) < self.first:
            self.first_duplicates[side].append(key)


class Reconcile:
    """Missing and extra records by migration key, plus an optional field-level sample compare."""

    kind: ClassVar[str] = "reconcile"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=True,
        params={
            "first": int,
            "partitions": int,
            "export": bool,
            "sample": int,
            "fields": dict,
            "seed": int,
            "trim": bool,
            "ignore_case": bool,
            "tolerance": float,
            "timezone": str,
            "sample_warn": float,
            "sample_breach": float,
        },
        description="Key-level diff by migration key (missing / extra in Dynamics), exact at any size; "
        "optional field-level compare of a random sample of matched records.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        return await guarded(ctx, _Run(ctx).run(), f"Could not reconcile {ctx.entity.name}")


class _Run:
    """One run of a reconcile check."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.entity = ctx.entity
        params = ctx.check.params
        self.first = first_n(ctx)
        self.fields = parse_fields(params.get("fields"), ctx.check.id)
        self.options = parse_options(params, ctx.check.id)
        self.sample_size = max(0, int(params.get("sample", 0)))
        if self.sample_size and not self.fields:
            raise CheckProblem(f"Check {ctx.check.id} asks for a sample but names no fields to compare.")
        self.seed = int(params.get("seed", 20261128))
        self.export = bool(params.get("export", True))
        self.exports: dict[str, CsvExport] = {}
        self.pid = ""
        self.keyed = 0
        self.settled = 0
        """Source keys compared so far, over every range: the progress the control room shows."""

    async def run(self) -> CheckResult:
        ctx, entity = self.ctx, self.entity
        source_key = entity.source.key
        target_key = attribute(entity.target.key)
        await ensure_columns(ctx, entity.source.table, [source_key, *(f.source for f in self.fields)])
        keyed, unkeyed_source = await asyncio.gather(
            source_count(ctx, entity.source.table, source_key),
            source_queries(ctx).count(entity.source.table, [Condition(source_key, "is_null")], log=ctx.source_log),
        )
        self.pid = await primary_id(ctx, entity)
        self.keyed = keyed
        ctx.report_progress(rows=0, pages=ctx.dynamics_log.requests, total=keyed)
        wanted = ctx.check.params.get("partitions")
        ranges = await plan_ranges(ctx, entity.source.table, source_key, keyed, int(wanted) if wanted else None)
        if self.export:
            folder = exports_dir(ctx)
            self.exports = {
                "missing": CsvExport(folder, ctx.check.id, "missing", [f"{entity.source.key} (missing in Dynamics)"]),
                "extra": CsvExport(folder, ctx.check.id, "extra", [f"{entity.target.key} (extra in Dynamics)"]),
                "unkeyed": CsvExport(folder, ctx.check.id, "unkeyed", [f"{self.pid} (no {entity.target.key})"]),
            }
        sides = Sides(entity.source.table, source_key, entity.target.entity_set, target_key)
        try:
            comparison, unkeyed = await asyncio.gather(
                compare(ctx, sides, ranges, self._consumer, self._restart),
                self._unkeyed_in_target(),
            )
            files = {name: export.finish() for name, export in self.exports.items()}
        except BaseException:
            for export in self.exports.values():
                export.discard()
            raise
        sample = None
        if self.sample_size:
            sampler = Sampler(self.sample_size, self.seed)  # only merged into, never offered keys
            for consumer in comparison.consumers:
                if consumer.sampler is not None:
                    sampler.merge(consumer.sampler)
            sample = await compare_sample(ctx, entity, sampler.keys(), self.fields, self.options, self.first)
        return self._result(comparison, keyed, int(unkeyed_source or 0), unkeyed, files, sample)

    def _consumer(self, index: int) -> KeyDiff:
        return KeyDiff(
            index,
            self.first,
            self.exports.get("missing"),
            self.exports.get("extra"),
            Sampler(self.sample_size, f"{self.seed}:{index}") if self.sample_size else None,
            self._advance,
        )

    def _advance(self, rows: int) -> None:
        """One merge window settled `rows` source keys: tell whoever watches (rows of the source's
        keyed rows, and the Dynamics requests spent so far as pages)."""
        self.settled += rows
        self.ctx.report_progress(rows=self.settled, pages=self.ctx.dynamics_log.requests, total=self.keyed)

    def _restart(self) -> None:
        self.settled = 0  # the external sort compares every key again, from the start
        for export in self.exports.values():
            export.discard()

    async def _unkeyed_in_target(self) -> tuple[int, list[str]]:
        """Dynamics rows without a migration key: named by their primary id."""
        ctx, entity, pid = self.ctx, self.entity, self.pid
        total, first = 0, []
        export = self.exports.get("unkeyed")
        async for rows in ctx.dynamics.pages(
            entity.target.entity_set, select=[pid], filter=f"{attribute(entity.target.key)} eq null",
            orderby=f"{pid} asc", log=ctx.dynamics_log,
        ):
            ids = [str(r.get(pid)) for r in rows]
            total += len(ids)
            if len(first) < self.first:
                first.extend(ids[: self.first - len(first)])
            if export is not None:
                export.part(0).write([i] for i in ids)
        return total, first

    def _result(
        self,
        comparison: Comparison,
        keyed: int,
        unkeyed_source: int,
        unkeyed: tuple[int, list[str]],
        files: dict[str, ExportedFile],
        sample: Any,
    ) -> CheckResult:
        ctx, name = self.ctx, self.entity.name
        parts: list[KeyDiff] = comparison.consumers
        missing = sum(p.missing for p in parts)
        extra = sum(p.extra for p in parts)
        matched = sum(p.matched for p in parts)
        dups = {side: sum(p.duplicates[side] for p in parts) for side in ("source", "Dynamics")}
        first_missing = _first(parts, "first_missing", self.first)
        first_extra = _first(parts, "first_extra", self.first)
        unkeyed_count, first_unkeyed = unkeyed
        target = matched + extra + dups["Dynamics"] + unkeyed_count
        deviation_rows = missing + extra + unkeyed_count + dups["Dynamics"]
        fraction = deviation_rows / keyed if keyed else (1.0 if deviation_rows else 0.0)
        status = judge(fraction, ctx.check.warn, ctx.check.breach)
        values: dict[str, Any] = {
            "headline": _headline(missing, extra, unkeyed_count),
            "source": keyed,
            "target": target,
            "matched": matched,
            "missing": missing,
            "extra": extra,
            "unkeyed": unkeyed_count,
            "missing_pct": pct(missing, keyed),
            "extra_pct": pct(extra, keyed),
            "deviation_pct": round(fraction * 100, 4),
            "duplicate_keys": {"source": dups["source"], "target": dups["Dynamics"]},
            "first_missing": first_missing,
            "first_extra": first_extra,
            "first_unkeyed": first_unkeyed,
            "method": comparison.method,
            "partitions": comparison.partitions,
        }
        if unkeyed_source:
            values["source_without_key"] = unkeyed_source
        if dups["source"] or dups["Dynamics"]:
            values["first_duplicate_keys"] = {
                "source": _first_dups(parts, "source", self.first), "target": _first_dups(parts, "Dynamics", self.first)
            }
        if files:
            values["exports"] = {k: f.to_json() for k, f in files.items()}
        if comparison.order_note:
            values["order_note"] = comparison.order_note
        threshold = dict(ctx.threshold())
        explanation = _explain(name, keyed, missing, extra, unkeyed_count, dups, first_missing, first_extra, comparison)
        if sample is not None:
            values["sample"] = sample.to_json()
            sample_warn = ctx.check.params.get("sample_warn", 0.0)
            sample_breach = ctx.check.params.get("sample_breach")
            threshold.update({"sample_warn": sample_warn, **({"sample_breach": sample_breach} if sample_breach is not None else {})})
            sample_status = judge(sample.rate, sample_warn, sample_breach)
            if sample_status.severity > status.severity:
                status = sample_status
            explanation += " " + _explain_sample(sample)
        return ctx.finish(status, explanation, values, threshold)


def _first(parts: list[KeyDiff], attr: str, limit: int) -> list[str]:
    out: list[str] = []
    for part in parts:
        out.extend(getattr(part, attr))
        if len(out) >= limit:
            break
    return out[:limit]


def _first_dups(parts: list[KeyDiff], side: str, limit: int) -> list[str]:
    out: list[str] = []
    for part in parts:
        out.extend(part.first_duplicates[side])
    return out[:limit]


def _headline(missing: int, extra: int, unkeyed: int) -> str:
    text = f"{missing:,} missing · {extra:,} extra"
    return text + (f" · {unkeyed:,} without key" if unkeyed else "")


def _explain(
    name: str,
    keyed: int,
    missing: int,
    extra: int,
    unkeyed: int,
    dups: dict[str, int],
    first_missing: list[str],
    first_extra: list[str],
    comparison: Comparison,
) -> str:
    if not (missing or extra or unkeyed or dups["Dynamics"]):
        text = f"All {keyed:,} {name} keys of the source are in Dynamics, and nothing else is."
    else:
        clauses = []
        if missing:
            clauses.append(f"{plural(missing, name + ' record')} missing in Dynamics (first: {key_list(first_missing, missing)})")
        if extra:
            clauses.append(f"{extra:,} extra in Dynamics (first: {key_list(first_extra, extra)})")
        if unkeyed:
            clauses.append(f"{unkeyed:,} in Dynamics without a migration key")
        if dups["Dynamics"]:
            clauses.append(f"{dups['Dynamics']:,} duplicate keys in Dynamics")
        text = "; ".join(clauses) + "."
        text = text[0].upper() + text[1:]
    if dups["source"]:
        text += f" The source itself repeats {dups['source']:,} keys (case-insensitively)."
    if comparison.method != "sorted merge":
        text += " The two sides sort keys differently, so the keys were compared through an external sort."
    return text


def _explain_sample(sample: Any) -> str:
    if not sample.size:
        return "No matched record was sampled."
    text = (f"Sample of {sample.size:,}: {sample.mismatched_records:,} records differ "
            f"({sample.rate * 100:.1f} %)")
    if sample.mismatches:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(sample.mismatches.items(), key=lambda kv: -kv[1]))
        text += f": {kinds}"
    if sample.tolerated:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(sample.tolerated.items()))
        text += f"; tolerated: {kinds}"
    return text + "."

