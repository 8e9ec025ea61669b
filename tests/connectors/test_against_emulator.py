"""DataverseClient against the rehearsal emulator: the two sides of the same documented contract."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.errors import AggregateLimitExceeded, AuthError, DataverseError, NotFoundError
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.querylog import QueryLog

server = pytest.importorskip("crmctl.emulator.server")
storage = pytest.importorskip("crmctl.emulator.storage")
Emulator = server.Emulator
ThrottleLimits = server.ThrottleLimits

ACCOUNTS = 120


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emu") / "dataverse.db"
    A = storage.Attribute
    data = storage.EmulatorData(path)
    try:
        data.define_entity(storage.EntityDef(
            "account", "accounts", "accountid", "name",
            (A("accountid", "guid"), A("name", "string"), A("statecode", "int"), A("createdon", "datetime")),
        ))
        data.define_entity(storage.EntityDef(
            "contact", "contacts", "contactid", "fullname", (A("contactid", "guid"), A("fullname", "string")),
        ))
        created = datetime(2026, 11, 1, tzinfo=timezone.utc)
        data.insert_rows("account", (
            {"accountid": str(uuid.UUID(int=i + 1)), "name": f"Account {i:03}", "statecode": i % 3, "createdon": created}
            for i in range(ACCOUNTS)
        ))
        data.insert_rows("contact", ({"fullname": f"Contact {i}"} for i in range(5_100)))
        data.set_count_snapshot("account", 40, datetime(2026, 11, 20, tzinfo=timezone.utc))
    finally:
        data.close()
    return path


@pytest.fixture
async def emulate(data_file: Path) -> AsyncIterator[Callable[..., object]]:
    """Starts emulators (and clients for them) on demand; stops everything afterwards."""
    started: list[object] = []
    clients: list[DataverseClient] = []

    async def build(limiter: TargetLimiter | None = None, token: str | None = None, **emu_kwargs: object):
        emu = Emulator(data_file, **emu_kwargs)
        await emu.start()
        started.append(emu)
        client = DataverseClient(
            emu.api_url, StaticTokenProvider(token or emu.token), limiter or TargetLimiter(8, 5000, 300.0),
            backoff_base=0.01, backoff_cap=0.05,
        )
        clients.append(client)
        return emu, client

    yield build
    for client in clients:
        await client.close()
    for emu in started:
        await emu.stop()  # type: ignore[attr-defined]


async def test_whoami_and_metadata(emulate) -> None:
    emu, dv = await emulate()
    me = await dv.whoami()
    assert {"UserId", "BusinessUnitId", "OrganizationId"} <= set(me)
    assert await dv.entity_set_for("account") == "accounts"
    with pytest.raises(NotFoundError, match="no table named 'nosuch'"):
        await dv.entity_set_for("nosuch")
    counts = await dv.total_record_count(["account"])
    assert counts["account"] == 40  # the stale snapshot, not the real 120: a hint only
    assert not any(r.mutating for r in emu.request_log)


async def test_paging_follows_the_emulators_next_links(emulate) -> None:
    emu, dv = await emulate()
    log = QueryLog("dynamics")
    pages = [p async for p in dv.pages("accounts", select=["accountid", "name"], orderby="accountid", page_size=50, log=log)]
    assert [len(p) for p in pages] == [50, 50, 20]
    names = [r["name"] for p in pages for r in p]
    assert names == [f"Account {i:03}" for i in range(ACCOUNTS)]
    assert log.requests == 3
    paths = [r.path for r in emu.request_log]
    assert "$skiptoken" in paths[1] and "$skiptoken" in paths[2]
    assert all("$skip=" not in p for p in paths)


async def test_counts_respect_the_5000_cap(emulate) -> None:
    _emu, dv = await emulate()
    assert await dv.count_capped("accounts") == (ACCOUNTS, False)
    assert await dv.count_capped("accounts", "statecode eq 0") == (40, False)
    assert await dv.count_capped("contacts", select="contactid") == (5000, True)


async def test_aggregates(emulate) -> None:
    _emu, dv = await emulate()
    rows = await dv.aggregate("accounts", "groupby((statecode),aggregate($count as n))")
    assert sorted((r["statecode"], r["n"]) for r in rows) == [(0, 40), (1, 40), (2, 40)]
    total = await dv.aggregate("accounts", "filter(statecode eq 1)/aggregate($count as n)")
    assert total[0]["n"] == 40
    fetch = (
        "<fetch aggregate='true'><entity name='account'>"
        "<attribute name='accountid' alias='n' aggregate='count'/></entity></fetch>"
    )
    assert (await dv.fetch_aggregate("accounts", fetch))[0]["n"] == ACCOUNTS


async def test_aggregate_limit(emulate) -> None:
    emu, dv = await emulate(aggregate_limit=100)  # the 50,000 cap, scaled down
    with pytest.raises(AggregateLimitExceeded, match="more than 50,000 records") as info:
        await dv.aggregate("accounts", "aggregate($count as n)")
    assert info.value.code.lower() == "0x8004e023"
    assert (await dv.aggregate("accounts", "filter(statecode eq 1)/aggregate($count as n)"))[0]["n"] == 40


async def test_errors_read_as_sentences(emulate) -> None:
    _emu, dv = await emulate()
    with pytest.raises(DataverseError, match=r"Dynamics rejected the query on 'accounts': Could not find a property named 'Name'"):
        [p async for p in dv.pages("accounts", select=["Name"])]
    with pytest.raises(NotFoundError, match="Account"):
        await dv.get_json("Account")


async def test_wrong_token_is_an_auth_error_after_one_retry(emulate) -> None:
    emu, dv = await emulate(token="not-the-token")
    with pytest.raises(AuthError, match="refused the token"):
        await dv.whoami()
    assert [r.status for r in emu.request_log] == [401, 401]


class RecordingLimiter(TargetLimiter):
    """Records when each request was let through and each 429 deferral (monotonic time)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.grants: list[float] = []
        self.deferrals: list[tuple[float, float]] = []

    async def _acquire_budget(self, deadline: float | None) -> None:
        await super()._acquire_budget(deadline)
        self.grants.append(self.clock.monotonic())

    def defer_until(self, monotonic_ts: float) -> None:
        self.deferrals.append((self.clock.monotonic(), monotonic_ts))
        super().defer_until(monotonic_ts)


