"""SQL execution off the event loop: a thread pool with one SQLite connection per thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from crmctl.emulator.apply import ApplyPlan
from crmctl.emulator.errors import aggregate_limit
from crmctl.emulator.fetchxml import FetchPlan
from crmctl.emulator.odata_filter import SqlExpr
from crmctl.emulator.paging import OrderKey, after, order_sql
from crmctl.emulator.storage import VERSION_COLUMN, Attribute, EntityDef, connect, quote

T = TypeVar("T")

_JSON_PAIRS_PER_CALL = 60
"""SQLite caps function arguments at 127, so wide rows are built from several json_object calls."""


class Database:
    """Runs blocking SQLite work in a small thread pool so concurrent requests overlap.

    Each worker thread owns a read connection (WAL lets readers run beside the drift writer);
    writes go through one shared writer connection under a lock.
    """

    def __init__(self, path: str | Path, workers: int = 8) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emu-sql")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(conn, *args)` on a worker thread with that thread's read connection."""
        loop = asyncio.get_running_loop()

        def call() -> T:
            return fn(self._reader(), *args)

        return await loop.run_in_executor(self._executor, call)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(conn, *args)` on a worker thread with the single writer connection."""
        loop = asyncio.get_running_loop()

        def call() -> T:
            with self._write_lock:
                if self._writer is None:
                    self._writer = connect(self.path)
                with self._writer:
                    return fn(self._writer, *args)

        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stops the pool and closes every connection it opened."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _where(*parts: SqlExpr | None) -> tuple[str, tuple[Any, ...]]:
    present = [p for p in parts if p is not None]
    if not present:
        return "", ()
    sql = " AND ".join(f"({p.sql})" for p in present)
    params: tuple[Any, ...] = ()
    for p in present:
        params += p.params
    return f" WHERE {sql}", params


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_value(attr: Attribute) -> str:
    col = quote(attr.column)
    if attr.type == "bool":
        return f"json(CASE WHEN {col} IS NULL THEN 'null' WHEN {col} THEN 'true' ELSE 'false' END)"
    return col


def json_row_sql(columns: list[Attribute]) -> list[str]:
    """SQL expressions whose text outputs, spliced together, are one row's JSON object."""
    pairs = [f"'@odata.etag', 'W/\"' || {quote(VERSION_COLUMN)} || '\"'"]
    pairs += [f"{_sql_str(a.column)}, {_json_value(a)}" for a in columns]
    chunks = [
        pairs[i : i + _JSON_PAIRS_PER_CALL] for i in range(0, len(pairs), _JSON_PAIRS_PER_CALL)
    ]
    return [f"json_object({', '.join(chunk)})" for chunk in chunks]


def splice(parts: tuple[str, ...]) -> str:
    """Joins several JSON objects' texts into one object (keys are distinct by construction)."""
    if len(parts) == 1:
        return parts[0]
    return "{" + ",".join(p[1:-1] for p in parts if len(p) > 2) + "}"


@dataclass(frozen=True)
class ListQuery:
    """One page of an entity set query, already validated and compiled."""

    entity: EntityDef
    columns: list[Attribute]
    where: SqlExpr | None
    keys: list[OrderKey]
    after: tuple[Any, ...] | None
    limit: int
    lookup_annotations: bool = False


@dataclass(frozen=True)
class Page:
    """A page's rows as JSON texts joined by commas, how many, whether more rows follow, and the
    first/last rows' order-key values (for the paging cookie)."""

    body: str
    size: int
    more: bool
    first: tuple[Any, ...]
    last: tuple[Any, ...]


def run_list(conn: sqlite3.Connection, q: ListQuery) -> Page:
    """Reads one page by keyset (never OFFSET), so paging a million rows stays linear.

    The page comes back from SQLite as two values: the rows' JSON texts and their order keys,
    each concatenated in page order. Fetching it row by row instead hands Python's lock back
    and forth once per row (sqlite3 releases it around every step); with several requests
    served at once the worker threads then spent more time switching than reading: 24 pages
    of 5,000 rows on four threads took 0.52 s instead of 0.26 s, at twice the CPU, most of it
    in the kernel (docs/emulator.md, "Benchmark").
    """
    cursor_expr = after(q.keys, q.after) if q.after is not None else None
    order = order_sql(q.keys)
    sorted_selection = not q.lookup_annotations and _sort_selection(conn, q)
    if sorted_selection:
        # Read through the filter's index, then sort (see _sort_selection): a unary + keeps
        # SQLite from walking the primary key, for the order and for the resume condition.
        pk = quote(q.keys[0].column)
        order = "+" + order
        if cursor_expr is not None:
            cursor_expr = SqlExpr(cursor_expr.sql.replace(pk, "+" + pk), cursor_expr.params)
    where_sql, params = _where(q.where, cursor_expr)
    table = quote(q.entity.table)
    if q.lookup_annotations:
        key_cols = ", ".join(quote(k.column) for k in q.keys)
        return _run_list_python(conn, q, where_sql, params, key_cols, table, order)
    row_json = splice_sql(json_row_sql(q.columns))
    key_json = f"json_array({', '.join(quote(k.column) for k in q.keys)})"
    if sorted_selection:
        # Sort the matching rows' ids first and build JSON for the page's rows only: the rows of
        # up to four pages are read and sorted, and SQLite would otherwise build every row's
        # JSON before sorting (the first page of a demo contact key range of ~15,000 rows:
        # 32 -> 25 ms, best of 7). The subquery is the outer loop of the CROSS JOIN, so its
        # order is the page's order.
        rows = (
            f"(SELECT rowid AS _r FROM {table}{where_sql} ORDER BY {order} LIMIT ?) AS _p "
            f"CROSS JOIN {table} ON {table}.rowid = _p._r"
        )
    else:
        rows = f"{table}{where_sql} ORDER BY {order} LIMIT ?"
    # Control character 30 cannot occur in JSON text (strings escape it), so it separates rows.
    sql = (
        f"SELECT group_concat(j, char(30)), group_concat(k, char(30)) FROM (SELECT {row_json} AS j, "
        f"{key_json} AS k FROM {rows})"
    )
    body, keys = conn.execute(sql, (*params, q.limit + 1)).fetchone()
    if body is None:
        return Page("", 0, False, (), ())
    texts = body.split(_ROW_SEPARATOR)
    more = len(texts) > q.limit
    if more:
        texts = texts[: q.limit]
    key_texts = keys.split(_ROW_SEPARATOR)
    first, last = json.loads(key_texts[0]), json.loads(key_texts[len(texts) - 1])
    return Page(",".join(texts), len(texts), more, tuple(first), tuple(last))


_ROW_SEPARATOR = "\x1e"


def splice_sql(parts: list[str]) -> str:
    """One SQL expression for a row's JSON object from several json_object texts (see json_row_sql).

    Each text is `{"name":value,...}`: its one leading `{` is followed by a quote and its one
    trailing `}` follows a scalar (a string's closing quote, a number, true, false or null), so
    trimming braces removes exactly one from each end.
    """
    if len(parts) == 1:
        return parts[0]
    inner = " || ',' || ".join(f"ltrim(rtrim({p}, '}}'), '{{')" for p in parts)
    return f"('{{' || {inner} || '}}')"


_SELECTIVE_PAGES = 4
"""A filter matching at most this many pages of rows is read through its index and sorted."""
_selection_sizes: dict[tuple[str, str, tuple[Any, ...]], bool] = {}
"""Memo of `_sort_selection` per table, filter and parameters (a plan choice, never a result)."""


def _sort_selection(conn: sqlite3.Connection, q: ListQuery) -> bool:
    """Whether a page in primary-key order is cheaper read via the filter's index and sorted.

    A query without `$orderby` pages in primary-key order (Dataverse's default). SQLite then
    walks the primary key and tests the filter on every row, so each page of a selective
    filter (a key range: `new_legacyid ge 'X' and new_legacyid lt 'Y'`) reads rows until it
    has found a page of matches: a tenth of the table for a range of a tenth. When the filter
    has an index and matches only a few pages of rows, reading those through the index and
    sorting them (a top-N sort, `ORDER BY +pk`) costs a few pages' reads instead. The rows,
    their order and the paging are identical either way; only the work differs.
    """
    keys = q.keys
    if q.where is None or len(keys) != 1 or keys[0].descending or keys[0].column != q.entity.primary_id:
        return False
    memo = (q.entity.table, q.where.sql, q.where.params)
    chosen = _selection_sizes.get(memo)
    if chosen is None:
        table = quote(q.entity.table)
        probe = f"SELECT 1 FROM {table} WHERE {q.where.sql}"
        plan = " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {probe}", q.where.params))
        cap = _SELECTIVE_PAGES * max(1, q.limit)
        chosen = "USING INDEX" in plan or "USING COVERING INDEX" in plan
        if chosen:
            (matched,) = conn.execute(f"SELECT COUNT(*) FROM ({probe} LIMIT ?)", (*q.where.params, cap + 1)).fetchone()
            chosen = matched <= cap
        if len(_selection_sizes) > 4096:
            _selection_sizes.clear()
        _selection_sizes[memo] = chosen
    return chosen


def _run_list_python(
    conn: sqlite3.Connection,
    q: ListQuery,
    where_sql: str,
    params: tuple[Any, ...],
    key_cols: str,
    table: str,
    order: str,
) -> Page:
    """Row building in Python, for responses with per-value annotations (omitted on nulls)."""
    cols = ", ".join(quote(a.column) for a in q.columns)
    sql = (
        f"SELECT {quote(VERSION_COLUMN)}, {cols}, {key_cols} FROM {table}{where_sql} "
        f"ORDER BY {order} LIMIT ?"
    )
    rows = conn.execute(sql, (*params, q.limit + 1)).fetchall()
    more = len(rows) > q.limit
    if more:
        rows = rows[: q.limit]
    n = len(q.columns) + 1
    texts: list[str] = []
    for row in rows:
        obj: dict[str, Any] = {"@odata.etag": f'W/"{row[0]}"'}
        for attr, value in zip(q.columns, row[1:n]):
            if attr.type == "lookup" and value is not None:
                obj[f"{attr.column}@Microsoft.Dynamics.CRM.associatednavigationproperty"] = (
                    attr.name
                )
                if attr.target:
                    obj[f"{attr.column}@Microsoft.Dynamics.CRM.lookuplogicalname"] = attr.target
            obj[attr.column] = bool(value) if attr.type == "bool" and value is not None else value
        texts.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
    first = tuple(rows[0][n:]) if rows else ()
    last = tuple(rows[-1][n:]) if rows else ()
    return Page(",".join(texts), len(texts), more, first, last)


def run_count(conn: sqlite3.Connection, entity: EntityDef, where: SqlExpr | None, cap: int) -> int:
    """Counts matching rows but stops at `cap + 1`: enough to say "more than the cap"."""
    where_sql, params = _where(where)
    sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {quote(entity.table)}{where_sql} LIMIT ?)"
    return int(conn.execute(sql, (*params, cap + 1)).fetchone()[0])


def exact_count(conn: sqlite3.Connection, entity: EntityDef) -> int:
    """The true row count (for the initial RetrieveTotalRecordCount snapshot)."""
    return int(conn.execute(f"SELECT COUNT(*) FROM {quote(entity.table)}").fetchone()[0])


def _out(attr: Attribute | None, value: Any) -> Any:
    if attr is not None and attr.type == "bool" and value is not None:
        return bool(value)
    return value


def _check_aggregate_limit(
    conn: sqlite3.Connection, entity: EntityDef, where: SqlExpr | None, limit: int
) -> None:
    if run_count(conn, entity, where, limit) > limit:
        raise aggregate_limit()


def run_apply(
    conn: sqlite3.Connection, entity: EntityDef, where: SqlExpr | None, plan: ApplyPlan, limit: int
) -> list[dict[str, Any]]:
    """Runs a `$apply` after refusing inputs above the aggregate record limit (0x8004E023)."""
    full_where = plan.where if where is None else where.and_(plan.where)
    _check_aggregate_limit(conn, entity, full_where, limit)
    where_sql, params = _where(full_where)
    select = [quote(a.column) for a in plan.groupby]
    for agg in plan.aggregates:
        select.append("COUNT(*)" if agg.attr is None else f"{agg.method}({quote(agg.attr.column)})")
    if not select:
        return []
    sql = f"SELECT {', '.join(select)} FROM {quote(entity.table)}{where_sql}"
    if plan.groupby:
        group = ", ".join(quote(a.column) for a in plan.groupby)
        sql += f" GROUP BY {group} ORDER BY {group}"
    out: list[dict[str, Any]] = []
    for row in conn.execute(sql, params):
        obj: dict[str, Any] = {}
        for attr, value in zip(plan.groupby, row):
            obj[attr.column] = _out(attr, value)
        for agg, value in zip(plan.aggregates, row[len(plan.groupby) :]):
            obj[agg.alias] = _out(agg.attr if agg.method in ("MIN", "MAX") else None, value)
        out.append(obj)
    return out


def run_fetch(
    conn: sqlite3.Connection, entity: EntityDef, plan: FetchPlan, limit: int, page_size: int
) -> tuple[list[dict[str, Any]], bool]:
    """Runs a FetchXML plan; aggregates obey the record limit, retrievals omit null values."""
    if plan.aggregate:
        cap = min(limit, plan.aggregate_limit or limit)
        _check_aggregate_limit(conn, entity, plan.where, cap)
        where_sql, params = _where(plan.where)
        select = [quote(a.column) for a, _ in plan.groupby]
        for agg in plan.aggregates:
            col = quote(agg.attr.column)
            if agg.method == "count":
                select.append("COUNT(*)")
            elif agg.method == "countcolumn":
                select.append(f"COUNT({'DISTINCT ' if agg.distinct else ''}{col})")
            else:
                select.append(f"{agg.method.upper()}({col})")
        sql = f"SELECT {', '.join(select)} FROM {quote(entity.table)}{where_sql}"
        if plan.groupby:
            group = ", ".join(quote(a.column) for a, _ in plan.groupby)
            sql += f" GROUP BY {group} ORDER BY {group}"
        rows: list[dict[str, Any]] = []
        for row in conn.execute(sql, params):
            obj: dict[str, Any] = {}
            for (attr, alias), value in zip(plan.groupby, row):
                if value is not None:
                    obj[alias] = _out(attr, value)
            for agg, value in zip(plan.aggregates, row[len(plan.groupby) :]):
                if value is not None:
                    obj[agg.alias] = _out(agg.attr if agg.method in ("min", "max") else None, value)
            rows.append(obj)
        return rows, False
    columns = plan.columns or list(entity.attributes)
    pk = entity.attribute(entity.primary_id)
    assert pk is not None
    if pk not in columns:
        columns = [*columns, pk]
    where_sql, params = _where(plan.where)
    orders = [*plan.orders]
    if not any(a == pk for a, _ in orders):
        orders.append((pk, False))
    order = ", ".join(f"{quote(a.column)}{' DESC' if d else ''}" for a, d in orders)
    size = min(plan.top or plan.count or page_size, page_size)
    offset = 0 if plan.top else (plan.page - 1) * size
    sql = (
        f"SELECT {quote(VERSION_COLUMN)}, {', '.join(quote(a.column) for a in columns)} "
        f"FROM {quote(entity.table)}{where_sql} ORDER BY {order} LIMIT ? OFFSET ?"
    )
    fetched = conn.execute(sql, (*params, size + 1, offset)).fetchall()
    more = len(fetched) > size and not plan.top
    result: list[dict[str, Any]] = []
    for row in fetched[:size]:
        obj = {"@odata.etag": f'W/"{row[0]}"'}
        for attr, value in zip(columns, row[1:]):
            if value is not None:
                obj[attr.column] = _out(attr, value)
        result.append(obj)
    return result, more


def get_one(
    conn: sqlite3.Connection, entity: EntityDef, columns: list[Attribute], key: str
) -> str | None:
    """One row by primary key as JSON text, or None."""
    parts = json_row_sql(columns)
    sql = (
        f"SELECT {', '.join(parts)} FROM {quote(entity.table)} WHERE {quote(entity.primary_id)} = ?"
    )
    row = conn.execute(sql, (key,)).fetchone()
    return None if row is None else splice(tuple(row))
