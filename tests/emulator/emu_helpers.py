"""Shared helpers for emulator tests: a small deterministic Dataverse world and HTTP shortcuts."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp

from crmctl.emulator.server import Emulator
from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef

A = Attribute
ACCOUNT = EntityDef(
    "account",
    "accounts",
    "accountid",
    "name",
    (
        A("accountid", "guid"),
        A("name", "string"),
        A("accountnumber", "string"),
        A("revenue", "decimal"),
        A("numberofemployees", "int"),
        A("statecode", "int"),
        A("statuscode", "int"),
        A("donotemail", "bool"),
        A("createdon", "datetime"),
        A("modifiedon", "datetime"),
        A("primarycontactid", "lookup", "contact"),
    ),
)
CONTACT = EntityDef(
    "contact",
    "contacts",
    "contactid",
    "fullname",
    (
        A("contactid", "guid"),
        A("fullname", "string"),
        A("lastname", "string"),
        A("emailaddress1", "string"),
        A("parentcustomerid", "lookup", "account"),
        A("createdon", "datetime"),
    ),
)
LEAD = EntityDef(
    "lead",
    "leads",
    "leadid",
    "subject",
    (A("leadid", "guid"), A("subject", "string"), A("statuscode", "int")),
)
BASE = datetime(2024, 5, 1, tzinfo=timezone.utc)
LEADS = 6000
STALE_ACCOUNT_COUNT = 42
SPECIAL_NAMES = ["O'Bryan Ltd", "contoso", "CONTOSO Pharma", "100% Growth_Co", "Fabrikam"]


@dataclass
class World:
    """The rows written to the test data file, so tests compute expectations independently."""

    path: Path
    accounts: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso_z(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_world(path: Path, seed: int = 11) -> World:
    """Writes a small, deliberately irregular world (nulls, quotes, mixed case) to `path`."""
    rng = random.Random(seed)
    world = World(path)
    contact_ids = [guid(rng) for _ in range(30)]
    for i in range(60):
        name = (
            SPECIAL_NAMES[i]
            if i < len(SPECIAL_NAMES)
            else (None if i % 17 == 0 else f"Account {i:02d}")
        )
        world.accounts.append(
            {
                "accountid": guid(rng),
                "name": name,
                "accountnumber": f"AC-{i:04d}",
                "revenue": None if i % 11 == 0 else round(1000.5 * i, 2),
                "numberofemployees": i * 3,
                "statecode": 0 if i % 4 else 1,
                "statuscode": 1 if i % 4 else 2,
                "donotemail": i % 3 == 0,
                "createdon": iso_z(BASE + timedelta(days=i)),
                "modifiedon": iso_z(BASE + timedelta(days=i, hours=5)),
                "primarycontactid": None if i % 5 == 0 else contact_ids[i % 30],
            }
        )
    for i, cid in enumerate(contact_ids):
        world.contacts.append(
            {
                "contactid": cid,
                "fullname": f"Person {i}",
                "lastname": "O'Neil" if i == 3 else f"Last{i}",
                "emailaddress1": None if i % 4 == 0 else f"p{i}@example.com",
                "parentcustomerid": None if i % 6 == 0 else world.accounts[i]["accountid"],
                "createdon": iso_z(BASE + timedelta(hours=i)),
            }
        )
    for i in range(20):
        status = [30, 31, 0, 31][i % 4]
        world.jobs.append(
            {
                "asyncoperationid": guid(rng),
                "name": "ERP sync" if i % 2 else "Flow trigger",
                "operationtype": 79 if i % 2 == 0 else 1,
                "statecode": 3 if status in (30, 31) else 0,
                "statuscode": status,
                "errorcode": -2147220891 if status == 31 else None,
                "message": "Bad gateway" if status == 31 else None,
                "createdon": iso_z(BASE + timedelta(minutes=10 * i)),
                "completedon": iso_z(BASE + timedelta(minutes=10 * i + 3)) if status else None,
            }
        )
    for i in range(10):
        world.traces.append(
            {
                "plugintracelogid": guid(rng),
                "typename": f"Contoso.Plugins.Sync{i % 3}",
                "messagename": "Update",
                "primaryentity": "account",
                "mode": i % 2,
                "exceptiondetails": "System.TimeoutException" if i % 3 == 0 else None,
                "performanceexecutionduration": 100 + i,
                "createdon": iso_z(BASE + timedelta(minutes=i)),
            }
        )
    with EmulatorData(path) as data:
        data.define_entity(ACCOUNT)
        data.define_entity(CONTACT)
        data.define_entity(LEAD)
        data.insert_rows("account", world.accounts)
        data.insert_rows("contact", world.contacts)
        data.insert_rows("asyncoperation", world.jobs)
        data.insert_rows("plugintracelog", world.traces)
        data.insert_rows(
            "lead",
            (
                {"leadid": guid(rng), "subject": f"Lead {i}", "statuscode": i % 3}
                for i in range(LEADS)
            ),
        )
        data.set_count_snapshot("account", STALE_ACCOUNT_COUNT, BASE)
    return world


def headers(emulator: Emulator, **extra: str) -> dict[str, str]:
    """The headers dataverse.md §1 says every request should carry, plus `extra`."""
    base = {
        "Authorization": f"Bearer {emulator.token}",
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "If-None-Match": "null",
    }
    base.update(extra)
    return base


async def get_json(
    session: aiohttp.ClientSession, url: str, **kw: Any
) -> tuple[int, dict[str, Any], Any]:
    """GET returning (status, headers, parsed JSON body)."""
    async with session.get(url, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)
