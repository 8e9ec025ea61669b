"""The external sort behind the merge: both sides' keys re-sorted on disk in crmctl's own order.

Used only when a side's order disagrees with `fold` (see checks/merge.py). Keys and payloads
are written to a temporary SQLite file together with their folded form, indexed, and read back
ordered by the folded form, which SQLite compares byte-wise (UTF-8), i.e. exactly as Python
compares the folded strings. Memory stays bounded by a batch; the disk holds both key lists.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

from checks.keys import fold_all
from checks.merge import Batch

SIDES = ("source", "target")


class Spill:
    """A temporary on-disk table per side; `load` in any order, then `ordered` to read back."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="crmctl-spill-"))
        self._db = sqlite3.connect(self._dir / "spill.db", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        for side in SIDES:
            self._db.execute(f"CREATE TABLE {side} (f TEXT NOT NULL, k TEXT NOT NULL, v TEXT)")
        self._lock = asyncio.Lock()
        self._indexed = False

    async def load(self, side: str, batches: AsyncIterator[Batch]) -> int:
        """Writes every batch of `side`; returns the rows written."""
        assert side in SIDES
        total = 0
        async for batch in batches:
            if not batch.keys:
                continue
            folded = fold_all(batch.keys)
            values = [None] * len(folded) if batch.values is None else [json.dumps(v) for v in batch.values]
            rows = list(zip(folded, batch.keys, values))
            async with self._lock:
                await asyncio.to_thread(self._db.executemany, f"INSERT INTO {side} VALUES (?, ?, ?)", rows)
            total += len(rows)
        return total

    async def ordered(self, side: str, size: int = 5000) -> AsyncIterator[Batch]:
        """The rows of `side` in folded order, in batches of `size`."""
        async with self._lock:
            if not self._indexed:
                for s in SIDES:
                    await asyncio.to_thread(self._db.execute, f"CREATE INDEX ix_{s} ON {s} (f)")
                self._indexed = True
            cursor = self._db.cursor()
            await asyncio.to_thread(cursor.execute, f"SELECT k, v FROM {side} ORDER BY f, rowid")
        while True:
            async with self._lock:
                rows = await asyncio.to_thread(cursor.fetchmany, size)
            if not rows:
                return
            values = [None if v is None else _tuple(json.loads(v)) for _, v in rows]
            yield Batch([k for k, _ in rows], None if all(v is None for _, v in rows) else values)

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
