"""Migration keys compared as Dataverse compares them (case-insensitively), and key-range partitions.

Dataverse compares and sorts strings case-insensitively (its SQL collation; the emulator uses
SQLite's NOCASE, which folds A-Z only). Every key comparison in crmctl therefore goes through
`fold`, which folds exactly A-Z, and two sorted key streams are merged in folded order. The
source database may sort differently (binary, another collation, numbers): the merge verifies
the order of every batch it receives and, on any disagreement, the check switches to an
external sort instead of reporting a false difference (see `checks/merge.py`).

Large entities are split into key ranges `[low, high)` that are scanned concurrently, each
within the target's shared limiter. Range boundaries come from the source (a cheap sample of
its keys), so partitions hold about the same number of rows on both sides. A boundary is only
a hint for balance: correctness never depends on where the boundaries fall, because every row
of either side lands in exactly one range and the merge checks that it belongs there.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any, Sequence

from crmctl.checking import CheckContext
from crmctl.connectors.errors import SourceError
from crmctl.connectors.sql import Condition, SourceQueries
from checks.sqlnames import quote_identifier

_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SAMPLE_PER_PARTITION = 64
"""Source keys sampled per partition boundary to place it (more = better balance)."""
MIN_PAGES_PER_PARTITION = 2
"""A partition smaller than this many pages costs more in partial pages than it saves."""
FILL = 0.98
"""Partitions aim just under whole pages, so a few extra rows in Dynamics rarely add a request."""


def fold(key: str) -> str:
    """`key` with A-Z folded to a-z: equal and ordered exactly as Dataverse compares strings."""
    return key.lower() if key.isascii() else key.translate(_FOLD)


def fold_all(keys: list[str]) -> list[str]:
    """`fold` over a batch; the common all-ASCII case stays in C."""
    if "".join(keys).isascii():  # one C pass over the batch: ~4x cheaper than per-key isascii()
        return list(map(str.lower, keys))
    return [k.translate(_FOLD) for k in keys]


def as_key(value: Any) -> str:
    """A migration key as text (an integer source key is compared with its Dynamics string)."""
    return value if type(value) is str else str(value)


def odata_string(value: str) -> str:
    """An OData string literal: quoted, with quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def attribute(name: str) -> str:
    """A Web API attribute name from the config, refusing anything that could alter a query."""
    if not isinstance(name, str) or not _ATTRIBUTE.match(name):
        raise ValueError(f"not a Dataverse attribute name: {name!r}")
    return name


def column(name: str) -> str:
    """A quoted source column name from the config."""
    return quote_identifier(name)


@dataclass(frozen=True)
class KeyRange:
    """Keys in `[low, high)`; None means unbounded on that side. Null keys are never in a range."""

    low: str | None = None
    high: str | None = None

    @property
    def folded(self) -> tuple[str | None, str | None]:
        return (None if self.low is None else fold(self.low), None if self.high is None else fold(self.high))

    def odata(self, attr: str) -> str:
        """The `$filter` selecting this range (and never a null key)."""
        parts = [f"{attr} ne null"] if self.low is None else [f"{attr} ge {odata_string(self.low)}"]
        if self.high is not None:
            parts.append(f"{attr} lt {odata_string(self.high)}")
        return " and ".join(parts)

    def conditions(self, column_name: str) -> list[Condition]:
        """The source conditions selecting this range (and never a null key)."""
        found = [Condition(column_name, "not_null")]
        if self.low is not None:
            found.append(Condition(column_name, "ge", self.low))
        if self.high is not None:
            found.append(Condition(column_name, "lt", self.high))
        return found

    def __str__(self) -> str:
        return f"[{self.low or '…'}, {self.high or '…'})"


WHOLE = KeyRange()


def partition_count(rows: int, page_size: int, concurrency: int, wanted: int | None = None) -> int:
    """How many key ranges to scan `rows` rows in: enough to keep every connection busy.

    Four partitions per connection let a slow partition be overtaken by others; none smaller
    than two pages, where partial pages would cost more requests than the parallelism saves.
    """
    if wanted is not None:
        return max(1, int(wanted))
    if rows <= 0:
        return 1
    per_part = max(MIN_PAGES_PER_PARTITION * page_size, math.ceil(rows / (4 * max(1, concurrency))))
    per_part = max(1, int(math.ceil(per_part / page_size) * page_size * FILL))
    return max(1, math.ceil(rows / per_part))


