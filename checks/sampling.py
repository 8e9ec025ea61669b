"""Field-level sample compare: N matched records, configured fields, normalised, with examples.

The sample is chosen during the key merge at no extra request: every matched key has a random
priority (seeded per key range) and the N lowest are kept (bottom-k sampling, with geometric
skips so that most keys cost nothing). That is a uniform random sample, reproducible for the
same seed, data and partitioning.

Each field maps a source column to a Dynamics attribute, with a type that says how to compare:
`string` (trim and case may be ignored), `number` (an absolute tolerance), `datetime`/`date`
(instants compared in UTC; naive source values are read in `timezone`), `code` (a `map` from
source values to Dynamics values, e.g. stage 'Qualify' -> stepname '1-Qualify'). A difference
is classified (whitespace, case, rounding, timezone, null_in_target, null_in_source, value);
whitespace and case differences are *tolerated* (listed, not counted) when `trim` and
`ignore_case` are on, which is how a cutover's "sampling notes" read.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmctl.checking import CheckContext
from crmctl.config import EntityConfig
from checks.common import CheckProblem
from checks.compare import gather_all
from crmctl.connectors.sql import Condition, SqlSource
from checks.keys import as_key, attribute, column, fold, odata_string, source_queries

TYPES = ("string", "number", "datetime", "date", "code")
LOOKUP_BATCH = 50
"""Keys per Dynamics request when fetching the sample (an `or` of equalities; URL stays small)."""
SOURCE_BATCH = 500
"""Sampled keys per source query on a SQL source (bound parameters of one `IN`)."""
URL_BATCH = 50
"""Sampled keys per source query on an OData source (an `or` of equalities in the URL, ~2.5 KB)."""


@dataclass(frozen=True)
class FieldSpec:
    """One compared column: source column -> Dynamics attribute, and how to compare them."""

    source: str
    target: str
    type: str = "string"
    mapping: Mapping[str, Any] | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class Options:
    """Normalisation applied to every field (a field may override the tolerance)."""

    trim: bool = True
    ignore_case: bool = True
    tolerance: float = 0.005
    zone: Any = timezone.utc


def parse_fields(raw: Any, check_id: str) -> list[FieldSpec]:
    """The `fields` parameter: `{source_column: attribute}` or `{source_column: {target:, type:, map:, tolerance:}}`."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping) or not raw:
        raise CheckProblem(f"Check {check_id}: fields must map source columns to Dynamics attributes.")
    specs: list[FieldSpec] = []
    for source, spec in raw.items():
        try:
            column(str(source))
            if isinstance(spec, str):
                specs.append(FieldSpec(str(source), attribute(spec)))
                continue
            if not isinstance(spec, Mapping) or "target" not in spec:
                raise ValueError(f"field {source!r} needs a target attribute")
            kind = str(spec.get("type", "code" if "map" in spec else "string"))
            if kind not in TYPES:
                raise ValueError(f"field {source!r} has type {kind!r}; expected one of {', '.join(TYPES)}")
            mapping = spec.get("map")
            if mapping is not None and not isinstance(mapping, Mapping):
                raise ValueError(f"field {source!r}: map must be a mapping of source values to Dynamics values")
            tolerance = spec.get("tolerance")
            specs.append(FieldSpec(
                str(source), attribute(str(spec["target"])), kind,
                {str(k): v for k, v in mapping.items()} if mapping is not None else None,
                float(tolerance) if tolerance is not None else None,
            ))
        except (ValueError, TypeError) as exc:
            raise CheckProblem(f"Check {check_id}: {exc}.") from None
    return specs


def parse_options(params: Mapping[str, Any], check_id: str) -> Options:
    """Normalisation options from the check's parameters."""
    name = str(params.get("timezone", "UTC"))
    try:
        zone: Any = timezone.utc if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CheckProblem(f"Check {check_id}: unknown time zone {name!r} (expected e.g. UTC or Europe/Berlin).") from None
    return Options(
        trim=bool(params.get("trim", True)),
        ignore_case=bool(params.get("ignore_case", True)),
        tolerance=float(params.get("tolerance", 0.005)),
        zone=zone,
    )


