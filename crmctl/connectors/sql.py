"""The source side: read-only SQL against the legacy CRM's database.

SQLite (aiosqlite) is built in. Other databases plug in through the `SourceConnector` protocol:
an optional extra registers a factory for its URL scheme (``register_source`` or the
``crmctl.sources`` entry-point group), and checks never know which database they talk to.
crmctl never writes to the source: SQLite is opened with ``mode=ro`` and ``query_only``, so even a
mistaken statement in a check config cannot change the system being migrated from.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol, Sequence, runtime_checkable
from urllib.parse import quote

import aiosqlite

from crmctl.clock import Clock, SystemClock
from crmctl.connectors.errors import SourceError
from crmctl.connectors.limits import request_owner
from crmctl.connectors.querylog import QueryLog

SqlParams = Sequence[Any] | dict[str, Any]


@runtime_checkable
class SourceConnector(Protocol):
    """What checks may ask of a source database. Implementations must be read-only."""

    url: str

    async def scalar(self, sql: str, params: SqlParams = (), *, log: QueryLog | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        ...

    def rows(
        self, sql: str, params: SqlParams = (), *, log: QueryLog | None = None, batch: int = 5000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The result rows in batches of at most `batch` tuples."""
        ...

    async def close(self) -> None: ...


CONDITION_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "is_null", "not_null", "in", "blank", "not_blank")
"""The comparisons a source query may filter on; every source kind can express all of them."""
AGGREGATE_FUNCS = ("count", "sum", "min", "max")
"""What `aggregate` computes: the measures that also combine exactly across partitions."""
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_NO_VALUE = ("is_null", "not_null", "blank", "not_blank")


@dataclass(frozen=True)
class Condition:
    """One filter of a source query: ``column op value``; a query's conditions are ANDed.

    A structure rather than a SQL or OData text, so that one check works on every source kind:
    each source renders it in its own language, with values bound (SQL parameters) or written as
    typed literals (OData), never pasted into a string. ``eq``/``ne`` with ``None`` mean
    "is null"/"is not null"; ``is_null``/``not_null`` take no value. ``in`` takes a non-empty
    list of values. ``blank`` is "null, or text that is empty after trimming" (Dataverse stores
    an empty string as null, so a required column counts as empty either way); ``not_blank`` is
    its negation.
    """

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in CONDITION_OPS:
            raise ValueError(f"unknown condition {self.op!r}; expected one of {', '.join(CONDITION_OPS)}")
        if self.value is None and self.op in ("lt", "le", "gt", "ge"):
            raise ValueError(f"'{self.op}' needs a value to compare {self.column} with")
        if self.op == "in":
            if isinstance(self.value, (str, bytes)) or not isinstance(self.value, (list, tuple, set, frozenset)):
                raise ValueError(f"'in' needs a list of values for {self.column}")
            if not self.value:
                raise ValueError(f"'in' needs at least one value for {self.column}")
            object.__setattr__(self, "value", tuple(self.value))


@dataclass(frozen=True)
class SourceMeasure:
    """One figure of an `aggregate`: ``count`` of rows, or ``sum``/``min``/``max`` of `column`, named `name`."""

    name: str
    agg: str
    column: str | None = None

    def __post_init__(self) -> None:
        if self.agg not in AGGREGATE_FUNCS:
            raise ValueError(f"unknown aggregate {self.agg!r}; expected one of {', '.join(AGGREGATE_FUNCS)}")
        if self.agg != "count" and not self.column:
            raise ValueError(f"'{self.agg}' needs a column")


