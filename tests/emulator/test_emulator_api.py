"""Web API surface: auth, headers, WhoAmI, metadata, entity set queries, errors, non-GET logging."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import aiohttp

from crmctl.emulator.server import Emulator
from tests.emulator.emu_helpers import World, get_json, headers

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_whoami_get(emu: Emulator, http: aiohttp.ClientSession) -> None:
    status, hdrs, body = await get_json(http, f"{emu.api_url}WhoAmI")
    assert status == 200 and hdrs["OData-Version"] == "4.0"
    assert hdrs["Content-Type"] == "application/json; odata.metadata=minimal"
    assert body["@odata.context"] == f"{emu.api_url}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"
    assert all(GUID.match(body[k]) for k in ("BusinessUnitId", "UserId", "OrganizationId"))
    assert emu.api_url == f"{emu.url}/api/data/v9.2/" and emu.url.startswith("http://127.0.0.1:")


async def test_whoami_post_is_the_documented_404_and_is_logged(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{emu.api_url}WhoAmI") as resp:
        assert resp.status == 404
        assert await resp.json() == {
            "error": {
                "code": "",
                "message": f"No HTTP resource was found that matches the request URI '{emu.api_url}WhoAmI'.",
            }
        }
    rec = emu.request_log[-1]
    assert rec.method == "POST" and rec.mutating and rec.status == 404


async def test_every_non_get_is_refused_and_logged(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        async with http.request(method, f"{emu.api_url}accounts", json={"name": "x"}) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET"
            assert (await resp.json())["error"]["message"] == (
                f"The requested resource does not support http method '{method}'."
            )
    assert [r.method for r in emu.request_log if r.mutating] == ["POST", "PATCH", "PUT", "DELETE"]
    async with http.get(f"{emu.api_url}accounts/$count") as resp:
        assert await resp.text() == "60"  # nothing was written


async def test_missing_or_wrong_token_is_401_with_challenge(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as anon:
        async with anon.get(f"{emu.api_url}WhoAmI") as resp:
            assert resp.status == 401
            challenge = resp.headers["WWW-Authenticate"]
            assert challenge.startswith(
                "Bearer authorization_uri=https://login.microsoftonline.com/"
            )
            assert "/oauth2/authorize" in challenge and f"resource_id={emu.url}/" in challenge
        async with anon.get(
            f"{emu.api_url}WhoAmI", headers={"Authorization": "Bearer nope"}
        ) as resp:
            assert (
                resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
            )
            assert (await resp.json())["error"]["message"] == "InvalidAuthTicket"
    assert [r.status for r in emu.request_log[-2:]] == [401, 401]
    assert emu.request_log[-2].client == "anonymous"


async def test_unknown_entity_set_is_case_sensitive_404(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    status, _, body = await get_json(http, f"{emu.api_url}Account")
    assert status == 404
    assert body == {
        "error": {"code": "0x8006088a", "message": "Resource not found for the segment 'Account'."}
    }


async def test_unknown_select_property_is_documented_400(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    for query in ("$select=Name", "$orderby=Name", "$filter=Name eq 'x'"):
        status, _, body = await get_json(http, f"{emu.api_url}accounts?{query}")
        assert status == 400, query
        assert body == {
            "error": {
                "code": "0x0",
                "message": "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'.",
            }
        }


async def test_bad_filter_is_400_with_position(emu: Emulator, http: aiohttp.ClientSession) -> None:
    status, _, body = await get_json(http, f"{emu.api_url}contacts?$filter=lastname eq 'O'Neil'")
    assert status == 400
    assert (
        body["error"]["message"]
        == "There is an unterminated literal at position 20 in 'lastname eq 'O'Neil''."
    )
    status, _, body = await get_json(http, f"{emu.api_url}contacts?$filter=lastname eq 'O''Neil'")
    assert status == 200 and [c["lastname"] for c in body["value"]] == ["O'Neil"]


async def test_rows_carry_etag_nulls_bools_and_z_datetimes(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    acc = next(a for a in world.accounts if a["primarycontactid"] is None and a["revenue"] is None)
    _, _, body = await get_json(
        http, f"{emu.api_url}accounts?$filter=accountid eq {acc['accountid']}"
    )
    assert body["@odata.context"] == f"{emu.api_url}$metadata#accounts"
    row = body["value"][0]
    assert re.fullmatch(r'W/"\d+"', row["@odata.etag"])
    assert row["_primarycontactid_value"] is None and row["revenue"] is None
    assert row["donotemail"] is acc["donotemail"] and row["createdon"] == acc["createdon"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["createdon"])
    _, _, body = await get_json(http, f"{emu.api_url}accounts?$select=name&$top=1")
    assert body["@odata.context"] == f"{emu.api_url}$metadata#accounts(name)"
    assert set(body["value"][0]) == {
        "@odata.etag",
        "name",
        "accountid",
    }  # the key always comes back


async def test_lookup_annotations_come_before_the_value(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, _, body = await get_json(
        http,
        f"{emu.api_url}contacts?$select=_parentcustomerid_value&$filter=_parentcustomerid_value ne null&$top=1",
        headers={"Prefer": 'odata.include-annotations="*"'},
    )
    keys = list(body["value"][0])
    assert keys.index(
        "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"
    ) < keys.index("_parentcustomerid_value")
    assert (
        body["value"][0]["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"]
        == "account"
    )
    assert (
        body["value"][0][
            "_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"
        ]
        == "parentcustomerid"
    )


async def test_integration_tables_are_ordinary_entity_sets(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    url = (
        f"{emu.api_url}asyncoperations?$select=name,errorcode,message,completedon"
        "&$filter=statuscode eq 31 and completedon ge 2024-05-01T00:00:00Z&$orderby=completedon desc"
    )
    _, _, body = await get_json(http, url)
    want = sorted(
        (j for j in world.jobs if j["statuscode"] == 31),
        key=lambda j: j["completedon"],
        reverse=True,
    )
    assert [r["asyncoperationid"] for r in body["value"]] == [j["asyncoperationid"] for j in want]
    url = f"{emu.api_url}plugintracelogs?$select=typename,exceptiondetails&$filter=exceptiondetails ne null&$orderby=createdon desc"
    _, _, body = await get_json(http, url)
    assert len(body["value"]) == sum(1 for t in world.traces if t["exceptiondetails"])


async def test_single_record_by_key(
    emu: Emulator, http: aiohttp.ClientSession, world: World
) -> None:
    acc = world.accounts[9]
    status, _, body = await get_json(
        http, f"{emu.api_url}accounts({acc['accountid']})?$select=name"
    )
    assert status == 200 and body["name"] == acc["name"]
    assert body["@odata.context"] == f"{emu.api_url}$metadata#accounts(name)/$entity"
    status, _, body = await get_json(
        http, f"{emu.api_url}accounts(00000000-0000-0000-0000-000000000001)"
    )
    assert status == 404 and "Does Not Exist" in body["error"]["message"]


async def test_service_document_and_csdl(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, _, body = await get_json(http, emu.api_url)
    assert body["@odata.context"] == f"{emu.api_url}$metadata"
    sets = {v["name"] for v in body["value"]}
    assert {"accounts", "contacts", "leads", "asyncoperations", "plugintracelogs"} <= sets
    assert {"kind": "EntitySet", "name": "accounts", "url": "accounts"} in body["value"]
    async with http.get(f"{emu.api_url}$metadata", headers={"Accept": "application/xml"}) as resp:
        text = await resp.text()
        assert resp.status == 200 and 'Namespace="Microsoft.Dynamics.CRM"' in text
        assert '<EntitySet Name="accounts" EntityType="Microsoft.Dynamics.CRM.account"/>' in text


async def test_entity_definitions(emu: Emulator, http: aiohttp.ClientSession) -> None:
    url = (
        f"{emu.api_url}EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute"
        "&$filter=LogicalName eq 'account'"
    )
    status, _, body = await get_json(http, url)
    assert status == 200
    assert body["value"] == [
        {
            "LogicalName": "account",
            "EntitySetName": "accounts",
            "PrimaryIdAttribute": "accountid",
            "MetadataId": body["value"][0]["MetadataId"],
        }
    ]
    _, _, every = await get_json(
        http, f"{emu.api_url}EntityDefinitions?$select=LogicalName,EntitySetName"
    )
    assert {v["LogicalName"]: v["EntitySetName"] for v in every["value"]}[
        "asyncoperation"
    ] == "asyncoperations"
    status, _, one = await get_json(
        http, f"{emu.api_url}EntityDefinitions(LogicalName='contact')?$select=EntitySetName"
    )
    assert status == 200 and "value" not in one and one["EntitySetName"] == "contacts"
    assert one["@odata.context"].endswith("$metadata#EntityDefinitions(EntitySetName)/$entity")
    status, _, missing = await get_json(http, f"{emu.api_url}EntityDefinitions(LogicalName='foo')")
    assert status == 404 and "'foo'" in missing["error"]["message"]
    _, _, attrs = await get_json(
        http,
        f"{emu.api_url}EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,AttributeType",
    )
    assert {k: v for k, v in attrs["value"][4].items() if k != "MetadataId"} == {
        "LogicalName": "parentcustomerid",
        "AttributeType": "Lookup",
    }
    _, _, rel = await get_json(
        http,
        f"{emu.api_url}EntityDefinitions(LogicalName='contact')?$select=LogicalName"
        "&$expand=ManyToOneRelationships($select=ReferencingAttribute,ReferencedEntity)",
    )
    assert [
        (r["ReferencingAttribute"], r["ReferencedEntity"]) for r in rel["ManyToOneRelationships"]
    ] == [("parentcustomerid", "account")]
    status, _, bad = await get_json(http, f"{emu.api_url}EntityDefinitions?$select=Bogus")
    assert status == 400 and "Microsoft.Dynamics.CRM.EntityMetadata" in bad["error"]["message"]


async def test_header_handling(emu: Emulator) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.token}"}) as bare:
        status, _, _ = await get_json(bare, f"{emu.api_url}WhoAmI")
        assert status == 200  # the recommended headers are recommended, not required
        status, _, body = await get_json(
            bare, f"{emu.api_url}WhoAmI", headers={"Accept": "application/xml"}
        )
        assert status == 406 and "application/json" in body["error"]["message"]
        status, _, body = await get_json(
            bare, f"{emu.api_url}WhoAmI", headers={"OData-Version": "3.0"}
        )
        assert status == 400 and "OData-Version" in body["error"]["message"]
        status, _, body = await get_json(
            bare, f"{emu.api_url}WhoAmI", headers={"OData-MaxVersion": "3.0"}
        )
        assert status == 400


async def test_unknown_and_duplicate_query_options(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    status, _, body = await get_json(http, f"{emu.api_url}accounts?$bogus=1")
    assert status == 400 and "$bogus" in body["error"]["message"]
    status, _, body = await get_json(http, f"{emu.api_url}accounts?$top=1&$top=2")
    assert status == 400 and "more than once" in body["error"]["message"]
    status, _, body = await get_json(http, f"{emu.api_url}accounts?$top=x")
    assert status == 400 and "$top" in body["error"]["message"]


async def test_request_log_records_and_jsonl_file(world: World, tmp_path: Path) -> None:
    log_path = tmp_path / "requests.jsonl"
    async with (
        Emulator(world.path, log_path=log_path) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        await get_json(http, f"{emu.api_url}accounts?$select=name&$top=2")
        await get_json(http, f"{emu.api_url}Nope")
    rec = emu.request_log[0]
    assert rec.method == "GET" and rec.path == "/api/data/v9.2/accounts?$select=name&$top=2"
    assert (
        rec.status == 200
        and rec.duration_ms > 0
        and rec.retry_after_until is None
        and not rec.early
    )
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["status"] for line in lines] == [200, 404]
    assert lines[1]["error_code"] == "0x8006088a" and emu.token not in log_path.read_text()


async def test_missing_data_file_is_created_with_builtins(tmp_path: Path) -> None:
    async with (
        Emulator(tmp_path / "fresh.db") as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        status, _, body = await get_json(http, f"{emu.api_url}asyncoperations")
        assert status == 200 and body["value"] == []


async def test_wide_tables_beyond_sqlite_argument_limits(tmp_path: Path) -> None:
    """Rows are built by several json_object calls when a table has more than 60 columns."""
    from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef

    attrs = (Attribute("wideid", "guid"),) + tuple(
        Attribute(f"c{i:03d}", "int") for i in range(150)
    )
    with EmulatorData(tmp_path / "wide.db") as data:
        data.define_entity(EntityDef("wide", "wides", "wideid", None, attrs))
        data.insert_rows("wide", [{f"c{i:03d}": i for i in range(150)}])
    async with (
        Emulator(tmp_path / "wide.db") as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        status, _, body = await get_json(http, f"{emu.api_url}wides")
        assert status == 200
        row = body["value"][0]
        assert list(row)[:3] == ["@odata.etag", "wideid", "c000"] and row["c149"] == 149
        assert len(row) == 152


async def test_pages_carry_any_text_exactly_in_order_on_wide_and_narrow_tables(tmp_path: Path) -> None:
    """A page leaves SQLite as one concatenated value (crmctl/emulator/queries.py run_list): rows
    are separated by a control character and wide rows are spliced from several json_object
    texts. Neither may show: text holding that character, braces at either end, quotes and
    nulls come back exactly, and paging keeps every row once, in key order."""
    from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef

    awkward = ["\x1e", "}", "{", "a}", "{b", '"}', "\\", "\x00x\x1f", "", "é ✓", "null", "],["]
    wide = (Attribute("wideid", "guid"), Attribute("note", "string"), Attribute("flag", "bool")) + tuple(
        Attribute(f"c{i:03d}", "int") for i in range(70)
    )
    narrow = (Attribute("narrowid", "guid"), Attribute("note", "string"), Attribute("flag", "bool"))
    rows = [
        {"note": text, "flag": None if i % 3 == 0 else bool(i % 2), **{f"c{j:03d}": (None if j == i else i * j) for j in range(70)}}
        for i, text in enumerate(awkward)
    ]
    wide_ids = [str(uuid.uuid4()) for _ in rows]
    narrow_ids = [str(uuid.uuid4()) for _ in rows]
    with EmulatorData(tmp_path / "texts.db") as data:
        data.define_entity(EntityDef("wide", "wides", "wideid", None, wide))
        data.define_entity(EntityDef("narrow", "narrows", "narrowid", None, narrow))
        data.insert_rows("wide", [{"wideid": i, **r} for i, r in zip(wide_ids, rows)])
        data.insert_rows("narrow", [{"narrowid": i, "note": r["note"], "flag": r["flag"]} for i, r in zip(narrow_ids, rows)])
    async with (
        Emulator(tmp_path / "texts.db") as emu,
        aiohttp.ClientSession(headers={**headers(emu), "Prefer": "odata.maxpagesize=5"}) as http,
    ):
        for entity_set, pk, ids in (("wides", "wideid", wide_ids), ("narrows", "narrowid", narrow_ids)):
            url, got, pages = f"{emu.api_url}{entity_set}", [], 0
            while url:
                status, _, body = await get_json(http, url)
                assert status == 200, body
                assert len(body["value"]) <= 5
                got += body["value"]
                pages += 1
                url = body.get("@odata.nextLink")
            assert pages == 3 and len(got) == len(awkward)
            assert [row[pk] for row in got] == sorted(ids)
            by_id = {row[pk]: row for row in got}
            for row_id, sent in zip(ids, rows):
                row = by_id[row_id]
                assert row["note"] == sent["note"] and row["flag"] == sent["flag"]
                if entity_set == "wides":
                    assert all(row[f"c{j:03d}"] == sent[f"c{j:03d}"] for j in range(70))
                    assert len(row) == 2 + 2 + 70  # etag, id, note, flag, 70 numbers
