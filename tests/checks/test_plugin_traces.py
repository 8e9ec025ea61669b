"""plugin_traces: the demo's plug-in exceptions copied into the journal (ground-truth numbers), kept
after an emulator-side purge, de-duplicated, scrubbed of secrets, and ERROR when Dataverse fails."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import Config, load_config
from crmctl.control import ControlRoom
from crmctl.demo_world import GroundTruth
from crmctl.emulator.storage import EmulatorData
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store
from crmctl.tracecopy import TRACE_KIND, exception_type

ACTOR = Actor("tester", "test-host")
CHECK = "plugin.traces"


def _config(demo_config: Path, *, data: Path | None = None, scenario: str | None = None,
            env: dict[str, str] | None = None, **limits: object) -> Config:
    config = load_config(demo_config, env=env or {}, check_kinds=check_kinds())
    target = config.target
    if data is not None:
        target = replace(target, data=data, seed=None)
    if scenario is not None:
        path = demo_config.parent / "scenario.yaml"
        path.write_text(scenario)
        target = replace(target, scenario=path)
    if limits:
        target = replace(target, limits=replace(target.limits, **limits))
    return replace(config, target=target, checks=(config.check(CHECK),))


async def _run(config: Config, clock: FrozenClock) -> tuple[CheckResult, list]:
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR, clock=clock) as room:
        result = (await room.run_checks([CHECK]))[0]
        log = list(room.emulator.request_log)
    assert {r.method for r in log} <= {"GET"}
    assert not any(r.early for r in log), "a request was sent before Retry-After expired"
    return result, log


async def _journal(config: Config) -> list[dict]:
    async with await Store.open(config.state) as store:
        assert (await store.verify()).ok
        return [e.payload for e in await store.entries(kinds=[TRACE_KIND])]


def _private_world(demo_dir: Path, tmp_path: Path) -> Path:
    """A copy of the demo's Dynamics database this test may purge."""
    db = tmp_path / "dataverse.db"
    shutil.copy(demo_dir / "world" / "dataverse.db", db)
    return db


async def test_demo_exceptions_are_copied_and_counted_as_the_truth_says(demo_dir: Path, demo_config: Path) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    config = _config(demo_config)
    result, _ = await _run(config, FrozenClock(truth.now_dt))
    expected = truth.plugin_traces
    assert result.status is Status.BREACH, result.explanation  # demo thresholds: warn 0, breach 5
    assert result.values["exceptions"] == expected.exceptions_24h == 10
    assert result.values["by_plugin"] == dict(expected.exceptions_24h_by_type)
    assert result.values["copied"] == result.values["archived"] == expected.exceptions  # older ones too
    copies = await _journal(config)
    assert len(copies) == expected.exceptions == len({c["plugintracelogid"] for c in copies})
    async with await Store.open(config.state) as store:  # stamped with the session's operator
        assert {(e.operator, e.host) for e in await store.entries(kinds=[TRACE_KIND])} == {(ACTOR.operator, ACTOR.host)}
    conn = sqlite3.connect(demo_dir / "world" / "dataverse.db")
    newest = conn.execute(
        "SELECT typename, exceptiondetails, createdon FROM e_plugintracelog WHERE exceptiondetails IS NOT NULL "
        "ORDER BY createdon DESC LIMIT 1").fetchone()
    conn.close()
    assert result.values["newest_plugin"] == newest[0]
    assert result.values["newest_exception_type"] == exception_type(newest[1])
    assert result.values["newest_at"].startswith(newest[2][:19])
    assert f"newest {exception_type(newest[1])}" in result.explanation


async def test_a_second_run_copies_nothing_again(demo_dir: Path, demo_config: Path) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    config = _config(demo_config)
    clock = FrozenClock(truth.now_dt)
    await _run(config, clock)
    again, log = await _run(config, clock)
    assert again.values["copied"] == 0 and again.values["exceptions"] == truth.plugin_traces.exceptions_24h
    assert len(await _journal(config)) == truth.plugin_traces.exceptions
    query = next(r.path for r in log if "plugintracelogs" in r.path)
    assert "createdon" in query and "ge" in query  # only since the watermark (minus the overlap)


async def test_traces_survive_the_dataverse_purge(demo_dir: Path, demo_config: Path, tmp_path: Path) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    db = _private_world(demo_dir, tmp_path)
    config = _config(demo_config, data=db)
    clock = FrozenClock(truth.now_dt)
    first, _ = await _run(config, clock)
    assert first.values["copied"] == truth.plugin_traces.exceptions
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM e_plugintracelog")  # the daily bulk delete, and then some
    conn.close()
    after, _ = await _run(config, clock)
    assert after.values["copied"] == 0
    assert after.values["exceptions"] == truth.plugin_traces.exceptions_24h
    assert after.values["archived"] == truth.plugin_traces.exceptions
    assert after.status is first.status is Status.BREACH
    # A day later the window is empty, yet the evidence is still in the journal.
    clock.advance(timedelta(hours=30))
    later, _ = await _run(config, clock)
    assert later.values["exceptions"] == 0 and later.status is Status.OK
    assert later.values["archived"] == len(await _journal(config)) == truth.plugin_traces.exceptions


