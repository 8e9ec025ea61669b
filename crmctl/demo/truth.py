"""Ground truth of the demo world: the exact answer every check should arrive at.

The truth is *derived from the generated rows* by plain definitions (written next to each
field below), not copied from the generator's intentions. A planting bug therefore shows up
as a surprising number in `ground_truth.json` rather than as a lie, and the tests check the
same definitions again with SQL against the written databases.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from crmctl.demo.schema import DemoEntity, FieldMap
from crmctl.model import parse_iso

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output changes for the same seed, so stale worlds regenerate."""


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows sharing one value of a unique column (exact, non-null match) on one side."""

    value: str
    keys: tuple[str, ...]
    """Source keys; on the Dynamics side `new_legacyid`, or the row's GUID when it has none."""

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DuplicateGroup:
        return cls(value=data["value"], keys=tuple(data["keys"]))


@dataclass(frozen=True)
class WrongParent:
    """A migrated row whose lookup points at an existing but different parent."""

    key: str
    expected: str | None
    """Source key of the parent the source row references (None: the source has no parent)."""
    actual: str | None
    """`new_legacyid` of the parent Dynamics points at (None when that parent has none)."""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "expected": self.expected, "actual": self.actual}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WrongParent:
        return cls(key=data["key"], expected=data.get("expected"), actual=data.get("actual"))


@dataclass(frozen=True)
class LookupTruth:
    """Orphan truth for one lookup, judged against the source (dataverse.md §9).

    Dataverse lookups cannot dangle, so an "orphan" is a row present on both sides whose
    lookup is null in Dynamics though the source row references a parent (`lost`), or points
    at another parent than the source's (`wrong`).
    """

    field: str
    """Web API property, e.g. `_parentcustomerid_value`."""
    source_field: str
    parent: str
    lost: tuple[str, ...]
    wrong: tuple[WrongParent, ...]

    @property
    def total(self) -> int:
        return len(self.lost) + len(self.wrong)

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "source_field": self.source_field,
            "parent": self.parent,
            "lost": list(self.lost),
            "wrong": [w.to_json() for w in self.wrong],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LookupTruth:
        return cls(
            field=data["field"],
            source_field=data["source_field"],
            parent=data["parent"],
            lost=tuple(data["lost"]),
            wrong=tuple(WrongParent.from_json(w) for w in data["wrong"]),
        )


@dataclass(frozen=True)
class FieldMismatch:
    """One compared column whose Dynamics value differs from what the source implies.

    `kind` classifies the difference: "whitespace" (equal once trimmed), "case" (equal
    ignoring case), "rounding" (numbers less than 1 apart), "null_in_target", "null_in_source"
    or "value".
    """

    key: str
    source_field: str
    target_field: str
    source: Any
    target: Any
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source_field": self.source_field,
            "target_field": self.target_field,
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldMismatch:
        return cls(**{k: data[k] for k in ("key", "source_field", "target_field", "source", "target", "kind")})


@dataclass(frozen=True)
class CountSnapshot:
    """The stale figure RetrieveTotalRecordCount answers, and when it was taken."""

    count: int
    taken_at: str

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "taken_at": self.taken_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CountSnapshot:
        return cls(count=int(data["count"]), taken_at=data["taken_at"])


