"""The fault matrix on the emulator for the Dataverse-backed integration kinds (system_jobs,
plugin_traces, api_latency): 429 storms, 503s, resets, slow answers, malformed JSON and token
expiry never yield a figure from incomplete data; the result is the truth or ERROR with the reason,
nothing crashes, and no request goes out before a Retry-After expired."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import Config, load_config
from crmctl.control import ControlRoom
from crmctl.demo_world import GroundTruth
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status

ACTOR = Actor("tester", "test-host")
KINDS = ("erp-sync.jobs", "plugin.traces", "account-view.latency")


def _config(demo_config: Path, scenario: str, **limits: object) -> Config:
    config = load_config(demo_config, check_kinds=check_kinds())
    path = demo_config.parent / "scenario.yaml"
    path.write_text(scenario)
    target = replace(config.target, scenario=path, limits=replace(config.target.limits, **limits))
    return replace(config, target=target, checks=tuple(config.check(c) for c in (*KINDS, "marketing-sync.jobs")))


async def _rounds(config: Config, truth: GroundTruth, rounds: int, ids: tuple[str, ...] = KINDS) -> list[CheckResult]:
    results: list[CheckResult] = []
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR, clock=FrozenClock(truth.now_dt)) as room:
        for _ in range(rounds):
            results += await room.run_checks(list(ids))
        log = room.emulator.request_log
        assert {r.method for r in log} <= {"GET"}
        assert not any(r.early for r in log), "a request was sent before Retry-After expired"
    return results


def _truthful(result: CheckResult, truth: GroundTruth) -> bool:
    """True when a non-ERROR result carries the complete, exact figures."""
    values = result.values
    if result.check_id == "erp-sync.jobs":
        erp = truth.integrations["erp-sync"]
        return (values["failed_jobs"], values["succeeded_jobs"], values["waiting_jobs"], values["retried_jobs"]) == (
            erp.failed, erp.succeeded, erp.waiting, erp.with_retries)
    if result.check_id == "plugin.traces":
        return values["exceptions"] == truth.plugin_traces.exceptions_24h
    return values["errors"] == 0 and values["measured"] == values["samples"]


async def test_a_hostile_network_never_yields_a_figure_from_incomplete_data(demo_dir: Path, demo_config: Path) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    scenario = (
        "name: hostile\nseed: 11\nfaults:\n"
        "  - {kind: latency, ms: 5, jitter_ms: 5}\n"
        "  - {kind: throttle, every: 9, retry_after: 1s, limit: requests}\n"
        "  - {kind: error, rate: 0.12, status: 503}\n"
        "  - {kind: reset, rate: 0.06}\n"
        "  - {kind: malformed, rate: 0.06}\n"
        "  - {kind: timeout, rate: 0.03, hang: 3s}\n"
    )
    config = _config(demo_config, scenario, concurrency=1, retries=1, timeout=timedelta(seconds=0.5))
    rounds = int(os.environ.get("CRMCTL_FAULT_ROUNDS", "4"))  # a long soak: CRMCTL_FAULT_ROUNDS=200
    results = await _rounds(config, truth, rounds=rounds)
    assert len(results) == 3 * rounds
    errors = [r for r in results if r.status is Status.ERROR]
    figures = [r for r in results if r.status is not Status.ERROR]
    assert errors, "the scenario should have broken some runs"
    for r in errors:
        assert r.explanation and "Internal error" not in r.explanation, r.explanation
    for r in figures:
        assert _truthful(r, truth), (r.check_id, r.status, r.values)
        assert r.status is not Status.OK or r.check_id == "account-view.latency"


async def test_a_short_429_storm_is_waited_out_and_the_figures_stay_exact(demo_dir: Path, demo_config: Path) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    scenario = "name: storm\nfaults:\n  - {kind: throttle, every: 3, retry_after: 1s, limit: requests}\n"
    results = await _rounds(_config(demo_config, scenario, concurrency=1, retries=8), truth, rounds=1,
                            ids=("erp-sync.jobs", "plugin.traces"))
    for r in results:
        assert r.status is Status.BREACH and _truthful(r, truth), r.explanation
    assert any(q.status == 429 for r in results for q in r.queries), "the storm throttled nothing"


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("{kind: throttle, every: 1, retry_after: 10m, limit: requests}", "past this check's deadline"),
        ("{kind: token_expiry, lifetime: 0s}", "refused the token"),
        ("{kind: outage, start: 0s, end: 1h, status: 503}", "503"),
        ("{kind: reset}", "reset the connection"),
        ("{kind: latency, ms: 800, path: 'asyncoperations'}", "did not answer within 0.3 s"),
        ("{kind: malformed, path: 'asyncoperations'}", "not JSON"),
        ("{kind: error, status: 400, code: '0x0', path: 'asyncoperations', message: \"Could not find a property "
         "named 'retrycount' on type 'Microsoft.Dynamics.CRM.asyncoperation'.\"}", "retrycount"),
        ("{kind: error, status: 404, code: '0x8006088a', path: 'asyncoperations', message: \"Resource not found "
         "for the segment 'asyncoperations'.\"}", "Resource not found"),
    ],
)
async def test_system_jobs_error_paths(demo_dir: Path, demo_config: Path, fault: str, needle: str) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    config = _config(demo_config, f"name: fault\nfaults:\n  - {fault}\n", retries=1, timeout=timedelta(seconds=0.3))
    (result,) = await _rounds(config, truth, rounds=1, ids=("erp-sync.jobs",))
    assert result.status is Status.ERROR and needle in result.explanation, result.explanation
    assert result.explanation.startswith("Could not read the system jobs of erp-sync")


async def test_only_the_completed_jobs_failing_is_still_error_never_a_partial_figure(
    demo_dir: Path, demo_config: Path
) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    scenario = "name: half\nfaults:\n  - {kind: error, status: 503, path: 'statecode%20eq%203'}\n"
    (result,) = await _rounds(_config(demo_config, scenario, retries=1), truth, rounds=1, ids=("marketing-sync.jobs",))
    assert result.status is Status.ERROR and "503" in result.explanation
    assert [q.status for q in result.queries][0] == 200  # the open jobs were read; that is not enough


async def test_token_expiry_mid_run_is_survived_with_exact_figures(demo_dir: Path, demo_config: Path) -> None:
    truth = GroundTruth.load(demo_dir / "world")
    scenario = "name: expiry\nfaults:\n  - {kind: latency, ms: 60}\n  - {kind: token_expiry, lifetime: 0.1s}\n"
    results = await _rounds(_config(demo_config, scenario), truth, rounds=1, ids=("erp-sync.jobs", "plugin.traces"))
    for r in results:
        assert r.status is Status.BREACH and _truthful(r, truth), r.explanation
    assert any(q.status == 401 for r in results for q in r.queries)
