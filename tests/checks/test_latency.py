"""api_latency: nearest-rank percentiles, exact on the emulator with injected fixed latency, and the
ERROR paths (throttled past the budget, 401, unknown column and entity set, unknown SLO)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from checks.latency import latency_figures, percentile
from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import CheckConfig, Config, SloConfig, load_config
from crmctl.control import ControlRoom
from crmctl.demo_world import DEMO_NOW
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status

ACTOR = Actor("tester", "test-host")
SLOW_MS = 600


def test_percentile_is_nearest_rank() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15.0, 20.0, 20.0, 35.0, 50.0]
    ten = [float(v) for v in range(1, 11)]
    assert (percentile(ten, 50), percentile(ten, 95), percentile(ten, 99)) == (5.0, 10.0, 10.0)
    hundred = [float(v) for v in range(100, 0, -1)]  # order of arrival does not matter
    assert (percentile(hundred, 50), percentile(hundred, 95), percentile(hundred, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)
    assert latency_figures([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}


def _config(demo_config: Path, scenario: str | None = None, *, slo: SloConfig | None = None,
            params: dict | None = None, **limits: object) -> Config:
    config = load_config(demo_config, check_kinds=check_kinds())
    target = config.target
    if scenario is not None:
        path = demo_config.parent / "scenario.yaml"
        path.write_text(scenario)
        target = replace(target, scenario=path)
    if limits:
        target = replace(target, limits=replace(target.limits, **limits))
    check: CheckConfig = config.check("account-view.latency")
    if params is not None:
        check = replace(check, params={**check.params, **params})
    slos = config.slos if slo is None else tuple(s for s in config.slos if s.id != slo.id) + (slo,)
    return replace(config, target=target, checks=(check,), slos=slos)


async def _run(config: Config) -> tuple[CheckResult, list]:
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR, clock=FrozenClock(DEMO_NOW)) as room:
        result = (await room.run_checks(["account-view.latency"]))[0]
        log = list(room.emulator.request_log)
    assert {r.method for r in log} <= {"GET"}
    assert not any(r.early for r in log), "a request was sent before Retry-After expired"
    return result, log


async def test_injected_latency_gives_the_expected_percentiles(demo_config: Path) -> None:
    """Every 5th request is held SLOW_MS (no jitter): of 10 samples, 2 are slow. Nearest rank puts
    p50 (rank 5) among the fast ones and p95/p99 (rank 10) on a slow one."""
    scenario = (f"name: slow-every-5th\nfaults:\n  - {{kind: latency, ms: {SLOW_MS}, jitter_ms: 0, "
                "every: 5, path: 'accounts'}\n")
    slo = SloConfig(id="account-view", query="accounts?$select=name&$top=50", p95_ms=500, samples=10)
    result, log = await _run(_config(demo_config, scenario, slo=slo))
    values = result.values
    assert (values["samples"], values["measured"], values["errors"]) == (10, 10, 0)
    assert values["p95_ms"] >= SLOW_MS and values["p99_ms"] >= SLOW_MS and values["max_ms"] >= SLOW_MS
    assert values["p50_ms"] < SLOW_MS
    assert result.status is Status.BREACH and "over the 500 ms SLO" in result.explanation
    assert result.threshold["p95_ms"] == 500 and values["method"] == "nearest-rank"
    assert len([r for r in log if "accounts" in r.path]) == 10 == result.requests
    slow = [r for r in log if r.faults and any("latency" in f for f in r.faults)]
    assert len(slow) == 2


async def test_sampling_with_concurrency_stays_within_the_target_limits(demo_config: Path) -> None:
    result, log = await _run(_config(demo_config, params={"samples": 12, "concurrency": 3}))
    assert result.status is Status.OK, result.explanation
    assert result.values["measured"] == 12 and len(log) == 12


async def test_throttled_past_the_budget_is_error_without_percentiles(demo_config: Path) -> None:
    scenario = "name: storm\nfaults:\n  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n"
    result, log = await _run(_config(demo_config, scenario))
    assert result.status is Status.ERROR
    assert result.values["p95_ms"] is None and result.values["errors"] == 1
    assert "stopped after 1 of 20" in result.explanation and "wait 600 s" in result.explanation
    assert len(log) == 1  # one refused request; nothing more was sent into the back-off


async def test_a_401_is_error(demo_config: Path) -> None:
    result, _ = await _run(_config(demo_config, "name: expired\nfaults:\n  - {kind: token_expiry, lifetime: 0s}\n"))
    assert result.status is Status.ERROR
    assert "refused the token" in result.explanation and "401" in result.explanation


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("accounts?$select=nosuchcolumn&$top=5", "Could not find a property named 'nosuchcolumn'"),
        ("acounts?$select=name&$top=5", "Resource not found for the segment 'acounts'"),
    ],
)
async def test_unknown_column_or_entity_set_is_error(demo_config: Path, query: str, needle: str) -> None:
    slo = SloConfig(id="account-view", query=query, p95_ms=500, samples=5)
    result, _ = await _run(_config(demo_config, slo=slo))
    assert result.status is Status.ERROR and needle in result.explanation


async def test_unreachable_dynamics_is_error(demo_config: Path) -> None:
    result, _ = await _run(_config(demo_config, "name: reset\nfaults:\n  - {kind: reset}\n", retries=1))
    assert result.status is Status.ERROR and "reset" in result.explanation


async def test_failed_samples_count_as_errors_not_latencies(demo_config: Path) -> None:
    scenario = "name: some-400\nfaults:\n  - {kind: error, status: 400, every: 5, path: 'accounts'}\n"
    slo = SloConfig(id="account-view", query="accounts?$select=name&$top=50", p95_ms=500, samples=10)
    strict, _ = await _run(_config(demo_config, scenario, slo=slo, params={"max_errors": 0}))
    assert strict.status is Status.ERROR and strict.values["errors"] == 1 and strict.values["measured"] == 4
    lenient, _ = await _run(_config(demo_config, scenario, slo=slo, params={"max_errors": 2}))
    assert (lenient.values["measured"], lenient.values["errors"]) == (8, 2)
    assert lenient.status is not Status.ERROR and "2 failed (allowed 2)" in lenient.explanation


async def test_an_unknown_slo_is_error(demo_config: Path) -> None:
    result, log = await _run(_config(demo_config, params={"slo": "acount-view"}))
    assert result.status is Status.ERROR and "No SLO 'acount-view'" in result.explanation and log == []


async def test_the_samples_declare_the_chain_still_ahead(demo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared limiter is told how many samples are still to go one after another, so that it
    can put the check ahead of scans that hold as few connections (crmctl/connectors/limits.py)."""
    from contextlib import asynccontextmanager

    from crmctl.connectors.limits import TargetLimiter, request_chain, request_owner

    seen: list[tuple[str | None, int]] = []
    slot = TargetLimiter.slot

    @asynccontextmanager
    async def recording(self: TargetLimiter, deadline: float | None = None, *, owner: str | None = None):  # type: ignore[no-untyped-def]
        seen.append((request_owner.get(), request_chain.get()))
        async with slot(self, deadline, owner=owner):
            yield

    monkeypatch.setattr(TargetLimiter, "slot", recording)
    slo = SloConfig(id="account-view", query="accounts?$select=name&$top=50", p95_ms=500, samples=6)
    result, _ = await _run(_config(demo_config, slo=slo, params={"concurrency": 2}))
    assert result.status is Status.OK and result.values["measured"] == 6
    chains = [chain for owner, chain in seen if owner == "account-view.latency"]
    assert chains == [3, 3, 2, 2, 1, 1]  # ceil(samples still to take / 2), as each one starts
    assert request_chain.get() == 0  # the caller's context is untouched
