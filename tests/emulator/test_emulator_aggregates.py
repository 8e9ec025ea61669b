"""$apply and FetchXML aggregates, and the 50,000-record aggregate limit (0x8004E023)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote

import aiohttp
import pytest

from crmctl.emulator.server import Emulator
from tests.emulator.emu_helpers import LEADS, World, get_json, headers

LIMIT_BODY = {
    "error": {
        "code": "0x8004e023",
        "message": "AggregateQueryRecordLimit exceeded. Cannot perform this operation.",
    }
}


def fetch_url(emu: Emulator, entity_set: str, xml: str) -> str:
    return f"{emu.api_url}{entity_set}?fetchXml={quote(xml)}"


async def test_groupby_count(emu: Emulator, http: aiohttp.ClientSession, world: World) -> None:
    url = f"{emu.api_url}asyncoperations?$filter=operationtype eq 79&$apply=groupby((statuscode),aggregate($count as count))"
    status, _, body = await get_json(http, url)
    assert status == 200
    assert body["@odata.context"] == f"{emu.api_url}$metadata#asyncoperations"
    want = Counter(j["statuscode"] for j in world.jobs if j["operationtype"] == 79)
    assert body["value"] == [{"statuscode": s, "count": n} for s, n in sorted(want.items())]


async def test_groupby_two_keys_and_formatted_values(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    url = f"{emu.api_url}accounts?$apply=groupby((statecode,statuscode),aggregate($count as n))"
    _, _, body = await get_json(http, url, headers={"Prefer": 'odata.include-annotations="*"'})
    first = body["value"][0]
    assert list(first) == [
        "statecode",
        "statuscode",
        "n@OData.Community.Display.V1.FormattedValue",
        "n",
    ]
    assert sum(r["n"] for r in body["value"]) == len(world.accounts)
    _, _, body = await get_json(
        http,
        f"{emu.api_url}leads?$apply=filter(statuscode ne 7)/aggregate($count as n)",
        headers={"Prefer": 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'},
    )
    assert body["value"] == [{"n@OData.Community.Display.V1.FormattedValue": "6,000", "n": 6000}]


async def test_aggregate_functions(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    url = (
        f"{emu.api_url}accounts?$apply=aggregate(revenue with sum as total,revenue with min as lo,"
        "revenue with max as hi,numberofemployees with average as avg,createdon with max as last,$count as n)"
    )
    status, _, body = await get_json(http, url)
    assert status == 200, body
    revenues = [a["revenue"] for a in world.accounts if a["revenue"] is not None]
    row = body["value"][0]
    assert row["total"] == pytest.approx(sum(revenues))
    assert row["lo"] == min(revenues) and row["hi"] == max(revenues)
    assert row["avg"] == pytest.approx(
        sum(a["numberofemployees"] for a in world.accounts) / len(world.accounts)
    )
    assert row["last"] == max(a["createdon"] for a in world.accounts)
    assert row["n"] == len(world.accounts)


async def test_filter_transformation_and_filter_option_combine(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    url = (
        f"{emu.api_url}contacts?$filter=emailaddress1 ne null"
        "&$apply=filter(_parentcustomerid_value eq null)/aggregate($count as n)"
    )
    _, _, body = await get_json(http, url)
    want = sum(1 for c in world.contacts if c["emailaddress1"] and c["parentcustomerid"] is None)
    assert body["value"] == [{"n": want}]


async def test_orderby_on_an_aggregate_is_refused(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    url = (
        f"{emu.api_url}accounts?$apply=groupby((statuscode),aggregate($count as n))&$orderby=n desc"
    )
    status, _, body = await get_json(http, url)
    assert status == 400
    assert (
        body["error"]["message"] == "The query node SingleValueOpenPropertyAccess is not supported"
    )


async def test_apply_errors(emu: Emulator, http: aiohttp.ClientSession) -> None:
    for apply, fragment in [
        ("groupby((createdon),aggregate($count as n))", "date and time"),
        ("aggregate(name with sum as s)", "cannot be applied"),
        ("aggregate(Revenue with sum as s)", "Could not find a property named 'Revenue'"),
        ("topcount(5,revenue)", "not a supported transformation"),
    ]:
        status, _, body = await get_json(http, f"{emu.api_url}accounts?$apply={quote(apply)}")
        assert status == 400 and fragment in body["error"]["message"], (apply, body)


async def test_apply_over_the_aggregate_limit_is_0x8004e023(world: World) -> None:
    async with (
        Emulator(world.path, aggregate_limit=5999) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        status, _, body = await get_json(
            http, f"{emu.api_url}leads?$apply=groupby((statuscode),aggregate($count as n))"
        )
        assert status == 400 and body == LIMIT_BODY
        # Filtering the input under the limit is the documented workaround.
        status, _, body = await get_json(
            http,
            f"{emu.api_url}leads?$apply=filter(statuscode eq 1)/groupby((statuscode),aggregate($count as n))",
        )
        assert status == 200 and body["value"] == [{"statuscode": 1, "n": LEADS // 3}]
    async with (
        Emulator(world.path, aggregate_limit=LEADS) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        status, _, _ = await get_json(http, f"{emu.api_url}leads?$apply=aggregate($count as n)")
        assert status == 200  # exactly at the limit is allowed


def test_default_aggregate_limit_is_50000() -> None:
    from crmctl.emulator import server

    assert server.AGGREGATE_LIMIT == 50_000


COUNT_FETCH = (
    "<fetch aggregate='true'><entity name='account'>"
    "<attribute name='accountid' aggregate='count' alias='n'/>{filter}</entity></fetch>"
)


@pytest.mark.parametrize(
    ("filter_xml", "pred"),
    [
        ("", lambda a: True),
        (
            "<filter><condition attribute='statuscode' operator='eq' value='2'/></filter>",
            lambda a: a["statuscode"] == 2,
        ),
        (
            "<filter><condition attribute='statuscode' operator='ne' value='2'/></filter>",
            lambda a: a["statuscode"] != 2,
        ),
        (
            "<filter><condition attribute='numberofemployees' operator='gt' value='90'/>"
            "<condition attribute='numberofemployees' operator='le' value='120'/></filter>",
            lambda a: 90 < a["numberofemployees"] <= 120,
        ),
        (
            "<filter><condition attribute='numberofemployees' operator='ge' value='90'/>"
            "<condition attribute='numberofemployees' operator='lt' value='93'/></filter>",
            lambda a: 90 <= a["numberofemployees"] < 93,
        ),
        (
            "<filter><condition attribute='primarycontactid' operator='null'/></filter>",
            lambda a: a["primarycontactid"] is None,
        ),
        (
            "<filter><condition attribute='revenue' operator='not-null'/></filter>",
            lambda a: a["revenue"] is not None,
        ),
        (
            "<filter><condition attribute='name' operator='like' value='account 1%'/></filter>",
            lambda a: bool(a["name"]) and a["name"].lower().startswith("account 1"),
        ),
        (
            "<filter type='or'><condition attribute='statuscode' operator='eq' value='2'/>"
            "<filter type='and'><condition attribute='donotemail' operator='eq' value='1'/>"
            "<condition attribute='createdon' operator='ge' value='2024-06-01T00:00:00Z'/></filter></filter>",
            lambda a: (
                a["statuscode"] == 2
                or (a["donotemail"] and a["createdon"] >= "2024-06-01T00:00:00Z")
            ),
        ),
    ],
)
async def test_fetchxml_aggregate_count(
    emu: Emulator, http: aiohttp.ClientSession, world: World, filter_xml: str, pred: object
) -> None:
    status, _, body = await get_json(
        http, fetch_url(emu, "accounts", COUNT_FETCH.format(filter=filter_xml))
    )
    assert status == 200, body
    assert body["value"] == [{"n": sum(1 for a in world.accounts if pred(a))}]  # type: ignore[operator]


async def test_fetchxml_aggregate_limit_and_aggregatelimit_attribute(world: World) -> None:
    xml = (
        "<fetch aggregate='true'{extra}><entity name='lead'>"
        "<attribute name='leadid' aggregate='count' alias='n'/></entity></fetch>"
    )
    async with (
        Emulator(world.path, aggregate_limit=5000) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        status, _, body = await get_json(http, fetch_url(emu, "leads", xml.format(extra="")))
        assert status == 400 and body == LIMIT_BODY
    async with Emulator(world.path) as emu, aiohttp.ClientSession(headers=headers(emu)) as http:
        status, _, body = await get_json(http, fetch_url(emu, "leads", xml.format(extra="")))
        assert status == 200 and body["value"] == [{"n": LEADS}]
        status, _, body = await get_json(
            http, fetch_url(emu, "leads", xml.format(extra=" aggregatelimit='10'"))
        )
        assert status == 400 and body == LIMIT_BODY


async def test_fetchxml_entity_must_match_entity_set(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    status, _, body = await get_json(
        http, fetch_url(emu, "contacts", COUNT_FETCH.format(filter=""))
    )
    assert status == 400 and "does not match the entity set 'contacts'" in body["error"]["message"]


async def test_fetchxml_errors(emu: Emulator, http: aiohttp.ClientSession) -> None:
    bad_attr = COUNT_FETCH.format(
        filter="<filter><condition attribute='nope' operator='eq' value='1'/></filter>"
    )
    status, _, body = await get_json(http, fetch_url(emu, "accounts", bad_attr))
    assert status == 400 and body["error"] == {
        "code": "0x80041103",
        "message": "'account' entity doesn't contain attribute with Name = 'nope' and NameMapping = 'Logical'.",
    }
    status, _, body = await get_json(
        http, fetch_url(emu, "accounts", "<fetch><entity name='account'>")
    )
    assert status == 400 and "not well formed" in body["error"]["message"]
    bad_value = COUNT_FETCH.format(
        filter="<filter><condition attribute='statuscode' operator='eq' value='x'/></filter>"
    )
    status, _, body = await get_json(http, fetch_url(emu, "accounts", bad_value))
    assert status == 400 and "System.Int32" in body["error"]["message"]


async def test_fetchxml_omits_nulls_but_odata_returns_them(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    no_contact = next(a for a in world.accounts if a["primarycontactid"] is None)
    xml = (
        "<fetch><entity name='account'><attribute name='name'/><attribute name='primarycontactid'/>"
        f"<filter><condition attribute='accountid' operator='eq' value='{no_contact['accountid']}'/></filter>"
        "</entity></fetch>"
    )
    _, _, body = await get_json(http, fetch_url(emu, "accounts", xml))
    assert "_primarycontactid_value" not in body["value"][0]
    _, _, body = await get_json(
        http,
        f"{emu.api_url}accounts?$select=name,_primarycontactid_value&$filter=accountid eq {no_contact['accountid']}",
    )
    assert body["value"][0]["_primarycontactid_value"] is None


async def test_fetchxml_groupby(emu: Emulator, http: aiohttp.ClientSession, world: World) -> None:
    xml = (
        "<fetch aggregate='true'><entity name='asyncoperation'>"
        "<attribute name='statuscode' groupby='true' alias='status'/>"
        "<attribute name='asyncoperationid' aggregate='count' alias='n'/></entity></fetch>"
    )
    _, _, body = await get_json(http, fetch_url(emu, "asyncoperations", xml))
    want = Counter(j["statuscode"] for j in world.jobs)
    assert body["value"] == [{"status": s, "n": n} for s, n in sorted(want.items())]
