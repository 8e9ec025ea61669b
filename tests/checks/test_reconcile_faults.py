"""Fault matrix: under 429 storms, 503s, resets, slow answers, torn JSON and expiring tokens, every data
check is either exact or ERROR with the reason, never OK on incomplete data, and never early after a 429.

Each scenario runs one check of every data kind together through the engine, against the
embedded emulator serving a small demo world with small pages (so faults land mid-scan), and
each result is held to the ground truth: a status other than ERROR must come with exactly the
planted figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crmctl.model import Status
from tests.checks.datachecks import ONE_OF_EACH, run, verify, world, write_config

LIMITS = "{{concurrency: {c}, requests_per_5min: 5000, timeout: {timeout}, retries: {retries}, page_size: 200}}"
SCENARIOS = {
    # name: (scenario faults, limits, what the emulator log must show, error reasons allowed)
    "429-storm": (
        "  - {kind: throttle, every: 3, end: 2s, retry_after: 1s, limit: requests}\n",
        LIMITS.format(c=1, timeout="10s", retries=8), lambda r: r.status == 429, ("throttl",),
    ),
    "503s": (
        "  - {kind: error, status: 503, every: 6}\n",
        LIMITS.format(c=4, timeout="10s", retries=0), lambda r: r.status == 503, ("503", "unavailable"),
    ),
    "503s-retried": (
        "  - {kind: error, status: 503, every: 7, end: 1s}\n",
        LIMITS.format(c=1, timeout="10s", retries=3), lambda r: r.status == 503, ("503", "unavailable"),
    ),
    "resets": (
        "  - {kind: reset, every: 6}\n",
        LIMITS.format(c=4, timeout="10s", retries=0), lambda r: "reset" in r.faults, ("connection", "reset", "closed"),
    ),
    "slow": (
        "  - {kind: latency, ms: 600, every: 9}\n",
        LIMITS.format(c=4, timeout="300ms", retries=0), lambda r: "latency" in r.faults, ("did not answer", "within"),
    ),
    "torn-json": (
        "  - {kind: malformed, every: 6}\n",
        LIMITS.format(c=4, timeout="10s", retries=1), lambda r: "malformed" in r.faults, ("unusable", "not json"),
    ),
    "token-expiry": (
        "  - {kind: latency, ms: 15}\n  - {kind: token_expiry, lifetime: 400ms}\n",
        LIMITS.format(c=2, timeout="10s", retries=1), lambda r: r.status == 401, ("token",),
    ),
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_faults_never_yield_ok_on_incomplete_data(name: str, small: Path, tmp_path: Path) -> None:
    faults, limits, seen, reasons = SCENARIOS[name]
    scenario = f"name: {name}\nseed: 5\nfaults:\n{faults}"
    outcome = await run(write_config(tmp_path, small, ONE_OF_EACH, limits=limits, scenario=scenario))
    assert any(seen(r) for r in outcome.request_log), f"the {name} scenario never struck"
    assert not any(r.early for r in outcome.request_log), "a request was sent before a Retry-After expired"
    assert {r.method for r in outcome.request_log} == {"GET"}
    errors = 0
    for result in outcome.results.values():
        assert "Internal error" not in result.explanation, result.explanation
        if result.status is Status.ERROR:
            errors += 1
            assert not result.values and any(x in result.explanation.lower() for x in reasons), result.explanation
        else:
            verify(result, small)  # any figure shown is the exact, complete one
    # the write freeze reads only the source: it comes through every Dynamics fault
    assert outcome.results["source.write_freeze"].status is not Status.ERROR
    if name in ("429-storm", "token-expiry", "503s-retried"):  # survivable: retries, a fresh token
        assert errors == 0, {k: r.explanation for k, r in outcome.results.items() if r.status is Status.ERROR}
    if name in ("503s", "resets", "torn-json", "slow"):
        assert errors >= 1, f"{name}: the fault never defeated a check, so this run proved nothing"
