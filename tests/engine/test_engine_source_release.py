"""A check that ends in the middle of a source stream does not leave the legacy database locked.

A check cancelled or timed out between two batches of a source query leaves its stream suspended
at a `yield`, holding a cursor — and, on a rollback-journal SQLite source, a read lock that keeps
the legacy CRM's writers out — until the garbage collector gets to it. The engine releases the
run's cursors when the run ends; this proves it with a writer that needs the exclusive lock.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from checks.registry import REGISTRY, check_kinds
from crmctl.checking import CheckContext
from crmctl.config import CheckKindSpec, load_config
from crmctl.control import ControlRoom
from crmctl.identity import Actor
from crmctl.model import Status

ACTOR = Actor("tester", "test-host")
_HELD: list[Any] = []
"""The abandoned streams, kept alive as a traceback or a long-lived task would keep them."""


class _Abandoning:
    """Reads one batch of a source query, then hangs past its deadline (the stream stays open)."""

    kind: ClassVar[str] = "abandon"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(needs_entity=False, params={}, description="test")

    async def run(self, ctx: CheckContext):
        stream = ctx.source.rows("SELECT contact_id FROM contacts", batch=10)
        _HELD.append(stream)
        assert len(await stream.__anext__()) == 10  # the cursor is open now, mid-result
        await asyncio.sleep(60)


def _writer_can_lock(db: Path) -> bool:
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        conn.close()


async def test_a_timed_out_check_leaves_no_read_lock_on_the_source(demo_dir: Path, demo_config: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    shutil.copy(demo_dir / "world" / "source.db", source)
    with sqlite3.connect(source) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # readers block writers
    config = load_config(demo_config, check_kinds=check_kinds())
    whoami = config.check("dynamics.whoami")
    check = replace(whoami, id="x.abandon", kind="abandon", timeout=timedelta(seconds=0.5))
    config = replace(config, source=replace(config.source, url=f"sqlite:///{source}"), checks=(check,),
                     runbook=(), rollback=None)
    async with ControlRoom.open(config, {**REGISTRY, "abandon": _Abandoning}, actor=ACTOR) as room:
        [result] = await room.run_checks()
        assert result.status is Status.ERROR and "deadline" in result.explanation
        assert _HELD, "the check never opened its stream"
        # The room (and its source connection) is still open: only the released cursor frees the file.
        assert _writer_can_lock(source), "the ended check still holds a read lock on the source"
    _HELD.clear()


async def test_release_closes_only_the_named_checks_cursors(tmp_path: Path) -> None:
    from crmctl.connectors.limits import request_owner
    from crmctl.connectors.sql import SqlSource

    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    source = SqlSource(f"sqlite:///{db}")
    streams = {}
    for owner in ("a", "b"):
        token = request_owner.set(owner)
        try:
            streams[owner] = source.rows("SELECT k FROM t", batch=10)
            await streams[owner].__anext__()
        finally:
            request_owner.reset(token)
    assert await source.release("a") == 1
    assert not _writer_can_lock(db)  # b's cursor still reads
    assert await source.release("b") == 1
    assert _writer_can_lock(db)
    assert await source.release("b") == 0
    for stream in streams.values():
        await stream.aclose()  # a stream closed late is harmless
    await source.close()
