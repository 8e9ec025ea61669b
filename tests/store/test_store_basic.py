"""Store: appending, reading back, projections, time travel, the in-process change feed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from crmctl.clock import FrozenClock
from crmctl.identity import Actor
from crmctl.model import Status
from crmctl.store import GENESIS_HASH, Store, StoreError


async def test_append_returns_committed_entry_and_entries_reads_it_back(store, actor, clock, t0):
    first = await store.append("runbook.tick", {"step": "freeze", "done": True}, actor=actor)
    clock.advance(timedelta(minutes=3))
    second = await store.append("incident.raise", {"sev": "sev1", "title": "ERP sync"}, actor=actor)

    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.ts == t0 and second.ts == t0 + timedelta(minutes=3)
    assert (first.operator, first.host) == ("alice", "ssh:10.1.2.3")
    assert await store.entries() == [first, second]
    assert await store.last_seq() == 2


async def test_hash_follows_the_documented_rule(store, actor, state_path):
    """Recomputes the hash from raw rows with nothing but hashlib and json, as docs/journal.md
    tells an auditor to: the rule must not depend on crmctl's own code."""
    await store.append(
        "note", {"text": "Zürich – ok", "n": 1.5, "z": [1, {"b": 2, "a": 1}]}, actor=actor
    )
    await store.append("note", {"text": "second"}, actor=actor)
    conn = sqlite3.connect(state_path)
    prev = "0" * 64
    for seq, ts, operator, host, kind, payload, prev_hash, digest in conn.execute(
        "SELECT seq, ts, operator, host, kind, payload, prev_hash, hash FROM journal ORDER BY seq"
    ):
        canonical = json.dumps(
            {
                "seq": seq,
                "ts": ts,
                "operator": operator,
                "host": host,
                "kind": kind,
                "payload": json.loads(payload),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        assert prev_hash == prev
        assert hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest() == digest
        prev = digest
    conn.close()
    entries = await store.entries()
    assert [e.hash for e in entries][-1] == prev
    assert entries[0].to_json()["ts"] == "2026-11-28T02:00:00.000000Z"


async def test_entries_filters(store, actor, clock, t0):
    for i in range(6):
        await store.append("a" if i % 2 == 0 else "b", {"i": i}, actor=actor)
        clock.advance(timedelta(minutes=1))
    assert [e.seq for e in await store.entries(after_seq=4)] == [5, 6]
    assert [e.payload["i"] for e in await store.entries(kinds=["b"])] == [1, 3, 5]
    assert [e.payload["i"] for e in await store.entries(kinds="a")] == [0, 2, 4]
    assert await store.entries(kinds=[]) == []
    assert [e.seq for e in await store.entries(until=t0 + timedelta(minutes=2))] == [1, 2, 3]
    assert [e.seq for e in await store.entries(limit=2)] == [1, 2]
    assert [e.seq for e in await store.entries(1, kinds=["a", "b"], limit=2)] == [2, 3]


@pytest.mark.parametrize(
    "payload",
    [
        {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)},
        {"obj": object()},
        {"nan": math.nan},
        {"inf": [math.inf]},
        {1: "a", "b": 2},
        ["not", "a", "mapping"],
    ],
    ids=["datetime", "object", "nan", "inf", "mixed-keys", "list"],
)
async def test_non_json_payload_is_refused_before_writing(store, actor, payload):
    with pytest.raises(TypeError):
        await store.append("note", payload, actor=actor)
    with pytest.raises(TypeError):
        await store.append_many([("note", {"ok": 1}), ("note", payload)], actor=actor)
    assert await store.last_seq() == 0


async def test_payload_is_stored_canonically(store, actor):
    entry = await store.append(
        "note", MappingProxyType({"t": (1, 2), "m": MappingProxyType({"k": "é"})}), actor=actor
    )
    assert entry.payload == {"t": [1, 2], "m": {"k": "é"}}
    assert (await store.entries())[0].payload == entry.payload


async def test_malformed_check_result_payload_is_refused(store, actor):
    with pytest.raises(ValueError):
        await store.append("check.result", {"status": "OK"}, actor=actor)
    with pytest.raises(TypeError):
        await store.append("", {}, actor=actor)
    with pytest.raises(TypeError):
        await store.append("note", {}, actor=("alice", "host"))  # type: ignore[arg-type]
    assert await store.last_seq() == 0


async def test_append_many_is_one_transaction(store, actor, t0, make_result):
    entries = await store.append_many(
        [("check.result", make_result("a.count", t0).to_json()), ("note", {"x": 1})], actor=actor
    )
    assert [e.seq for e in entries] == [1, 2]
    assert entries[0].ts == entries[1].ts
    assert entries[1].prev_hash == entries[0].hash
    assert await store.append_many([], actor=actor) == []
    assert set(await store.latest_results()) == {"a.count"}


async def test_latest_results_projection_time_travel_and_history(store, actor, clock, make_result):
    timeline = []
    for minute in range(10):
        clock.advance(timedelta(minutes=1))
        status = Status.BREACH if minute in (3, 4) else Status.OK
        result = make_result("account.count", clock.now(), status, minute=minute)
        await store.append_result(result, actor=actor)
        if minute % 3 == 0:
            await store.append_result(
                make_result("contact.nulls", clock.now(), minute=minute), actor=actor
            )
        await store.append("note", {"minute": minute}, actor=actor)
        timeline.append(clock.now())

    latest = await store.latest_results()
    assert list(latest) == ["account.count", "contact.nulls"]
    assert latest["account.count"].values == {"minute": 9}
    assert latest["contact.nulls"].values == {"minute": 9}
    assert latest["account.count"] == make_result("account.count", timeline[9], minute=9)

    # What did we know at the moment minute 4 was journalled? And just before minute 0?
    at_4 = await store.latest_results(until=timeline[4])
    assert at_4["account.count"].values == {"minute": 4}
    assert at_4["account.count"].status is Status.BREACH
    assert at_4["contact.nulls"].values == {"minute": 3}
    assert await store.latest_results(until=timeline[0] - timedelta(seconds=1)) == {}
    assert await store.latest_results(until=timeline[-1] + timedelta(days=1)) == latest

    history = await store.results_history("account.count", limit=4)
    assert [r.values["minute"] for r in history] == [6, 7, 8, 9]
    assert len(await store.results_history("account.count")) == 10
    assert await store.results_history("nope") == []


async def test_concurrent_appends_in_one_process_and_two_stores(store, actor, state_path, clock):
    other = await Store.open(state_path, clock=clock)
    try:
        results = await asyncio.gather(
            *(store.append("a", {"i": i}, actor=actor) for i in range(40)),
            *(other.append("b", {"i": i}, actor=actor) for i in range(40)),
        )
    finally:
        await other.close()
    assert sorted(e.seq for e in results) == list(range(1, 81))
    assert (await store.verify()).ok


async def test_cancelled_append_leaves_the_store_usable(store, actor):
    task = asyncio.ensure_future(store.append("a", {"i": 0}, actor=actor))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    entry = await store.append("a", {"i": 1}, actor=actor)
    # The cancelled append either committed completely or not at all; the chain is intact.
    assert entry.seq in (1, 2)
    assert (await store.verify()).ok


async def test_readonly_and_closed(store, actor, state_path):
    await store.append("a", {}, actor=actor)
    ro = await Store.open(state_path, readonly=True)
    try:
        assert ro.readonly
        assert [e.seq for e in await ro.entries()] == [1]
        with pytest.raises(StoreError, match="read-only"):
            await ro.append("a", {}, actor=actor)
        assert (await ro.verify()).ok
    finally:
        await ro.close()
    with pytest.raises(FileNotFoundError):
        await Store.open(state_path.parent / "missing.db", readonly=True)
    async with await Store.open(state_path) as s2:
        assert await s2.last_seq() == 1
    with pytest.raises(StoreError, match="closed"):
        await s2.entries()
    await s2.close()  # idempotent


async def test_watch_sees_another_connections_appends_within_a_second(
    store, actor, state_path, clock
):
    await store.append("before", {}, actor=actor)
    seen: list[tuple[int, float]] = []

    async def consume() -> None:
        async for batch in store.watch(interval=0.05):
            seen.extend((e.seq, time.monotonic()) for e in batch)

    watcher = asyncio.ensure_future(consume())
    await asyncio.sleep(0.2)  # let the watcher take its starting point (after seq 1)
    writer = await Store.open(state_path, clock=clock)
    try:
        committed = {}
        for i in range(3):
            entry = await writer.append("during", {"i": i}, actor=actor)
            committed[entry.seq] = time.monotonic()
            await asyncio.sleep(0.1)
        # Our own writer connection is also seen.
        own = await store.append("own", {}, actor=actor)
        committed[own.seq] = time.monotonic()
        deadline = time.monotonic() + 2
        while len(seen) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await writer.close()
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    assert [seq for seq, _ in seen] == [2, 3, 4, 5]
    assert all(at - committed[seq] < 1.0 for seq, at in seen)


async def test_watch_after_seq_batches_and_ends_when_store_closes(state_path, actor, clock):
    s = await Store.open(state_path, clock=clock)
    await s.append_many([("x", {"i": i}) for i in range(1200)], actor=actor)
    batches = []

    async def consume() -> None:
        async for batch in s.watch(interval=0.05, after_seq=100):
            batches.append(batch)

    task = asyncio.ensure_future(consume())
    while sum(map(len, batches)) < 1100:
        await asyncio.sleep(0.02)
    await s.close()
    await asyncio.wait_for(task, 2)  # the feed ends by itself once the store is closed
    assert [b[0].seq for b in batches] == [101, 601, 1101]
    assert batches[-1][-1].seq == 1200


async def test_entries_report_an_altered_payload_clearly(store, actor, state_path):
    await store.append("a", {"x": 1}, actor=actor)
    conn = sqlite3.connect(state_path)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("UPDATE journal SET payload = '{broken' WHERE seq = 1")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="crmctl verify"):
        await store.entries()


async def test_clock_is_read_inside_the_transaction(state_path, actor, t0):
    clock = FrozenClock(t0)
    s = await Store.open(state_path, clock=clock)
    try:
        e = await s.append("a", {}, actor=Actor("bob", "jump-1"))
        assert e.ts == t0 and e.operator == "bob"
    finally:
        await s.close()