class Sampler:
    """A uniform random sample of `size` matched keys, kept by priority (bottom-k sampling).

    Every key offered gets an independent uniform priority and the `size` lowest are kept.
    Priorities are not drawn for every key: once the sample is full, the number of keys to skip
    before the next one that would enter is drawn from its geometric distribution, so a
    million matched keys cost a few thousand random numbers, not a million. Samplers of
    different key ranges merge exactly by priority. The same seed, data and partitioning give
    the same sample.
    """

    def __init__(self, size: int, seed: int | str) -> None:
        self.size = max(0, size)
        self._rng = random.Random(str(seed))
        self._heap: list[tuple[float, str]] = []  # (-priority, key): a max-heap on priority
        self._skip: int | None = None

    def offer(self, keys: Sequence[str]) -> None:
        heap, size, rng = self._heap, self.size, self._rng
        if size <= 0:
            return
        i, n = 0, len(keys)
        while len(heap) < size and i < n:
            heapq.heappush(heap, (-rng.random(), keys[i]))
            i += 1
        if len(heap) < size:
            return
        if self._skip is None:
            self._skip = self._gap()
        while i + self._skip < n:
            i += self._skip
            threshold = -heap[0][0]
            heapq.heapreplace(heap, (-rng.random() * threshold, keys[i]))
            i += 1
            self._skip = self._gap()
        self._skip -= n - i

    def _gap(self) -> int:
        """Keys passed over before the next one whose priority beats the current threshold."""
        threshold = -self._heap[0][0]
        if threshold >= 1.0:
            return 0
        if threshold <= 0.0:
            return 1 << 62
        return int(math.log(1.0 - self._rng.random()) / math.log1p(-threshold))

    def merge(self, other: Sampler) -> None:
        """Adds another key range's sample; the union keeps the `size` lowest priorities."""
        for item in other._heap:
            if len(self._heap) < self.size:
                heapq.heappush(self._heap, item)
            elif item[0] > self._heap[0][0]:
                heapq.heapreplace(self._heap, item)

    def keys(self) -> list[str]:
        """The sampled keys, in folded order."""
        return sorted((key for _, key in self._heap), key=fold)


@dataclass
class SampleReport:
    """What the sample compare found; `to_json()` is what the result carries."""

    size: int = 0
    fields: list[str] = field(default_factory=list)
    mismatched_records: int = 0
    mismatches: Counter[str] = field(default_factory=Counter)
    tolerated: Counter[str] = field(default_factory=Counter)
    by_field: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    vanished: int = 0

    @property
    def rate(self) -> float:
        return self.mismatched_records / self.size if self.size else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "fields": self.fields,
            "mismatched_records": self.mismatched_records,
            "mismatch_rate": round(self.rate, 6),
            "mismatches": sum(self.mismatches.values()),
            "by_kind": dict(sorted(self.mismatches.items())),
            "by_field": dict(sorted(self.by_field.items())),
            "tolerated": dict(sorted(self.tolerated.items())),
            "examples": self.examples,
            "vanished": self.vanished,
        }


async def compare_sample(
    ctx: CheckContext,
    entity: EntityConfig,
    keys: Sequence[str],
    fields: Sequence[FieldSpec],
    options: Options,
    examples: int,
) -> SampleReport:
    """Fetches the sampled records on both sides and compares the configured fields."""
    report = SampleReport(fields=[f"{f.source}->{f.target}" for f in fields])
    if not keys:
        return report
    source_rows = await _source_rows(ctx, entity, keys, fields)
    target_rows = await _target_rows(ctx, entity, keys, fields)
    for key in keys:
        folded = fold(key)
        src, tgt = source_rows.get(folded), target_rows.get(folded)
        if src is None or tgt is None:
            report.vanished += 1  # deleted on a side since the key scan (a live system moves)
            continue
        report.size += 1
        differs = False
        for spec, s_value, t_value in zip(fields, src, tgt):
            kind = classify(spec, s_value, t_value, options)
            if kind is None:
                continue
            if tolerated(kind, options):
                report.tolerated[kind] += 1
                continue
            differs = True
            report.mismatches[kind] += 1
            report.by_field[spec.target] += 1
            if len(report.examples) < examples:
                report.examples.append({
                    "key": key, "field": spec.target, "source": _jsonable(s_value),
                    "target": _jsonable(t_value), "kind": kind,
                })
        report.mismatched_records += differs
    return report