@dataclass(frozen=True)
class EntityTruth:
    """Every planted defect of one entity, by key, sorted.

    Keys are source keys (`ACC-000123`) which Dynamics holds in `new_legacyid`.
    """

    name: str
    source_table: str
    entity_set: str
    source_count: int
    target_count: int
    missing_in_target: tuple[str, ...]
    """Source keys with no Dynamics row carrying that `new_legacyid`."""
    extra_in_target: tuple[str, ...]
    """`new_legacyid` values in Dynamics that are not source keys (rehearsal leftovers)."""
    unkeyed_in_target: tuple[str, ...]
    """GUIDs of Dynamics rows with no `new_legacyid` at all (created in Dynamics directly)."""
    duplicates: Mapping[str, Mapping[str, tuple[DuplicateGroup, ...]]]
    """side ("source" | "target") -> Dataverse column -> groups with more than one row."""
    nulls: Mapping[str, Mapping[str, tuple[str, ...]]]
    """side -> required Dataverse column -> keys of rows where it is null (or empty)."""
    orphans: Mapping[str, LookupTruth]
    """Web API lookup property -> lost / wrong parents."""
    post_freeze_writes: tuple[str, ...]
    """Source keys with `updated_at` after `freeze_at`."""
    new_since_watermark: tuple[str, ...]
    """Source keys created after the watermark (the delta had to insert them)."""
    delta_applied: tuple[str, ...]
    """Source rows changed after the watermark whose Dynamics `modifiedon` is not older."""
    delta_behind: tuple[str, ...]
    """Source rows changed after the watermark, present in Dynamics with an older `modifiedon`."""
    field_mismatches: tuple[FieldMismatch, ...]
    """Every compared column that differs, over all rows present on both sides."""
    created_by_day: Mapping[str, int]
    """Dynamics rows per UTC day of `createdon`: the partitions a 50k-capped count can use."""
    count_snapshot: CountSnapshot

    @property
    def missing(self) -> int:
        return len(self.missing_in_target)

    @property
    def extra(self) -> int:
        return len(self.extra_in_target) + len(self.unkeyed_in_target)

    def mismatch_kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(m.kind for m in self.field_mismatches).items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source_table": self.source_table,
            "entity_set": self.entity_set,
            "source_count": self.source_count,
            "target_count": self.target_count,
            "missing_in_target": list(self.missing_in_target),
            "extra_in_target": list(self.extra_in_target),
            "unkeyed_in_target": list(self.unkeyed_in_target),
            "duplicates": {
                side: {col: [g.to_json() for g in groups] for col, groups in cols.items()}
                for side, cols in self.duplicates.items()
            },
            "nulls": {side: {col: list(keys) for col, keys in cols.items()} for side, cols in self.nulls.items()},
            "orphans": {name: lk.to_json() for name, lk in self.orphans.items()},
            "post_freeze_writes": list(self.post_freeze_writes),
            "new_since_watermark": list(self.new_since_watermark),
            "delta_applied": list(self.delta_applied),
            "delta_behind": list(self.delta_behind),
            "field_mismatches": [m.to_json() for m in self.field_mismatches],
            "created_by_day": dict(self.created_by_day),
            "count_snapshot": self.count_snapshot.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntityTruth:
        return cls(
            name=data["name"],
            source_table=data["source_table"],
            entity_set=data["entity_set"],
            source_count=int(data["source_count"]),
            target_count=int(data["target_count"]),
            missing_in_target=tuple(data["missing_in_target"]),
            extra_in_target=tuple(data["extra_in_target"]),
            unkeyed_in_target=tuple(data["unkeyed_in_target"]),
            duplicates={
                side: {col: tuple(DuplicateGroup.from_json(g) for g in groups) for col, groups in cols.items()}
                for side, cols in data["duplicates"].items()
            },
            nulls={side: {col: tuple(keys) for col, keys in cols.items()} for side, cols in data["nulls"].items()},
            orphans={name: LookupTruth.from_json(lk) for name, lk in data["orphans"].items()},
            post_freeze_writes=tuple(data["post_freeze_writes"]),
            new_since_watermark=tuple(data["new_since_watermark"]),
            delta_applied=tuple(data["delta_applied"]),
            delta_behind=tuple(data["delta_behind"]),
            field_mismatches=tuple(FieldMismatch.from_json(m) for m in data["field_mismatches"]),
            created_by_day=dict(data["created_by_day"]),
            count_snapshot=CountSnapshot.from_json(data["count_snapshot"]),
        )


