"""SqlSource: read-only SQLite, batches, clear errors, and the query log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crmctl.connectors.errors import SourceError
from crmctl.connectors.querylog import QueryLog
from crmctl.connectors.sql import SourceConnector, SqlSource, open_source, register_source, sqlite_path


@pytest.fixture
def source_db(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (account_id TEXT PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO accounts VALUES (?, ?)", [(f"A{i:03}", f"Account {i}") for i in range(12)])
    return path


def test_urls() -> None:
    assert sqlite_path("sqlite:///rel/source.db") == Path("rel/source.db")
    assert sqlite_path("sqlite:////abs/source.db") == Path("/abs/source.db")
    with pytest.raises(SourceError, match="sqlite:///path"):
        sqlite_path("sqlite://source.db")
    with pytest.raises(SourceError, match="PostgreSQL source needs an optional"):
        open_source("postgresql+asyncpg://u:pw@h/db")
    with pytest.raises(SourceError, match="'ftp'"):
        open_source("ftp://h/x")


async def test_scalar_rows_and_log(source_db: Path) -> None:
    source = open_source(f"sqlite:///{source_db}")
    assert isinstance(source, SqlSource) and isinstance(source, SourceConnector)
    log = QueryLog("dynamics")
    try:
        assert await source.scalar("SELECT count(*) FROM accounts", log=log) == 12
        assert await source.scalar("SELECT name FROM accounts WHERE account_id = ?", ("nope",), log=log) is None
        batches = [b async for b in source.rows(
            "SELECT account_id\n  FROM accounts\n ORDER BY account_id", log=log, batch=5)]
    finally:
        await source.close()
    assert [len(b) for b in batches] == [5, 5, 2]
    assert batches[0][0] == ("A000",)
    assert [(r.target, r.method, r.status) for r in log.records] == [("source", "SQL", None)] * 3
    assert log.records[2].url == "SELECT account_id"  # the first line of the SQL
    assert log.records[0].url == "SELECT count(*) FROM accounts"


async def test_source_is_never_written(source_db: Path) -> None:
    source = SqlSource(f"sqlite:///{source_db}")
    log = QueryLog("source")
    with pytest.raises(SourceError, match="reads the source only"):
        await source.scalar("DELETE FROM accounts", log=log)
    await source.close()
    assert log.records[0].error and "reads the source only" in log.records[0].error
    with sqlite3.connect(source_db) as db:
        assert db.execute("SELECT count(*) FROM accounts").fetchone()[0] == 12


async def test_bad_query_and_missing_file(source_db: Path, tmp_path: Path) -> None:
    source = SqlSource(f"sqlite:///{source_db}")
    with pytest.raises(SourceError, match=r"The source rejected 'SELECT \* FROM acounts': no such table: acounts"):
        await source.scalar("SELECT * FROM acounts")
    with pytest.raises(SourceError, match="no such table"):
        [b async for b in source.rows("SELECT * FROM nowhere")]
    await source.close()
    missing = SqlSource(f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(SourceError, match="does not exist"):
        await missing.scalar("SELECT 1")
    assert not (tmp_path / "missing.db").exists()  # read-only open never creates a file


async def test_locked_source_is_a_clear_error(source_db: Path) -> None:
    writer = sqlite3.connect(source_db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # a bulk load holding the database
    source = SqlSource(f"sqlite:///{source_db}", busy_timeout=0.1)
    try:
        with pytest.raises(SourceError, match="locked by another process"):
            await source.scalar("SELECT count(*) FROM accounts")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert await source.scalar("SELECT count(*) FROM accounts") == 12
    await source.close()


async def test_early_break_is_logged(source_db: Path) -> None:
    source = SqlSource(f"sqlite:///{source_db}")
    log = QueryLog("source")
    rows = source.rows("SELECT * FROM accounts", log=log, batch=2)
    async for _batch in rows:
        break
    await rows.aclose()
    await source.close()
    assert log.requests == 1


def test_extras_can_register_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    from crmctl.connectors import sql

    monkeypatch.setattr(sql, "_FACTORIES", dict(sql._FACTORIES))

    class Fake:
        def __init__(self, url: str) -> None:
            self.url = url

    register_source("fakedb", Fake)  # type: ignore[arg-type]
    assert open_source("fakedb://h/x").url == "fakedb://h/x"  # type: ignore[attr-defined]
