"""OdataSource against a real OData v4 server (odatapy), directly and through a fault-injecting proxy.

The server pages at most 7 rows (its own cap) and evaluates `$filter`, `$orderby`, `$select` and
`$count` itself; the proxy only reshapes what real servers in the field send differently.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.errors import SourceError
from crmctl.connectors.odata_source import OdataSource, odata_filter, odata_literal
from crmctl.connectors.querylog import QueryLog
from crmctl.connectors.sql import Condition, SourceConnector, SourceQueries, open_source
from tests.peers.odata_peer import OdataPeer
from tests.peers.odata_proxy import ODataFaultProxy
from tests.sources.conftest import ACCOUNTS, BEARER, PASSWORD, SERVER_PAGE_SIZE, USER, with_credentials

ALL_KEYS = sorted(a["AccountId"] for a in ACCOUNTS)


async def collect_keys(
    source: OdataSource, log: QueryLog | None = None, batch: int = 5000, **kw: Any
) -> list[list[Any]]:
    return [b async for b in source.keys("Accounts", "AccountId", log=log, batch=batch, **kw)]


async def test_keys_follow_absolute_nextlinks_in_key_order(odata: OdataPeer) -> None:
    source = OdataSource(with_credentials(odata.root), page_size=5)
    assert isinstance(source, SourceConnector) and isinstance(source, SourceQueries)
    log = QueryLog("source")
    try:
        batches = await collect_keys(source, log)
    finally:
        await source.close()
    assert [k for b in batches for k in b] == ALL_KEYS
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3], "maxpagesize=5 honoured (under the server's cap of 7)"
    assert log.requests == 5 and all(r.status == 200 and r.target == "source" for r in log.records)
    assert "$orderby=AccountId" in log.records[0].url and "$skiptoken" in log.records[1].url
    assert all(PASSWORD not in r.url and USER not in r.url for r in log.records)


@pytest.mark.parametrize("style", ["name", "root", "query"])
async def test_relative_nextlinks(odata: OdataPeer, style: str) -> None:
    async with ODataFaultProxy(odata.root, relative=style) as proxy:
        source = OdataSource(with_credentials(proxy.url), page_size=5)
        try:
            keys = [k for b in await collect_keys(source) for k in b]
        finally:
            await source.close()
    assert keys == ALL_KEYS
    assert len(proxy.seen) == 5 and all(s.path_qs.startswith("/odata/Accounts?") for s in proxy.seen)


async def test_trailing_empty_page_ends_the_paging_without_an_empty_batch(odata: OdataPeer) -> None:
    async with ODataFaultProxy(odata.root, trailing_empty=True) as proxy:
        source = OdataSource(with_credentials(proxy.url), page_size=5)
        try:
            batches = await collect_keys(source)
        finally:
            await source.close()
    assert [k for b in batches for k in b] == ALL_KEYS
    assert all(batches), "no empty batch is handed to a check"
    assert "crmctl-trailing-empty" in proxy.seen[-1].path_qs and len(proxy.seen) == 6


async def test_ignored_maxpagesize_still_pages_and_batches_stay_small(odata: OdataPeer) -> None:
    async with ODataFaultProxy(odata.root, strip_prefer=True) as proxy:
        source = OdataSource(with_credentials(proxy.url), page_size=3)
        log = QueryLog("source")
        try:
            batches = await collect_keys(source, log, batch=3)
        finally:
            await source.close()
    assert [k for b in batches for k in b] == ALL_KEYS
    assert all(len(b) <= 3 for b in batches)
    assert log.requests == -(-len(ACCOUNTS) // SERVER_PAGE_SIZE), "the server paged by its own 7, not our 3"
    assert all(s.prefer == "odata.maxpagesize=3" for s in proxy.seen), "asked on every page, as required"


async def test_count_filters_and_records(odata: OdataPeer) -> None:
    source = OdataSource(with_credentials(odata.root))
    log = QueryLog("source")
    try:
        assert await source.count("Accounts", log=log) == len(ACCOUNTS)
        oslo = [a for a in ACCOUNTS if a["City"] == "Oslo"]
        assert await source.count("Accounts", [Condition("City", "eq", "Oslo")], log=log) == len(oslo)
        nulls = sum(a["City"] is None for a in ACCOUNTS)
        assert await source.count("Accounts", [Condition("City", "is_null")]) == nulls
        fallon = [Condition("City", "eq", "O'Fallon"), Condition("Revenue", "not_null")]
        expected = sorted(a["AccountId"] for a in ACCOUNTS if a["City"] == "O'Fallon" and a["Revenue"] is not None)
        assert [k for b in await collect_keys(source, where=fallon) for k in b] == expected
        rows = [r async for b in source.records("Accounts", ["AccountId", "City", "Revenue"], key="AccountId",
                                                where=[Condition("Revenue", "is_null")], batch=2) for r in b]
    finally:
        await source.close()
    assert rows == [{"AccountId": a["AccountId"], "City": a["City"], "Revenue": None}
                    for a in sorted(ACCOUNTS, key=lambda a: a["AccountId"]) if a["Revenue"] is None]
    assert "$count=true" in log.records[0].url and log.requests == 2, "a count is one request"


async def test_capped_count_is_recounted_page_by_page(odata: OdataPeer) -> None:
    """Dynamics CRM stops $count at 5,000 and flags it; a capped figure must never pass as the count."""
    async with ODataFaultProxy(odata.root, cap_count=10) as proxy:
        source = OdataSource(with_credentials(proxy.url), page_size=5)
        try:
            assert await source.count("Accounts") == len(ACCOUNTS)
        finally:
            await source.close()
    assert "$count=true" in proxy.seen[0].path_qs and len(proxy.seen) == 1 + 5


async def test_transient_503_is_retried(odata: OdataPeer) -> None:
    async with ODataFaultProxy(odata.root, fail_first=True) as proxy:
        source = OdataSource(with_credentials(proxy.url), backoff=0.01)
        log = QueryLog("source")
        try:
            assert await source.count("Accounts", log=log) == len(ACCOUNTS)
        finally:
            await source.close()
    assert [r.status for r in log.records] == [503, 200]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"foreign_host": True}, r"points to backend\.internal:8080, not to 127\.0\.0\.1"),
        ({"repeat_first": True}, r"repeats an earlier page"),
        ({"not_json": True}, r"not JSON"),
        ({"no_value": True}, r"no 'value' list"),
    ],
)
async def test_bad_paging_is_an_error_never_a_short_result(
    odata: OdataPeer, fault: dict[str, bool], message: str
) -> None:
    async with ODataFaultProxy(odata.root, **fault) as proxy:
        source = OdataSource(with_credentials(proxy.url), page_size=5)
        try:
            with pytest.raises(SourceError, match=message):
                await collect_keys(source)
        finally:
            await source.close()
    assert not any("backend.internal" in s.path_qs for s in proxy.seen)


async def test_credentials_bearer_wrong_password_and_no_secret_in_errors(odata: OdataPeer) -> None:
    bearer = OdataSource(odata.root, tokens=StaticTokenProvider(BEARER))
    assert await bearer.count("Accounts") == len(ACCOUNTS)
    await bearer.close()

    stale = StaticTokenProvider("an-old-token-that-the-service-refuses")
    refused = OdataSource(odata.root, tokens=stale)
    with pytest.raises(SourceError, match=r"refused crmctl's credentials .*\(401"):
        await refused.count("Accounts")
    await refused.close()
    assert stale.invalidations == 1, "one fresh token was asked for after the 401"

    wrong = "Wr0ng-Pa55word"
    source = OdataSource(with_credentials(odata.root, password=wrong))
    log = QueryLog("source")
    with pytest.raises(SourceError) as caught:
        await source.count("Accounts", log=log)
    await source.close()
    assert wrong not in str(caught.value) and wrong not in repr(source) and wrong not in source.url
    assert log.records[0].status == 401 and wrong not in log.records[0].url


async def test_password_is_never_sent_over_plain_http_to_another_host() -> None:
    source = OdataSource(f"http://{USER}:{PASSWORD}@legacy-crm.corp.example/odata")
    with pytest.raises(SourceError, match="plain http") as caught:
        await source.count("Accounts")
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(source)


async def test_sql_is_refused_with_a_pointer_to_query_intents(odata: OdataPeer) -> None:
    source = open_source("odata+" + with_credentials(odata.root))
    assert isinstance(source, OdataSource)
    with pytest.raises(SourceError, match="cannot run SQL.*count/keys/records"):
        await source.scalar("SELECT COUNT(*) FROM accounts")
    with pytest.raises(SourceError, match="cannot run SQL"):
        [b async for b in source.rows("SELECT 1")]
    await source.close()


async def test_not_found_entity_set_and_bad_names(odata: OdataPeer) -> None:
    source = OdataSource(with_credentials(odata.root))
    try:
        with pytest.raises(SourceError, match=r"the count of 'accounts'.*\(404"):
            await source.count("accounts")  # names are case sensitive
        with pytest.raises(SourceError, match="not a plain OData name"):
            await source.count("Accounts; drop")
    finally:
        await source.close()


async def test_only_get_reaches_the_server(odata: OdataPeer) -> None:
    source = OdataSource(with_credentials(odata.root), page_size=5)
    await collect_keys(source)
    await source.count("Accounts")
    await source.close()
    methods = {line.split(" ", 1)[0] for line in odata.requests()}
    assert methods == {"GET"}


def test_literals_and_filters() -> None:
    assert odata_literal("O'Brien") == "'O''Brien'"
    assert odata_literal(True) == "true" and odata_literal(None) == "null" and odata_literal(12) == "12"
    assert odata_literal(datetime(2026, 11, 28, 21, 30, tzinfo=timezone.utc)) == "2026-11-28T21:30:00Z"
    with pytest.raises(ValueError, match="time zone"):
        odata_literal(datetime(2026, 11, 28))
    where = [Condition("City", "eq", None), Condition("Revenue", "ge", 5), Condition("Name", "not_null")]
    assert odata_filter(where) == "City eq null and Revenue ge 5 and Name ne null"
    with pytest.raises(ValueError, match="needs a value"):
        Condition("Revenue", "gt")


async def test_unreachable_service_and_spent_deadline(odata: OdataPeer) -> None:
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = OdataSource(f"http://127.0.0.1:{port}/odata/", retries=1, backoff=0.01)
    log = QueryLog("source")
    with pytest.raises(SourceError, match=r"Could not reach the OData source for the count of 'Accounts': cannot"):
        await gone.count("Accounts", log=log)
    await gone.close()
    assert [r.status for r in log.records] == [None, None], "one retry, both attempts logged"

    late = OdataSource(with_credentials(odata.root))
    with pytest.raises(SourceError, match="time ran out"):
        await late.count("Accounts", log=QueryLog("source", deadline=time.monotonic() - 1))
    await late.close()
