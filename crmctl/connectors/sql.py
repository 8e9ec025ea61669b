"""The source side: read-only SQL against the legacy CRM's database.

SQLite (aiosqlite) is built in. Other databases plug in through the `SourceConnector` protocol:
an optional extra registers a factory for its URL scheme (``register_source`` or the
``crmctl.sources`` entry-point group), and checks never know which database they talk to.
crmctl never writes to the source: SQLite is opened with ``mode=ro`` and ``query_only``, so even a
mistaken statement in a check config cannot change the system being migrated from.
"""

from __future__ import annotations

import asyncio
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


CONDITION_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "is_null", "not_null")
"""The comparisons a source query may filter on; every source kind can express all of them."""
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


@dataclass(frozen=True)
class Condition:
    """One filter of a source query: ``column op value``; a query's conditions are ANDed.

    A structure rather than a SQL or OData text, so that one check works on every source kind:
    each source renders it in its own language, with values bound (SQL parameters) or written as
    typed literals (OData), never pasted into a string. ``eq``/``ne`` with ``None`` mean
    "is null"/"is not null"; ``is_null``/``not_null`` take no value.
    """

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in CONDITION_OPS:
            raise ValueError(f"unknown condition {self.op!r}; expected one of {', '.join(CONDITION_OPS)}")
        if self.value is None and self.op in ("lt", "le", "gt", "ge"):
            raise ValueError(f"'{self.op}' needs a value to compare {self.column} with")


@runtime_checkable
class SourceQueries(Protocol):
    """What a check asks of a source by intent, the same for every source kind (sql, odata).

    Checks that use these instead of SQL text run unchanged against a SQL database or an OData
    service. Keys and records come in the source's ascending order of `key`, in batches.
    """

    async def count(self, table: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None) -> int:
        """The exact number of rows of `table` matching every condition."""
        ...

    def keys(
        self, table: str, key: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None, batch: int = 5000
    ) -> AsyncIterator[list[Any]]:
        """The values of `key` of the matching rows, ascending, in batches of at most `batch`."""
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
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The matching rows as {column: value} dicts, ordered by `key`, in batches of at most `batch`."""
        ...


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

    def __init__(self, url: str, *, busy_timeout: float = 5.0, clock: Clock | None = None) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self._clock = clock or SystemClock()
        self._db: aiosqlite.Connection | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"SqlSource({self.url!r})"

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
            async with db.execute(sql, params) as cursor:
                while True:
                    chunk = await cursor.fetchmany(batch)
                    if not chunk:
                        break
                    yield [tuple(r) for r in chunk]
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

    async def count(self, table: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None) -> int:
        clause, params = where_sql(where)
        return int(await self.scalar(f"SELECT COUNT(*) FROM {quote_name(table)}{clause}", params, log=log))

    async def keys(
        self, table: str, key: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None, batch: int = 5000
    ) -> AsyncIterator[list[Any]]:
        clause, params = where_sql(where)
        column = quote_name(key)
        sql = f"SELECT {column} FROM {quote_name(table)}{clause} ORDER BY {column}"
        async for chunk in self.rows(sql, params, log=log, batch=batch):
            yield [row[0] for row in chunk]

    async def records(
        self,
        table: str,
        columns: Sequence[str],
        *,
        key: str,
        where: Sequence[Condition] = (),
        log: QueryLog | None = None,
        batch: int = 5000,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if not columns:
            raise ValueError("name at least one column")
        clause, params = where_sql(where)
        names = list(columns)
        selected = ", ".join(quote_name(c) for c in names)
        sql = f"SELECT {selected} FROM {quote_name(table)}{clause} ORDER BY {quote_name(key)}"
        async for chunk in self.rows(sql, params, log=log, batch=batch):
            yield [dict(zip(names, row)) for row in chunk]

    async def close(self) -> None:
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
                try:
                    db = await aiosqlite.connect(uri, uri=True, timeout=self.busy_timeout)
                    await db.execute("PRAGMA query_only = ON")
                except sqlite3.Error as exc:
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