async def test_queued_callers_wait_out_retry_after(emulate) -> None:
    # One request in flight at a time: when the 429 lands nothing else is on the wire, so the
    # emulator's own log can prove that no caller (queued ones included) arrived too early.
    limiter = TargetLimiter(1, 5000, 300.0)
    emu, dv = await emulate(limiter=limiter, limits=ThrottleLimits(requests=3, window_s=1))
    results = await asyncio.gather(*(dv.whoami() for _ in range(6)))
    assert len(results) == 6
    statuses = [r.status for r in emu.request_log]
    assert 429 in statuses and statuses.count(200) == 6
    assert limiter.throttled >= 1
    assert not any(r.early for r in emu.request_log), [r.to_json() for r in emu.request_log if r.early]


async def test_parallel_callers_never_start_inside_a_deferral(emulate) -> None:
    # Eight in flight: requests already on the wire when a 429 is issued cannot be recalled (the
    # emulator sees them arrive inside the Retry-After), but none may *start* after the client
    # learned of the 429 and before it expired.
    limiter = RecordingLimiter(8, 5000, 300.0)
    emu, dv = await emulate(limiter=limiter, limits=ThrottleLimits(requests=4, window_s=1))
    results = await asyncio.gather(*(dv.whoami() for _ in range(10)))
    assert len(results) == 10
    assert limiter.deferrals
    for learned, until in limiter.deferrals:
        assert not [g for g in limiter.grants if learned <= g < until]
    assert [r.status for r in emu.request_log].count(200) == 10
