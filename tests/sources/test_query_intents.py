"""The query intents (count, keys, records) give the same answers on a SQL source and an OData source.

Both hold the same accounts (tests/sources/conftest.py); a check written against the intents
therefore cannot tell which kind of source it reads, which is the point of the intents.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from crmctl.config import load_config
from crmctl.connectors.errors import SourceError
from crmctl.connectors.odata_source import OdataSource
from crmctl.connectors.querylog import QueryLog
from crmctl.connectors.sql import Condition, SourceMeasure, SourceQueries, SqlSource, quote_name, where_sql
from crmctl.runtime import open_runtime
from tests.peers.odata_peer import OdataPeer
from tests.sources.conftest import ACCOUNTS, PASSWORD, USER, with_credentials

WATERMARK = datetime(2026, 11, 12, 10, 0, tzinfo=timezone.utc)
WHERES: list[list[Condition]] = [
    [],
    [Condition("City", "eq", "Zürich")],
    [Condition("City", "eq", None)],
    [Condition("City", "ne", None), Condition("Revenue", "gt", 5000)],
    [Condition("ModifiedOn", "ge", WATERMARK)],
    [Condition("ModifiedOn", "lt", WATERMARK), Condition("Revenue", "is_null")],
    [Condition("Name", "eq", "O'Brien & Sons 1")],
    [Condition("AccountId", "le", "A010"), Condition("City", "not_null")],
]


Answers = tuple[int, list[Any], list[dict[str, Any]]]


async def answers(source: SourceQueries, where: list[Condition]) -> Answers:
    count = await source.count("Accounts", where)
    keys = [k async for b in source.keys("Accounts", "AccountId", where, batch=4) for k in b]
    records = [r async for b in source.records("Accounts", ["AccountId", "Name", "City"], key="AccountId",
                                               where=where, batch=4) for r in b]
    return count, keys, records


@pytest.mark.parametrize("where", WHERES, ids=lambda w: " and ".join(f"{c.column} {c.op}" for c in w) or "all")
async def test_sql_and_odata_sources_agree(odata: OdataPeer, sqlite_twin: Path, where: list[Condition]) -> None:
    sql = SqlSource(f"sqlite:///{sqlite_twin}")
    rest = OdataSource(with_credentials(odata.root), page_size=5)
    try:
        from_sql = await answers(sql, where)
        from_odata = await answers(rest, where)
    finally:
        await sql.close()
        await rest.close()
    assert from_sql == from_odata
    count, keys, _ = from_sql
    assert count == len(keys) and keys == sorted(keys)


async def test_sql_intents_are_logged_and_refuse_odd_names(sqlite_twin: Path) -> None:
    sql = SqlSource(f"sqlite:///{sqlite_twin}")
    log = QueryLog("source")
    try:
        assert await sql.count("Accounts", [Condition("City", "eq", "Oslo")], log=log) == sum(
            a["City"] == "Oslo" for a in ACCOUNTS)
        with pytest.raises(SourceError, match="not a plain table or column name"):
            await sql.count('Accounts"; DROP TABLE Accounts; --')
    finally:
        await sql.close()
    assert [r.url for r in log.records] == ['PRAGMA table_info("Accounts")', 'SELECT COUNT(*) FROM "Accounts" WHERE "City" = ?']
    assert quote_name("dbo.accounts") == '"dbo"."accounts"'
    clause = where_sql([Condition("ModifiedOn", "ge", WATERMARK)])
    assert clause == (' WHERE "ModifiedOn" >= ?', ["2026-11-12T10:00:00Z"])


async def test_runtime_opens_an_odata_source_from_the_config(
    odata: OdataPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """source.kind odata with the password from ${env:…}: the runtime reads the service, never shows it."""
    monkeypatch.setenv("LEGACY_CRM_PASSWORD", PASSWORD)
    monkeypatch.setenv("CRMCTL_TEST_SECRET", "unused")
    root = odata.root.replace("http://", "")
    path = tmp_path / "crmctl.yaml"
    path.write_text(f"""
project: OData source
state: .crmctl/state.db
source: {{kind: odata, url: "http://{USER}:${{env:LEGACY_CRM_PASSWORD}}@{root}"}}
target:
  kind: dataverse
  url: https://contoso.crm.dynamics.com
  auth: {{method: client_secret, tenant_id: tenant-1, client_id: 11111111-2222-3333-4444-555555555555,
         secret: "${{env:CRMCTL_TEST_SECRET}}"}}
