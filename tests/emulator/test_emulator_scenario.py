"""Fault scenarios: file validation, determinism, and every fault kind against a live emulator."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from crmctl.clock import FrozenClock
from crmctl.emulator.scenario import (
    FaultInjector,
    ScenarioError,
    load_scenario,
    parse_duration,
    parse_scenario,
)
from crmctl.emulator.server import Emulator
from tests.emulator.emu_helpers import World, build_world, get_json, headers

SCENARIOS = Path(__file__).resolve().parents[2] / "data" / "scenarios"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


def test_shipped_scenarios_load() -> None:
    loaded = {load_scenario(p).name for p in SCENARIOS.glob("*.yaml")}
    assert {"calm", "throttle-storm", "flaky-network", "outage", "drift"} <= loaded


def test_durations() -> None:
    assert (
        parse_duration("500ms") == 0.5 and parse_duration("2m") == 120 and parse_duration(3) == 3.0
    )
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_validation_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "faults:\n"
        "  - kind: latency\n"
        "    jitter_ms: 5\n"
        "  - kind: error\n"
        "    rate: 1.5\n"
        "    status: 503\n"
        "  - kind: lightning\n"
        "  - kind: throttle\n"
        "    start: 2m\n"
        "    end: 1m\n"
        "    path: '('\n"
        "    colour: red\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert f"{path}:3: faults[0] (latency) needs 'ms'" in text
    assert f"{path}:6: faults[1].rate: must be a number between 0 and 1, got 1.5" in text
    assert f"{path}:8: faults[2].kind is 'lightning'" in text
    assert f"{path}:11: faults[3].end must be after start" in text
    assert f"{path}:12: faults[3].path: is not a valid regular expression" in text
    assert f"{path}:13: faults[3].colour is not valid for kind 'throttle'" in text
    assert len(info.value.problems) == 6


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="needs 'entity'"):
        parse_scenario({"name": "d", "faults": [{"kind": "drift", "every": "1s", "delete": 1}]})


def test_decisions_are_deterministic_under_a_seed() -> None:
    spec = {
        "name": "f",
        "seed": 9,
        "faults": [
            {"kind": "error", "rate": 0.3, "status": 503},
            {"kind": "latency", "ms": 50, "jitter_ms": 40},
            {"kind": "reset", "rate": 0.1},
        ],
    }

    def run(seed: int) -> list[tuple[str, ...]]:
        inj = FaultInjector(parse_scenario({**spec, "seed": seed}))
        return [
            tuple(inj.decide("GET", f"/api/data/v9.2/accounts?i={i}", 1.0).labels())
            + (str(round(inj.decide("GET", "/x", 1.0).latency_s, 6)),)
            for i in range(200)
        ]

    assert run(9) == run(9)
    assert run(9) != run(10)
    errors = sum("error" in d for d in run(9))
    assert 30 < errors < 90


def test_windows_every_and_path_matching() -> None:
    inj = FaultInjector(
        parse_scenario(
            {
                "name": "w",
                "faults": [
                    {
                        "kind": "error",
                        "status": 500,
                        "every": 2,
                        "path": "accounts",
                        "start": "10s",
                        "end": "20s",
                    }
                ],
            }
        )
    )
    assert inj.decide("GET", "/accounts", 5).error is None  # before the window
    fired = [inj.decide("GET", "/accounts", 12).error is not None for _ in range(4)]
    assert fired == [False, True, False, True]
    assert inj.decide("GET", "/contacts", 12).error is None  # path does not match
    assert inj.decide("GET", "/accounts", 20).error is None  # end is exclusive


async def run_with(
    world: World, spec: dict, **kw: object
) -> tuple[Emulator, aiohttp.ClientSession]:
    emu = Emulator(world.path, scenario=parse_scenario(spec), **kw)  # type: ignore[arg-type]
    await emu.start()
    return emu, aiohttp.ClientSession(headers=headers(emu))


async def test_latency_error_and_malformed(world: World) -> None:
    emu, http = await run_with(
        world,
        {
            "name": "x",
            "faults": [
                {"kind": "latency", "ms": 120, "path": "WhoAmI"},
                {"kind": "error", "status": 503, "path": "contacts"},
                {"kind": "malformed", "path": "accounts"},
            ],
        },
    )
    try:
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
        assert loop.time() - t >= 0.12
        status, _, body = await get_json(http, f"{emu.api_url}contacts")
        assert status == 503 and body["error"]["message"].startswith("Injected HTTP 503")
        async with http.get(f"{emu.api_url}accounts") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            with pytest.raises(json.JSONDecodeError):
                json.loads(await resp.text())
        assert [r.faults for r in emu.request_log] == [("latency",), ("error",), ("malformed",)]
    finally:
        await http.close()
        await emu.stop()


async def test_connection_reset_and_timeout(world: World) -> None:
    emu, http = await run_with(
        world,
        {
            "name": "x",
            "faults": [
                {"kind": "reset", "path": "WhoAmI"},
                {"kind": "timeout", "path": "accounts", "hang": "1h"},
            ],
        },
    )
    try:
        with pytest.raises(aiohttp.ClientConnectionError):
            await get_json(http, f"{emu.api_url}WhoAmI")
        with pytest.raises(asyncio.TimeoutError):
            await get_json(http, f"{emu.api_url}accounts", timeout=aiohttp.ClientTimeout(total=0.3))
    finally:
        await http.close()
        loop = asyncio.get_running_loop()
        t = loop.time()
        await emu.stop()
        assert loop.time() - t < 3  # a hanging handler does not hold the shutdown
    assert all(r.status is None for r in emu.request_log)


async def test_throttle_storm_uses_the_documented_code(world: World) -> None:
    emu, http = await run_with(
        world,
        {
            "name": "x",
            "faults": [
                {"kind": "throttle", "limit": "concurrency", "retry_after": "7s", "path": "leads"}
            ],
        },
    )
    try:
        status, hdrs, body = await get_json(http, f"{emu.api_url}leads?$top=1")
        assert status == 429 and hdrs["Retry-After"] == "7"
        assert body["error"] == {
            "code": "0x80072326",
            "message": "Number of concurrent requests exceeded the limit of 52.",
        }
        status, hdrs, _ = await get_json(http, f"{emu.api_url}WhoAmI")  # still inside the 7 s
        assert status == 429 and emu.request_log[-1].early
    finally:
        await http.close()
        await emu.stop()


async def test_outage_window_follows_the_emulator_clock(world: World) -> None:
    clock = FrozenClock(T0)
    emu, http = await run_with(
        world,
        {"name": "x", "faults": [{"kind": "outage", "start": "1m", "end": "3m", "status": 503}]},
        clock=clock,
    )
    try:
        assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
        clock.advance(timedelta(minutes=1))
        status, _, body = await get_json(http, f"{emu.api_url}WhoAmI")
        assert status == 503 and "unavailable" in body["error"]["message"]
        async with aiohttp.ClientSession() as anon:  # an outage precedes authentication
            async with anon.get(f"{emu.api_url}WhoAmI") as resp:
                assert resp.status == 503
        clock.advance(timedelta(minutes=2))
        assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
    finally:
        await http.close()
        await emu.stop()


async def test_token_expiry_is_401_expired_until_a_new_token(world: World) -> None:
    clock = FrozenClock(T0)
    emu, http = await run_with(
        world, {"name": "x", "faults": [{"kind": "token_expiry", "at": "5m"}]}, clock=clock
    )
    try:
        assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
        clock.advance(timedelta(minutes=5))
        status, hdrs, body = await get_json(http, f"{emu.api_url}WhoAmI")
        assert status == 401 and body["error"]["message"] == "ExpiredAuthTicket"
        assert 'error_description="The access token has expired."' in hdrs["WWW-Authenticate"]
        fresh = emu.issue_token()
        status, _, _ = await get_json(
            http, f"{emu.api_url}WhoAmI", headers={"Authorization": f"Bearer {fresh}"}
        )
        assert status == 200
    finally:
        await http.close()
        await emu.stop()


async def test_token_lifetime(world: World) -> None:
    clock = FrozenClock(T0)
    emu, http = await run_with(
        world, {"name": "x", "faults": [{"kind": "token_expiry", "lifetime": "10m"}]}, clock=clock
    )
    try:
        clock.advance(timedelta(minutes=9))
        fresh = emu.issue_token()
        clock.advance(timedelta(minutes=2))
        assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 401
        status, _, _ = await get_json(
            http, f"{emu.api_url}WhoAmI", headers={"Authorization": f"Bearer {fresh}"}
        )
        assert status == 200
    finally:
        await http.close()
        await emu.stop()


DRIFT = {
    "name": "d",
    "seed": 5,
    "faults": [
        {
            "kind": "drift",
            "entity": "account",
            "every": "30s",
            "delete": 2,
            "insert": 3,
            "modify": 4,
        },
        {
            "kind": "drift",
            "entity": "asyncoperation",
            "every": "45s",
            "insert": 1,
            "values": {"statuscode": 31, "name": "ERP sync"},
        },
    ],
}


async def drift_rounds(path: Path) -> tuple[list[dict], int, int]:
    clock = FrozenClock(T0)
    async with (
        Emulator(path, scenario=parse_scenario(DRIFT), clock=clock) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        clock.advance(timedelta(seconds=95))
        await emu.apply_due_drift()
        assert await emu.apply_due_drift() == []  # rounds are applied once
        async with http.get(f"{emu.api_url}accounts/$count") as resp:
            accounts = int(await resp.text())
        _, _, body = await get_json(
            http,
            f"{emu.api_url}asyncoperations?$filter=name eq 'ERP sync' and statuscode eq 31&$count=true",
        )
        events = [e.to_json() for e in emu.drift_log]
        _, _, mod = await get_json(
            http, f"{emu.api_url}accounts({events[0]['modified'][0]})?$select=modifiedon"
        )
        assert mod["modifiedon"] == "2024-05-01T09:01:35Z"
        return events, accounts, body["@odata.count"]


async def test_drift_changes_data_on_schedule_and_repeatably(world: World, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(world.path, copy)
    events, accounts, failed = await drift_rounds(world.path)
    assert [(e["entity"], e["round"]) for e in events] == [
        ("account", 1),
        ("account", 2),
        ("account", 3),
        ("asyncoperation", 1),
        ("asyncoperation", 2),
    ]
    assert accounts == len(world.accounts) + 3 * (3 - 2)
    before = sum(1 for j in world.jobs if j["name"] == "ERP sync" and j["statuscode"] == 31)
    assert failed == before + 2
    again, _, _ = await drift_rounds(copy)
    strip = [{k: v for k, v in e.items() if k != "at"} for e in events]
    assert strip == [{k: v for k, v in e.items() if k != "at"} for e in again]


async def test_drift_on_an_unknown_entity_is_refused(tmp_path: Path) -> None:
    build_world(tmp_path / "w.db")
    spec = {
        "name": "d",
        "faults": [{"kind": "drift", "entity": "opportunity", "every": "1s", "delete": 1}],
    }
    with pytest.raises(ValueError, match="opportunity"):
        async with Emulator(tmp_path / "w.db", scenario=parse_scenario(spec)):
            pass


async def test_scenario_can_be_switched_live(emu: Emulator, http: aiohttp.ClientSession) -> None:
    assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
    emu.set_scenario(SCENARIOS / "outage.yaml")
    assert emu.scenario is not None and emu.scenario.name == "outage"
    emu.set_scenario(
        parse_scenario({"name": "down", "faults": [{"kind": "outage", "status": 502}]})
    )
    assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 502
    emu.set_scenario(None)
    assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200


async def test_serve_forever_prints_url_and_token(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from crmctl.emulator import serve_forever

    task = asyncio.create_task(
        serve_forever(world.path.parent, 0, SCENARIOS / "calm.yaml", "tok-123")
    )
    for _ in range(50):
        await asyncio.sleep(0.05)
        out = capsys.readouterr().out
        if "token" in out:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (
        "url:      http://127.0.0.1:" in out
        and "token:    tok-123" in out
        and "scenario: calm" in out
    )