async def test_new_traces_after_the_watermark_are_copied_and_scrubbed(
    demo_dir: Path, demo_config: Path, tmp_path: Path
) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    db = _private_world(demo_dir, tmp_path)
    secret = "Xy9-substituted-value-42"
    config = _config(demo_config, data=db, env={"ERP_KEY": secret})
    config = replace(config, substitutions={"ERP_KEY": secret})
    clock = FrozenClock(truth.now_dt)
    await _run(config, clock)
    clock.advance(timedelta(minutes=10))
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlcnAifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    with EmulatorData(db) as data:
        data.insert_rows("plugintracelog", [{
            "plugintracelogid": "6f1c2b1e-0000-4000-8000-00000000beef",
            "typename": "Contoso.Integration.ErpSync.UpsertAccountStep",
            "messagename": "Upsert", "primaryentity": "account", "mode": 1,
            "createdon": (truth.now_dt + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "exceptiondetails": (f"System.Net.Http.HttpRequestException: 401 calling ERP with key {secret}\n"
                                 f"   Authorization: Bearer {jwt}\n   password=hunter2hunter2"),
        }, {
            "plugintracelogid": "6f1c2b1e-0000-4000-8000-00000000cafe",
            "typename": "Contoso.Crm.Plugins.AccountNumberGuard", "messagename": "Update",
            "createdon": (truth.now_dt + timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "exceptiondetails": None, "messageblock": "all fine",
        }])
    result, _ = await _run(config, clock)
    assert result.values["copied"] == 1
    assert result.values["newest_exception_type"] == "System.Net.Http.HttpRequestException"
    assert result.values["exceptions"] == truth.plugin_traces.exceptions_24h + 1
    copies = await _journal(config)
    text = (config.state).read_bytes()
    for leaked in (secret, jwt, "hunter2hunter2"):
        assert leaked not in json.dumps(copies) and leaked.encode() not in text
    newest = next(c for c in copies if c["plugintracelogid"].endswith("beef"))
    assert "${env:ERP_KEY}" in newest["exceptiondetails"] and newest["copied_by"] == CHECK


@pytest.mark.parametrize(
    ("scenario", "needle"),
    [
        ("{kind: throttle, every: 1, retry_after: 10m, limit: requests}", "past this check's deadline"),
        ("{kind: token_expiry, lifetime: 0s}", "refused the token"),
        ("{kind: outage, start: 0s, end: 1h, status: 503}", "503"),
        ("{kind: reset}", "reset the connection"),
        ("{kind: malformed}", "not JSON"),
        ("{kind: error, status: 400, code: '0x0', message: \"Could not find a property named 'pluginstepid' on "
         "type 'Microsoft.Dynamics.CRM.plugintracelog'.\"}", "pluginstepid"),
    ],
)
async def test_dataverse_failures_are_errors(demo_dir: Path, demo_config: Path, scenario: str, needle: str) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    config = _config(demo_config, scenario=f"name: fault\nfaults:\n  - {scenario}\n", retries=1)
    result, _ = await _run(config, FrozenClock(truth.now_dt))
    assert result.status is Status.ERROR, result.explanation
    assert needle in result.explanation
    assert await _journal(config) == []


async def test_a_failure_after_some_pages_keeps_what_was_copied_and_is_error(
    demo_dir: Path, demo_config: Path
) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    scenario = "name: torn\nfaults:\n  - {kind: malformed, path: 'skiptoken'}\n"
    config = _config(demo_config, scenario=scenario, page_size=5)
    result, _ = await _run(config, FrozenClock(truth.now_dt))
    assert result.status is Status.ERROR and "5 read before that are kept" in result.explanation
    assert len(await _journal(config)) == result.values["copied"] == 5


def test_exception_type_reads_the_first_line() -> None:
    assert exception_type("System.TimeoutException: took too long") == "System.TimeoutException"
    assert exception_type(
        "System.ServiceModel.FaultException`1[Microsoft.Xrm.Sdk.OrganizationServiceFault]: Number of requests"
    ) == "System.ServiceModel.FaultException`1[Microsoft.Xrm.Sdk.OrganizationServiceFault]"
    assert exception_type("something odd happened") == "unknown"
    assert exception_type(None) == "unknown"
