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
    if all(map(str.isascii, keys)):
        return [k.lower() for k in keys]
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

    def sql(self, quoted_column: str) -> tuple[str, list[Any]]:
        """The SQL condition selecting this range in the source, and its parameters."""
        parts = [f"{quoted_column} IS NOT NULL"]
        params: list[Any] = []
        if self.low is not None:
            parts.append(f"{quoted_column} >= ?")
            params.append(self.low)
        if self.high is not None:
            parts.append(f"{quoted_column} < ?")
            params.append(self.high)
        return " AND ".join(parts), params

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


async def source_count(ctx: CheckContext, table: str, key: str, where: str = "", params: Sequence[Any] = ()) -> int:
    """Rows of the source table with a non-null key (and `where`)."""
    sql = f"SELECT COUNT(*) FROM {column(table)} WHERE {column(key)} IS NOT NULL{' AND ' + where if where else ''}"
    return int(await ctx.source.scalar(sql, tuple(params), log=ctx.source_log) or 0)


async def plan_ranges(ctx: CheckContext, table: str, key: str, rows: int, wanted: int | None = None) -> list[KeyRange]:
    """Key ranges for scanning `table` (with `rows` keyed rows) concurrently.

    Boundaries are source keys: on SQLite a sample taken by evenly spaced rowids (a handful of
    point lookups, whatever the table size), elsewhere the exact quantiles by `OFFSET`.
    """
    limits = ctx.config.target.limits
    parts = partition_count(rows, limits.page_size, limits.concurrency, wanted)
    if parts <= 1:
        return [WHOLE]
    sample = await _rowid_sample(ctx, table, key, rows, parts * SAMPLE_PER_PARTITION)
    if sample is not None:
        return ranges_from(pick_boundaries([as_key(k) for k in sample], parts))
    quantiles = await _offset_quantiles(ctx, table, key, rows, parts)
    return ranges_from(pick_boundaries([as_key(k) for k in quantiles], len(quantiles) + 1, exact=True))


async def _rowid_sample(ctx: CheckContext, table: str, key: str, rows: int, size: int) -> list[Any] | None:
    """Keys at evenly spaced rowids (SQLite only); None when the source cannot answer that way."""
    if not ctx.source.url.startswith("sqlite"):
        return None
    qt, qk = column(table), column(key)
    try:
        low = await ctx.source.scalar(f"SELECT MIN(rowid) FROM {qt}", log=ctx.source_log)
        high = await ctx.source.scalar(f"SELECT MAX(rowid) FROM {qt}", log=ctx.source_log)
        if low is None or high is None:
            return None
        step = max(1, (high - low + 1) // size)
        ids = list(range(low, high + 1, step))[: size + 1]
        found: list[Any] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            async for batch in ctx.source.rows(
                f"SELECT {qk} FROM {qt} WHERE rowid IN ({marks}) AND {qk} IS NOT NULL", chunk, log=ctx.source_log
            ):
                found.extend(r[0] for r in batch)
    except SourceError:
        return None  # a WITHOUT ROWID table or a view: use the portable way
    return found if len(found) >= min(rows, size) // 2 else None


async def _offset_quantiles(ctx: CheckContext, table: str, key: str, rows: int, parts: int) -> list[Any]:
    """The exact key at every 1/parts of the sorted keys (one `OFFSET` query per boundary)."""
    qt, qk = column(table), column(key)
    found: list[Any] = []
    for i in range(1, parts):
        value = await ctx.source.scalar(
            f"SELECT {qk} FROM {qt} WHERE {qk} IS NOT NULL ORDER BY {qk} LIMIT 1 OFFSET ?",
            (i * rows // parts,),
            log=ctx.source_log,
        )
        if value is not None:
            found.append(value)
    return found


async def ensure_columns(ctx: CheckContext, table: str, columns: Sequence[str]) -> None:
    """Fails with the source's own error unless every column exists in `table`.

    SQLite reads an unknown double-quoted name as a string literal, so a misspelt column in the
    config would silently compare as a constant; a table-qualified reference cannot fall back
    that way, and one `WHERE 1 = 0` query proves them all.
    """
    if not columns:
        return
    qt = column(table)
    names = ", ".join(f"{qt}.{column(c)}" for c in dict.fromkeys(columns))
    await ctx.source.scalar(f"SELECT {names} FROM {qt} WHERE 1 = 0", log=ctx.source_log)
