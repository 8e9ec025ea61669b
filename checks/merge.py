"""A streaming merge of two sorted key streams (source, Dynamics) in windows of at most a page or two.

Memory is bounded by pages, not by table size: each side holds one buffered batch (plus one
prefetched), and a window holds only the keys up to the smaller of the two buffers' last keys,
which are then final on both sides. A window whose folded keys are equal on both sides (the
overwhelming case in a migration) is matched with one C-level list comparison; only windows
that differ are examined key by key.

Nothing about the order is taken on trust. Every batch is checked, as it arrives, to be
strictly increasing in `fold` order and inside the key range it was asked for; a key equal to
its predecessor is a duplicate, reported and dropped. If either side's order disagrees with
`fold` (another collation, numeric keys, a server that sorts hyphens differently), the merge
raises `OrderMismatch` and the caller re-runs the comparison through an external sort; a
wrong order is never allowed to surface as "missing" or "extra" keys.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Generic, TypeVar

from checks.keys import KeyRange, fold_all


class OrderMismatch(Exception):
    """A side's keys did not arrive in `fold` order, or outside the range asked for."""

    def __init__(self, side: str, detail: str) -> None:
        self.side = side
        super().__init__(f"{side} keys are not in case-insensitive order: {detail}")


@dataclass
class Batch:
    """Keys (as text) with an optional payload per key, in the order a side sent them."""

    keys: list[str]
    values: list[Any] | None = None


Duplicate = Callable[[str, str, Any], None]
"""Called with (side, key, value) for a key equal (case-insensitively) to the one before it."""


def strictly_increasing(items: list[str]) -> bool:
    """True when every item is greater than the one before it; the common case stays in C.

    Timsort confirms an already sorted list with one pass of n-1 string comparisons (about five
    times cheaper than a Python-level pairwise `map(lt, ...)`), and a set of the same size shows
    no item repeats; any other batch takes the key-by-key path, which says exactly what is wrong.
    """
    return items == sorted(items) and len(set(items)) == len(items)


class SortedStream:
    """One side of the merge: folds, verifies and de-duplicates the batches of a source iterator."""

    def __init__(
        self, side: str, batches: AsyncIterator[Batch], key_range: KeyRange, on_duplicate: Duplicate | None = None
    ) -> None:
        self.side = side
        self._batches = batches
        self._low, self._high = key_range.folded
        self._on_duplicate = on_duplicate
        self._last: str | None = None
        self.folded: list[str] = []
        self.keys: list[str] = []
        self.values: list[Any] | None = None
        self.done = False
        self.rows = 0
        """Rows received, duplicates included."""

    async def fill(self) -> None:
        """Appends the next non-empty batch to the buffer, or marks the stream done."""
        while not self.done:
            try:
                batch = await self._batches.__anext__()
            except StopAsyncIteration:
                self.done = True
                return
            if batch.keys:
                self._accept(batch)
                return

    def _accept(self, batch: Batch) -> None:
        keys = batch.keys
        self.rows += len(keys)
        folded = fold_all(keys)
        last = self._last
        if (last is None or last < folded[0]) and strictly_increasing(folded):
            kept_f, kept_k, kept_v = folded, keys, batch.values
        else:
            kept_f, kept_k = [], []
            kept_v = [] if batch.values is not None else None
            for i, f in enumerate(folded):
                if last is not None and f <= last:
                    if f < last:
                        raise OrderMismatch(self.side, f"{keys[i]!r} came after {last!r}")
                    if self._on_duplicate is not None:
                        self._on_duplicate(self.side, keys[i], None if batch.values is None else batch.values[i])
                    continue
                kept_f.append(f)
                kept_k.append(keys[i])
                if kept_v is not None:
                    kept_v.append(batch.values[i])  # type: ignore[index]
                last = f
        if not kept_f:
            return
        if (self._low is not None and kept_f[0] < self._low) or (self._high is not None and kept_f[-1] >= self._high):
            outside = kept_k[0] if self._low is not None and kept_f[0] < self._low else kept_k[-1]
            raise OrderMismatch(self.side, f"{outside!r} was returned for the key range {self._low!r}..{self._high!r}")
        self._last = kept_f[-1]
        if self.folded:
            self.folded.extend(kept_f)
            self.keys.extend(kept_k)
            if self.values is not None and kept_v is not None:
                self.values.extend(kept_v)
        else:
            # The batch is this stream's alone (each comes from one producer, once), so its lists
            # become the buffer as they are: no copy of a page of keys.
            self.folded, self.keys = kept_f, kept_k
            self.values = kept_v

    def take(self, count: int | None = None) -> tuple[list[str], list[str], list[Any] | None]:
        """Removes and returns the first `count` buffered entries (all when None)."""
        if count is None or count >= len(self.folded):
            out = (self.folded, self.keys, self.values)
            self.folded, self.keys = [], []
            self.values = None if self.values is None else []
            return out
        out = (self.folded[:count], self.keys[:count], None if self.values is None else self.values[:count])
        del self.folded[:count], self.keys[:count]
        if self.values is not None:
            del self.values[:count]
        return out


