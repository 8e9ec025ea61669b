"""The source side: read-only SQL against the legacy CRM's database.

SQLite (aiosqlite) is built in. Other databases plug in through the `SourceConnector` protocol:
an optional extra registers a factory for its URL scheme (``register_source`` or the
``crmctl.sources`` entry-point group), and checks never know which database they talk to.
crmctl never writes to the source: SQLite is opened with ``mode=ro`` and ``query_only``, so even a
mistaken statement in a check config cannot change the system being migrated from.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
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


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Lets an optional extra serve URLs of `scheme` (e.g. "postgresql")."""
    _FACTORIES[scheme.lower()] = factory


def open_source(url: str) -> SourceConnector:
    """A connector for a source URL (``sqlite:///path``; others via optional extras). Opens lazily."""
    scheme = url.partition(":")[0].partition("+")[0].lower()
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
