"""A whole rehearsal through the app: the demo runbook, driven with Pilot against the embedded
emulator under a fault scenario (latency and data drift), ending in a recorded decision; then a
second run, and the comparison of the two from the command line.

Everything is real: the demo config and world, the emulator, the engine and every check kind,
the SQLite journal, the screens and their keys. Only the clock is frozen and moved by hand, so
that an hour of cutover takes seconds and the timings are exact.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static
from textual.worker import WorkerCancelled

from checks.registry import REGISTRY, check_kinds
from crmctl.cli import main
from crmctl.clock import FrozenClock
from crmctl.config import load_config
from crmctl.control import ControlRoom
from crmctl.identity import Actor
from crmctl.runbook import KINDS
from screens.app import CrmctlApp
from screens.rollback import RollbackScreen
from screens.runbook import RunbookScreen, RunbookTable
from screens.widgets.form import FormDialog
from tests.ui.conftest import FAST, text_of, until

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "data" / "scenarios" / "drift.yaml"
FREEZE = datetime(2026, 11, 28, 18, 0, tzinfo=timezone.utc)
LEAD = Actor("lead", "ssh:10.0.0.9")
MIN = timedelta(minutes=1)


def keys(text: str) -> list[str]:
    return ["space" if c == " " else c for c in text]


class Walk:
    """The operator at the keyboard: presses keys and waits for what the journal acknowledges."""

    def __init__(self, app: CrmctlApp, pilot: Pilot, clock: FrozenClock) -> None:
        self.app, self.pilot, self.clock = app, pilot, clock
        self.notes: list[str] = []
        """Every message the operator was shown (toasts expire; this list does not)."""
        notify = app.notify

        def record(message: str, *args: object, **kwargs: object) -> None:
            self.notes.append(message)
            notify(message, *args, **kwargs)  # type: ignore[arg-type]

        app.notify = record  # type: ignore[method-assign]

    async def key(self, key: str) -> str:
        """Presses a step key and returns what the operator is told (acknowledgement or refusal)."""
        seen = len(self.notes)
        await self.pilot.press(key)
        await until(lambda: len(self.notes) > seen, timeout=30)
        return self.notes[-1]

    async def minutes(self, n: int) -> None:
        self.clock.advance(n * MIN)
        self.app.tick()
        await self.pilot.pause()

    async def run_checks(self, only: list[str] | None = None) -> None:
        """`r` (every check) or, with `only`, what R does for one check; waits for the journal feed."""
        if only is None:
            await self.pilot.press("r")
        else:
            self.app.run_checks(only)
        await self.pilot.pause()
        runs = [w for w in self.app.workers if w.group == "run-checks"]
        if runs:
            with suppress(WorkerCancelled):
                await self.app.workers.wait_for_complete(runs)
        last = await self.app.room.store.last_seq()
        await until(lambda: self.app.snapshot.last_seq >= last, timeout=30)

    async def form(self, *, pick_first: bool, text: str) -> str:
        """Fills the open dialog: picks the first authority (when asked), types `text`, enters."""
        assert isinstance(self.app.screen, FormDialog)
        seen = len(self.notes)
        if pick_first:
            await self.pilot.press("enter", "down", "enter")
        for _ in range(5):  # tab on to the text field, as the operator would
            if isinstance(self.app.focused, Input):
                break
            await self.pilot.press("tab")
        await self.pilot.press(*keys(text), "enter")
        modal = self.app.screen
        try:
            await until(lambda: not isinstance(self.app.screen, FormDialog) and len(self.notes) > seen, timeout=30)
        except AssertionError:
            error = modal.query_one("#form-error", Static).content if isinstance(modal, FormDialog) else ""
            raise AssertionError(f"the dialog did not journal: {error!s}; told: {self.notes[seen:]}") from None
        return self.notes[-1]

    def state(self, step: str) -> str:
        return self.app.screen.query_one(RunbookTable).get_cell(step, "status").plain.strip()


@pytest.mark.slow
async def test_a_rehearsal_walked_through_the_app_then_compared_with_a_second_run(demo_config: Path, tmp_path: Path) -> None:
    config = load_config(demo_config, check_kinds=check_kinds())
    # The drift scenario writes into the emulator's data file: drift a private copy of the world,
    # not the session's shared one (other tests, and the demo snapshots, read that one as seeded).
    world = tmp_path / "world"
    shutil.copytree(Path(config.target.data).parent, world)
    data = world / Path(config.target.data).name
    config = replace(config, target=replace(config.target, data=data, scenario=SCENARIO))
    clock = FrozenClock(FREEZE)
    async with ControlRoom.open(config, REGISTRY, actor=LEAD, clock=clock) as room:
        app = CrmctlApp(room, **FAST)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            walk = Walk(app, pilot, clock)
            await until(lambda: app.snapshot.loaded)
            await pilot.press("3")
            await pilot.pause()
            assert isinstance(app.screen, RunbookScreen)

            # freeze: its gate (no source writes since 18:00) is in BREACH on the demo night.
            assert await walk.key("s") == "Step 'freeze' started in run 'rehearsal-1' (entry #1)."
            await walk.minutes(17)
            refusal = await walk.key("d")
            assert refusal.startswith("step 'freeze' cannot be completed: its gate is not OK (source.write_freeze is")
            await pilot.press("o")
            await pilot.pause()
            ack = await walk.form(pick_first=True, text="INC-7")
            assert ack.startswith("Step 'freeze' completed with the gate OVERRIDDEN")

            await pilot.press("down")
            await walk.key("s")
            await walk.minutes(50)
            assert (await walk.key("d")).startswith("Step 'delta' completed in run 'rehearsal-1'")

            await pilot.press("down")
            await walk.key("s")
            await walk.minutes(55)
            await walk.run_checks()  # every check against the emulator, under the fault scenario
            refusal = await walk.key("d")
            assert "its gate is not OK (account.count is BREACH: Dynamics has" in refusal
            assert "account.reconcile is BREACH" in refusal
            await pilot.press("o")
            await pilot.pause()
            ack = await walk.form(pick_first=True, text="INC-8")
            override = (await room.store.entries(kinds=["runbook.step.done"]))[-1]
            assert ack == f"Step 'reconcile' completed with the gate OVERRIDDEN in run 'rehearsal-1' (entry #{override.seq})."
            assert override.payload["override"]["authority"] == "Cutover Lead"

            await pilot.press("down")
            await walk.key("s")
            await walk.minutes(30)
            await walk.run_checks(["dynamics.whoami"])  # a fresh WhoAmI opens the integrations gate
            assert (await walk.key("d")).startswith("Step 'integrations' completed in run 'rehearsal-1'")

            await pilot.press("down")
            await walk.key("s")
            await walk.minutes(70)
            await walk.key("d")

            await pilot.press("down")
            await walk.key("s")
            await walk.minutes(30)
            await walk.key("d")  # refused: the counts are stale and in BREACH
            await pilot.press("o")
            await pilot.pause()
            await walk.form(pick_first=True, text="INC-8")
            screen = app.screen
            await until(lambda: walk.state("signoff") == "✔ DONE")
            assert screen.query_one(RunbookTable).border_title == "Checklist (6/6 done)"
            summary = text_of(screen.query_one("#runbook-summary", Static))
            assert "Forecast finished 22:12 UTC · drift +12 min" in summary  # 4 h 12 min against 4 h planned

            # The decision, on fresh evidence, by an authority, with a rationale.
            await pilot.press("4")
            await pilot.pause()
            assert isinstance(app.screen, RollbackScreen)
            await walk.run_checks()
            rollback = app.screen
            matrix = text_of(rollback.query_one("#rollback-summary", Static))
            assert "Recommendation  ▲ HOLD " in matrix and "criteria hold: data-loss-accounts" in matrix
            await pilot.press("D")
            await pilot.pause()
            ack = await walk.form(pick_first=True, text="fix forward")
            assert ack.startswith("HOLD recorded by Cutover Lead in run 'rehearsal-1'")
            decision = (await room.store.entries(kinds=["decision.recorded"]))[-1]
            assert decision.operator == "lead" and decision.ts == datetime(2026, 11, 28, 22, 12, tzinfo=timezone.utc)
            evidence = {c["id"]: c["evidence"] for c in decision.payload["matrix"]["criteria"]}
            proof = (await room.store.entries(after_seq=evidence["data-loss-accounts"]["seq"] - 1, limit=1))[0]
            assert proof.kind == "check.result" and proof.hash == evidence["data-loss-accounts"]["hash"]
            assert proof.payload["check_id"] == "account.reconcile" and proof.payload["values"]["missing"] > 0

            # A second rehearsal: started from the runbook screen, walked faster.
            await pilot.press("3")
            await pilot.pause()
            await pilot.press("n")
            await pilot.pause()
            assert (await walk.form(pick_first=False, text="rehearsal-2")).startswith("Run 'rehearsal-2' started")

        # The rest of rehearsal 2 through the same room, as a script would (the keys are proven above);
        # the counts are measured again at reconcile, so the data outcomes of the two runs differ.
        minutes = {"freeze": 15, "delta": 40, "reconcile": 60, "integrations": 25, "smoke": 60, "signoff": 30}
        for step, took in minutes.items():
            await room.step_action("start", step)
            clock.advance(took * MIN)
            if step == "reconcile":
                await room.run_checks(["account.count", "contact.count", "opportunity.count", "dynamics.whoami"])
            await room.step_action("done", step, override_authority="Business Owner", reason="rehearsal 2")

    entries = [e.kind for e in await _entries(config)]
    assert entries.count("run.started") == 1 and entries.count("runbook.step.done") == 12

    # The comparison from the command line, as a script would run it (its own event loop: a thread).
    out = await asyncio.to_thread(_cli, ["runs", "compare", "rehearsal-1", "rehearsal-2", "-c", str(demo_config),
                                         "--format", "json"])
    data = json.loads(out)
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["freeze"]["delta_s"] == -120 and steps["delta"]["delta_s"] == -600
    assert steps["smoke"]["a"]["drift_s"] == 600 and steps["smoke"]["b"]["drift_s"] == 0
    phases = {p["phase"]: p for p in data["phases"]}
    assert phases["cutover"]["a"]["duration_s"] == 67 * 60 and phases["cutover"]["b"]["duration_s"] == 55 * 60
    assert phases["cutover"]["delta_s"] == -12 * 60 and phases["switch-over"]["delta_s"] == -15 * 60
    assert data["total"]["a_s"] == 252 * 60 and data["total"]["b_s"] == 230 * 60
    counts = {(o["step"], o["check"], o["value"]): o for o in data["outcomes"]}
    assert ("reconcile", "account.count", "target") in counts and ("reconcile", "account.reconcile", "missing") in counts
    table = await asyncio.to_thread(_cli, ["runs", "compare", "rehearsal-1", "rehearsal-2", "-c", str(demo_config)])
    assert "Data outcomes of the gate checks at step completion" in table


async def _entries(config):  # noqa: ANN001, ANN202
    from crmctl.store import Store

    store = await Store.open(config.state)
    try:
        return await store.entries(kinds=KINDS)
    finally:
        await store.close()


def _cli(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue()