@dataclass
class Window:
    """Keys up to some point on both sides, each strictly increasing; final for that span."""

    source_folded: list[str]
    source_keys: list[str]
    source_values: list[Any] | None
    target_folded: list[str]
    target_keys: list[str]
    target_values: list[Any] | None

    @property
    def aligned(self) -> bool:
        """True when both sides hold exactly the same keys (every key matched, positionally)."""
        return self.source_folded == self.target_folded

    def split(self) -> tuple[list[int], list[int]]:
        """(indexes of source keys missing in Dynamics, indexes of Dynamics keys extra), ascending.

        Set differences run in C; only the (few) differing keys are located, by bisection.
        """
        if self.aligned:
            return [], []
        sf, tf = self.source_folded, self.target_folded
        source_set, target_set = set(sf), set(tf)
        missing = [bisect_left(sf, f) for f in sorted(source_set.difference(target_set))]
        extra = [bisect_left(tf, f) for f in sorted(target_set.difference(source_set))]
        return missing, extra

    def matched(self) -> tuple[list[str], list[Any], list[Any]]:
        """Matched keys with their source and Dynamics payloads, aligned position by position."""
        sv = self.source_values if self.source_values is not None else [None] * len(self.source_keys)
        tv = self.target_values if self.target_values is not None else [None] * len(self.target_keys)
        if self.aligned:
            return self.source_keys, sv, tv
        missing, extra = self.split()
        return without(self.source_keys, missing), without(sv, missing), without(tv, extra)


def without(items: list[Any], drop: list[int]) -> list[Any]:
    """`items` minus the positions in `drop` (ascending), by slicing around them."""
    if not drop:
        return items
    kept: list[Any] = []
    previous = 0
    for index in drop:
        kept.extend(items[previous:index])
        previous = index + 1
    kept.extend(items[previous:])
    return kept


async def windows(source: SortedStream, target: SortedStream) -> AsyncIterator[Window]:
    """Yields windows until both streams are exhausted."""
    while True:
        if not source.folded and not source.done:
            await source.fill()
            continue
        if not target.folded and not target.done:
            await target.fill()
            continue
        if not source.folded and not target.folded:
            return
        if not source.folded:  # source exhausted: everything left in Dynamics is extra
            sf, sk, sv = [], [], []
            tf, tk, tv = target.take()
        elif not target.folded:
            sf, sk, sv = source.take()
            tf, tk, tv = [], [], []
        else:
            high = min(source.folded[-1], target.folded[-1])
            sf, sk, sv = source.take(bisect_right(source.folded, high))
            tf, tk, tv = target.take(bisect_right(target.folded, high))
        yield Window(sf, sk, sv, tf, tk, tv)


T = TypeVar("T")


class Prefetch(Generic[T]):
    """Reads an async iterator one item ahead in a task, so network waits overlap processing.

    The queue holds at most `depth` items, which keeps memory bounded by pages; an exception in
    the producer is re-raised to the consumer, and `aclose()` cancels the producer.
    """

    _END = object()

    def __init__(self, source: AsyncIterator[T], depth: int = 1) -> None:
        self._source = source
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, depth))
        self._task: asyncio.Task[None] | None = None

    def __aiter__(self) -> Prefetch[T]:
        return self

    async def __anext__(self) -> T:
        if self._task is None:
            self._task = asyncio.create_task(self._produce())
        item = await self._queue.get()
        if item is self._END:
            self._queue.put_nowait(self._END)  # stay exhausted
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            raise item.error
        return item  # type: ignore[no-any-return]

    async def _produce(self) -> None:
        try:
            async for item in self._source:
                await self._queue.put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides
            await self._queue.put(_Failure(exc))
            return
        await self._queue.put(self._END)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        closer = getattr(self._source, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except RuntimeError:
                pass  # already running elsewhere (cancelled mid-iteration); nothing left to close


@dataclass
class _Failure:
    error: BaseException
