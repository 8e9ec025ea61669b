"""Baselines against the emulator with injected latency: the figures, the budget, the verdicts."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path

from crmctl import baseline as bl
from crmctl.baseline_jobs import duration_s
from crmctl.baseline_stats import FASTER, NO_CHANGE, SLOWER, CompareSettings
from crmctl.config.sections import SloConfig
from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.emulator.server import Emulator
from crmctl.emulator.throttle import ThrottleLimits
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status, iso
from crmctl.store import Store
from tests.baseline.conftest import ACCOUNT_QUERY, Dataverse, latency, make_config

ACTOR = Actor("perf", "jump01")


def nearest_rank_by_definition(values: list[float], p: float) -> float:
    """The smallest sample with at least p % of the samples at or below it (no sorting tricks)."""
    return min(v for v in values if sum(1 for x in values if x <= v) >= p / 100 * len(values))


async def test_percentiles_are_those_of_the_samples_actually_taken(dataverse: Dataverse, tmp_path: Path) -> None:
    dataverse.emulator.set_scenario(latency(40, 10, seed=3))
    config = make_config(tmp_path, samples=12)
    baseline = await bl.capture(config, dataverse.client, name="lat", whoami=False, jobs=False)

    [q] = baseline.queries
    served = [r for r in dataverse.emulator.request_log if r.path.startswith("/api/data/v9.2/accounts")]
    assert len(q.durations_ms) == 12 == len(served) == q.requests
    # Each sample is a real request: at least the 30 ms the emulator added, and never less than
    # the time the emulator itself took to answer that very request.
    for client_ms, record in zip(q.durations_ms, served):
        assert client_ms >= 30.0
        assert client_ms >= record.duration_ms - 0.5
    figures = q.to_json()
    samples = list(q.durations_ms)
    for p in (50, 95, 99):
        assert figures[f"p{p}_ms"] == round(nearest_rank_by_definition(samples, p), 1)
    assert figures["min_ms"] == round(min(samples), 1) and figures["max_ms"] == round(max(samples), 1)
    assert figures["errors"] == 0 and figures["statuses"] == {"200": 12}
    assert figures["meets_slo"] is True  # ~50 ms against 500 ms
    assert math.isclose(figures["throughput_rps"], len(samples) / (sum(samples) / 1000), rel_tol=0.01)

    async with await Store.open(tmp_path / "state.db") as store:
        recorded = await bl.record(store, baseline, actor=ACTOR)
        [again] = await bl.baselines(store)
        assert (await bl.find(store, "lat")).seq == recorded.seq == again.seq
        assert (await bl.find(store, f"@{recorded.seq}")).name == "lat"
    assert again.query("account-view").durations_ms == tuple(round(d, 2) for d in samples)
    assert again.to_json()["queries"][0]["p95_ms"] == figures["p95_ms"]


async def test_errors_are_counted_not_timed(dataverse: Dataverse, tmp_path: Path) -> None:
    config = make_config(tmp_path, slos=(SloConfig("broken", "nosuchset?$select=name", p95_ms=100, samples=4),))
    baseline = await bl.capture(config, dataverse.client, name="errs", whoami=False, jobs=False)
    [q] = baseline.queries
    assert (q.tried, q.errors, q.durations_ms) == (4, 4, ())
    assert q.error_rate == 1.0 and q.statuses == {"404": 4}
    assert "nosuchset" in (q.first_error or "")


async def test_the_capture_never_exceeds_its_share_of_the_budget(dataverse: Dataverse, tmp_path: Path) -> None:
    config = make_config(tmp_path, samples=30, slos=(
        SloConfig("account-view", ACCOUNT_QUERY, p95_ms=500, samples=30),
        SloConfig("account-active", "accounts?$select=name&$filter=statecode eq 0&$top=5", p95_ms=500, samples=30),
    ))
    baseline = await bl.capture(config, dataverse.client, name="capped", max_requests=25)

    sent = dataverse.emulator.request_log
    assert len(sent) <= 25
    assert baseline.budget["spent"] == len(sent)
    assert baseline.budget["max_requests"] == 25
    assert sum(q.planned for q in baseline.queries) < 90  # 30 + 30 + 20 WhoAmI wanted
    assert any("reduced" in note for note in baseline.notes)
    assert all(q.planned >= 1 for q in baseline.queries)
    assert baseline.jobs["rows"] > 0  # room was kept for the system jobs
    assert dataverse.limiter.stats().requests == len(sent)  # every request also drew on the shared budget


async def test_retries_count_against_the_cap_too(dataverse: Dataverse, tmp_path: Path) -> None:
    """Every sample fails with a 503 and is retried twice: samples were planned at one request
    each, so only the cap itself keeps the capture within its share."""
    from crmctl.emulator.scenario import parse_scenario

    dataverse.emulator.set_scenario(parse_scenario({"name": "down", "seed": 1,
                                                    "faults": [{"kind": "error", "status": 503, "path": "accounts"}]}))
    baseline = await bl.capture(make_config(tmp_path, samples=20), dataverse.client, name="down", whoami=False,
                                jobs=False, max_requests=12)
    assert len(dataverse.emulator.request_log) == 12 == baseline.budget["spent"]
    [q] = baseline.queries
    assert q.requests == 12 and q.durations_ms == () and q.errors == 4  # 4 samples x 3 attempts
    assert any("stopped early" in note and "share of the request budget" in note for note in baseline.notes)


async def test_a_spent_shared_budget_stops_sampling_without_a_429(data_path: Path, tmp_path: Path, jobs_world: object) -> None:
    """The target's window allows 10 requests and the emulator would answer an 11th with 429:
    the capture stops at the shared limiter, says why, and never provokes the server."""
    async with Emulator(data_path, limits=ThrottleLimits(requests=10, window_s=300)) as emu:
        limiter = TargetLimiter(2, 10, 300.0)
        async with DataverseClient(emu.api_url, StaticTokenProvider(emu.token), limiter, retries=0) as client:
            started = time.monotonic()
            baseline = await bl.capture(make_config(tmp_path, samples=20), client, name="tight", jobs=False,
                                        max_requests=100, deadline_s=1.0)
            took = time.monotonic() - started
    assert len(emu.request_log) == 10
    assert {r.status for r in emu.request_log} == {200}
    assert any("stopped early" in note for note in baseline.notes)
    assert sum(q.tried for q in baseline.queries) == 10 and sum(q.errors for q in baseline.queries) == 0
    assert took < 10


async def test_compare_says_no_change_for_the_same_distribution_and_slower_for_a_shifted_one(
    dataverse: Dataverse, tmp_path: Path
) -> None:
    config = make_config(tmp_path, samples=16)
    emu = dataverse.emulator

    async def take(name: str, ms: float, seed: int, samples: int = 16) -> bl.Baseline:
        emu.set_scenario(latency(ms, 5, seed=seed))
        return await bl.capture(config, dataverse.client, name=name, samples=samples, whoami=False, jobs=False)

    before = await take("before", 60, seed=1)
    again = await take("again", 60, seed=2)  # a second draw from the same distribution
    slower = await take("slower", 180, seed=3, samples=10)

    same = bl.compare(before, again)
    assert same.verdicts == {"account-view": NO_CHANGE}, same.text()
    shifted = bl.compare(before, slower)
    assert shifted.verdicts == {"account-view": SLOWER}, shifted.text()
    p50 = shifted.rows[0]["intervals"][0]
    assert p50["stat"] == "p50" and p50["ci_low_ms"] > 0 and 100 < p50["diff_ms"] < 160
    assert bl.compare(slower, before).verdicts == {"account-view": FASTER}
    # Seeded: the same comparison twice gives the same interval, to the digit.
    assert bl.compare(before, slower, CompareSettings(seed=5)).to_json() == bl.compare(before, slower, CompareSettings(seed=5)).to_json()
    assert "beyond the noise" in shifted.rows[0]["sentence"] and "SLOWER" in shifted.text()


async def test_system_jobs_give_windows_integration_figures_and_peak_hours(dataverse: Dataverse, tmp_path: Path) -> None:
    world = dataverse.jobs
    async with await Store.open(tmp_path / "state.db") as store:
        slow = QueryRecord("dynamics", "GET", "https://org.example/api/data/v9.2/accounts?$select=name", 200, 4321.0,
                           started=iso(world.now))
        fast = QueryRecord("source", "SQL", "SELECT 1", None, 3.0, started=iso(world.now))
        await store.append_result(CheckResult("account.count", "row_count", Status.OK, world.now, world.now,
                                              "ok", queries=(slow, fast)), actor=ACTOR)
        baseline = await bl.capture(make_config(tmp_path, samples=3), dataverse.client, name="jobs", store=store,
                                    top_n=3, window=timedelta(hours=24))

    in_window = [r for r in world.rows if r["createdon"] >= iso(world.now - timedelta(hours=24))[:19]]
    assert baseline.jobs["rows"] == len(in_window) == len(world.rows) - 1
    windows = {w["name"]: w for w in baseline.jobs["windows"]}
    nightly = windows["Nightly Import"]
    assert (nightly["jobs"], nightly["succeeded"], nightly["max_s"]) == (8, 8, 480.0)
    assert nightly["p95_s"] == 480.0 and nightly["p50_s"] == 240.0  # nearest rank of 60..480
    assert nightly["busy_s"] == sum(60 * (i + 1) for i in range(8))

    [erp] = baseline.integrations
    assert (erp["jobs"], erp["completed"], erp["succeeded"], erp["failed"], erp["pending"]) == (21, 20, 16, 4, 1)
    assert erp["failure_rate"] == 0.2
    assert (erp["retried"], erp["retries"], erp["retried_then_succeeded"]) == (8, 4 * 1 + 4 * 3, 4)
    assert erp["top_errors"][0]["hex"] == "0x80072322" and erp["top_errors"][0]["jobs"] == 4
    assert erp["per_hour"] == round(20 / 24, 3)
    durations = sorted(duration_s(r) * 1000 for r in in_window if r["name"].startswith("ERP") and "completedon" in r)
    assert erp["p95_ms"] == durations[math.ceil(0.95 * len(durations)) - 1]

    expected_hours = [0] * 24
    for row in in_window:
        expected_hours[int(row["createdon"][11:13])] += 1
    assert list(baseline.peak_hours) == expected_hours
    assert baseline.peak_hour == max(range(24), key=lambda h: (expected_hours[h], -h))

    assert baseline.slowest[0]["duration_ms"] == 4321.0 and baseline.slowest[0]["source"] == "check account.count"
    assert len(baseline.slowest) == 3
    assert [s["duration_ms"] for s in baseline.slowest] == sorted((s["duration_ms"] for s in baseline.slowest), reverse=True)


def test_plan_samples_scales_down_and_never_overshoots() -> None:
    assert bl.plan_samples([20, 20, 20], 100) == [20, 20, 20]
    assert bl.plan_samples([30, 30, 20], 40) == [15, 15, 10]
    assert sum(bl.plan_samples([5, 5, 5, 5], 3)) == 3
    assert bl.plan_samples([5, 5], 0) == [0, 0]
