"""The notifier against a real local aiohttp receiver: rate, retries, Retry-After, failures, secrecy."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from crmctl.cards import TEAMS_MAX_BYTES
from crmctl.identity import Actor
from crmctl.notify import (
    DELIVERED,
    FAILED,
    Notifier,
    SlidingWindowLimiter,
    channels_from_config,
    parse_retry_after,
)
from crmctl.store import Store
from tests.notify.receiver import Answer, Receiver

SENDER = Actor("alice", "jump01")


def notifier(config, store: Store, env: dict[str, str], *, only: str | None = "teams", **kw) -> Notifier:  # noqa: ANN001
    channels = [c for c in channels_from_config(config) if only is None or c.name == only]
    kw.setdefault("backoff", 0.05)
    return Notifier(store, actor=SENDER, channels=channels, env=env, **kw)


async def outcomes(store: Store) -> list:  # noqa: ANN201
    return await store.entries(kinds=[DELIVERED, FAILED])


async def test_delivers_to_teams_and_the_webhook_and_journals_each(config, store, env, receiver: Receiver,
                                                                  events) -> None:  # noqa: ANN001
    event = await events("Accounts missing", severity="sev1")
    n = notifier(config, store, env, only=None)
    async with n.running():
        n.submit(event)
        assert await n.flush(5)
    paths = sorted(r.path.split("/")[1] for r in receiver.received)
    assert paths == ["generic", "workflows"]
    teams = next(r for r in receiver.received if r.path.startswith("/workflows/"))
    assert teams.json()["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert teams.headers["Content-Type"].startswith("application/json")
    done = await outcomes(store)
    assert sorted(e.payload["channel"] for e in done) == ["teams", "webhook"]
    assert all(e.kind == DELIVERED and e.payload["attempts"] == 1 and e.payload["status"] == 202 for e in done)
    assert {e.payload["target"] for e in done} == {"${env:TEAMS_WEBHOOK}", "${env:OPS_WEBHOOK}"}


async def test_the_payload_received_is_capped_at_28_kb(config, store, env, receiver: Receiver, events) -> None:  # noqa: ANN001
    evidence = {"status": "BREACH", "explanation": "x" * 100_000, "values": {"missing_keys": ["A-1"] * 5000}}
    event = await events("Data loss", severity="sev1", evidence=evidence)
    n = notifier(config, store, env)
    async with n.running():
        n.submit(event)
        assert await n.flush(5)
    (got,) = receiver.received
    assert len(got.body) <= TEAMS_MAX_BYTES
    got.json()  # valid JSON as received
    (entry,) = await outcomes(store)
    assert entry.payload["truncated"] is True and entry.payload["bytes"] == len(got.body)


async def test_never_more_than_4_requests_in_any_second(config, store, env, receiver: Receiver, events) -> None:  # noqa: ANN001
    made = [await events(f"incident {i}", severity="sev4") for i in range(9)]
    n = notifier(config, store, env)
    async with n.running():
        for event in made:
            n.submit(event)
        assert await n.flush(10)
    times = [r.at for r in receiver.received]
    assert len(times) == 9
    for i in range(len(times) - 4):
        # Any 5 consecutive requests span at least a second (small allowance for clock granularity).
        assert times[i + 4] - times[i] >= 0.98, [round(t - times[0], 3) for t in times]
    assert times[-1] - times[0] >= 1.95  # 9 requests at 4/s: bursts of 4 at 0 s, 1 s, then 2 s


async def test_429_waits_exactly_for_retry_after(config, store, env, receiver: Receiver, events) -> None:  # noqa: ANN001
    receiver.script = [Answer(429, {"Retry-After": "1"})]
    event = await events("Throttled", severity="sev2")
    n = notifier(config, store, env)
    async with n.running():
        n.submit(event)
        assert await n.flush(6)
    first, second = receiver.received
    assert second.at - first.at >= 1.0  # never before Retry-After expires
    assert second.at - first.at < 2.5  # ...and then promptly (a generous bound for a loaded box)
    (entry,) = await outcomes(store)
    assert (entry.kind, entry.payload["attempts"], entry.payload["status"]) == (DELIVERED, 2, 202)


async def test_5xx_backs_off_then_succeeds(config, store, env, receiver: Receiver, events) -> None:  # noqa: ANN001
    receiver.script = [Answer(503), Answer(502)]
    event = await events("Flaky Teams", severity="sev3")
    n = notifier(config, store, env, backoff=0.1)
    async with n.running():
        n.submit(event)
        assert await n.flush(6)
    a, b, c = (r.at for r in receiver.received)
    assert b - a >= 0.05 and c - b >= 0.1  # 0.1 s, then 0.2 s, each with jitter down to half
    (entry,) = await outcomes(store)
    assert (entry.kind, entry.payload["attempts"]) == (DELIVERED, 3)


async def test_failure_after_retries_is_journalled_without_the_secret(config, store, env, receiver: Receiver,
                                                                     events) -> None:  # noqa: ANN001
    receiver.default = Answer(503)
    event = await events("Teams is down", severity="sev1")
    seen = []
    n = notifier(config, store, env, max_attempts=3, on_outcome=seen.append)
    async with n.running():
        n.submit(event)
        assert await n.flush(6)
    assert len(receiver.received) == 3
    (entry,) = await outcomes(store)
    assert entry.kind == FAILED
    assert entry.payload["reason"] == "HTTP 503 after 3 attempts"
    assert (entry.payload["attempts"], entry.payload["incident"], entry.payload["event_seq"]) == (
        3, event.incident.number, event.seq)
    assert [o.ok for o in seen] == [False]
    everything = json.dumps([e.to_json() for e in await store.entries()])
    assert "S3cr3tSig" not in everything and receiver.url not in everything


async def test_client_errors_are_not_retried(config, store, env, receiver: Receiver, events) -> None:  # noqa: ANN001
    receiver.default = Answer(400)
    n = notifier(config, store, env)
    async with n.running():
        n.submit(await events("bad card", severity="sev4"))
        assert await n.flush(3)
    assert len(receiver.received) == 1
    (entry,) = await outcomes(store)
    assert entry.payload["reason"] == "HTTP 400 after 1 attempt"


async def test_unreachable_and_unset_webhooks_fail_visibly_and_safely(config, store, events) -> None:  # noqa: ANN001
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret_url = f"http://127.0.0.1:{port}/hook?sig=TopS3cretSignature"
    event = await events("network down", severity="sev1")
    n = notifier(config, store, {"TEAMS_WEBHOOK": secret_url}, only=None, max_attempts=2)
    async with n.running():
        n.submit(event)
        assert await n.flush(5)
    by_channel = {e.payload["channel"]: e.payload for e in await outcomes(store)}
    assert by_channel["teams"]["reason"] == "cannot connect (Connection refused) after 2 attempts"
    assert by_channel["teams"]["attempts"] == 2
    assert by_channel["webhook"]["reason"] == "environment variable OPS_WEBHOOK is not set (a secret in the config refers to it)"
    text = json.dumps(by_channel)
    assert "TopS3cretSignature" not in text and str(port) not in text


async def test_submit_never_waits_even_when_the_receiver_hangs(config, store, env, receiver: Receiver,
                                                              events) -> None:  # noqa: ANN001
    receiver.default = Answer(202, delay=0.5)
    made = [await events(f"incident {i}", severity="sev4") for i in range(20)]
    n = notifier(config, store, env, timeout=0.2, max_attempts=1)
    async with n.running():
        started = time.perf_counter()
        for event in made:
            n.submit(event)
        assert time.perf_counter() - started < 0.05
        assert n.pending == 20
        await asyncio.sleep(0.05)
        assert n.pending > 0  # still delivering in the background
    # Leaving `running()` cancels delivery; nothing blocked the caller meanwhile.


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 11, 28, 21, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Sat, 28 Nov 2026 21:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 20:59:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


async def test_sliding_window_limiter_on_a_fake_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = SlidingWindowLimiter(4, 1.0, monotonic=lambda: now[0], sleep=sleep)
    stamps = []
    for _ in range(10):
        await limiter.acquire()
        stamps.append(now[0])
    assert stamps == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("retry_after", ["900"])
async def test_an_unreasonable_retry_after_fails_instead_of_stalling(config, store, env, receiver: Receiver, events,
                                                                     retry_after: str) -> None:  # noqa: ANN001
    receiver.script = [Answer(429, {"Retry-After": retry_after})]
    n = notifier(config, store, env, max_retry_after=60)
    async with n.running():
        n.submit(await events("storm", severity="sev2"))
        assert await n.flush(3)
    (entry,) = await outcomes(store)
    assert entry.kind == FAILED and "Retry-After 900 s, longer than the 60 s allowed" in entry.payload["reason"]
