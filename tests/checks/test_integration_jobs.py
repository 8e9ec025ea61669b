"""system_jobs on the emulator: the demo's planted ERP failures against the generator's ground truth,
the 50,000+ backlog shown as such, windows, LIKE patterns, and the ERROR paths."""

from __future__ import annotations

import re
import sqlite3
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from checks.integration import like_filter, like_regex
from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import Config, load_config
from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.control import ControlRoom
from crmctl.demo.truth import summarise_jobs
from crmctl.demo_world import GroundTruth
from crmctl.emulator.server import Emulator
from crmctl.emulator.storage import EmulatorData
from crmctl.engine import Engine, Targets
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store

ACTOR = Actor("tester", "test-host")
JOB_COLUMNS = ("name", "statecode", "statuscode", "retrycount", "executiontimespan", "completedon", "createdon")


def _truth(demo_dir: Path) -> GroundTruth:
    return GroundTruth.load(demo_dir / "world")


def _config(demo_config: Path, **limits: object) -> Config:
    config = load_config(demo_config, check_kinds=check_kinds())
    if limits:
        config = replace(config, target=replace(config.target, limits=replace(config.target.limits, **limits)))
    return config


async def _room_run(config: Config, ids: list[str], now: datetime) -> dict[str, CheckResult]:
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR, clock=FrozenClock(now)) as room:
        results = await room.run_checks(ids)
        assert {r.method for r in room.emulator.request_log} <= {"GET"}
    return {r.check_id: r for r in results}


async def _run_on(emu: Emulator, config: Config, check_id: str, now: datetime) -> CheckResult:
    """One check through the real engine and store, against an emulator the test built."""
    limiter = TargetLimiter(4, 5000)
    async with DataverseClient(emu.api_url, StaticTokenProvider(emu.token), limiter, retries=1) as dynamics:
        store = await Store.open(config.state)
        try:
            engine = Engine(config, REGISTRY, store, Targets(dynamics, None), actor=ACTOR, clock=FrozenClock(now))
            return (await engine.run_once([check_id]))[0]
        finally:
            await store.close()


