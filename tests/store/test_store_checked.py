"""append_checked: a refusal decided inside the write transaction, so concurrent operators cannot both win."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crmctl.identity import Actor
from crmctl.store import JournalEntry, Store


class AlreadyDone(Exception):
    pass


def _refuse_if_done(step: str):
    def check(entries: list[JournalEntry]) -> None:
        for entry in entries:
            if entry.payload.get("step") == step:
                raise AlreadyDone(f"step {step!r} was already completed by {entry.operator}@{entry.host}")

    return check


async def test_refusal_writes_nothing(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        alice, bob = Actor("alice", "h1"), Actor("bob", "h2")
        first = await store.append_checked("step.done", {"step": "delta"}, actor=alice, kinds=["step.done"], check=_refuse_if_done("delta"))
        assert first.seq == 1
        with pytest.raises(AlreadyDone, match="alice@h1"):
            await store.append_checked("step.done", {"step": "delta"}, actor=bob, kinds=["step.done"], check=_refuse_if_done("delta"))
        assert await store.last_seq() == 1
        assert (await store.verify()).ok


async def test_two_connections_racing_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await Store.open(path) as a, await Store.open(path) as b:
        async def attempt(store: Store, who: str) -> bool:
            try:
                await store.append_checked("step.done", {"step": "x"}, actor=Actor(who, "h"), kinds=["step.done"], check=_refuse_if_done("x"))
                return True
            except AlreadyDone:
                return False

        wins = await asyncio.gather(*(attempt(s, f"op{i}") for i, s in enumerate([a, b] * 5)))
        assert sum(wins) == 1
        assert len(await a.entries(kinds=["step.done"])) == 1


def test_eight_processes_racing_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from crmctl.identity import Actor
        from crmctl.store import Store
        async def main():
            store = await Store.open({str(path)!r})
            def check(entries):
                if entries: raise RuntimeError("taken by " + entries[0].operator)
            try:
                await store.append_checked("step.done", {{"step": "x"}}, actor=Actor(sys.argv[1], "h"), kinds=["step.done"], check=check)
                print("WON")
            except RuntimeError as exc:
                print("REFUSED", exc)
            finally:
                await store.close()
        asyncio.run(main())
        """
    )
    asyncio.run(_init(path))
    procs = [subprocess.Popen([sys.executable, "-c", script, f"op{i}"], stdout=subprocess.PIPE, text=True) for i in range(8)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert sum("WON" in out for out in outputs) == 1, outputs
    assert sum("REFUSED taken by op" in out for out in outputs) == 7


async def _init(path: Path) -> None:
    await (await Store.open(path)).close()
