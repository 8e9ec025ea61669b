"""Service protection: the three documented 429s, Retry-After, and proof it was honoured."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import aiohttp

from crmctl.clock import FrozenClock
from crmctl.emulator.scenario import parse_scenario
from crmctl.emulator.server import Emulator
from crmctl.emulator.throttle import Throttle, ThrottleLimits
from tests.emulator.emu_helpers import World, get_json, headers


def test_default_messages_are_the_documented_text() -> None:
    lim = ThrottleLimits()
    assert (lim.requests, lim.window_s, lim.execution_ms, lim.concurrency) == (
        6000,
        300,
        1_200_000,
        52,
    )
    assert lim.requests_message() == (
        "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
    )
    assert lim.execution_message() == (
        "Combined execution time of incoming requests exceeded limit of 1,200,000  milliseconds over "
        "time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of "
        "requests and try again later."
    )
    assert lim.concurrency_message() == "Number of concurrent requests exceeded the limit of 52."


def test_sliding_window_on_a_frozen_clock() -> None:
    clock = FrozenClock(datetime(2024, 5, 1, tzinfo=timezone.utc))
    throttle = Throttle(ThrottleLimits(requests=3, window_s=10))
    for _ in range(3):
        assert throttle.admit("c", clock.now()) is None
        throttle.finish("c", clock.now(), 1.0)
        clock.advance(timedelta(seconds=2))
    refusal = throttle.admit("c", clock.now())  # t=6: the first request (t=0) leaves at t=10
    assert refusal is not None and refusal.status == 429 and refusal.headers["Retry-After"] == "4"
    clock.advance(timedelta(seconds=4))
    assert throttle.admit("c", clock.now()) is None
    assert throttle.admit("other", clock.now()) is None  # limits are per client


async def test_request_limit_429_retry_after_and_early_requests_are_caught(world: World) -> None:
    limits = ThrottleLimits(requests=3, window_s=1)
    async with (
        Emulator(world.path, limits=limits) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        for _ in range(3):
            assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
        status, hdrs, body = await get_json(http, f"{emu.api_url}WhoAmI")
        assert status == 429 and hdrs["Retry-After"] == "1"
        assert body == {
            "error": {
                "code": "0x80072322",
                "message": "Number of requests exceeded the limit of 3 over time window of 1 seconds.",
            }
        }
        status, hdrs, _ = await get_json(http, f"{emu.api_url}WhoAmI")  # too early: refused again
        assert status == 429 and int(hdrs["Retry-After"]) >= 1
        early = emu.request_log[-1]
        assert (
            early.early
            and early.retry_after_until is not None
            and early.ts < early.retry_after_until
        )
        await asyncio.sleep(int(hdrs["Retry-After"]) + 0.05)
        status, _, _ = await get_json(http, f"{emu.api_url}WhoAmI")
        assert status == 200 and not emu.request_log[-1].early


async def test_execution_time_limit(world: World) -> None:
    scenario = parse_scenario({"name": "slow", "faults": [{"kind": "latency", "ms": 30}]})
    limits = ThrottleLimits(execution_ms=20, window_s=2)
    async with (
        Emulator(world.path, limits=limits, scenario=scenario) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        assert (await get_json(http, f"{emu.api_url}WhoAmI"))[0] == 200
        status, hdrs, body = await get_json(http, f"{emu.api_url}WhoAmI")
        assert status == 429 and 1 <= int(hdrs["Retry-After"]) <= 2
        assert body["error"] == {
            "code": "0x80072321",
            "message": "Combined execution time of incoming requests exceeded limit of 20  milliseconds over time "
            "window of 2 seconds. Decrease number of concurrent requests or reduce the duration of "
            "requests and try again later.",
        }


async def test_concurrency_limit_answers_immediately(world: World) -> None:
    scenario = parse_scenario(
        {"name": "slow", "faults": [{"kind": "latency", "ms": 400, "path": "WhoAmI"}]}
    )
    async with (
        Emulator(world.path, limits=ThrottleLimits(concurrency=1), scenario=scenario) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        slow = asyncio.create_task(get_json(http, f"{emu.api_url}WhoAmI"))
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        status, hdrs, body = await get_json(http, f"{emu.api_url}accounts?$top=1")
        assert time.perf_counter() - started < 0.3
        assert status == 429 and hdrs["Retry-After"] == "1"
        assert body["error"] == {
            "code": "0x80072326",
            "message": "Number of concurrent requests exceeded the limit of 1.",
        }
        assert (await slow)[0] == 200


async def test_a_client_that_honours_retry_after_is_never_early(world: World) -> None:
    """What crmctl's connector tests assert too: no request inside a Retry-After window."""
    scenario = parse_scenario(
        {"name": "storm", "faults": [{"kind": "throttle", "every": 3, "retry_after": "1s"}]}
    )
    async with (
        Emulator(world.path, scenario=scenario) as emu,
        aiohttp.ClientSession(headers=headers(emu)) as http,
    ):
        done = 0
        while done < 5:
            status, hdrs, _ = await get_json(http, f"{emu.api_url}WhoAmI")
            if status == 429:
                await asyncio.sleep(int(hdrs["Retry-After"]))
            else:
                done += 1
    statuses = [r.status for r in emu.request_log]
    assert statuses.count(429) == 2
    assert not any(r.early for r in emu.request_log)
    assert all(r.retry_after == 1 for r in emu.request_log if r.status == 429)