@dataclass(frozen=True)
class JobSummary:
    """System jobs (asyncoperation) of one name or one integration, by outcome.

    succeeded/failed/canceled are statuscode 30/31/32; waiting is statecode 0 or 1 (Waiting
    for Resources, Waiting: how Dataverse parks a job between retries); in_progress is
    statecode 2. `retries` sums `retrycount`.
    """

    total: int
    succeeded: int
    failed: int
    canceled: int
    waiting: int
    in_progress: int
    retries: int
    with_retries: int
    last_failure_at: str | None
    p95_ms: float | None = None
    """95th percentile (nearest rank) of `executiontimespan` (ms) over completed jobs."""

    @property
    def error_rate(self) -> float:
        done = self.succeeded + self.failed
        return self.failed / done if done else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "canceled": self.canceled,
            "waiting": self.waiting,
            "in_progress": self.in_progress,
            "retries": self.retries,
            "with_retries": self.with_retries,
            "last_failure_at": self.last_failure_at,
            "p95_ms": self.p95_ms,
            "error_rate": round(self.error_rate, 6),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSummary:
        return cls(**{k: data[k] for k in (
            "total", "succeeded", "failed", "canceled", "waiting", "in_progress", "retries",
            "with_retries", "last_failure_at",
        )}, p95_ms=data.get("p95_ms"))


@dataclass(frozen=True)
class PluginTruth:
    """Plug-in trace logs: how many carry an exception, overall and in the last 24 h."""

    total: int
    exceptions: int
    exceptions_24h: int
    exceptions_24h_by_type: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "exceptions": self.exceptions,
            "exceptions_24h": self.exceptions_24h,
            "exceptions_24h_by_type": dict(self.exceptions_24h_by_type),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PluginTruth:
        return cls(
            total=int(data["total"]),
            exceptions=int(data["exceptions"]),
            exceptions_24h=int(data["exceptions_24h"]),
            exceptions_24h_by_type=dict(data["exceptions_24h_by_type"]),
        )


