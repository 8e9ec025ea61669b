"""Journal time never runs backwards, whatever clocks the writers keep.

Found by the crash-safety harness: the runbook CLI stamped with the wall clock while the app and
the incident commands ran on the demo's rehearsal clock a week ahead, so entry 13 was stamped
before entry 12. Time travel finds "as of 02:14" by a binary search over seq that needs ts order
= seq order, so the store now stamps an entry no earlier than the one before it.
"""

from __future__ import annotations

from datetime import timedelta

from crmctl.clock import FrozenClock
from crmctl.identity import Actor
from crmctl.store import Store


async def test_a_writer_whose_clock_is_behind_stamps_at_the_head(state_path, t0) -> None:
    ahead, behind = FrozenClock(t0 + timedelta(days=6)), FrozenClock(t0)
    actor = Actor("alice", "local")
    first = await Store.open(state_path, clock=ahead)
    second = await Store.open(state_path, clock=behind)
    try:
        a = await first.append("test.ahead", {"n": 1}, actor=actor)
        b = await second.append("test.behind", {"n": 2}, actor=actor)
        assert b.ts == a.ts == t0 + timedelta(days=6)
        behind.advance(timedelta(days=7))  # its clock passes the head: its own time again
        c = await second.append("test.behind", {"n": 3}, actor=actor)
        assert c.ts == t0 + timedelta(days=7)
        stored = await first.entries()
        assert [e.ts for e in stored] == [a.ts, b.ts, c.ts]
        assert (await first.verify()).ok
    finally:
        await second.close()
        await first.close()


async def test_a_batch_behind_the_head_is_stamped_at_the_head_too(state_path, t0) -> None:
    actor = Actor("alice", "local")
    async with await Store.open(state_path, clock=FrozenClock(t0 + timedelta(hours=1))) as ahead:
        head = await ahead.append("test.ahead", {}, actor=actor)
    async with await Store.open(state_path, clock=FrozenClock(t0)) as behind:
        batch = await behind.append_many([("test.b", {"i": 1}), ("test.b", {"i": 2})], actor=actor)
        assert {e.ts for e in batch} == {head.ts}
        seq_order = [e.ts for e in await behind.entries()]
        assert seq_order == sorted(seq_order)