def ranges_from(boundaries: Sequence[str]) -> list[KeyRange]:
    """The ranges between sorted boundaries: (…, b1), [b1, b2), …, [bk, …)."""
    edges: list[str | None] = [None, *boundaries, None]
    return [KeyRange(a, b) for a, b in zip(edges, edges[1:])]


def pick_boundaries(sample: Sequence[str], parts: int, *, exact: bool = False) -> list[str]:
    """`parts - 1` boundaries at even quantiles of a key sample, strictly increasing when folded.

    With `exact`, the sample already is the boundaries (exact quantiles): they are only sorted
    and de-duplicated.
    """
    ordered = sorted({fold(k): k for k in sample}.items())
    if exact:
        return [key for _, key in ordered]
    if parts <= 1 or len(ordered) < 2:
        return []
    chosen: list[str] = []
    last: str | None = None
    for i in range(1, parts):
        folded, key = ordered[min(len(ordered) - 1, round(i * len(ordered) / parts))]
        if last is None or folded > last:
            chosen.append(key)
            last = folded
    return chosen


def source_queries(ctx: CheckContext) -> SourceQueries:
    """The check's source, asked by intent (count / keys / records / aggregate …).

    Every data check reads its source through these, never through SQL text, so the same check
    runs against a SQL database and an OData service alike.
    """
    found = ctx.source
    if not isinstance(found, SourceQueries):
        raise SourceError(f"The source connector for {found.url.split('?')[0]!r} cannot answer crmctl's query "
                          "intents (count, keys, records, aggregate); it needs a newer version.")
    return found


async def source_count(ctx: CheckContext, table: str, key: str, where: Sequence[Condition] = ()) -> int:
    """Rows of the source table with a non-null key (and every condition of `where`)."""
    return await source_queries(ctx).count(table, [Condition(key, "not_null"), *where], log=ctx.source_log)


async def plan_ranges(ctx: CheckContext, table: str, key: str, rows: int, wanted: int | None = None) -> list[KeyRange]:
    """Key ranges for scanning `table` (with `rows` keyed rows) concurrently.

    Boundaries are source keys: a cheap sample when the source can pick one (SQLite: keys at
    evenly spaced rowids, a handful of point lookups whatever the table size), elsewhere the
    exact quantiles, one skip-and-take query per boundary.
    """
    limits = ctx.config.target.limits
    parts = partition_count(rows, limits.page_size, limits.concurrency, wanted)
    if parts <= 1:
        return [WHOLE]
    size = parts * SAMPLE_PER_PARTITION
    sample = await source_queries(ctx).key_sample(table, key, size, log=ctx.source_log)
    if sample is not None and len(sample) >= min(rows, size) // 2:
        return ranges_from(pick_boundaries([as_key(k) for k in sample], parts))
    quantiles = await _offset_quantiles(ctx, table, key, rows, parts)
    return ranges_from(pick_boundaries([as_key(k) for k in quantiles], len(quantiles) + 1, exact=True))


async def _offset_quantiles(ctx: CheckContext, table: str, key: str, rows: int, parts: int) -> list[Any]:
    """The exact key at every 1/parts of the sorted keys (one skip-and-take query per boundary)."""
    found: list[Any] = []
    for i in range(1, parts):
        async for batch in source_queries(ctx).keys(
            table, key, [Condition(key, "not_null")], log=ctx.source_log, limit=1, offset=i * rows // parts
        ):
            found.extend(k for k in batch if k is not None)
    return found


async def ensure_columns(ctx: CheckContext, table: str, columns: Sequence[str]) -> None:
    """Fails with a SourceError naming the table or column unless every column exists in `table`.

    SQLite reads an unknown double-quoted name as a string literal, so a misspelt column in the
    config would silently compare as a constant; the source checks the names against the table
    (SQLite: its table_info; OData: the service answers a `$select` of them).
    """
    if columns:
        await source_queries(ctx).check_columns(table, list(dict.fromkeys(columns)), log=ctx.source_log)