@runtime_checkable
class SourceQueries(Protocol):
    """What a check asks of a source by intent, the same for every source kind (sql, odata).

    Checks that use these instead of SQL text run unchanged against a SQL database or an OData
    service; each source pushes the work down where it can (SQL on SqlSource, ``$apply`` on an
    OData service that offers it). Keys and records come in the source's ascending order of
    `key`, in batches. Unknown tables or columns raise a SourceError naming them.
    """

    url: str

    async def count(self, table: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None) -> int:
        """The exact number of rows of `table` matching every condition."""
        ...

    def keys(
        self, table: str, key: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None,
        batch: int = 5000, limit: int | None = None, offset: int = 0,
    ) -> AsyncIterator[list[Any]]:
        """The values of `key` of the matching rows, ascending, in batches of at most `batch`
        (at most `limit` of them, after skipping `offset`)."""
        ...

    def records(
        self,
        table: str,
        columns: Sequence[str],
        *,
        key: str,
        where: Sequence[Condition] = (),
        log: QueryLog | None = None,
        batch: int = 5000,
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The matching rows as {column: value} dicts, ordered by `key`, in batches of at most `batch`."""
        ...

    async def check_columns(self, table: str, columns: Sequence[str], *, log: QueryLog | None = None) -> None:
        """Raises a SourceError naming the table or column unless `table` has every one of `columns`."""
        ...

    async def aggregate(
        self,
        table: str,
        measures: Sequence[SourceMeasure],
        group_by: Sequence[str] = (),
        where: Sequence[Condition] = (),
        *,
        log: QueryLog | None = None,
    ) -> list[dict[str, Any]]:
        """One dict per group (the `group_by` columns and each measure's `name`); one row without groups.

        Groups are those of the source (exact values); a count of an empty selection is 0 and
        sum/min/max of no value are None, as in SQL.
        """
        ...

    def duplicates(
        self, table: str, column: str, key: str, where: Sequence[Condition] = (), *,
        log: QueryLog | None = None, batch: int = 5000,
    ) -> AsyncIterator[list[tuple[str, Any, Any]]]:
        """(folded value, value, key) of every row whose non-blank `column` value repeats, compared
        with A-Z folded as Dataverse compares (`fold`), ordered by folded value then key."""
        ...

    async def key_sample(self, table: str, key: str, size: int, *, log: QueryLog | None = None) -> list[Any] | None:
        """About `size` keys spread evenly over the table when the source can pick them cheaply
        (a hint for partition boundaries), else None."""
        ...


def fold_text(value: str) -> str:
    """`value` with exactly A-Z folded to a-z: how Dataverse (and SQLite's LOWER) compare text."""
    return value.lower() if value.isascii() else value.translate(_FOLD)


_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """" (did you mean 'x'?)" for the closest candidate, or ""."""
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[match[0]]}'?)" if match else ""


def fold_duplicates(
    rows: Sequence[tuple[Any, Any]], repeated: set[str]
) -> list[tuple[str, Any, Any]]:
    """(folded, value, key) of the (value, key) rows whose folded value is in `repeated`, in the
    order `duplicates` promises."""
    found = [(fold_text(v if isinstance(v, str) else str(v)), v, k) for v, k in rows]
    found = [r for r in found if r[0] in repeated]
    found.sort(key=lambda r: (r[0], str(r[2])))
    return found


def combine_measure(agg: str, held: Any, value: Any) -> Any:
    """Adds one value (or one partial figure) into a running `agg`; None is "no value yet"."""
    if agg == "count":
        return (held or 0) + (value or 0)
    if value is None:
        return held
    if held is None:
        return value
    if agg == "sum":
        return held + value
    return min(held, value) if agg == "min" else max(held, value)


def quote_name(name: str) -> str:
    """A table or column name from the config, double-quoted; anything but a plain (schema.)name is refused.

    Values travel as bound parameters; names cannot, so they are checked and quoted here.
    """
    if not _NAME.match(name):
        raise SourceError(f"'{name}' is not a plain table or column name.")
    return ".".join(f'"{part}"' for part in name.split("."))


def where_sql(where: Sequence[Condition]) -> tuple[str, list[Any]]:
    """`` WHERE …`` (or "") and its parameters for `where`."""
    symbols = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    parts: list[str] = []
    params: list[Any] = []
    for cond in where:
        column = quote_name(cond.column)
        if cond.op == "is_null" or (cond.op == "eq" and cond.value is None):
            parts.append(f"{column} IS NULL")
        elif cond.op == "not_null" or (cond.op == "ne" and cond.value is None):
            parts.append(f"{column} IS NOT NULL")
        elif cond.op == "blank":
            parts.append(f"({column} IS NULL OR TRIM({column}) = '')")
        elif cond.op == "not_blank":
            parts.append(f"{column} IS NOT NULL AND TRIM({column}) <> ''")
        elif cond.op == "in":
            parts.append(f"{column} IN ({','.join('?' * len(cond.value))})")
            params.extend(_sqlite_value(v) for v in cond.value)
        else:
            parts.append(f"{column} {symbols[cond.op]} ?")
            params.append(_sqlite_value(cond.value))
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _sqlite_value(value: Any) -> Any:
    """SQLite has no timestamp type: an aware datetime is bound as the UTC ISO text sources store
    (``2026-11-28T21:30:00Z``, microseconds only when present), so text comparison orders it right."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime in a source condition needs a time zone")
        utc = value.astimezone(timezone.utc)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    return value


SourceFactory = Callable[[str], SourceConnector]
_FACTORIES: dict[str, SourceFactory] = {}
_KNOWN_ELSEWHERE = {
    "postgresql": "PostgreSQL",
    "postgres": "PostgreSQL",
    "mssql": "SQL Server",
    "sqlserver": "SQL Server",
    "mysql": "MySQL",
    "oracle": "Oracle",
}


_BUILTIN_ELSEWHERE = {"odata": "crmctl.connectors.odata_source"}
"""Built-in connectors in other modules, imported on first use (they register themselves)."""


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Lets an optional extra serve URLs of `scheme` (e.g. "postgresql")."""
    _FACTORIES[scheme.lower()] = factory


def open_source(url: str) -> SourceConnector:
    """A connector for a source URL (``sqlite:///path``; others via optional extras). Opens lazily."""
    scheme = url.partition(":")[0].partition("+")[0].lower()
    factory = _FACTORIES.get(scheme)
    if factory is None and scheme in _BUILTIN_ELSEWHERE:
        importlib.import_module(_BUILTIN_ELSEWHERE[scheme])
        factory = _FACTORIES.get(scheme)
    if factory is None:
        for ep in entry_points(group="crmctl.sources"):
            if ep.name.lower() == scheme:
                factory = ep.load()
                break
    if factory is None:
        name = _KNOWN_ELSEWHERE.get(scheme)
        if name:
            raise SourceError(
                f"Reading a {name} source needs an optional crmctl connector that is not installed; "
                "only sqlite:/// is built in."
            )
        raise SourceError(f"crmctl cannot read a source with the URL scheme '{scheme}'; expected sqlite:///path.")
    return factory(url)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` URL (SQLAlchemy style)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise SourceError(f"The source URL must look like sqlite:///path/to/file.db, not '{url.split('?')[0]}'.")
    rest = url[len(prefix):].split("?", 1)[0]
    if not rest or rest == ":memory:":
        raise SourceError("The source URL names no database file.")
    return Path(rest)


SEPARATOR = "\x1e"
"""ASCII record separator: joins a chunk of keys into one string (checked never to occur in them)."""


class _NotPlainText(Exception):
    """The first chunk showed keys that cannot travel joined as text."""


def _limit(limit: int | None, offset: int, params: list[Any]) -> str:
    """`` LIMIT ? OFFSET ?`` (appending to `params`), or "" for all rows."""
    if limit is None and not offset:
        return ""
    params.extend([-1 if limit is None else max(0, int(limit)), max(0, int(offset))])
    return " LIMIT ? OFFSET ?"


def _first_line(sql: str) -> str:
    for line in sql.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class SqlSource:
    """A read-only SQLite source.

    Args:
        url: ``sqlite:///path``.
        busy_timeout: Seconds SQLite waits on a lock held by a writer before giving up.
        clock: Wall clock for query start times in the log.
    """

    timestamps_typed = False
    """Legacy databases keep timestamps as text or numbers: conditions are written in the column's layout."""

    def __init__(self, url: str, *, busy_timeout: float = 5.0, clock: Clock | None = None) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self._clock = clock or SystemClock()
        self._db: aiosqlite.Connection | None = None
        self._opening: asyncio.Lock | None = None
        self._columns: dict[str, tuple[str, ...]] = {}
        self._cursors: dict[str | None, set[aiosqlite.Cursor]] = {}
        """Cursors of unfinished `rows` streams, by the check that opened them (`request_owner`)."""

    def __repr__(self) -> str:
        return f"SqlSource({self.url!r})"

    async def release(self, owner: str | None) -> int:
        """Closes the cursors a check left open; returns how many there were.

        A check cancelled (or failed) while it was between two batches of a `rows` stream leaves
        the generator suspended at its `yield`: its cursor, and with it a read lock on the
        legacy database (which blocks that CRM's writers), would live until the garbage collector
        finalises the generator. The engine calls this when a check's run ends, so the lock ends
        with the check.
        """
        cursors = self._cursors.pop(owner, set())
        for cursor in cursors:
            try:
                await cursor.close()
            except (sqlite3.Error, ValueError):  # the connection went first: nothing to release
                pass
        return len(cursors)

    async def scalar(self, sql: str, params: SqlParams = (), *, log: QueryLog | None = None) -> Any:
        started, t0, error = self._clock.now(), time.perf_counter(), None
        try:
            db = await self._connection()
            async with db.execute(sql, params) as cursor:
                row = await cursor.fetchone()
            return row[0] if row else None
        except sqlite3.Error as exc:
            err = self._error(exc, sql)
            error = str(err)
            raise err from None
        except SourceError as exc:
            error = str(exc)
            raise
        finally:
            self._record(log, sql, started, t0, error)

    async def rows(
        self, sql: str, params: SqlParams = (), *, log: QueryLog | None = None, batch: int = 5000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        started, t0, error = self._clock.now(), time.perf_counter(), None
        try:
            db = await self._connection()
            owner = request_owner.get()
            async with db.execute(sql, params) as cursor:
                self._cursors.setdefault(owner, set()).add(cursor)
                try:
                    while True:
                        chunk = await cursor.fetchmany(batch)
                        if not chunk:
                            break
                        yield [tuple(r) for r in chunk]
                finally:
                    held = self._cursors.get(owner)
                    if held is not None:
                        held.discard(cursor)
                        if not held:
                            del self._cursors[owner]
        except sqlite3.Error as exc:
            err = self._error(exc, sql)
            error = str(err)
            raise err from None
        except SourceError as exc:
            error = str(exc)
            raise
        finally:
            self._record(log, sql, started, t0, error)

    # -- query intents (SourceQueries): the same calls work on an OData source -------------
    # Every name is checked against the table first: SQLite reads an unknown double-quoted
    # column as a string literal, so without the check a misspelt column would silently filter,
    # count or compare as a constant instead of failing.

    async def count(self, table: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None) -> int:
        await self._validate(table, [c.column for c in where], log)
        clause, params = where_sql(where)
        return int(await self.scalar(f"SELECT COUNT(*) FROM {quote_name(table)}{clause}", params, log=log))

    async def keys(
        self, table: str, key: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None,
        batch: int = 5000, limit: int | None = None, offset: int = 0,
    ) -> AsyncIterator[list[Any]]:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        await self._validate(table, [key, *(c.column for c in where)], log)
        if limit is None and not offset:
            chunks = self._text_key_chunks(table, key, where, log, batch)
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except _NotPlainText:
                pass  # numeric keys or a key holding the separator: read rows one by one instead
            else:
                yield first
                async for chunk in chunks:
                    yield chunk
                return
        clause, params = where_sql(where)
        column = quote_name(key)
        sql = f"SELECT {column} FROM {quote_name(table)}{clause} ORDER BY {column}{_limit(limit, offset, params)}"
        async for chunk in self.rows(sql, params, log=log, batch=batch):
            yield [row[0] for row in chunk]

    async def _text_key_chunks(
        self, table: str, key: str, where: Sequence[Condition], log: QueryLog | None, size: int
    ) -> AsyncIterator[list[str]]:
        """Keys in chunks of `size`, each chunk one row: `group_concat` over a keyset-paged subquery.

        On SQLite this reads a million keys in a few hundred index range scans and a few hundred
        strings, instead of a million Python tuples: the source side of a key merge then costs
        the client almost nothing. Only text keys travel this way (the first chunk proves it; a
        later chunk whose count and split disagree would hold the separator and stops the stream
        with an error rather than be misread). A key repeated across a chunk boundary is read
        again (`>=`) and its copies already handed out are skipped, so none is lost.
        """
        qk = quote_name(key)
        clause, params = where_sql(where)
        # Once resumed at `last` (a key read from inside the range), the range's own lower bound
        # is implied, and left in it would be where SQLite starts its index search: every chunk
        # would walk the range from its start again (1.7 instead of 0.8 ms for a chunk half way).
        resumed, resumed_params = where_sql([c for c in where if not (c.column == key and c.op in ("ge", "gt"))])
        last: str | None = None
        repeats = 0  # copies of `last` at the end of the previous chunk
        first = True
        while True:
            if last is None:
                inner, args = clause, [*params]
            else:
                inner = f" WHERE {qk} >= ?" + (f" AND {resumed[len(' WHERE '):]}" if resumed else "")
                args = [last, *resumed_params]
            sql = (
                f"SELECT COUNT(*), group_concat({qk}, char(30)), SUM(typeof({qk}) <> 'text') FROM ("
                f"SELECT {qk} FROM {quote_name(table)}{inner} ORDER BY {qk} LIMIT ?)"
            )
            args.append(size + repeats)
            count, joined, non_text = await self._one_row(sql, args, log)
            keys = joined.split(SEPARATOR) if joined is not None else []
            if count and (non_text or len(keys) != count):
                if first:
                    raise _NotPlainText()
                raise SourceError(f"A key of {table} changed type or holds the ASCII record separator mid-scan; "
                                  "crmctl cannot read it as plain text.")
            if repeats and keys[:repeats] != [last] * repeats:
                raise SourceError(f"The keys of {table} changed while they were read; run the check again.")
            fresh = keys[repeats:]
            first = False
            if not fresh:
                return
            yield fresh
            if len(fresh) < size:
                return
            same_as_before = last == fresh[-1]
            last = fresh[-1]
            tail = len(fresh) - 1
            while tail >= 0 and fresh[tail] == last:
                tail -= 1
            repeats = len(fresh) - 1 - tail + (repeats if tail < 0 and same_as_before else 0)

    async def _one_row(self, sql: str, args: Sequence[Any], log: QueryLog | None) -> tuple[Any, ...]:
        rows = self.rows(sql, args, log=log, batch=1)
        try:
            async for batch in rows:
                return batch[0]
            return (0, None, 0)
        finally:
            await rows.aclose()  # close the cursor now, not when the generator is collected

    async def records(
        self,
        table: str,
        columns: Sequence[str],
        *,
        key: str,
        where: Sequence[Condition] = (),
        log: QueryLog | None = None,
        batch: int = 5000,
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if not columns:
            raise ValueError("name at least one column")
        await self._validate(table, [*columns, key, *(c.column for c in where)], log)
        clause, params = where_sql(where)
        names = list(columns)
        selected = ", ".join(quote_name(c) for c in names)
        sql = (f"SELECT {selected} FROM {quote_name(table)}{clause} ORDER BY {quote_name(key)}"
               f"{_limit(limit, offset, params)}")
        async for chunk in self.rows(sql, params, log=log, batch=batch):
            yield [dict(zip(names, row)) for row in chunk]

    async def check_columns(self, table: str, columns: Sequence[str], *, log: QueryLog | None = None) -> None:
        await self._validate(table, columns, log)

    async def aggregate(
        self,
        table: str,
        measures: Sequence[SourceMeasure],
        group_by: Sequence[str] = (),
        where: Sequence[Condition] = (),
        *,
        log: QueryLog | None = None,
        sql_where: str | None = None,
    ) -> list[dict[str, Any]]:
        """`GROUP BY` in the database. `sql_where` (SqlSource only) is a SQL condition ANDed to
        `where`, for a config's `source_where` that is more than plain conditions."""
        if not measures:
            raise ValueError("name at least one measure")
        await self._validate(table, [*group_by, *(m.column for m in measures if m.column),
                                     *(c.column for c in where)], log)
        clause, params = where_sql(where)
        if sql_where:
            clause += f" AND ({sql_where})" if clause else f" WHERE ({sql_where})"
        figures = ["COUNT(*)" if m.agg == "count" else f"{m.agg.upper()}({quote_name(str(m.column))})" for m in measures]
        groups = [quote_name(g) for g in group_by]
        sql = f"SELECT {', '.join([*groups, *figures])} FROM {quote_name(table)}{clause}"
        if groups:
            sql += f" GROUP BY {', '.join(groups)}"
        names = [*group_by, *(m.name for m in measures)]
        found: list[dict[str, Any]] = []
        async for chunk in self.rows(sql, params, log=log):
            found.extend(dict(zip(names, row)) for row in chunk)
        return found

    async def duplicates(
        self, table: str, column: str, key: str, where: Sequence[Condition] = (), *,
        log: QueryLog | None = None, batch: int = 5000,
    ) -> AsyncIterator[list[tuple[str, Any, Any]]]:
        """One query: the rows whose LOWER(value) is among the groups counted twice or more
        (SQLite's LOWER folds exactly A-Z, as `fold_text` does)."""
        await self._validate(table, [column, key, *(c.column for c in where)], log)
        qt, qc, qk = quote_name(table), quote_name(column), quote_name(key)
        clause, params = where_sql([*where, Condition(column, "not_blank")])
        sql = (
            f"SELECT LOWER({qc}), {qc}, {qk} FROM {qt}{clause} AND LOWER({qc}) IN ("
            f"SELECT LOWER({qc}) FROM {qt}{clause} GROUP BY LOWER({qc}) HAVING COUNT(*) > 1) ORDER BY 1, 3"
        )
        async for chunk in self.rows(sql, [*params, *params], log=log, batch=batch):
            yield [tuple(r) for r in chunk]  # type: ignore[misc]

    async def key_sample(self, table: str, key: str, size: int, *, log: QueryLog | None = None) -> list[Any] | None:
        """Keys at evenly spaced rowids: a handful of point lookups, whatever the table size."""
        await self._validate(table, [key], log)
        qt, qk = quote_name(table), quote_name(key)
        try:
            low = await self.scalar(f"SELECT MIN(rowid) FROM {qt}", log=log)
            high = await self.scalar(f"SELECT MAX(rowid) FROM {qt}", log=log)
            if low is None or high is None:
                return None
            step = max(1, (high - low + 1) // max(1, size))
            ids = list(range(low, high + 1, step))[: size + 1]
            found: list[Any] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                async for rows in self.rows(
                    f"SELECT {qk} FROM {qt} WHERE rowid IN ({marks}) AND {qk} IS NOT NULL", chunk, log=log
                ):
                    found.extend(r[0] for r in rows)
        except SourceError:
            return None  # a WITHOUT ROWID table or a view: the caller uses the portable way
        return found

    async def columns_of(self, table: str, *, log: QueryLog | None = None) -> tuple[str, ...]:
        """The columns of `table` (PRAGMA table_info, asked once per table and connection)."""
        quote_name(table)
        cached = self._columns.get(table)
        if cached is not None:
            return cached
        schema, _, name = table.rpartition(".")
        pragma = f'PRAGMA {quote_name(schema) + "." if schema else ""}table_info({quote_name(name)})'
        names: list[str] = []
        async for rows in self.rows(pragma, log=log):
            names.extend(str(r[1]) for r in rows)
        if not names:
            tables: list[str] = []
            async for rows in self.rows(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'", log=log
            ):
                tables.extend(str(r[0]) for r in rows)
            raise SourceError(f"The source has no table '{table}'{did_you_mean(table, tables)}.")
        self._columns[table] = tuple(names)
        return self._columns[table]

    async def _validate(self, table: str, columns: Sequence[str], log: QueryLog | None) -> None:
        known = await self.columns_of(table, log=log)
        lowered = {c.lower() for c in known}  # SQLite names are case-insensitive
        for name in dict.fromkeys(columns):
            quote_name(name)
            if name.lower() not in lowered:
                raise SourceError(f"The source table '{table}' has no column '{name}'{did_you_mean(name, known)}.")

    async def close(self) -> None:
        self._columns.clear()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def _connection(self) -> aiosqlite.Connection:
        if self._db is not None:
            return self._db
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # many checks start at once; open one connection, not many
            if self._db is None:
                if not self.path.is_file():
                    raise SourceError(f"The source database {self.path} does not exist.")
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
                db = None
                try:
                    db = await aiosqlite.connect(uri, uri=True, timeout=self.busy_timeout)
                    await db.execute("PRAGMA query_only = ON")
                except sqlite3.Error as exc:
                    if db is not None:  # opened, then refused (e.g. locked): no handle left behind
                        await db.close()
                    raise SourceError(f"The source database {self.path} could not be opened ({exc}).") from None
                self._db = db
        return self._db

    def _error(self, exc: sqlite3.Error, sql: str) -> SourceError:
        text = str(exc) or type(exc).__name__
        lower = text.lower()
        if "locked" in lower or "busy" in lower:
            return SourceError(
                f"The source database is locked by another process ({text}); "
                f"crmctl waited {self.busy_timeout:g} s and gave up on '{_first_line(sql)[:80]}'."
            )
        if "readonly" in lower or "read-only" in lower or "query_only" in lower:
            return SourceError(f"crmctl reads the source only and refused a statement that writes ({text}).")
        return SourceError(f"The source rejected '{_first_line(sql)[:80]}': {text}.")

    def _record(
        self, log: QueryLog | None, sql: str, started: datetime, t0: float, error: str | None
    ) -> None:
        if log is not None:
            log.record(
                "SQL",
                _first_line(sql),
                None,
                (time.perf_counter() - t0) * 1000.0,
                error=error,
                started=started,
                target="source",
            )


register_source("sqlite", SqlSource)
