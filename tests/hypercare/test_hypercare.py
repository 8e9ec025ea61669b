"""Baseline, daily status, tolerances and checkpoints, on a real store with a frozen clock."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crmctl.clock import FrozenClock
from crmctl.config import DriftTolerance
from crmctl.hypercare import (
    BASELINE_KIND,
    EXIT_BREACH,
    EXIT_ERROR,
    EXIT_OK,
    STATUS_KIND,
    Baseline,
    BaselineRefused,
    build_view,
    classify,
    current_baseline,
    format_drift,
    freeze_baseline,
    freeze_on_signoff,
    metrics_of,
    run_hypercare,
)
from crmctl.model import QueryRecord, Status
from crmctl.store import Store
from tests.incidents.world import ALICE, build_config, result

GO_LIVE_AT = datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)
TOLERANCES = (
    DriftTolerance("*.count.target", max_pct=1.0),
    DriftTolerance("erp-sync.jobs.error_rate", max_abs=0.02),
)


def pack(target: int = 20000, error_rate: float = 0.01, whoami: Status = Status.OK, at: datetime = GO_LIVE_AT):  # noqa: ANN201
    """The results of one run of the test pack."""
    q = (QueryRecord("dynamics", "GET", "https://org/api/data/v9.2/accounts", 200, 120.0),
         QueryRecord("dynamics", "GET", "https://org/api/data/v9.2/contacts", 200, 80.0),
         QueryRecord("dynamics", "GET", "https://org/api/data/v9.2/WhoAmI", 503, 5.0))
    return [
        result("account.count", Status.OK, {"source": 20000, "target": target, "difference": target - 20000,
                                            "partitions": 1, "method": "aggregate"}, at=at, queries=q),
        result("contact.count", Status.OK, {"source": 62000, "target": 62000, "difference": 0}, at=at),
        result("dynamics.whoami", whoami, {"latency_ms": 11.0} if whoami is not Status.ERROR else {"latency_ms": 9e9}, at=at),
        result("erp-sync.jobs", Status.OK, {"failed_jobs": 1, "error_rate": error_rate, "by_name": {"x": 1},
                                            "backlog_exceeded": False}, at=at),
    ]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(GO_LIVE_AT)


@pytest.fixture
def config(tmp_path: Path):  # noqa: ANN201
    return build_config(tmp_path, tolerances=TOLERANCES)


@pytest.fixture
async def store(config, clock: FrozenClock):  # noqa: ANN001, ANN201
    s = await Store.open(config.state, clock=clock)
    try:
        yield s
    finally:
        await s.close()


async def journal(store: Store, results) -> None:  # noqa: ANN001
    for r in results:
        await store.append_result(r, actor=ALICE)


def test_metrics_are_every_measured_number_filed_by_category() -> None:
    metrics = metrics_of(pack())
    assert {n: m.category for n, m in metrics.items()} == {
        "account.count.source": "counts",
        "account.count.target": "counts",
        "account.count.difference": "counts",
        "contact.count.source": "counts",
        "contact.count.target": "counts",
        "contact.count.difference": "counts",
        "dynamics.whoami.latency_ms": "latency",
        "erp-sync.jobs.failed_jobs": "integrations",
        "erp-sync.jobs.error_rate": "integrations",
        "requests.dynamics.p50_ms": "latency",
        "requests.dynamics.p95_ms": "latency",
        "requests.dynamics.p99_ms": "latency",
    }
    # Percentiles over the successful requests only (the 503 is not a latency).
    assert (metrics["requests.dynamics.p50_ms"].value, metrics["requests.dynamics.p99_ms"].value) == (80.0, 120.0)
    # ERROR results measure nothing.
    assert "dynamics.whoami.latency_ms" not in metrics_of(pack(whoami=Status.ERROR))
    assert classify("kpi_parity", "open_pipeline") == "kpi" and classify("api_latency", "p95_ms") == "latency"


async def test_baseline_is_frozen_once_with_its_hash_and_evidence(config, store: Store, clock: FrozenClock) -> None:  # noqa: ANN001
    with pytest.raises(BaselineRefused, match="No check has a result yet"):
        await freeze_baseline(config, store, actor=ALICE)
    await journal(store, pack())
    baseline = await freeze_baseline(config, store, actor=ALICE, reason="sign-off")
    assert baseline.intact and len(baseline.content_hash) == 64
    refs = {e.payload["check_id"]: e for e in await store.entries(kinds=["check.result"])}
    assert {k: (v["result_seq"], v["result_hash"]) for k, v in baseline.checks.items()} == {
        k: (e.seq, e.hash) for k, e in refs.items()}
    assert baseline.metrics["account.count.target"].value == 20000
    with pytest.raises(BaselineRefused, match="already frozen .*needs --replace and a reason"):
        await freeze_baseline(config, store, actor=ALICE)
    clock.advance(timedelta(hours=2))
    await journal(store, pack(target=20010))
    replacement = await freeze_baseline(config, store, actor=ALICE, reason="late delta load", replace=True)
    assert replacement.replaces == baseline.seq and replacement.reason == "late delta load"
    assert current_baseline(await store.entries(kinds=[BASELINE_KIND])).seq == replacement.seq


async def test_a_tampered_baseline_no_longer_matches_its_hash(config, store: Store) -> None:  # noqa: ANN001
    await journal(store, pack())
    baseline = await freeze_baseline(config, store, actor=ALICE)
    forged = dataclasses.replace(baseline, metrics={**baseline.metrics, "account.count.target": dataclasses.replace(
        baseline.metrics["account.count.target"], value=19000.0)})
    assert baseline.intact and not forged.intact


async def test_signoff_freezes_the_baseline_once(config, store: Store) -> None:  # noqa: ANN001
    await journal(store, pack())
    other_step = await store.append("runbook.step.done", {"step": "reconcile"}, actor=ALICE)
    assert await freeze_on_signoff(config, store, other_step, actor=ALICE) is None
    done = await store.append("runbook.step.done", {"step": "signoff", "run": "production"}, actor=ALICE)
    baseline = await freeze_on_signoff(config, store, done, actor=ALICE)
    assert isinstance(baseline, Baseline) and baseline.reason == f"sign-off (journal seq {done.seq})"
    record = await store.append("signoff.recorded", {"role": "technical"}, actor=ALICE)
    assert await freeze_on_signoff(config, store, record, actor=ALICE) is None  # already frozen
    assert len(await store.entries(kinds=[BASELINE_KIND])) == 1


async def run_day(config, store: Store, clock: FrozenClock, results):  # noqa: ANN001, ANN201
    async def run_checks():  # noqa: ANN202 - what the engine does: journal, then return
        await journal(store, results)
        return results

    return await run_hypercare(config, store, run_checks, actor=ALICE, clock=clock)


async def test_daily_runs_pass_or_fail_on_tolerances_and_exit_like_crmctl_check(config, store: Store,
                                                                               clock: FrozenClock) -> None:  # noqa: ANN001
    first = await run_day(config, store, clock, pack())
    assert (first.status.verdict, first.exit_code) == ("NO BASELINE", EXIT_ERROR)
    assert first.status.checkpoint is None and first.status.day == 0

    await freeze_baseline(config, store, actor=ALICE)
    clock.advance(timedelta(days=1))
    day1 = await run_day(config, store, clock, pack(target=20150, error_rate=0.025))  # +0.75 %, +0.015
    assert (day1.status.day, day1.status.checkpoint, day1.status.verdict, day1.exit_code) == (1, "Day 1", "PASS", EXIT_OK)
    drift = {d["metric"]: d for d in day1.status.drift}
    assert drift["account.count.target"]["delta"] == 150 and drift["account.count.target"]["pct"] == 0.75
    assert drift["account.count.target"]["ok"] is True
    assert "contact.count.target" not in drift  # unchanged metrics are not drift
    # The status entry points at the exact results it judged.
    results = {e.payload["check_id"]: e for e in await store.entries(day1.entry.seq - 5, kinds=["check.result"])}
    assert {k: v["result_seq"] for k, v in day1.status.checks.items()} == {k: e.seq for k, e in results.items()}

    clock.advance(timedelta(days=1))
    day2 = await run_day(config, store, clock, pack(target=20300, error_rate=0.05))  # +1.5 %, +0.04
    assert (day2.status.verdict, day2.exit_code) == ("FAIL", EXIT_BREACH)
    assert sorted(day2.status.failing) == ["account.count.target", "erp-sync.jobs.error_rate"]

    clock.advance(timedelta(days=1))
    day3 = await run_day(config, store, clock, pack(whoami=Status.ERROR))
    assert (day3.status.verdict, day3.exit_code) == ("ERROR", EXIT_ERROR)
    breach = [*pack()[:3], result("erp-sync.jobs", Status.BREACH, {"error_rate": 0.01, "failed_jobs": 1})]
    day4 = await run_day(config, store, clock, breach)
    assert (day4.status.verdict, day4.exit_code) == ("FAIL", EXIT_BREACH)
    json.dumps(day4.entry.payload)


async def test_checkpoints_pass_fail_due_missed_and_upcoming(tmp_path: Path, store: Store, clock: FrozenClock) -> None:
    config = build_config(tmp_path, tolerances=TOLERANCES)
    config = dataclasses.replace(config, hypercare=dataclasses.replace(
        config.hypercare, checkpoints=(timedelta(days=1), timedelta(days=2), timedelta(days=3), timedelta(days=7))))
    await journal(store, pack())
    await freeze_baseline(config, store, actor=ALICE)
    clock.advance(timedelta(days=1))
    await run_day(config, store, clock, pack(target=20100))
    clock.advance(timedelta(days=2))  # Day 2 passes without a run; Day 3 is today
    view = build_view(config, await store.entries(kinds=[BASELINE_KIND, STATUS_KIND]), clock.now())
    assert [(c.label, c.state) for c in view.checkpoints] == [
        ("Day 1", "PASS"), ("Day 2", "MISSED"), ("Day 3", "DUE"), ("Day 7", "UPCOMING")]
    assert view.checkpoints[3].detail == "in 4 d (12-06)"
    await run_day(config, store, clock, pack(target=20400))
    view = build_view(config, await store.entries(kinds=[BASELINE_KIND, STATUS_KIND]), clock.now())
    assert view.checkpoints[2].state == "FAIL" and view.checkpoints[2].detail == "1 out of tolerance"
    # Drift over time: one point per run, against the baseline.
    assert view.series["account.count.target"] == (100.0, 400.0)
    first = view.drift[0]
    assert (first.metric, first.ok, format_drift(first)) == ("account.count.target", False, "+400 (+2 %)")
