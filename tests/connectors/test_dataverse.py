"""DataverseClient against a real local HTTP server that plays exact failure sequences."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import pytest
from aiohttp import web

from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.errors import (
    AggregateLimitExceeded,
    AuthError,
    BudgetExhausted,
    DataverseError,
    MalformedResponse,
    NotFoundError,
    ThrottledError,
    TransportError,
)
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.querylog import QueryLog

from .conftest import TOKEN
from .fake_dataverse import API_PATH, Canned, FakeDataverse, odata_error

MakeClient = Callable[..., DataverseClient]
THROTTLE_MSG = "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
WHOAMI = {"BusinessUnitId": "b", "UserId": "u", "OrganizationId": "o"}


def rows(*names: str) -> dict:
    return {"value": [{"name": n} for n in names]}


class RotatingTokens:
    """A provider whose token changes on invalidate(), like MSAL fetching a fresh one."""

    def __init__(self) -> None:
        self.generation = 1
        self.asked = 0
        self.invalidations = 0

    async def token(self) -> str:
        self.asked += 1
        return f"token-{self.generation}"

    def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


# -- headers, encoding, read-only ---------------------------------------------------------


async def test_headers_on_every_request(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(json=WHOAMI))
    client = make_client()
    assert (await client.whoami())["UserId"] == "u"
    await client.whoami()
    first, second = fake.seen("WhoAmI")
    for seen in (first, second):
        assert seen.method == "GET"
        h = seen.headers
        assert h["Accept"] == "application/json"
        assert h["OData-MaxVersion"] == "4.0" and h["OData-Version"] == "4.0"
        assert h["If-None-Match"] == "null"
        assert h["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["x-ms-client-request-id"] != second.headers["x-ms-client-request-id"]


async def test_token_is_asked_for_every_request(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(json=WHOAMI))
    tokens = RotatingTokens()
    client = make_client(tokens=tokens)
    for _ in range(3):
        await client.whoami()
    assert tokens.asked == 3


async def test_query_encoding(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", Canned(json=rows("a")))
    client = make_client()
    got = [page async for page in client.pages(
        "accounts", select=["name", "accountid"], filter="name eq 'O''Bryan & Sons+1' and revenue gt 5",
        orderby="accountid",
    )]
    assert got == [[{"name": "a"}]]
    (seen,) = fake.seen("accounts")
    assert seen.raw_path == (
        API_PATH + "accounts?$select=name,accountid"
        "&$filter=name%20eq%20'O''Bryan%20%26%20Sons%2B1'%20and%20revenue%20gt%205"
        "&$orderby=accountid"
    )
    assert seen.headers["Prefer"] == "odata.maxpagesize=5000"


async def test_relative_path_with_query_is_normalised(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", Canned(json=rows()))
    client = make_client()
    await client.get_json("accounts?$select=name&$top=50", [("$filter", "statecode eq 0")])
    assert fake.seen("accounts")[0].raw_path == API_PATH + "accounts?$select=name&$top=50&$filter=statecode%20eq%200"


async def test_there_is_no_way_to_send_anything_but_get(fake: FakeDataverse, make_client: MakeClient) -> None:
    client = make_client()
    for name in ("post", "put", "patch", "delete", "request", "send", "execute", "create", "update"):
        assert not hasattr(client, name)
    for method in ("POST", "PATCH", "DELETE", "PUT", "get"):
        with pytest.raises(AssertionError, match="read-only"):
            await client._request(method, fake.api_url + "accounts", prefer=(), log=None, what="x")
    assert fake.log == []  # nothing reached the server


async def test_foreign_host_gets_no_token(fake: FakeDataverse, make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(ValueError):
        await client.get_json("https://evil.example/api/data/v9.2/WhoAmI")
    assert fake.log == []


async def test_url_over_32k_is_refused_before_sending(fake: FakeDataverse, make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(DataverseError, match="32,768"):
        await client.fetch_aggregate("accounts", "<fetch>" + "x" * 33000 + "</fetch>")
    assert fake.log == []


# -- paging --------------------------------------------------------------------------------


async def test_paging_follows_next_link_verbatim(fake: FakeDataverse, make_client: MakeClient) -> None:
    cookie = (
        "%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221%2522%253e"
        "%253caccountid%2520last%253d%2522%257bD5026A4D%257d%2522%2520%252f%253e%253c%252fcookie%253e"
        "%22%20istracking=%22False%22%20/%3E"
    )
    link2 = f"{API_PATH}accounts?$select=name&$skiptoken={cookie}"
    link3 = f"{API_PATH}accounts?$select=name&$skiptoken=page3%2B%20x"

    def handler(request: web.Request) -> Canned:
        if "$skiptoken=page3" in request.raw_path:
            return Canned(json=rows("e"))
        if "$skiptoken" in request.raw_path:
            return Canned(json={**rows("c", "d"), "@odata.nextLink": fake.origin + link3})
        return Canned(json={**rows("a", "b"), "@odata.nextLink": fake.origin + link2})

    fake.handle("accounts", handler)
    client = make_client()
    log = QueryLog("dynamics")
    pages = [p async for p in client.pages("accounts", select=["name"], page_size=2, log=log)]
    assert [[r["name"] for r in p] for p in pages] == [["a", "b"], ["c", "d"], ["e"]]
    seen = fake.seen("accounts")
    assert [s.raw_path for s in seen] == [API_PATH + "accounts?$select=name", link2, link3]
    assert {s.headers["Prefer"] for s in seen} == {"odata.maxpagesize=2"}
    assert all("$skip=" not in s.raw_path and "$top" not in s.raw_path for s in seen)
    assert [r.status for r in log.records] == [200, 200, 200]
    assert "$skiptoken=%3Ccookie" in log.records[1].url  # the log shows which page was read


async def test_paging_rejects_bad_next_links(fake: FakeDataverse, make_client: MakeClient) -> None:
    client = make_client()
    fake.script("accounts", Canned(json={**rows("a"), "@odata.nextLink": "https://elsewhere.example/api/data/v9.2/accounts?x=1"}))
    with pytest.raises(MalformedResponse, match="another host"):
        [p async for p in client.pages("accounts", select="name")]
    fake.script("contacts", Canned(json={**rows("a"), "@odata.nextLink": fake.api_url + "contacts?$select=name"}))
    with pytest.raises(MalformedResponse, match="repeats"):
        [p async for p in client.pages("contacts", select="name")]
    with pytest.raises(ValueError):
        [p async for p in client.pages("contacts", select="name", page_size=5001)]


async def test_missing_value_is_never_an_empty_page(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", Canned(json={"@odata.context": "x"}))
    client = make_client()
    with pytest.raises(MalformedResponse, match="'value'"):
        [p async for p in client.pages("accounts", select="name")]


async def test_broken_json_is_malformed(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", Canned(body=b'{"value": [{"name": "a"}, '))
    fake.script("contacts", Canned(body=b"<html>proxy error</html>", headers={"Content-Type": "text/html"}))
    client = make_client()
    with pytest.raises(MalformedResponse, match="not JSON"):
        await client.aggregate("accounts", "aggregate($count as n)")
    with pytest.raises(MalformedResponse, match="text/html"):
        await client.get_json("contacts")
    assert len(fake.log) == 2  # a malformed 200 is not retried


# -- throttling ------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_for_every_caller(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script(
        "accounts",
        odata_error(429, "0x80072322", THROTTLE_MSG, **{"Retry-After": "1"}),
        Canned(json=rows("a")),
    )
    fake.script("contacts", Canned(json=rows("c")))
    client = make_client()
    log = QueryLog("dynamics")

    async def other_check() -> None:
        await asyncio.sleep(0.2)  # starts while the back-off is active
        await client.get_json("contacts")

    result, _ = await asyncio.gather(client.aggregate("accounts", "aggregate($count as n)", log=log), other_check())
    assert result == [{"name": "a"}]
    throttled_at = fake.log[0].at
    assert fake.log[0].resource == "accounts"
    later = fake.log[1:]
    assert len(later) == 2
    assert all(s.at >= throttled_at + 1.0 for s in later), [s.at - throttled_at for s in later]
    assert [r.status for r in log.records] == [429, 200]
    assert log.records[0].error == "throttled, retry after 1 s"
    assert client.limiter.throttled == 1


async def test_429_past_the_deadline_fails_at_once(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", odata_error(429, "0x80072322", THROTTLE_MSG, **{"Retry-After": "120"}))
    fake.script("contacts", Canned(json=rows("c")))
    client = make_client()
    t0 = time.monotonic()
    with pytest.raises(ThrottledError, match=r"wait 120 s .* \(429 0x80072322\), which is past") as info:
        await client.get_json("accounts", log=QueryLog("dynamics", deadline=t0 + 10))
    assert time.monotonic() - t0 < 1.0
    assert info.value.retry_after == 120
    # and the back-off still applies to the whole target: another check is refused at once too
    with pytest.raises(BudgetExhausted, match="back off"):
        await client.get_json("contacts", log=QueryLog("dynamics", deadline=time.monotonic() + 10))
    assert len(fake.log) == 1


async def test_429_until_retries_run_out(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", odata_error(429, "0x80072322", THROTTLE_MSG, **{"Retry-After": "0"}))
    client = make_client(retries=2)
    with pytest.raises(ThrottledError, match="all 3 attempts were refused"):
        await client.get_json("accounts")
    assert len(fake.log) == 3


async def test_429_without_retry_after_backs_off_exponentially(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", Canned(429), Canned(429), Canned(json=rows("a")))
    client = make_client(backoff_cap=0.2)  # 2**n seconds, capped for the test
    await client.get_json("accounts")
    a, b, c = fake.log
    assert b.at - a.at >= 0.2 and c.at - b.at >= 0.2


# -- transient failures ----------------------------------------------------------------------


async def test_503_then_success(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", odata_error(503, "", "Service unavailable"), Canned(502), Canned(json=WHOAMI))
    client = make_client()
    log = QueryLog("dynamics")
    assert (await client.whoami(log=log))["UserId"] == "u"
    assert [r.status for r in log.records] == [503, 502, 200]


async def test_503_until_retries_run_out(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(503))
    client = make_client(retries=1)
    with pytest.raises(DataverseError, match=r"unavailable for WhoAmI \(503\) on 2 attempts"):
        await client.whoami()
    assert len(fake.log) == 2


async def test_connection_reset_then_success(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(reset=True), Canned(json=WHOAMI))
    client = make_client()
    log = QueryLog("dynamics")
    await client.whoami(log=log)
    assert len(fake.log) == 2
    assert log.records[0].status is None and log.records[0].error
    assert log.records[1].status == 200


async def test_resets_until_retries_run_out(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(reset=True))
    client = make_client(retries=2)
    with pytest.raises(TransportError, match="gave up after 3 attempts"):
        await client.whoami()


async def test_timeout_is_a_transport_error(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(json=WHOAMI, delay=0.5))
    client = make_client(timeout=0.15, retries=1)
    with pytest.raises(TransportError, match="did not answer"):
        await client.whoami()
    assert len(fake.log) == 2


async def test_unreachable_host() -> None:
    limiter = TargetLimiter(2, 100)
    async with DataverseClient("http://127.0.0.1:9/api/data/v9.2/", RotatingTokens(), limiter, retries=1,
                               backoff_base=0.01) as client:
        with pytest.raises(TransportError, match="cannot connect to 127.0.0.1"):
            await client.whoami()


# -- auth ----------------------------------------------------------------------------------


async def test_401_then_fresh_token(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}), Canned(json=WHOAMI))
    tokens = RotatingTokens()
    client = make_client(tokens=tokens)
    await client.whoami()
    assert tokens.invalidations == 1
    assert [s.headers["Authorization"] for s in fake.log] == ["Bearer token-1", "Bearer token-2"]


async def test_401_twice_is_an_auth_error(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", odata_error(401, "ExpiredAuthTicket", ""))
    client = make_client(tokens=RotatingTokens())
    with pytest.raises(AuthError, match=r"refused the token \(401 ExpiredAuthTicket\), also after a fresh one"):
        await client.whoami()
    assert len(fake.log) == 2


async def test_403_not_a_member(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", odata_error(403, "0x80072560", "The user is not a member of the organization."))
    client = make_client()
    with pytest.raises(AuthError, match=r"not a member of the organization \(403 0x80072560\)") as info:
        await client.whoami()
    assert TOKEN not in str(info.value)
    assert len(fake.log) == 1


# -- other errors and results ------------------------------------------------------------


async def test_odata_error_becomes_one_sentence(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", odata_error(400, "0x0", "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'."))
    client = make_client()
    with pytest.raises(DataverseError) as info:
        [p async for p in client.pages("accounts", select="Name")]
    assert str(info.value) == (
        "Dynamics rejected the query on 'accounts': Could not find a property named 'Name' on type "
        "'Microsoft.Dynamics.CRM.account' (400 0x0)."
    )
    assert (info.value.status, info.value.code) == (400, "0x0")


async def test_unknown_entity_set(fake: FakeDataverse, make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(NotFoundError, match="Resource not found for the segment 'Account'"):
        await client.get_json("Account")


async def test_aggregate_limit(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("asyncoperations", odata_error(400, "0x8004E023", "AggregateQueryRecordLimit exceeded. Cannot perform this operation."))
    client = make_client()
    with pytest.raises(AggregateLimitExceeded, match="50,000"):
        await client.aggregate("asyncoperations", "groupby((statuscode),aggregate($count as count))")
    assert "$apply=groupby((statuscode),aggregate($count%20as%20count))" in fake.log[0].raw_path


async def test_aggregate_and_fetch(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("accounts", Canned(json={"value": [{"statuscode": 1, "count": 8}, {"statuscode": 2, "count": 1}]}))
    client = make_client()
    assert await client.aggregate("accounts", "groupby((statuscode),aggregate($count as count))") == [
        {"statuscode": 1, "count": 8},
        {"statuscode": 2, "count": 1},
    ]
    xml = "<fetch aggregate='true'><entity name='account'><attribute name='accountid' alias='n' aggregate='count'/></entity></fetch>"
    await client.fetch_aggregate("accounts", xml)
    assert fake.log[1].raw_path.startswith(API_PATH + "accounts?fetchXml=%3Cfetch%20aggregate='true'%3E")


async def test_count_capped(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script(
        "accounts",
        Canned(json={"@odata.count": 5000, "@Microsoft.Dynamics.CRM.totalrecordcount": 5000,
                     "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded": True, "value": [{}]}),
        Canned(json={"@odata.count": 58, "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded": False, "value": [{}]}),
        Canned(json={"value": []}),
    )
    client = make_client()
    assert await client.count_capped("accounts") == (5000, True)
    assert await client.count_capped("accounts", "statecode eq 0", select="accountid") == (58, False)
    with pytest.raises(MalformedResponse, match="@odata.count"):
        await client.count_capped("accounts")
    first = fake.log[0]
    assert "$count=true" in first.raw_path
    assert "odata.maxpagesize=1" in first.headers["Prefer"]
    assert "totalrecordcountlimitexceeded" in first.headers["Prefer"]
    assert fake.log[1].raw_path == API_PATH + "accounts?$select=accountid&$filter=statecode%20eq%200&$count=true"


async def test_total_record_count(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("RetrieveTotalRecordCount", Canned(json={"EntityRecordCountCollection": {
        "Count": 2, "IsReadOnly": False, "Keys": ["account", "contact"], "Values": [19, 3]}}))
    client = make_client()
    assert await client.total_record_count(["account", "contact"]) == {"account": 19, "contact": 3}
    assert fake.log[0].raw_path == (
        API_PATH + "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=%5B%22account%22,%22contact%22%5D"
    )


async def test_entity_set_for_is_cached(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("EntityDefinitions", Canned(json={"value": [{"LogicalName": "opportunity", "EntitySetName": "opportunities"}]}))
    client = make_client()
    assert await client.entity_set_for("opportunity") == "opportunities"
    assert await client.entity_set_for("opportunity") == "opportunities"
    assert len(fake.log) == 1
    assert "$filter=LogicalName%20eq%20'opportunity'" in fake.log[0].raw_path
    fake.script("EntityDefinitions", Canned(json={"value": []}))
    with pytest.raises(NotFoundError, match="no table named 'nosuch'"):
        await client.entity_set_for("nosuch")


async def test_log_records_every_attempt(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(503), Canned(json=WHOAMI))
    client = make_client()
    log = QueryLog("dynamics")
    await client.whoami(log=log)
    assert log.requests == 2
    for rec in log.records:
        assert rec.method == "GET" and rec.target == "dynamics"
        assert rec.url == fake.api_url + "WhoAmI"
        assert rec.duration_ms > 0 and rec.started.endswith("Z")
        assert TOKEN not in rec.url
    assert log.records[1].bytes == len(b'{"BusinessUnitId": "b", "UserId": "u", "OrganizationId": "o"}')


async def test_budget_exhaustion_surfaces_before_sending(fake: FakeDataverse, make_client: MakeClient) -> None:
    fake.script("WhoAmI", Canned(json=WHOAMI))
    client = make_client(limiter=TargetLimiter(2, 1, 300.0))
    await client.whoami()
    with pytest.raises(BudgetExhausted):
        await client.whoami(log=QueryLog("dynamics", deadline=time.monotonic() + 5))
    assert len(fake.log) == 1
