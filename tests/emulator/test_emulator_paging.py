"""Paging: maxpagesize, the 5000 cap, Dataverse-shaped nextLinks, keyset order, $top and $skip."""

from __future__ import annotations

import random
import re
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import aiohttp

from crmctl.emulator.server import Emulator
from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef
from tests.emulator.emu_helpers import LEADS, World, get_json, headers


async def page_all(
    http: aiohttp.ClientSession, url: str, size: int | None
) -> tuple[list[dict], list[str]]:
    """Follows @odata.nextLink exactly as given; returns all rows and the links followed."""
    rows: list[dict] = []
    links: list[str] = []
    extra = {"Prefer": f"odata.maxpagesize={size}"} if size else {}
    next_url: str | None = url
    while next_url:
        status, _, body = await get_json(http, next_url, headers=extra)
        assert status == 200, body
        rows.extend(body["value"])
        next_url = body.get("@odata.nextLink")
        if next_url:
            links.append(next_url)
    return rows, links


async def test_maxpagesize_pages_every_row_once_with_preference_applied(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    status, hdrs, body = await get_json(
        http, f"{emu.api_url}accounts?$select=name", headers={"Prefer": "odata.maxpagesize=7"}
    )
    assert status == 200 and len(body["value"]) == 7
    assert hdrs["Preference-Applied"] == "odata.maxpagesize=7"
    assert list(body)[-1] == "@odata.nextLink"  # documented position: end of the body
    rows, links = await page_all(http, f"{emu.api_url}accounts?$select=name", 7)
    ids = [r["accountid"] for r in rows]
    assert len(ids) == len(world.accounts) == len(set(ids))
    assert ids == sorted(a["accountid"] for a in world.accounts)  # default order: primary key
    assert len(links) == 60 // 7


async def test_next_link_has_the_documented_cookie_shape(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, _, body = await get_json(
        http, f"{emu.api_url}contacts?$select=fullname", headers={"Prefer": "odata.maxpagesize=2"}
    )
    link = body["@odata.nextLink"]
    assert link.startswith(f"{emu.api_url}contacts?$select=fullname&$skiptoken=")
    token = link.split("$skiptoken=", 1)[1]
    assert re.fullmatch(
        r"%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221%2522%253e"
        r"%253ccontactid%2520last%253d%2522%257b[0-9A-F-]{36}%257d%2522%2520first%253d%2522%257b"
        r"[0-9A-F-]{36}%257d%2522%2520%252f%253e%253c%252fcookie%253e%22%20istracking=%22False%22%20/%3E",
        token,
    ), token
    decoded = unquote(token)
    assert decoded.startswith('<cookie pagenumber="2" pagingcookie="%3ccookie%20page%3d%221%22%3e')
    last = body["value"][-1]["contactid"].upper()
    assert f"last%3d%22%7b{last}%7d%22" in decoded


async def test_default_page_size_and_cap_are_5000(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    status, hdrs, body = await get_json(http, f"{emu.api_url}leads?$select=subject")
    assert status == 200 and len(body["value"]) == 5000 and "@odata.nextLink" in body
    assert "Preference-Applied" not in hdrs
    status, hdrs, body = await get_json(
        http, f"{emu.api_url}leads?$select=subject", headers={"Prefer": "odata.maxpagesize=20000"}
    )
    assert len(body["value"]) == 5000
    assert hdrs["Preference-Applied"] == "odata.maxpagesize=5000"
    rows, links = await page_all(http, f"{emu.api_url}leads?$select=leadid", 20000)
    assert len(rows) == LEADS and len(links) == 1


async def test_top_limits_results_without_link_and_is_ignored_with_maxpagesize(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, _, body = await get_json(http, f"{emu.api_url}accounts?$select=name&$top=5")
    assert len(body["value"]) == 5 and "@odata.nextLink" not in body
    _, _, body = await get_json(
        http,
        f"{emu.api_url}accounts?$select=name&$top=5",
        headers={"Prefer": "odata.maxpagesize=10"},
    )
    assert len(body["value"]) == 10 and "@odata.nextLink" in body
    _, _, body = await get_json(http, f"{emu.api_url}leads?$select=leadid&$top=5500")
    assert len(body["value"]) == 5000
    rows, _ = await page_all(http, f"{emu.api_url}leads?$select=leadid&$top=5500", None)
    assert len(rows) == 5500


async def test_skip_is_refused(emu: Emulator, http: aiohttp.ClientSession) -> None:
    status, _, body = await get_json(http, f"{emu.api_url}accounts?$top=5&$skip=5")
    assert status == 400
    assert body == {
        "error": {"code": "0x80060888", "message": "The query parameter $skip is not supported"}
    }


async def test_orderby_multiple_keys_with_nulls_pages_in_exact_order(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    url = f"{emu.api_url}accounts?$select=statuscode,revenue,name&$orderby=statuscode desc,revenue asc"
    rows, links = await page_all(http, url, 4)
    assert links and len(rows) == len(world.accounts)

    def key(a: dict) -> tuple:
        rev = a["revenue"]
        return (-a["statuscode"], rev is not None, rev if rev is not None else 0, a["accountid"])

    want = [a["accountid"] for a in sorted(world.accounts, key=key)]
    assert [r["accountid"] for r in rows] == want


async def test_orderby_case_insensitive_strings_like_dataverse(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    rows, _ = await page_all(http, f"{emu.api_url}accounts?$select=name&$orderby=name desc", 9)
    got = [r["name"] for r in rows]
    named = sorted(
        (a for a in world.accounts if a["name"]),
        key=lambda a: (a["name"].lower(), a["accountid"]),
        reverse=True,
    )
    assert got[: len(named)] == [a["name"] for a in named]
    assert all(n is None for n in got[len(named) :])


async def test_paging_with_a_filter_keeps_the_filter(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    rows, links = await page_all(
        http, f"{emu.api_url}accounts?$select=name&$filter=statuscode eq 1", 5
    )
    assert links and all("$filter=statuscode" in link for link in links)
    assert len(rows) == sum(1 for a in world.accounts if a["statuscode"] == 1)


async def test_a_link_reused_with_a_different_order_is_refused(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, _, body = await get_json(
        http, f"{emu.api_url}accounts?$select=name", headers={"Prefer": "odata.maxpagesize=5"}
    )
    link = body["@odata.nextLink"].replace("$select=name", "$select=name&$orderby=name")
    status, _, err = await get_json(http, link, headers={"Prefer": "odata.maxpagesize=5"})
    assert status == 400 and "paging cookie" in err["error"]["message"]


async def test_paging_200k_rows_is_linear_and_fast(tmp_path: Path) -> None:
    """Keyset paging: 40 pages of 5000 over 200k keys; OFFSET paging would be quadratic."""
    path = tmp_path / "big.db"
    rng = random.Random(3)
    entity = EntityDef("contact", "contacts", "contactid", None, (Attribute("contactid", "guid"),))
    with EmulatorData(path) as data:
        data.define_entity(entity)
        data.insert_rows(
            "contact",
            (
                {"contactid": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
                for _ in range(200_000)
            ),
        )
    async with Emulator(path) as emu, aiohttp.ClientSession(headers=headers(emu)) as http:
        started = time.perf_counter()
        rows, links = await page_all(http, f"{emu.api_url}contacts?$select=contactid", 5000)
        elapsed = time.perf_counter() - started
    ids = [r["contactid"] for r in rows]
    assert len(ids) == 200_000 == len(set(ids)) and len(links) == 39
    assert ids == sorted(ids)
    assert elapsed < 20, f"paging 200k rows took {elapsed:.1f}s"


async def test_a_selective_filter_in_key_order_pages_the_same_through_its_index(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    # A range on an indexed lookup, no $orderby: primary-key order either way, whether the page
    # walks the primary key (many pages of matches) or reads the index and sorts (a few pages).
    from crmctl.emulator import queries

    ids = sorted(a["primarycontactid"] for a in world.accounts if a["primarycontactid"])
    low = ids[len(ids) // 3]
    expected = sorted(
        (a["accountid"] for a in world.accounts if a["primarycontactid"] and a["primarycontactid"].lower() >= low.lower()),
        key=str.lower,
    )
    url = f"{emu.api_url}accounts?$select=name,_primarycontactid_value&$filter=_primarycontactid_value ge {low}"
    queries._selection_sizes.clear()
    by_index, links = await page_all(http, url, 9)  # at most 4 pages of 9: read via the index
    assert True in queries._selection_sizes.values()
    queries._selection_sizes.clear()
    by_key, _ = await page_all(http, url, 2)  # more than 4 pages of 2: the primary-key walk
    assert set(queries._selection_sizes.values()) == {False}
    assert [r["accountid"] for r in by_index] == [r["accountid"] for r in by_key] == expected
    assert len(links) == -(-len(expected) // 9) - 1 and len(expected) > 9
