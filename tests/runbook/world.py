"""A deterministic cutover for the runbook, timing and decision tests: config, clock, results.

Built directly as frozen dataclasses (the YAML path is tested in tests/runbook/test_cli.py and
the config tests), so each test states exactly the runbook it needs.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from crmctl.clock import FrozenClock
from crmctl.config.sections import (
    CheckConfig,
    Config,
    HypercareConfig,
    RollbackConfig,
    RollbackCriterion,
    RunbookStep,
    SourceConfig,
    TargetConfig,
)
from crmctl.control import ControlRoom
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store

START = datetime(2026, 11, 28, 18, 0, tzinfo=timezone.utc)
"""When the rehearsal begins (the demo story's freeze)."""
PONR = datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)

ALICE = Actor("alice", "ssh:10.0.0.5")
BOB = Actor("bob", "ssh:10.0.0.7")

CHECKS: tuple[CheckConfig, ...] = (
    CheckConfig("account.count", "row_count", "account", warn=0, breach=0.001, every=MIN, title="Accounts reconcile"),
    CheckConfig("contact.count", "row_count", "contact", warn=0, breach=0.001, every=MIN, title="Contacts reconcile"),
    CheckConfig("opportunity.count", "row_count", "opportunity", warn=0, breach=0.001, every=MIN,
                title="Opportunities reconcile"),
    CheckConfig("dynamics.whoami", "whoami", None, warn=500, breach=2000, every=timedelta(seconds=30),
                title="Dynamics reachable"),
)
COUNTS = ("account.count", "contact.count", "opportunity.count")

RUNBOOK: tuple[RunbookStep, ...] = (
    RunbookStep("freeze", "Announce and enforce source write freeze", "CRM Ops", 15 * MIN, phase="cutover"),
    RunbookStep("delta", "Final incremental delta load from last watermark", "Data Engineering", 45 * MIN,
                after=("freeze",), phase="cutover"),
    RunbookStep("reconcile", "Final reconciliation and integrity validation", "Data Engineering", 60 * MIN,
                after=("delta",), gate=COUNTS, phase="validation"),
    RunbookStep("integrations", "Enable Dynamics 365 integrations and downstream consumers", "Integration Team",
                30 * MIN, after=("reconcile",), gate=("dynamics.whoami",), phase="switch-over"),
    RunbookStep("smoke", "Business smoke testing of core workflows", "Business Test Lead", 60 * MIN,
                after=("integrations",), phase="switch-over"),
    RunbookStep("signoff", "Business and technical sign-off", "Business Owner", 30 * MIN, after=("smoke",),
                gate=COUNTS, phase="sign-off"),
)
ROLLBACK_STEPS: tuple[RunbookStep, ...] = (
    RunbookStep("rb-stop", "Disable Dynamics 365 integrations and flows", "Integration Team", 15 * MIN, phase="rollback"),
    RunbookStep("rb-repoint", "Re-point consumers to the legacy CRM", "Integration Team", 30 * MIN,
                after=("rb-stop",), phase="rollback"),
    RunbookStep("rb-unfreeze", "Lift the source write freeze", "CRM Ops", 30 * MIN, after=("rb-repoint",),
                phase="rollback"),
)
CRITERIA: tuple[RollbackCriterion, ...] = (
    RollbackCriterion("data-loss-accounts", "Accounts missing in Dynamics", "account.count",
                      "difference_pct > 0.5", "difference_pct > 0"),
    RollbackCriterion("data-loss-contacts", "Contacts missing in Dynamics", "contact.count",
                      "difference_pct > 0.5", "difference_pct > 0"),
    RollbackCriterion("dynamics-slow", "Dynamics answers too slowly", "dynamics.whoami",
                      "median_ms > 2000", "median_ms > 800 or status == 'WARN'"),
)
AUTHORITIES = ("Cutover Lead", "Business Owner")


def build_config(folder: Path, **changes: Any) -> Config:
    """The test cutover (six steps, two gates, three criteria, a three-step rollback runbook)."""
    rollback = RollbackConfig(authority=AUTHORITIES, sla=timedelta(hours=2), point_of_no_return=PONR,
                              criteria=CRITERIA, runbook=ROLLBACK_STEPS)
    rollback_changes = {k.removeprefix("rollback_"): changes.pop(k) for k in list(changes) if k.startswith("rollback_")}
    if rollback_changes:
        rollback = replace(rollback, **rollback_changes)
    config = Config(
        path=folder / "crmctl.yaml",
        project="Contoso CRM to Dynamics 365",
        state=folder / "state.db",
        source=SourceConfig(kind="sql", url=f"sqlite:///{folder}/source.db"),
        target=TargetConfig(kind="emulator"),
        checks=CHECKS,
        runbook=RUNBOOK,
        rollback=rollback,
        hypercare=HypercareConfig(go_live=PONR.date()),
    )
    return replace(config, **changes) if changes else config