""")
    config = load_config(path)
    async with open_runtime(config) as runtime:
        source = runtime.source
        assert isinstance(source, OdataSource)
        assert await source.count("Accounts") == len(ACCOUNTS)
        assert PASSWORD not in repr(source) and PASSWORD not in source.url


# -- aggregate, duplicates, blank / in, skip-and-take: the same on both kinds ------------------

MEASURES = [SourceMeasure("n", "count"), SourceMeasure("revenue", "sum", "Revenue"),
            SourceMeasure("low", "min", "Revenue"), SourceMeasure("high", "max", "ModifiedOn")]


def by_group(rows: list[dict[str, Any]], column: str) -> dict[Any, dict[str, Any]]:
    return {row[column]: {k: v for k, v in row.items() if k != column} for row in rows}


async def more_answers(source: SourceQueries) -> tuple[Any, ...]:
    grouped = by_group(await source.aggregate("Accounts", MEASURES, ["City"]), "City")
    overall = await source.aggregate("Accounts", [SourceMeasure("n", "count"), SourceMeasure("r", "sum", "Revenue")],
                                     where=[Condition("Revenue", "gt", 5000)])
    nothing = await source.aggregate("Accounts", [SourceMeasure("n", "count"), SourceMeasure("r", "sum", "Revenue")],
                                     where=[Condition("City", "eq", "Atlantis")])
    dups = [d async for b in source.duplicates("Accounts", "City", "AccountId", batch=4) for d in b]
    blank = [k async for b in source.keys("Accounts", "AccountId", [Condition("City", "blank")]) for k in b]
    chosen = [k async for b in source.keys("Accounts", "AccountId", [Condition("City", "in", ["Rome", "O'Fallon"])])
              for k in b]
    window = [r async for b in source.records("Accounts", ["AccountId", "City"], key="AccountId", limit=4, offset=9)
              for r in b]
    return grouped, overall, nothing, dups, blank, chosen, window


@pytest.mark.parametrize("apply", [True, False], ids=["$apply", "folded"])
async def test_aggregates_duplicates_and_windows_agree(
    odata: OdataPeer, sqlite_twin: Path, apply: bool
) -> None:
    sql = SqlSource(f"sqlite:///{sqlite_twin}")
    rest = OdataSource(with_credentials(odata.root), page_size=5)
    if not apply:
        rest.apply_supported = False  # as after a service answered 501: every figure folded from rows
    try:
        from_sql = await more_answers(sql)
        from_odata = await more_answers(rest)
    finally:
        await sql.close()
        await rest.close()
    grouped_sql, *rest_sql = from_sql
    grouped_odata, *rest_odata = from_odata
    # Timestamps: SQLite holds the text, OData the typed instant; the same moment either way.
    for groups in (grouped_sql, grouped_odata):
        for figures in groups.values():
            figures["high"] = datetime.fromisoformat(str(figures["high"]).replace("Z", "+00:00"))
    assert grouped_sql == grouped_odata
    assert rest_sql == rest_odata
    grouped, overall, nothing, dups, blank, chosen, window = from_sql
    cities = [a["City"] for a in ACCOUNTS]
    assert {c: g["n"] for c, g in grouped.items()} == {c: cities.count(c) for c in set(cities)}
    assert overall == [{"n": sum(1 for a in ACCOUNTS if (a["Revenue"] or 0) > 5000),
                        "r": sum(a["Revenue"] for a in ACCOUNTS if (a["Revenue"] or 0) > 5000)}]
    assert nothing == [{"n": 0, "r": None}]
    assert [d[2] for d in dups] == [a["AccountId"] for a in sorted(
        (a for a in ACCOUNTS if a["City"]), key=lambda a: (a["City"].lower(), a["AccountId"]))]
    assert blank == sorted(a["AccountId"] for a in ACCOUNTS if a["City"] is None)
    assert chosen == sorted(a["AccountId"] for a in ACCOUNTS if a["City"] in ("Rome", "O'Fallon"))
    assert [r["AccountId"] for r in window] == sorted(a["AccountId"] for a in ACCOUNTS)[9:13]


async def test_apply_is_remembered_and_agrees_with_the_fold(odata: OdataPeer) -> None:
    """The first aggregate finds out whether the service offers `$apply` and remembers it; the fold
    (used when it does not, see tests/checks/test_odata_source_checks.py for a service answering
    501) reaches the same figures from the rows."""
    rest = OdataSource(with_credentials(odata.root), page_size=5)
    before = len(odata.requests())
    measures = [SourceMeasure("n", "count"), SourceMeasure("r", "sum", "Revenue")]
    try:
        assert rest.apply_supported is None
        served = await rest.aggregate("Accounts", measures, ["City"], where=[Condition("Revenue", "ge", 0)])
        assert rest.apply_supported is True
        rest.apply_supported = False
        folded = await rest.aggregate("Accounts", measures, ["City"], where=[Condition("Revenue", "ge", 0)])
    finally:
        await rest.close()
    assert by_group(served, "City") == by_group(folded, "City")
    asked = odata.requests()[before:]
    assert sum("$apply=" in line for line in asked) == 1
    assert sum("$select=City,Revenue" in line for line in asked) >= 1, "the fold reads the columns it needs"


# -- SqlSource: names are checked against the table ------------------------------------------


async def test_sqlite_reads_an_unknown_quoted_column_as_text_so_the_intents_check_names(sqlite_twin: Path) -> None:
    sql = SqlSource(f"sqlite:///{sqlite_twin}")
    log = QueryLog("source")
    try:
        # The hazard: SQLite takes "Citty" for the string 'Citty', and this counts every row.
        assert await sql.scalar('SELECT COUNT(*) FROM "Accounts" WHERE "Citty" = \'Citty\'') == len(ACCOUNTS)
        with pytest.raises(SourceError, match=r"The source table 'Accounts' has no column 'Citty' \(did you mean 'City'\?\)"):
            await sql.count("Accounts", [Condition("Citty", "eq", "Citty")], log=log)
        with pytest.raises(SourceError, match="no column 'Nmae'.*did you mean 'Name'"):
            [r async for r in sql.records("Accounts", ["AccountId", "Nmae"], key="AccountId", log=log)]
        with pytest.raises(SourceError, match="no column 'AcountId'"):
            [k async for k in sql.keys("Accounts", "AcountId", log=log)]
        with pytest.raises(SourceError, match="no column 'Revnue'"):
            await sql.aggregate("Accounts", [SourceMeasure("r", "sum", "Revnue")], log=log)
        with pytest.raises(SourceError, match=r"The source has no table 'Acounts' \(did you mean 'Accounts'\?\)"):
            await sql.check_columns("Acounts", ["Name"], log=log)
        await sql.check_columns("Accounts", ["name", "CITY"], log=log)  # SQLite names ignore case
    finally:
        await sql.close()
    pragmas = [r.url for r in log.records if r.url.startswith("PRAGMA")]
    assert pragmas == ['PRAGMA table_info("Accounts")', 'PRAGMA table_info("Acounts")'], "asked once per table"


async def test_text_keys_repeated_across_a_chunk_boundary_are_all_read(tmp_path: Path) -> None:
    path = tmp_path / "dups.db"
    keys = sorted(["K1", "K2", "K2", "K2", "K2", "K3", "K4", "K4", "K5", "K6", "K6", "K6"])
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (k TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [(k,) for k in reversed(keys)])
    sql = SqlSource(f"sqlite:///{path}")
    try:
        for batch in (1, 2, 3, 4, 5, 100):
            chunks = [c async for c in sql.keys("t", "k", batch=batch)]
            assert [k for c in chunks for k in c] == keys, batch
            assert all(0 < len(c) <= batch for c in chunks), batch
            # A key range, as reconcile's partitions ask: a resumed chunk starts at the last key
            # read, and the range's lower bound (implied by it) must neither lose nor add a key.
            for low, low_op, high in (("K2", "ge", "K6"), ("K2", "gt", "K6"), ("K1", "ge", None)):
                where = [Condition("k", low_op, low), *([Condition("k", "lt", high)] if high else []),
                         Condition("k", "ne", "K5")]
                inside = [k for k in keys if (k >= low if low_op == "ge" else k > low)
                          and (high is None or k < high) and k != "K5"]
                chunks = [c async for c in sql.keys("t", "k", where, batch=batch)]
                assert [k for c in chunks for k in c] == inside, (batch, low_op, low, high)
    finally:
        await sql.close()


async def test_numeric_or_mixed_keys_fall_back_to_rows_in_the_source_order(tmp_path: Path) -> None:
    """The joined-text fast path takes text keys only; other keys come row by row, as stored."""
    path = tmp_path / "numbers.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE n (k INTEGER, label TEXT)")
        db.executemany("INSERT INTO n VALUES (?, ?)", [(k, f"x{k}") for k in (30, 4, 200, 17, 4)])
    sql = SqlSource(f"sqlite:///{path}")
    try:
        chunks = [c async for c in sql.keys("n", "k", [Condition("k", "ge", 5)], batch=2)]
        window = [r async for b in sql.records("n", ["k", "label"], key="k", limit=2, offset=1) for r in b]
    finally:
        await sql.close()
    assert chunks == [[17, 30], [200]]
    assert window == [{"k": 4, "label": "x4"}, {"k": 17, "label": "x17"}]