@dataclass(frozen=True)
class GroundTruth:
    """The exact state of a generated demo world; `ground_truth.json` on disk."""

    generator_version: int
    seed: int
    scale: float
    now: str
    freeze_at: str
    watermark: str
    load_started: str
    load_finished: str
    entities: Mapping[str, EntityTruth]
    system_jobs: Mapping[str, JobSummary]
    """asyncoperation `name` -> outcome summary."""
    integrations: Mapping[str, JobSummary]
    """Integration id of the demo config (erp-sync, marketing-sync) -> its jobs' summary."""
    integration_patterns: Mapping[str, str]
    """Integration id -> the `name_like` pattern that selects its jobs."""
    plugin_traces: PluginTruth
    files: Mapping[str, str] = field(default_factory=dict)
    """Role -> file name inside the world folder (source, dataverse, ground_truth)."""

    # -- convenience -------------------------------------------------------------------------

    @property
    def now_dt(self) -> datetime:
        return parse_iso(self.now)

    @property
    def freeze_dt(self) -> datetime:
        return parse_iso(self.freeze_at)

    @property
    def watermark_dt(self) -> datetime:
        return parse_iso(self.watermark)

    def entity(self, name: str) -> EntityTruth:
        return self.entities[name]

    def totals(self) -> dict[str, int]:
        """Row totals on each side, for headlines and volume tests."""
        return {
            "source": sum(e.source_count for e in self.entities.values()),
            "target": sum(e.target_count for e in self.entities.values()),
        }

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "generator_version": self.generator_version,
            "seed": self.seed,
            "scale": self.scale,
            "now": self.now,
            "freeze_at": self.freeze_at,
            "watermark": self.watermark,
            "load_started": self.load_started,
            "load_finished": self.load_finished,
            "files": dict(self.files),
            "entities": {name: e.to_json() for name, e in self.entities.items()},
            "system_jobs": {name: j.to_json() for name, j in self.system_jobs.items()},
            "integrations": {name: j.to_json() for name, j in self.integrations.items()},
            "integration_patterns": dict(self.integration_patterns),
            "plugin_traces": self.plugin_traces.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroundTruth:
        return cls(
            generator_version=int(data["generator_version"]),
            seed=int(data["seed"]),
            scale=float(data["scale"]),
            now=data["now"],
            freeze_at=data["freeze_at"],
            watermark=data["watermark"],
            load_started=data["load_started"],
            load_finished=data["load_finished"],
            files=dict(data.get("files", {})),
            entities={name: EntityTruth.from_json(e) for name, e in data["entities"].items()},
            system_jobs={name: JobSummary.from_json(j) for name, j in data["system_jobs"].items()},
            integrations={name: JobSummary.from_json(j) for name, j in data["integrations"].items()},
            integration_patterns=dict(data["integration_patterns"]),
            plugin_traces=PluginTruth.from_json(data["plugin_traces"]),
        )

    def dumps(self) -> str:
        """Canonical JSON text (sorted keys), so equal truths are byte-equal files."""
        return json.dumps(self.to_json(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Reads a `ground_truth.json` (or the world folder holding one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "ground_truth.json"
        return cls.from_json(json.loads(p.read_text(encoding="utf-8")))


# -- derivation --------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _classify(fmap: FieldMap, expected: Any, actual: Any) -> str | None:
    """None when equal; otherwise the kind of difference (see FieldMismatch)."""
    if fmap.kind == "number":
        if expected is None and actual is None:
            return None
        if actual is None:
            return "null_in_target"
        if expected is None:
            return "null_in_source"
        if round(float(expected), 2) == round(float(actual), 2):
            return None
        return "rounding" if abs(float(expected) - float(actual)) < 1.0 else "value"
    if expected == actual:
        return None
    if actual is None:
        return "null_in_target"
    if expected is None:
        return "null_in_source"
    if fmap.kind == "string" and isinstance(expected, str) and isinstance(actual, str):
        if expected.strip() == actual.strip():
            return "whitespace"
        if expected.casefold() == actual.casefold():
            return "case"
    return "value"


def _groups(pairs: Iterable[tuple[str, Any]]) -> tuple[DuplicateGroup, ...]:
    by_value: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        if not _blank(value):
            by_value[str(value)].append(key)
    return tuple(
        DuplicateGroup(value=v, keys=tuple(sorted(keys)))
        for v, keys in sorted(by_value.items())
        if len(keys) > 1
    )


def derive_entity(
    entity: DemoEntity,
    source_rows: Sequence[Mapping[str, Any]],
    target_rows: Sequence[Mapping[str, Any]],
    parent_keys: Mapping[str, Mapping[str, str | None]],
    *,
    watermark: str,
    freeze_at: str,
    snapshot: CountSnapshot,
) -> EntityTruth:
    """Applies the ground-truth definitions to one entity's rows.

    `source_rows` use source column names; `target_rows` use Dataverse attribute names
    (lookups by logical name holding the parent GUID). `parent_keys[entity][guid]` gives the
    `new_legacyid` of every Dynamics row, to tell which parent a lookup really points at.
    Timestamps are 'YYYY-MM-DDTHH:MM:SSZ' strings, so they compare as text.
    """
    skey = entity.source_key
    tkey = entity.target_key
    pid = entity.target.primary_id
    source_by_key = {r[skey]: r for r in source_rows}
    target_by_key: dict[str, Mapping[str, Any]] = {}
    unkeyed: list[str] = []
    for r in target_rows:
        k = r.get(tkey)
        if k is None:
            unkeyed.append(r[pid])
        else:
            target_by_key[k] = r
    missing = sorted(k for k in source_by_key if k not in target_by_key)
    extra = sorted(k for k in target_by_key if k not in source_by_key)

    def tname(r: Mapping[str, Any]) -> str:
        return r.get(tkey) or r[pid]

    duplicates: dict[str, dict[str, tuple[DuplicateGroup, ...]]] = {"source": {}, "target": {}}
    nulls: dict[str, dict[str, tuple[str, ...]]] = {"source": {}, "target": {}}
    for col in entity.unique:
        scol = entity.source_column(col)
        duplicates["source"][col] = _groups((r[skey], r[scol]) for r in source_rows)
        duplicates["target"][col] = _groups((tname(r), r.get(col)) for r in target_rows)
    for col in entity.required:
        scol = entity.source_column(col)
        nulls["source"][col] = tuple(sorted(r[skey] for r in source_rows if _blank(r[scol])))
        nulls["target"][col] = tuple(sorted(tname(r) for r in target_rows if _blank(r.get(col))))

    both = sorted(k for k in source_by_key if k in target_by_key)
    orphans: dict[str, LookupTruth] = {}
    for lk in entity.lookups:
        keys_of_parent = parent_keys[lk.parent]
        lost: list[str] = []
        wrong: list[WrongParent] = []
        for k in both:
            expected = source_by_key[k][lk.source]
            guid = target_by_key[k].get(lk.target)
            if expected is None:
                if guid is not None:
                    wrong.append(WrongParent(k, None, keys_of_parent.get(guid)))
                continue
            if guid is None:
                lost.append(k)
                continue
            actual = keys_of_parent.get(guid)
            if actual != expected:
                wrong.append(WrongParent(k, expected, actual))
        orphans[lk.web_name] = LookupTruth(lk.web_name, lk.source, lk.parent, tuple(lost), tuple(wrong))

    post_freeze = sorted(k for k, r in source_by_key.items() if r["updated_at"] > freeze_at)
    new_since = sorted(k for k, r in source_by_key.items() if r["created_at"] > watermark)
    applied: list[str] = []
    behind: list[str] = []
    mismatches: list[FieldMismatch] = []
    for k in both:
        s = source_by_key[k]
        t = target_by_key[k]
        if s["updated_at"] > watermark:
            (applied if t["modifiedon"] >= s["updated_at"] else behind).append(k)
        for fmap in entity.fields:
            raw = s[fmap.source]
            kind = _classify(fmap, fmap.expected(raw), t.get(fmap.target))
            if kind is not None:
                mismatches.append(FieldMismatch(k, fmap.source, fmap.target, raw, t.get(fmap.target), kind))

    by_day = Counter(r["createdon"][:10] for r in target_rows)
    return EntityTruth(
        name=entity.name,
        source_table=entity.source_table,
        entity_set=entity.target.entity_set,
        source_count=len(source_rows),
        target_count=len(target_rows),
        missing_in_target=tuple(missing),
        extra_in_target=tuple(extra),
        unkeyed_in_target=tuple(sorted(unkeyed)),
        duplicates=duplicates,
        nulls=nulls,
        orphans=orphans,
        post_freeze_writes=tuple(post_freeze),
        new_since_watermark=tuple(new_since),
        delta_applied=tuple(applied),
        delta_behind=tuple(behind),
        field_mismatches=tuple(mismatches),
        created_by_day=dict(sorted(by_day.items())),
        count_snapshot=snapshot,
    )


def summarise_jobs(rows: Iterable[Mapping[str, Any]]) -> JobSummary:
    """Outcome counts of a set of asyncoperation rows (see JobSummary for the buckets)."""
    rows = list(rows)
    failed = [r for r in rows if r["statuscode"] == 31]
    spans = sorted(float(r["executiontimespan"]) for r in rows
                   if r["statuscode"] in (30, 31) and r.get("executiontimespan") is not None)
    p95 = spans[max(0, math.ceil(0.95 * len(spans)) - 1)] if spans else None
    return JobSummary(
        total=len(rows),
        succeeded=sum(1 for r in rows if r["statuscode"] == 30),
        failed=len(failed),
        canceled=sum(1 for r in rows if r["statuscode"] == 32),
        waiting=sum(1 for r in rows if r["statecode"] in (0, 1)),
        in_progress=sum(1 for r in rows if r["statecode"] == 2),
        retries=sum(int(r.get("retrycount") or 0) for r in rows),
        with_retries=sum(1 for r in rows if (r.get("retrycount") or 0) > 0),
        last_failure_at=max((r["completedon"] for r in failed), default=None),
        p95_ms=p95,
    )


def like_prefix(pattern: str) -> str:
    """The literal prefix of a `name_like` pattern ('ERP Sync%' -> 'ERP Sync')."""
    return pattern.split("%", 1)[0]


def summarise_plugins(rows: Iterable[Mapping[str, Any]], now: datetime) -> PluginTruth:
    """Counts trace logs with a non-empty `exceptiondetails`, overall and in the last 24 h."""
    rows = list(rows)
    since = (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = [r for r in rows if not _blank(r.get("exceptiondetails"))]
    recent = [r for r in failed if r["createdon"] >= since]
    by_type = Counter(r["typename"] for r in recent)
    return PluginTruth(
        total=len(rows),
        exceptions=len(failed),
        exceptions_24h=len(recent),
        exceptions_24h_by_type=dict(sorted(by_type.items())),
    )