def count_result(check_id: str, source: int, target: int, *, at: datetime, took: timedelta = timedelta(seconds=2)) -> CheckResult:
    """A row_count result as the real check writes it, graded the way the real check grades it."""
    difference = target - source
    fraction = abs(difference) / source if source else 0.0
    status = Status.OK if fraction == 0 else (Status.WARN if fraction <= 0.001 else Status.BREACH)
    return CheckResult(
        check_id=check_id, kind="row_count", status=status, started=at - took, finished=at,
        explanation=f"{check_id}: {source:,} in source, {target:,} in Dynamics",
        values={"source": source, "target": target, "difference": difference,
                "difference_pct": round(fraction * 100, 4), "method": "aggregate"},
        threshold={"warn": 0, "breach": 0.001},
    )


def whoami_result(median_ms: float, *, at: datetime, status: Status | None = None) -> CheckResult:
    if status is None:
        status = Status.OK if median_ms <= 500 else (Status.WARN if median_ms <= 2000 else Status.BREACH)
    return CheckResult(
        check_id="dynamics.whoami", kind="whoami", status=status, started=at - timedelta(seconds=1), finished=at,
        explanation=f"WhoAmI answered in {median_ms:.0f} ms", values={"median_ms": median_ms, "samples": 3},
        threshold={"warn": 500, "breach": 2000},
    )


def error_result(check_id: str, *, at: datetime) -> CheckResult:
    return CheckResult(check_id=check_id, kind="row_count", status=Status.ERROR, started=at - MIN, finished=at,
                       explanation="Dataverse throttled the request (429) past the check's budget; no figure is trusted.")


def all_ok(at: datetime) -> list[CheckResult]:
    """Every check OK at `at`."""
    return [
        count_result("account.count", 20_000, 20_000, at=at),
        count_result("contact.count", 62_000, 62_000, at=at),
        count_result("opportunity.count", 24_000, 24_000, at=at),
        whoami_result(143.0, at=at),
    ]


def demo_like(at: datetime) -> list[CheckResult]:
    """The demo's night: accounts and contacts short (BREACH, under the 0.5 % rollback line), Dynamics fine."""
    return [
        count_result("account.count", 20_000, 19_966, at=at),
        count_result("contact.count", 62_000, 61_886, at=at),
        count_result("opportunity.count", 24_000, 23_986, at=at),
        whoami_result(143.0, at=at),
    ]


class Rig:
    """A real store on a temp file, a frozen clock and a control room per actor."""

    def __init__(self, config: Config, store: Store, clock: FrozenClock) -> None:
        self.config = config
        self.store = store
        self.clock = clock

    def room(self, actor: Actor = ALICE, *, read_only: bool = False) -> ControlRoom:
        return ControlRoom(self.config, self.store, None, actor=actor, clock=self.clock, read_only=read_only)

    async def results(self, results: Iterable[CheckResult], actor: Actor = ALICE) -> None:
        for r in results:
            await self.store.append_result(r, actor=actor)

    def at(self, when: datetime) -> None:
        """Moves the frozen clock to `when` (forward only)."""
        assert when >= self.clock.now(), (when, self.clock.now())
        self.clock.advance(when - self.clock.now())

    async def last(self) -> int:
        return await self.store.last_seq()


SCENE_NOW = datetime(2026, 11, 28, 19, 15, tzinfo=timezone.utc)
"""The frozen time of the screen tests: 1 h 15 min into the rehearsal, delta running late."""


async def write_scene(config: Config, *, proposal: bool = True) -> None:
    """Journals a deterministic rehearsal up to SCENE_NOW into `config.state` (then closes it).

    freeze done 18:00-18:20 (5 min late), delta running since 18:20 (45 min planned: over plan
    at 19:15), the demo's counts (accounts and contacts short: HOLD), and a HOLD proposed by the
    Cutover Lead waiting for a second authority.
    """
    clock = FrozenClock(START)
    store = await Store.open(config.state, clock=clock)
    rig = Rig(config, store, clock)
    try:
        await rig.results(demo_like(START))
        await rig.room(ALICE).step_action("start", "freeze")
        rig.at(START + 20 * MIN)
        await rig.room(ALICE).step_action("done", "freeze")
        await rig.room(BOB).step_action("start", "delta")
        if proposal:
            rig.at(SCENE_NOW - 5 * MIN)
            await rig.room(ALICE).decide("hold", authority="Cutover Lead", propose=True,
                                         rationale="Fix forward: re-send the 34 accounts and 114 contacts")
        rig.at(SCENE_NOW - timedelta(seconds=30))
        await rig.results(demo_like(rig.clock.now()))
    finally:
        await store.close()


def scene_room(tmp_path: Path, actor: Actor) -> Iterator[ControlRoom]:
    """A fixture body: the scene journalled under `tmp_path`, opened as `actor` on a frozen clock."""
    import asyncio

    config = build_config(tmp_path)
    asyncio.run(write_scene(config))
    clock = FrozenClock(SCENE_NOW)
    store = asyncio.run(Store.open(config.state, clock=clock))
    try:
        yield ControlRoom(config, store, None, actor=actor, clock=clock)
    finally:
        asyncio.run(store.close())
