"""The query intents (count, keys, records) give the same answers on a SQL source and an OData source.

Both hold the same accounts (tests/sources/conftest.py); a check written against the intents
therefore cannot tell which kind of source it reads, which is the point of the intents.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from crmctl.config import load_config
from crmctl.connectors.errors import SourceError
from crmctl.connectors.odata_source import OdataSource
from crmctl.connectors.querylog import QueryLog
from crmctl.connectors.sql import Condition, SourceQueries, SqlSource, quote_name, where_sql
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
    assert log.records[0].url == 'SELECT COUNT(*) FROM "Accounts" WHERE "City" = ?'
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
