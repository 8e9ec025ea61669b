"""Key streams of one key range on each side: source rows by query intents, Dynamics rows by paged GETs.

Both sides are asked for their keys in ascending order within `[low, high)`: the source with
the `keys`/`records` intents (a SQL source sorts with `ORDER BY key`, walking its primary-key
index, and sends text keys in `group_concat` chunks; an OData source with `$orderby`),
Dynamics with `$orderby=key asc` and a range `$filter` (served by the alternate-key index a
migration key has). The merge verifies the orders agree; these functions only fetch.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, AsyncIterator, Sequence

from crmctl.checking import CheckContext
from crmctl.connectors.errors import MalformedResponse
from crmctl.connectors.sql import Condition
from checks.keys import KeyRange, as_key, source_queries
from checks.merge import Batch


async def source_batches(
    ctx: CheckContext,
    table: str,
    key: str,
    key_range: KeyRange,
    columns: Sequence[str] = (),
    where: Sequence[Condition] = (),
) -> AsyncIterator[Batch]:
    """Source keys in `key_range`, ascending, with the values of `columns` as payload tuples."""
    conditions = [*key_range.conditions(key), *where]
    size = ctx.config.target.limits.page_size
    queries = source_queries(ctx)
    if not columns:
        async for keys in queries.keys(table, key, conditions, log=ctx.source_log, batch=size):
            yield Batch(keys if not set(map(type, keys)) - {str} else [as_key(k) for k in keys])
        return
    names = [key, *(c for c in columns if c != key)]
    async for rows in queries.records(table, names, key=key, where=conditions, log=ctx.source_log, batch=size):
        yield Batch([as_key(r[key]) for r in rows], [tuple(r[c] for c in columns) for r in rows])


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
        yield Batch(_target_keys(rows, key, what), payloads(rows, attributes))


def _target_keys(rows: list[dict[str, Any]], key: str, what: str) -> list[str]:
    """The key of every row, as text; a row without one means the page is not what was asked.

    This runs for every row Dynamics sends, so the common case (every key a string) is two C
    passes: `itemgetter` over the rows, and a join that fails on anything but strings. That
    is half the cost of a comprehension with `dict.get` plus a None test and a set of types.
    """
    try:
        keys = list(map(itemgetter(key), rows))
        "".join(keys)
        return keys
    except (KeyError, TypeError):
        pass
    keys = [row.get(key) for row in rows]
    if None in keys:
        # The filter excludes null keys: a null here means the page is not what was asked.
        raise MalformedResponse(200, "", f"a row without '{key}' came back despite the filter", what=what)
    return [as_key(k) for k in keys]


def payloads(rows: list[dict[str, Any]], attributes: Sequence[str]) -> list[tuple[Any, ...]] | None:
    """The payload tuple of every row (None without attributes); one comprehension per shape."""
    if not attributes:
        return None
    if len(attributes) == 1:
        (only,) = attributes
        return [(row.get(only),) for row in rows]
    return [tuple([row.get(a) for a in attributes]) for row in rows]