def _jobs(db: Path, pattern: str) -> list[dict]:
    """Every asyncoperation row whose name matches `pattern`, straight from the emulator file."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(f"SELECT {', '.join(JOB_COLUMNS)}, asyncoperationid FROM e_asyncoperation").fetchall()
    finally:
        conn.close()
    names = like_regex(pattern)
    return [dict(zip(JOB_COLUMNS + ("asyncoperationid",), r)) for r in rows if names.fullmatch(r[0])]


async def test_demo_erp_sync_is_red_and_marketing_sync_green_with_the_truth_numbers(
    demo_dir: Path, demo_config: Path
) -> None:
    truth = _truth(demo_dir)
    results = await _room_run(_config(demo_config), ["erp-sync.jobs", "marketing-sync.jobs"], truth.now_dt)
    for check_id, status in (("erp-sync.jobs", Status.BREACH), ("marketing-sync.jobs", Status.OK)):
        result = results[check_id]
        expected = truth.integrations[check_id.split(".")[0]]
        assert result.status is status, result.explanation
        values = result.values
        assert values["failed_jobs"] == expected.failed
        assert values["succeeded_jobs"] == expected.succeeded
        assert values["waiting_jobs"] == expected.waiting
        assert values["in_progress_jobs"] == expected.in_progress
        assert values["retried_jobs"] == expected.with_retries
        assert values["retries"] == expected.retries
        assert values["backlog"] == expected.waiting + expected.in_progress
        assert values["error_rate"] == pytest.approx(expected.error_rate, abs=1e-6)
        assert values["last_error_at"] == expected.last_failure_at
        assert result.requests == len(result.queries) <= 3
        for name, counts in values["by_name"].items():
            per_name = truth.system_jobs[name]
            assert counts.get("failed", 0) == per_name.failed
            assert counts.get("succeeded", 0) == per_name.succeeded
            assert counts.get("waiting", 0) == per_name.waiting
            assert counts.get("retried", 0) == per_name.with_retries
    erp = results["erp-sync.jobs"]
    assert erp.threshold["breach"] == 0.02
    assert "12 of 52 completed jobs failed" in erp.explanation and "23.1 %" in erp.explanation
    assert erp.values["last_error"] and "last error:" in erp.explanation
    failed_ids = {r["asyncoperationid"] for r in _jobs(demo_dir / "world" / "dataverse.db", "ERP Sync%")
                  if r["statuscode"] == 31}
    assert erp.values["failing_job_ids"] and set(erp.values["failing_job_ids"]) <= failed_ids
    assert results["marketing-sync.jobs"].values["last_error"] is None


@pytest.mark.parametrize("hours", [2, 6])
async def test_the_window_counts_jobs_completed_in_it_and_every_open_job(
    demo_dir: Path, demo_config: Path, hours: int
) -> None:
    truth = _truth(demo_dir)
    config = _config(demo_config)
    check = replace(config.check("erp-sync.jobs"), params={"integration": "erp-sync", "window": timedelta(hours=hours)})
    config = replace(config, checks=(check,))
    since = (truth.now_dt - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = [r for r in _jobs(demo_dir / "world" / "dataverse.db", "ERP Sync%")
            if r["statecode"] != 3 or r["completedon"] >= since]
    expected = summarise_jobs(rows)
    result = (await _room_run(config, ["erp-sync.jobs"], truth.now_dt))["erp-sync.jobs"]
    assert (result.values["failed_jobs"], result.values["succeeded_jobs"]) == (expected.failed, expected.succeeded)
    assert result.values["waiting_jobs"] == expected.waiting == truth.integrations["erp-sync"].waiting
    assert result.values["retried_jobs"] == expected.with_retries
    assert f"last {hours} h" in result.explanation


def _job(name: str, *, state: int, status: int, at: datetime, retries: int = 0) -> dict:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    row = {"asyncoperationid": str(uuid.uuid4()), "name": name, "operationtype": 1, "statecode": state,
           "statuscode": status, "retrycount": retries, "createdon": stamp, "modifiedon": stamp}
    if state == 3:
        row["completedon"] = stamp
    return row


async def test_a_backlog_over_the_aggregate_limit_is_a_breach_named_as_such(demo_config: Path, tmp_path: Path) -> None:
    """More than 50,000 open jobs: Dataverse refuses the aggregate (0x8004e023); that refusal is the finding."""
    now = datetime.fromisoformat("2026-11-28T21:30:00+00:00")
    db = tmp_path / "dataverse.db"
    with EmulatorData(db) as data:
        data.insert_rows("asyncoperation", (
            _job("ERP Sync - Account upsert", state=0, status=0, at=now - timedelta(seconds=i % 7200))
            for i in range(50_001)))
        data.insert_rows("asyncoperation", [
            _job("ERP Sync - Account upsert", state=3, status=31, at=now - timedelta(minutes=5), retries=2),
            _job("ERP Sync - Account upsert", state=3, status=30, at=now - timedelta(minutes=9)),
            _job("ERP Sync - Account upsert", state=3, status=30, at=now - timedelta(hours=30)),
        ])
    async with Emulator(db) as emu:
        result = await _run_on(emu, _config(demo_config), "erp-sync.jobs", now)
        assert any(r.error_code and "8004e023" in r.error_code.lower() for r in emu.request_log)
    assert result.status is Status.BREACH, result.explanation
    assert "backlog of 50,000+ system jobs" in result.explanation
    assert result.values["backlog"] == 50_000 and result.values["backlog_exceeded"] is True
    assert result.values["waiting_jobs"] is None  # unknown, never a made-up figure
    assert (result.values["failed_jobs"], result.values["succeeded_jobs"]) == (1, 1)


async def test_completed_jobs_over_the_aggregate_limit_are_counted_by_splitting_the_window(
    demo_dir: Path, demo_config: Path
) -> None:
    truth = _truth(demo_dir)
    async with Emulator(demo_dir / "world" / "dataverse.db", aggregate_limit=20) as emu:
        result = await _run_on(emu, _config(demo_config), "erp-sync.jobs", truth.now_dt)
        refused = [r for r in emu.request_log if r.status == 400]
    expected = truth.integrations["erp-sync"]
    assert refused, "the small limit should have refused the first aggregate"
    assert result.status is Status.BREACH
    assert (result.values["failed_jobs"], result.values["succeeded_jobs"]) == (expected.failed, expected.succeeded)
    assert result.values["retried_jobs"] == expected.with_retries
    assert result.values["completed_partitions"] > 1


@pytest.mark.parametrize(
    ("pattern", "odata"),
    [
        ("ERP Sync%", "startswith(name,'ERP Sync')"),
        ("%upsert", "endswith(name,'upsert')"),
        ("%Sync%", "contains(name,'Sync')"),
        ("ERP Sync - Account upsert", "name eq 'ERP Sync - Account upsert'"),
        ("ERP%Opportunity%", "startswith(name,'ERP') and contains(name,'Opportunity')"),
        ("O'Neil_s%", "startswith(name,'O''Neil') and contains(name,'s')"),
        ("%", None),
    ],
)
def test_like_patterns_become_superset_filters(pattern: str, odata: str | None) -> None:
    assert like_filter(pattern) == odata


def test_like_regex_is_sql_like() -> None:
    assert like_regex("ERP%upsert").fullmatch("erp sync - Account UPSERT")
    assert not like_regex("ERP%upsert").fullmatch("ERP Sync - Account upsert (retry)")
    assert like_regex("Job _").fullmatch("Job 7") and not like_regex("Job _").fullmatch("Job 77")
    assert like_regex("a.b%").fullmatch("a.b") and not like_regex("a.b%").fullmatch("axb")


async def test_an_interior_wildcard_pattern_still_counts_exactly(demo_dir: Path, demo_config: Path) -> None:
    truth = _truth(demo_dir)
    config = _config(demo_config)
    check = replace(config.check("erp-sync.jobs"), id="sync.jobs", params={"name_like": "%Sync - %upsert"})
    config = replace(config, checks=(check,))
    result = (await _room_run(config, ["sync.jobs"], truth.now_dt))["sync.jobs"]
    syncs = [j for name, j in truth.system_jobs.items() if re.fullmatch(r".*Sync - .*upsert", name)]
    assert len(syncs) == 3
    assert result.values["failed_jobs"] == sum(j.failed for j in syncs)
    assert result.values["succeeded_jobs"] == sum(j.succeeded for j in syncs)
    assert result.values["integration"] is None and result.status is Status.WARN  # no SLO: failures warn


async def test_no_jobs_at_all_is_a_warning_not_green(demo_dir: Path, demo_config: Path) -> None:
    config = _config(demo_config)
    check = replace(config.check("erp-sync.jobs"), id="none.jobs", params={"name_like": "Nothing runs like this%"})
    result = (await _room_run(replace(config, checks=(check,)), ["none.jobs"], _truth(demo_dir).now_dt))["none.jobs"]
    assert result.status is Status.WARN and "is the integration running" in result.explanation


async def test_unknown_integration_or_one_without_jobs_is_error(demo_dir: Path, demo_config: Path) -> None:
    config = _config(demo_config)
    base = config.check("erp-sync.jobs")
    no_jobs = replace(config.integration("erp-sync"), id="probe-only", jobs=None)
    config = replace(
        config,
        integrations=config.integrations + (no_jobs,),
        checks=(replace(base, id="a.jobs", params={"integration": "erp-sink"}),
                replace(base, id="b.jobs", params={"integration": "probe-only"}),
                replace(base, id="c.jobs", params={})),
    )
    results = await _room_run(config, ["a.jobs", "b.jobs", "c.jobs"], _truth(demo_dir).now_dt)
    assert {r.status for r in results.values()} == {Status.ERROR}
    assert "No integration 'erp-sink'" in results["a.jobs"].explanation and "erp-sync" in results["a.jobs"].explanation
    assert "no jobs" in results["b.jobs"].explanation
    assert "needs integration" in results["c.jobs"].explanation


def test_the_demo_config_wires_the_integration_checks(demo_config: Path) -> None:
    config = _config(demo_config)
    assert config.check("erp-sync.jobs").params["integration"] == "erp-sync"
    assert config.check("marketing-sync.jobs").kind == "system_jobs"
    assert config.check("plugin.traces").kind == "plugin_traces"
    assert config.check("account-view.latency").params["slo"] == "account-view"
