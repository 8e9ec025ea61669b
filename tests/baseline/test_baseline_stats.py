"""The statistics: nearest-rank percentiles, and a bootstrap that tells change from noise."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmctl.baseline_stats import (
    FASTER,
    INSUFFICIENT,
    MIXED,
    NO_CHANGE,
    SLOWER,
    CompareSettings,
    compare_samples,
    nice_ceil,
    percentile,
    summarise,
)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=60),
       st.sampled_from([1, 25, 50, 90, 95, 99, 100]))
@settings(max_examples=150, deadline=None)
def test_percentile_is_the_nearest_rank_by_definition(values: list[float], p: int) -> None:
    got = percentile(values, p)
    assert got in values  # always a measured value, never an interpolation
    at_or_below = sum(1 for v in values if v <= got)
    assert at_or_below >= p / 100 * len(values) - 1e-9
    assert all(sum(1 for v in values if v <= smaller) < p / 100 * len(values) - 1e-9 for smaller in values if smaller < got)


def test_percentile_small_cases_and_errors() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2], 50) == 1 and percentile([1, 2], 51) == 2
    assert percentile(list(range(1, 21)), 95) == 19  # rank ceil(19.0) = 19
    assert percentile(list(range(1, 101)), 99) == 99
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 0)
    assert summarise([]) is None
    s = summarise([3, 1, 2])
    assert s is not None and (s.n, s.p50, s.min, s.max, s.mean) == (3, 2, 1, 3, 2)


def lognormal(rng: random.Random, n: int, median_ms: float, scale: float = 1.0) -> list[float]:
    return [scale * median_ms * math.exp(rng.gauss(0, 0.25)) for _ in range(n)]


def test_same_distribution_is_no_change_almost_always() -> None:
    """40 independent pairs from one latency distribution: at most 5 % false alarms (the stated
    1 - confidence for the verdict as a whole, p50 and p95 together)."""
    fast = CompareSettings(resamples=500)
    verdicts = []
    for seed in range(40):
        rng = random.Random(seed)
        verdicts.append(compare_samples("q", lognormal(rng, 20, 120), lognormal(rng, 20, 120), fast).verdict)
    assert verdicts.count(NO_CHANGE) >= 38, verdicts


def test_a_shift_beyond_the_noise_is_slower_or_faster() -> None:
    fast = CompareSettings(resamples=500)
    for seed in range(10):
        rng = random.Random(100 + seed)
        a, b = lognormal(rng, 20, 120), lognormal(rng, 20, 120, scale=1.6)
        assert compare_samples("q", a, b, fast).verdict == SLOWER
        assert compare_samples("q", b, a, fast).verdict == FASTER


def test_a_real_but_tiny_change_is_no_change() -> None:
    """+2 % with no noise at all is certain, and still below the practical threshold."""
    a = [100.0 + i * 0.01 for i in range(30)]
    b = [v * 1.02 for v in a]
    result = compare_samples("q", a, b)
    assert result.verdict == NO_CHANGE
    assert all(i.low > 0 for i in result.intervals)  # statistically clear...
    assert "under 10%" in result.sentence  # ...practically irrelevant, and said so


def test_median_and_tail_moving_apart_is_mixed() -> None:
    a = [100.0] * 30 + [400.0] * 10
    b = [150.0] * 30 + [160.0] * 10
    assert compare_samples("q", a, b, CompareSettings(resamples=500)).verdict == MIXED


def test_too_few_samples_give_no_verdict() -> None:
    result = compare_samples("q", [1.0, 2.0, 3.0], [10.0] * 20)
    assert result.verdict == INSUFFICIENT and result.intervals == ()


def test_the_bootstrap_is_reproducible_and_seed_dependent() -> None:
    rng = random.Random(1)
    a, b = lognormal(rng, 15, 80), lognormal(rng, 15, 95)
    one = compare_samples("q", a, b, CompareSettings(seed=3)).to_json()
    assert one == compare_samples("q", a, b, CompareSettings(seed=3)).to_json()
    assert one["intervals"] != compare_samples("q", a, b, CompareSettings(seed=4)).to_json()["intervals"]


def test_nice_ceil_rounds_up_to_two_significant_digits() -> None:
    assert nice_ceil(123.4) == 130 and nice_ceil(47.2) == 48 and nice_ceil(0.871) == 0.88
    assert nice_ceil(1000) == 1000 and nice_ceil(1001) == 1100
    assert all(nice_ceil(v) >= v for v in (0.013, 9.99, 77.7, 5432.1))
