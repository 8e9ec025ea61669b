"""The streaming merge under arbitrary keys and batch boundaries: it agrees with set arithmetic or refuses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.keys import WHOLE, KeyRange, fold, partition_count, pick_boundaries, ranges_from
from checks.merge import Batch, OrderMismatch, SortedStream, strictly_increasing, windows, without
from checks.spill import Spill

KEYS = st.text(alphabet="aAbB_-09Zz[", min_size=1, max_size=4)


async def _batches(keys: list[str], sizes: list[int]) -> Any:
    i = 0
    for size in sizes * (len(keys) + 1):
        if i >= len(keys):
            return
        yield Batch(keys[i : i + size], [(k,) for k in keys[i : i + size]])
        i += size


def _merge(source: list[str], target: list[str], sizes: list[int], key_range: KeyRange = WHOLE) -> dict[str, Any]:
    out: dict[str, Any] = {"missing": [], "extra": [], "matched": [], "dups": []}

    async def go() -> None:
        dup = lambda side, key, value: out["dups"].append((side, key))  # noqa: E731
        left = SortedStream("source", _batches(source, sizes), key_range, dup)
        right = SortedStream("Dynamics", _batches(target, sizes[::-1] or [1]), key_range, dup)
        async for w in windows(left, right):
            missing, extra = w.split()
            out["missing"] += [w.source_keys[i] for i in missing]
            out["extra"] += [w.target_keys[i] for i in extra]
            keys, sv, tv = w.matched()
            assert [fold(v[0]) for v in sv] == [fold(v[0]) for v in tv]  # payloads stay aligned
            out["matched"] += keys

    asyncio.run(go())
    return out


@settings(max_examples=150, deadline=None)
@given(st.sets(KEYS, max_size=60), st.sets(KEYS, max_size=60), st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_merge_equals_set_arithmetic_on_folded_keys(source: set[str], target: set[str], sizes: list[int]) -> None:
    source_f = sorted({fold(k): k for k in source}.values(), key=fold)
    target_f = sorted({fold(k): k for k in target}.values(), key=fold)
    result = _merge(source_f, target_f, sizes)
    s, t = {fold(k) for k in source_f}, {fold(k) for k in target_f}
    assert [fold(k) for k in result["missing"]] == sorted(s - t)
    assert [fold(k) for k in result["extra"]] == sorted(t - s)
    assert [fold(k) for k in result["matched"]] == sorted(s & t)
    assert result["dups"] == []


@settings(max_examples=80, deadline=None)
@given(st.lists(KEYS, min_size=1, max_size=40), st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_case_variants_are_one_key_and_reported_as_duplicates(keys: list[str], sizes: list[int]) -> None:
    ordered = sorted(keys + [k.swapcase() for k in keys], key=fold)
    result = _merge(ordered, sorted(set(map(fold, keys))), sizes)
    assert result["missing"] == [] and result["extra"] == []
    assert len(result["dups"]) == len(ordered) - len(set(map(fold, ordered)))


def test_disorder_and_keys_outside_the_range_are_refused_not_misread() -> None:
    with pytest.raises(OrderMismatch, match="came after"):
        _merge(["b", "a"], ["a", "b"], [5])
    with pytest.raises(OrderMismatch, match="came after"):
        _merge(["a", "c"], ["a", "b", "B", "a"], [2])
    with pytest.raises(OrderMismatch, match="key range"):
        _merge(["m"], ["m", "z"], [5], KeyRange("k", "p"))


def test_external_sort_reorders_any_input_into_fold_order() -> None:
    async def go() -> list[str]:
        spill = Spill()
        try:
            await spill.load("source", _batches(["b", "A", "_x", "a", "C"], [2]))
            out: list[str] = []
            async for batch in spill.ordered("source", size=2):
                out += batch.keys
                assert batch.values is not None
            return out
        finally:
            spill.close()

    ordered = asyncio.run(go())
    assert [fold(k) for k in ordered] == sorted(fold(k) for k in ordered)
    assert sorted(ordered) == sorted(["b", "A", "_x", "a", "C"])


def test_partitions_and_boundaries() -> None:
    assert partition_count(0, 5000, 8) == 1
    assert partition_count(9_000, 5000, 8) == 1
    assert partition_count(62_000, 5000, 8) == 7  # two pages a range
    assert partition_count(1_000_000, 5000, 8) == 30  # four ranges a connection
    assert partition_count(10, 5000, 8, wanted=3) == 3
    bounds = pick_boundaries([f"K{i:03d}" for i in range(100)] + ["k050"], 4)
    assert [fold(b) for b in bounds] == sorted(fold(b) for b in bounds) and len(bounds) == 3
    ranges = ranges_from(bounds)
    assert ranges[0].low is None and ranges[-1].high is None
    assert ranges[1].odata("new_legacyid") == f"new_legacyid ge '{bounds[0]}' and new_legacyid lt '{bounds[1]}'"
    assert KeyRange(None, "O'Neil").odata("k") == "k ne null and k lt 'O''Neil'"
    assert without(list("abcdef"), [0, 3, 5]) == list("bce")


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=12))
def test_the_fast_order_check_agrees_with_the_pairwise_definition(keys: list[str]) -> None:
    folded = [fold(k) for k in keys]
    assert strictly_increasing(folded) == all(a < b for a, b in zip(folded, folded[1:]))
    ordered = sorted(set(folded))
    assert strictly_increasing(ordered)
    if len(ordered) > 1:
        assert not strictly_increasing(ordered[:1] + ordered)  # a repeat
        assert not strictly_increasing(ordered[::-1])  # a descent
