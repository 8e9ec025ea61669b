"""The statistics behind performance baselines: percentiles, and whether a change is beyond the noise.

Why these choices:

* Percentiles are **nearest-rank** (the value at rank ceil(p/100 * n) of the sorted samples), the
  definition the `api_latency` check uses: every figure reported is a latency that was actually
  measured, and a baseline and a check quoting "p95" mean the same thing.
* Two baselines are compared with a **seeded percentile bootstrap** of the difference B - A of
  p50 and p95 (each interval at a Bonferroni-corrected level, so the verdict as a whole keeps
  the stated confidence). Twenty samples of a latency are noisy; a "before 120 ms, after 131 ms" pair
  says nothing until we know how far apart two captures of the *same* system typically are.
  The bootstrap answers that from the samples themselves, without assuming a distribution
  (latencies are skewed, never normal). The seed makes a comparison reproducible: the auditor
  re-running `crmctl baseline compare` gets the same interval.
* A change is only called "slower" or "faster" when it is both **statistically** clear (the
  confidence interval of the difference excludes zero) and **practically** meaningful (at least
  `min_change` of the before value and `min_change_ms`): a 0.4 ms shift with a tight interval
  is real but irrelevant, and the jitter of a loaded jump host must not page anyone.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

PERCENTILES: tuple[int, ...] = (50, 95, 99)
METHOD = "nearest-rank"

NO_CHANGE = "no change"
SLOWER = "slower"
FASTER = "faster"
MIXED = "mixed"
INSUFFICIENT = "insufficient data"
VERDICTS = (NO_CHANGE, SLOWER, FASTER, MIXED, INSUFFICIENT)

MIN_SAMPLES = 5
"""Below this many measured samples on either side no verdict is given: a bootstrap of three
values mostly resamples the same value and would report false certainty."""


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `values`.

    Raises:
        ValueError: `values` is empty or `p` is out of range.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    return _ranked(ordered, p)


def _ranked(ordered: Sequence[float], p: float) -> float:
    """Nearest rank on already sorted values (the bootstrap's hot path sorts once per resample)."""
    rank = max(1, math.ceil(p / 100 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Summary:
    """The figures of one set of latency samples, in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "p50_ms": round(self.p50, 1),
            "p95_ms": round(self.p95, 1),
            "p99_ms": round(self.p99, 1),
            "mean_ms": round(self.mean, 1),
            "min_ms": round(self.min, 1),
            "max_ms": round(self.max, 1),
        }


def summarise(values: Sequence[float]) -> Summary | None:
    """p50/p95/p99, mean, min and max of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return Summary(
        n=len(ordered),
        p50=_ranked(ordered, 50),
        p95=_ranked(ordered, 95),
        p99=_ranked(ordered, 99),
        mean=sum(ordered) / len(ordered),
        min=ordered[0],
        max=ordered[-1],
    )


# --------------------------------------------------------------------------------------------
# bootstrap


@dataclass(frozen=True)
class Interval:
    """The difference B - A of one statistic with its bootstrap confidence interval (ms)."""

    stat: str
    """"p50" or "p95"."""
    a: float
    b: float
    diff: float
    low: float
    high: float
    verdict: str
    """NO_CHANGE, SLOWER or FASTER for this statistic alone."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stat": self.stat,
            "a_ms": round(self.a, 1),
            "b_ms": round(self.b, 1),
            "diff_ms": round(self.diff, 1),
            "ci_low_ms": round(self.low, 1),
            "ci_high_ms": round(self.high, 1),
            "verdict": self.verdict,
        }


def bootstrap_interval(
    a: Sequence[float],
    b: Sequence[float],
    p: float,
    *,
    rng: random.Random,
    resamples: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(point, low, high) of percentile_p(B) - percentile_p(A) by the percentile bootstrap.

    Each resample draws len(A) values from A and len(B) from B with replacement, independently:
    the two captures are independent runs, not paired measurements.
    """
    if not a or not b:
        raise ValueError("bootstrap needs samples on both sides")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    point = percentile(b, p) - percentile(a, p)
    na, nb = len(a), len(b)
    diffs = []
    choices = rng.choices
    for _ in range(max(1, resamples)):
        ra = sorted(choices(a, k=na))
        rb = sorted(choices(b, k=nb))
        diffs.append(_ranked(rb, p) - _ranked(ra, p))
    diffs.sort()
    tail = (1 - confidence) / 2 * 100
    low = _ranked(diffs, max(tail, 1e-9))
    high = _ranked(diffs, 100 - tail)
    return point, low, high


@dataclass(frozen=True)
class CompareSettings:
    """How strict `compare_samples` is; recorded with every comparison so it can be repeated."""

    resamples: int = 2000
    confidence: float = 0.95
    min_change: float = 0.10
    """A change smaller than this fraction of the before value is "no change", however certain."""
    min_change_ms: float = 5.0
    """...and so is one smaller than this many milliseconds."""
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "resamples": self.resamples,
            "confidence": self.confidence,
            "min_change": self.min_change,
            "min_change_ms": self.min_change_ms,
            "seed": self.seed,
            "method": f"{METHOD} percentiles, percentile bootstrap of B - A",
        }


@dataclass(frozen=True)
class SampleComparison:
    """Before/after of one query's latency samples, with the verdict and the sentence saying why."""

    verdict: str
    intervals: tuple[Interval, ...]
    sentence: str
    a_n: int
    b_n: int

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "a_n": self.a_n,
            "b_n": self.b_n,
            "intervals": [i.to_json() for i in self.intervals],
            "sentence": self.sentence,
        }


def stream_seed(seed: int, name: str) -> int:
    """A per-query seed: reproducible, and independent of which other queries were compared."""
    return (seed * 1_000_003) ^ zlib.crc32(name.encode("utf-8"))


def compare_samples(
    name: str,
    a: Sequence[float],
    b: Sequence[float],
    settings: CompareSettings = CompareSettings(),
) -> SampleComparison:
    """Says whether B's latencies are slower, faster or no different from A's, beyond the noise."""
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return SampleComparison(
            INSUFFICIENT,
            (),
            f"{name}: {len(a)} and {len(b)} measured samples; at least {MIN_SAMPLES} on each side "
            "are needed to tell a change from noise.",
            len(a),
            len(b),
        )
    rng = random.Random(stream_seed(settings.seed, name))
    intervals = []
    stats = (("p50", 50), ("p95", 95))
    # Two statistics, one verdict: each interval is taken at 1 - (1 - confidence) / 2
    # (Bonferroni), so a query of unchanged latency is called changed at most 1 - confidence
    # of the time, not twice that.
    each = 1 - (1 - settings.confidence) / len(stats)
    for stat, p in stats:
        point, low, high = bootstrap_interval(a, b, p, rng=rng, resamples=settings.resamples, confidence=each)
        before = percentile(a, p)
        floor = max(settings.min_change * before, settings.min_change_ms)
        if low > 0 and point >= floor:
            verdict = SLOWER
        elif high < 0 and -point >= floor:
            verdict = FASTER
        else:
            verdict = NO_CHANGE
        intervals.append(Interval(stat, before, percentile(b, p), point, low, high, verdict))
    verdicts = {i.verdict for i in intervals}
    if SLOWER in verdicts and FASTER in verdicts:
        overall = MIXED
    elif SLOWER in verdicts:
        overall = SLOWER
    elif FASTER in verdicts:
        overall = FASTER
    else:
        overall = NO_CHANGE
    return SampleComparison(
        overall, tuple(intervals), _sentence(name, overall, intervals, settings), len(a), len(b)
    )


def _sentence(name: str, verdict: str, intervals: Sequence[Interval], settings: CompareSettings) -> str:
    conf = f"{settings.confidence:.0%}"
    parts = [
        f"{i.stat} {i.a:.0f} -> {i.b:.0f} ms ({i.diff:+.1f} ms, {conf} CI {i.low:+.1f}..{i.high:+.1f})"
        for i in intervals
    ]
    figures = "; ".join(parts)
    if verdict == NO_CHANGE:
        why = (
            "within the noise: every interval includes zero or the change is under "
            f"{settings.min_change:.0%} / {settings.min_change_ms:g} ms"
        )
    elif verdict == MIXED:
        why = "the median and the tail moved in opposite directions beyond the noise"
    else:
        moved = [i.stat for i in intervals if i.verdict == verdict]
        why = f"{' and '.join(moved)} {verdict} beyond the noise"
    return f"{name}: {verdict.upper()} - {why}. {figures}."


def settings_from_json(data: Mapping[str, Any]) -> CompareSettings:
    """Rebuilds the settings a journalled comparison recorded."""
    return CompareSettings(
        resamples=int(data.get("resamples", 2000)),
        confidence=float(data.get("confidence", 0.95)),
        min_change=float(data.get("min_change", 0.10)),
        min_change_ms=float(data.get("min_change_ms", 5.0)),
        seed=int(data.get("seed", 0)),
    )


def nice_ceil(value: float) -> float:
    """`value` rounded *up* to two significant figures (123.4 -> 130, 47.2 -> 48, 0.87 -> 0.87).

    Proposed thresholds are read and typed by people; 137.26 ms invites false precision.
    """
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10 ** (math.floor(math.log10(value)) - 1)
    result = math.ceil(value / step - 1e-9) * step
    return float(round(result, 6))
