"""Counting: $count=true with its 5000 cap, /$count, and the stale RetrieveTotalRecordCount."""

from __future__ import annotations

from datetime import datetime, timezone

import aiohttp

from crmctl.emulator.server import Emulator
from crmctl.emulator.storage import EmulatorData
from tests.emulator.emu_helpers import LEADS, STALE_ACCOUNT_COUNT, World, get_json

ANNOTATIONS = (
    'odata.include-annotations="Microsoft.Dynamics.CRM.totalrecordcount,'
    'Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"'
)
TOTAL = "@Microsoft.Dynamics.CRM.totalrecordcount"
EXCEEDED = "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"


async def test_count_under_the_cap_is_exact(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    want = sum(1 for a in world.accounts if a["statuscode"] == 1)
    status, hdrs, body = await get_json(
        http,
        f"{emu.api_url}accounts?$select=accountid&$filter=statuscode eq 1&$count=true",
        headers={"Prefer": f"odata.maxpagesize=3,{ANNOTATIONS}"},
    )
    assert status == 200
    assert body["@odata.count"] == want and body[TOTAL] == want and body[EXCEEDED] is False
    assert len(body["value"]) == 3  # the count is independent of the page size
    keys = list(body)
    assert keys.index("@odata.count") < keys.index("value")
    assert hdrs["Preference-Applied"] == f"odata.maxpagesize=3,{ANNOTATIONS}"


async def test_count_over_5000_is_capped_with_limit_exceeded(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, _, body = await get_json(
        http, f"{emu.api_url}leads?$select=leadid&$count=true", headers={"Prefer": ANNOTATIONS}
    )
    assert body["@odata.count"] == 5000 and body[TOTAL] == 5000 and body[EXCEEDED] is True
    _, _, plain = await get_json(http, f"{emu.api_url}leads?$select=leadid&$count=true&$top=1")
    assert plain["@odata.count"] == 5000 and TOTAL not in plain and EXCEEDED not in plain


async def test_without_count_true_the_total_is_minus_one(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, _, body = await get_json(
        http,
        f"{emu.api_url}accounts?$select=accountid&$top=1",
        headers={"Prefer": 'odata.include-annotations="*"'},
    )
    assert body[TOTAL] == -1 and body[EXCEEDED] is False and "@odata.count" not in body


async def test_dollar_count_segment_is_plain_text_and_capped(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    async with http.get(f"{emu.api_url}accounts/$count") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        assert await resp.text() == str(len(world.accounts))
    async with http.get(f"{emu.api_url}accounts/$count?$filter=donotemail eq true") as resp:
        assert await resp.text() == str(sum(1 for a in world.accounts if a["donotemail"]))
    async with http.get(f"{emu.api_url}leads/$count") as resp:
        assert await resp.text() == "5000" and LEADS > 5000


async def test_retrieve_total_record_count_is_a_stale_snapshot(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    url = f'{emu.api_url}RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account","lead"]'
    status, _, body = await get_json(http, url)
    assert status == 200
    assert body["@odata.context"].endswith(
        "$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse"
    )
    coll = body["EntityRecordCountCollection"]
    assert coll == {
        "Count": 2,
        "IsReadOnly": False,
        "Keys": ["account", "lead"],
        "Values": [STALE_ACCOUNT_COUNT, LEADS],
    }
    assert len(world.accounts) != STALE_ACCOUNT_COUNT  # deliberately stale
    status, _, inline = await get_json(
        http, f"{emu.api_url}RetrieveTotalRecordCount(EntityNames=['account'])"
    )
    assert status == 200 and inline["EntityRecordCountCollection"]["Values"] == [
        STALE_ACCOUNT_COUNT
    ]


async def test_snapshot_without_explicit_value_is_frozen_at_start(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    with EmulatorData(world.path) as data:
        data.insert_rows("contact", [{"fullname": "late arrival"}])
        data.set_count_snapshot("lead", 1, datetime(2024, 1, 1, tzinfo=timezone.utc))
    _, _, body = await get_json(
        http, f'{emu.api_url}RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["contact","lead"]'
    )
    assert body["EntityRecordCountCollection"]["Values"] == [len(world.contacts), 1]
    async with http.get(f"{emu.api_url}contacts/$count") as resp:
        assert await resp.text() == str(len(world.contacts) + 1)


async def test_unknown_entity_fails_the_whole_call(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    status, _, body = await get_json(
        http, f'{emu.api_url}RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account","nope"]'
    )
    assert status == 400 and "'nope'" in body["error"]["message"]
