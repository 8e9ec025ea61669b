"""The engine against the embedded emulator: exact under throttling, ERROR instead of crashes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from checks.registry import REGISTRY, check_kinds
from crmctl.checking import CheckContext
from crmctl.config import CheckKindSpec, load_config
from crmctl.connectors.limits import request_owner
from crmctl.control import ControlRoom, ReadOnlyError
from crmctl.identity import Actor
from crmctl.model import Status

ACTOR = Actor("tester", "test-host")


def _config(path: Path, **limits: object):
    config = load_config(path, check_kinds=check_kinds())
    if limits:
        target = replace(config.target, limits=replace(config.target.limits, **limits))
        config = replace(config, target=target)
    return config


async def test_throttle_storm_counts_stay_exact_and_retry_after_is_honoured(demo_dir: Path, demo_config: Path) -> None:
    scenario = demo_config.parent / "storm.yaml"
    scenario.write_text(
        "name: storm\nfaults:\n  - {kind: throttle, start: 0s, end: 1h, every: 3, retry_after: 1s, limit: requests}\n"
    )
    config = _config(demo_config, concurrency=1, retries=8)
    config = replace(config, target=replace(config.target, scenario=scenario))
    truth = json.loads((demo_dir / "world" / "ground_truth.json").read_text())["entities"]
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR) as room:
        results = {r.check_id: r for r in await room.run_checks(["account.count", "opportunity.count"])}
        emulator = room.emulator
        throttled = [r for r in emulator.request_log if r.status == 429]
        assert throttled, "the scenario did not throttle anything"
        assert not any(r.early for r in emulator.request_log), "a request was sent before Retry-After expired"
        assert {r.method for r in emulator.request_log} == {"GET"}
    for name in ("account", "opportunity"):
        values = results[f"{name}.count"].values
        assert values["target"] == truth[name]["target_count"]
        assert results[f"{name}.count"].status in (Status.WARN, Status.BREACH)


class _Exploding:
    kind: ClassVar[str] = "explode"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(needs_entity=False, params={}, description="test")

    async def run(self, ctx: CheckContext):
        raise RuntimeError("boom")


class _Sleeping:
    kind: ClassVar[str] = "sleep"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(needs_entity=False, params={}, description="test")

    async def run(self, ctx: CheckContext):
        await asyncio.sleep(60)


async def test_a_failing_or_hanging_check_becomes_error_and_is_journalled(demo_config: Path) -> None:
    config = _config(demo_config)
    whoami = config.check("dynamics.whoami")
    checks = (
        replace(whoami, id="x.explode", kind="explode"),
        replace(whoami, id="x.sleep", kind="sleep", timeout=timedelta(seconds=0.3)),
    )
    config = replace(config, checks=checks, runbook=(), rollback=None)
    registry = {**REGISTRY, "explode": _Exploding, "sleep": _Sleeping}
    async with ControlRoom.open(config, registry, actor=ACTOR) as room:
        results = {r.check_id: r for r in await room.run_checks()}
        assert results["x.explode"].status is Status.ERROR
        assert "RuntimeError: boom" in results["x.explode"].explanation
        assert results["x.sleep"].status is Status.ERROR
        assert "deadline" in results["x.sleep"].explanation
        stored = await room.store.latest_results()
        assert set(stored) == {"x.explode", "x.sleep"}


async def test_scheduler_repeats_checks_at_their_cadence(demo_config: Path) -> None:
    config = _config(demo_config)
    fast = replace(config.check("dynamics.whoami"), every=timedelta(seconds=0.2))
    config = replace(config, checks=(fast,), runbook=(), rollback=None)
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR) as room:
        task = asyncio.create_task(room.run_scheduler())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(await room.store.entries(kinds=["check.result"])) >= 3:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert len(await room.store.entries(kinds=["check.result"])) >= 3


async def test_read_only_room_runs_nothing(demo_config: Path) -> None:
    config = _config(demo_config)
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR, read_only=True) as room:
        try:
            await room.run_checks()
        except ReadOnlyError as exc:
            assert "read-only" in str(exc)
        else:
            raise AssertionError("a read-only room ran checks")


async def test_token_expiry_mid_run_is_survived_with_a_fresh_token(demo_config: Path) -> None:
    scenario = demo_config.parent / "expiry.yaml"
    scenario.write_text("name: expiry\nfaults:\n  - {kind: token_expiry, lifetime: 1s}\n")
    config = _config(demo_config)
    config = replace(config, target=replace(config.target, scenario=scenario))
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR) as room:
        assert (await room.run_checks(["dynamics.whoami"]))[0].status is Status.OK
        await asyncio.sleep(1.2)  # the token issued at start has now expired
        results = await room.run_checks(["dynamics.whoami"])
        assert results[0].status is Status.OK, results[0].explanation
        assert any(r.status == 401 for r in room.emulator.request_log)


class _Owners:
    """Records whom the limiter would bill for requests sent from the run and from its tasks."""

    kind: ClassVar[str] = "owners"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(needs_entity=False, params={}, description="test")
    seen: ClassVar[dict[str, tuple[str | None, str | None]]] = {}

    async def run(self, ctx: CheckContext):
        async def child() -> str | None:
            await asyncio.sleep(0)
            return request_owner.get()

        from_task = await asyncio.create_task(child())
        await ctx.dynamics.whoami(log=ctx.dynamics_log)  # a real request, through the shared limiter
        _Owners.seen[ctx.check.id] = (request_owner.get(), from_task)
        return ctx.finish(Status.OK, "owners recorded")


async def test_every_check_run_sends_its_requests_as_itself(demo_config: Path) -> None:
    # The limiter admits fairly per check: it can only if each run's requests carry the check's id.
    config = _config(demo_config)
    whoami = config.check("dynamics.whoami")
    checks = tuple(replace(whoami, id=f"x.owner{i}", kind="owners") for i in range(3))
    config = replace(config, checks=checks, runbook=(), rollback=None)
    _Owners.seen.clear()
    async with ControlRoom.open(config, {**REGISTRY, "owners": _Owners}, actor=ACTOR) as room:
        results = await room.run_checks()
    assert all(r.status is Status.OK for r in results), [r.explanation for r in results]
    assert _Owners.seen == {f"x.owner{i}": (f"x.owner{i}", f"x.owner{i}") for i in range(3)}
    assert request_owner.get() is None  # the caller's own context was left as it was