def tolerated(kind: str, options: Options) -> bool:
    """Whether a difference of this kind is normalised away by the options."""
    return (kind == "whitespace" and options.trim) or (kind == "case" and options.ignore_case) or (
        kind == "whitespace+case" and options.trim and options.ignore_case
    )


def classify(spec: FieldSpec, source: Any, target: Any, options: Options) -> str | None:
    """None when the values agree; otherwise the kind of difference."""
    expected = _expected(spec, source)
    if _blank(expected) and _blank(target):
        if expected == target or options.trim:
            return None
        if target is None:
            return "null_in_target"
        return "null_in_source" if expected is None else "whitespace"
    if _blank(target):
        return "null_in_target"
    if _blank(expected):
        return "null_in_source"
    if spec.type == "number":
        return _number_kind(expected, target, spec.tolerance if spec.tolerance is not None else options.tolerance)
    if spec.type in ("datetime", "date"):
        return _time_kind(expected, target, options.zone)
    if spec.type == "code":
        return None if expected == target or str(expected) == str(target) else "value"
    if expected == target:
        return None
    s, t = str(expected), str(target)
    if s == t:
        return None
    if s.strip() == t.strip():
        return "whitespace"
    if s.casefold() == t.casefold():
        return "case"
    if s.strip().casefold() == t.strip().casefold():
        return "whitespace+case"
    return "value"


def _expected(spec: FieldSpec, value: Any) -> Any:
    if value is None or spec.mapping is None:
        return value
    return spec.mapping.get(str(value), value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _number_kind(expected: Any, actual: Any, tolerance: float) -> str | None:
    try:
        a, b = float(expected), float(actual)
    except (TypeError, ValueError):
        return "value"
    difference = abs(a - b)
    if difference <= tolerance + 1e-9:
        return None
    return "rounding" if difference < 1.0 else "value"


def _time_kind(expected: Any, actual: Any, zone: Any) -> str | None:
    a, b = _instant(expected, zone), _instant(actual, timezone.utc)
    if a is None or b is None:
        return None if str(expected) == str(actual) else "value"
    if a == b:
        return None
    hours = (a - b).total_seconds() / 3600
    return "timezone" if hours.is_integer() and abs(hours) <= 14 else "value"


def _instant(value: Any, zone: Any) -> datetime | None:
    """An aware UTC instant from a datetime, a date or ISO text; naive values are in `zone`."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


async def _source_rows(
    ctx: CheckContext, entity: EntityConfig, keys: Sequence[str], fields: Sequence[FieldSpec]
) -> dict[str, tuple[Any, ...]]:
    key = entity.source.key
    names = [key, *(f.source for f in fields if f.source != key)]
    found: dict[str, tuple[Any, ...]] = {}
    queries = source_queries(ctx)
    step = SOURCE_BATCH if isinstance(queries, SqlSource) else URL_BATCH
    for start in range(0, len(keys), step):
        chunk = list(keys[start : start + step])
        async for rows in queries.records(
            entity.source.table, names, key=key, where=[Condition(key, "in", chunk)], log=ctx.source_log
        ):
            for row in rows:
                found.setdefault(fold(as_key(row[key])), tuple(row[f.source] for f in fields))
    return found


async def _target_rows(
    ctx: CheckContext, entity: EntityConfig, keys: Sequence[str], fields: Sequence[FieldSpec]
) -> dict[str, tuple[Any, ...]]:
    tk = attribute(entity.target.key)
    found: dict[str, tuple[Any, ...]] = {}

    async def batch(chunk: Sequence[str]) -> None:
        condition = " or ".join(f"{tk} eq {odata_string(k)}" for k in chunk)
        async for rows in ctx.dynamics.pages(
            entity.target.entity_set, select=[tk, *(f.target for f in fields)], filter=condition, log=ctx.dynamics_log
        ):
            for row in rows:
                if row.get(tk) is not None:
                    found.setdefault(fold(as_key(row[tk])), tuple(row.get(f.target) for f in fields))

    # The batches are independent: sent together, they cost one round trip, not one each.
    await gather_all(*(batch(keys[i : i + LOOKUP_BATCH]) for i in range(0, len(keys), LOOKUP_BATCH)))
    return found
