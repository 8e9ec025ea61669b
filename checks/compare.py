"""Runs a key-by-key comparison of one entity over concurrent key ranges, with an exact fallback.

`compare` scans every key range on both sides at once (each scan within the target's shared
limiter) and feeds each range's merge windows to its own consumer, so results combine in key
order. If any side's order disagrees with crmctl's (an `OrderMismatch`), every partial result
is dropped and the comparison is redone through the external sort: slower, never wrong.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from crmctl.checking import CheckContext
from crmctl.connectors.sql import Condition
from checks.keys import WHOLE, KeyRange
from checks.merge import OrderMismatch, Prefetch, SortedStream, Window, windows
from checks.spill import Spill
from checks.streams import source_batches, target_batches

MERGE = "sorted merge"
EXTERNAL = "external sort"


class Consumer(Protocol):
    """Receives one key range's windows, in key order, and the duplicates found on either side."""

    def window(self, window: Window) -> None: ...

    def duplicate(self, side: str, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class Sides:
    """What to read on each side: the key column, payload columns and an optional filter."""

    table: str
    source_key: str
    entity_set: str
    target_key: str
    source_columns: Sequence[str] = ()
    target_attributes: Sequence[str] = ()
    source_where: Sequence[Condition] = ()
    target_filter: str | None = None


@dataclass
class Comparison:
    """How the comparison ran, and the consumers that hold its results (in key order)."""

    method: str
    partitions: int
    consumers: list[Any] = field(default_factory=list)
    order_note: str | None = None
    """Why the external sort was needed, when it was."""


async def compare(
    ctx: CheckContext,
    sides: Sides,
    ranges: Sequence[KeyRange],
    make: Callable[[int], Consumer],
    restart: Callable[[], None] = lambda: None,
) -> Comparison:
    """Compares both sides over `ranges`; `make(i)` builds the consumer of range i.

    On an order disagreement `restart()` is called (drop partial output, e.g. export parts)
    and one consumer, `make(0)`, receives the whole entity through the external sort.
    """
    consumers = [make(i) for i in range(len(ranges))]
    # Memory is bounded by the ranges in progress, not by how many there are: a few more than
    # the target's connections keep every connection busy while a range merges its last page.
    concurrency = ctx.config.target.limits.concurrency
    active = asyncio.Semaphore(concurrency + max(2, concurrency // 2))

    async def merge(key_range: KeyRange, consumer: Consumer) -> None:
        async with active:
            await _merge_range(ctx, sides, key_range, consumer)

    try:
        await gather_all(*(merge(r, c) for r, c in zip(ranges, consumers)))
        return Comparison(MERGE, len(ranges), consumers)
    except OrderMismatch as exc:
        note = str(exc)
    restart()
    consumer = make(0)
    await _external(ctx, sides, ranges, consumer)
    return Comparison(EXTERNAL, len(ranges), [consumer], order_note=note)


async def _merge_range(ctx: CheckContext, sides: Sides, key_range: KeyRange, consumer: Consumer) -> None:
    source = Prefetch(source_batches(
        ctx, sides.table, sides.source_key, key_range, sides.source_columns, sides.source_where
    ))
    target = Prefetch(target_batches(
        ctx, sides.entity_set, sides.target_key, key_range, sides.target_attributes, sides.target_filter
    ))
    try:
        left = SortedStream("source", source, key_range, consumer.duplicate)
        right = SortedStream("Dynamics", target, key_range, consumer.duplicate)
        async for window in windows(left, right):
            consumer.window(window)
    finally:
        await asyncio.gather(source.aclose(), target.aclose())


async def _external(ctx: CheckContext, sides: Sides, ranges: Sequence[KeyRange], consumer: Consumer) -> None:
    spill = Spill()
    try:
        loads = [spill.load("source", source_batches(
            ctx, sides.table, sides.source_key, WHOLE, sides.source_columns, sides.source_where
        ))]
        loads += [
            spill.load("target", target_batches(
                ctx, sides.entity_set, sides.target_key, r, sides.target_attributes, sides.target_filter, ordered=False
            ))
            for r in ranges
        ]
        await gather_all(*loads)
        left = SortedStream("source", spill.ordered("source"), WHOLE, consumer.duplicate)
        right = SortedStream("Dynamics", spill.ordered("target"), WHOLE, consumer.duplicate)
        async for window in windows(left, right):
            consumer.window(window)
    finally:
        spill.close()


async def gather_all(*aws: Any) -> list[Any]:
    """Runs all at once; on the first failure cancels the rest and re-raises that failure."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
