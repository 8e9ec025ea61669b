"""Key streams of one key range on each side: source rows by SQL, Dynamics rows by paged GETs.

Both sides are asked for their keys in ascending order within `[low, high)`: the source with
`ORDER BY key` (so it can walk its primary-key index), Dynamics with `$orderby=key asc` and a
range `$filter` (served by the alternate-key index a migration key has). The merge verifies
the orders agree; these functions only fetch.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

from crmctl.checking import CheckContext
from crmctl.connectors.errors import MalformedResponse, SourceError
from checks.keys import KeyRange, as_key, column
from checks.merge import Batch


async def source_batches(
    ctx: CheckContext,
    table: str,
    key: str,
    key_range: KeyRange,
    columns: Sequence[str] = (),
    where: str = "",
    params: Sequence[Any] = (),
) -> AsyncIterator[Batch]:
    """Source keys in `key_range`, ascending, with the values of `columns` as payload tuples."""
    if not columns and ctx.source.url.startswith("sqlite"):
        chunks = _sqlite_key_chunks(ctx, table, key, key_range, where, params)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except _NotPlainText:
            pass  # numeric keys or a key holding the separator: read rows one by one instead
        else:
            yield first
            async for batch in chunks:
                yield batch
            return
    qk = column(key)
    condition, range_params = key_range.sql(qk)
    selected = ", ".join([qk, *(column(c) for c in columns)])
    sql = f"SELECT {selected} FROM {column(table)} WHERE {condition}"
    if where:
        sql += f" AND ({where})"
    sql += f" ORDER BY {qk}"
    size = ctx.config.target.limits.page_size
    async for rows in ctx.source.rows(sql, (*range_params, *params), log=ctx.source_log, batch=size):
        keys = [as_key(r[0]) for r in rows]
        yield Batch(keys, [tuple(r[1:]) for r in rows] if columns else None)


SEPARATOR = "\x1e"
"""ASCII record separator: joins a chunk of keys into one string (checked never to occur in them)."""


class _NotPlainText(Exception):
    """The first chunk showed keys that cannot travel joined as text."""


async def _sqlite_key_chunks(
    ctx: CheckContext, table: str, key: str, key_range: KeyRange, where: str, params: Sequence[Any]
) -> AsyncIterator[Batch]:
    """Keys in chunks of a page, each chunk one row: `group_concat` over a keyset-paged subquery.

    On SQLite this reads a million keys in a few hundred index range scans and a few hundred
    strings, instead of a million Python tuples: the source side of a merge then costs the
    client almost nothing. Only text keys travel this way (the first chunk proves it; a chunk
    whose count and split disagree would hold the separator and stops the stream with an
    error rather than be misread).
    """
    qk = column(key)
    condition, range_params = key_range.sql(qk)
    if where:
        condition += f" AND ({where})"
    size = ctx.config.target.limits.page_size
    last: str | None = None
    first = True
    while True:
        after = f" AND {qk} > ?" if last is not None else ""
        sql = (
            f"SELECT COUNT(*), group_concat({qk}, char(30)), SUM(typeof({qk}) <> 'text') FROM ("
            f"SELECT {qk} FROM {column(table)} WHERE {condition}{after} ORDER BY {qk} LIMIT ?)"
        )
        args = (*range_params, *params, *([last] if last is not None else []), size)
        count, joined, non_text = await _row(ctx, sql, args)
        if not count:
            return
        keys = joined.split(SEPARATOR) if joined is not None else []
        if non_text or len(keys) != count:
            if first:
                raise _NotPlainText()
            raise SourceError(f"A key of {table} changed type or holds the ASCII record separator mid-scan; "
                              "crmctl cannot read it as plain text.")
        first = False
        yield Batch(keys)
        if count < size:
            return
        last = keys[-1]


async def _row(ctx: CheckContext, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
    async for rows in ctx.source.rows(sql, tuple(args), log=ctx.source_log, batch=1):
        return rows[0]
    return (0, None, 0)


async def target_batches(
    ctx: CheckContext,
    entity_set: str,
    key: str,
    key_range: KeyRange,
    attributes: Sequence[str] = (),
    filter: str | None = None,
    ordered: bool = True,
) -> AsyncIterator[Batch]:
    """Dynamics keys in `key_range` (ascending unless `ordered` is False), with `attributes` as payload."""
    condition = key_range.odata(key)
    if filter:
        condition = f"{condition} and ({filter})"
    what = f"the key scan of '{entity_set}'"
    async for rows in ctx.dynamics.pages(
        entity_set,
        select=[key, *attributes],
        filter=condition,
        orderby=f"{key} asc" if ordered else None,
        log=ctx.dynamics_log,
    ):
        keys = [row.get(key) for row in rows]
        if None in keys:
            # The filter excludes null keys: a null here means the page is not what was asked.
            raise MalformedResponse(200, "", f"a row without '{key}' came back despite the filter", what=what)
        if set(map(type, keys)) - {str}:
            keys = [as_key(k) for k in keys]
        yield Batch(keys, payloads(rows, attributes))


def payloads(rows: list[dict[str, Any]], attributes: Sequence[str]) -> list[tuple[Any, ...]] | None:
    """The payload tuple of every row (None without attributes); one comprehension per shape."""
    if not attributes:
        return None
    if len(attributes) == 1:
        (only,) = attributes
        return [(row.get(only),) for row in rows]
    return [tuple([row.get(a) for a in attributes]) for row in rows]
