"""Pilot tests of the Hypercare screen: baseline, checkpoints, drift table, drift plotted over time,
and the `h` (run now) and `b` (baseline) keys going through the real engine and journal."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Iterator

import pytest
from textual.widgets import DataTable, Sparkline, Static

from crmctl.clock import FrozenClock
from crmctl.config import CheckConfig, CheckKindSpec, Config, DriftTolerance
from crmctl.control import ControlRoom
from crmctl.engine import Engine, Targets
from crmctl.hypercare import BASELINE_KIND, STATUS_KIND
from crmctl.model import Status
from crmctl.store import Store
from screens.app import CrmctlApp
from screens.hypercare import HypercareScreen
from screens.widgets.form import FormDialog
from tests.ui.conftest import FAST, loaded, text_of, until
from tests.ui.world import ACTOR, build_config

GO_LIVE_AT = datetime(2026, 11, 29, 9, 0, tzinfo=timezone.utc)


class Counting:
    """A check kind reporting whatever the test sets: accounts in Dynamics and an error rate."""

    kind: ClassVar[str] = "row_count"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(needs_entity=True)
    figures: ClassVar[dict[str, float]] = {}

    async def run(self, ctx: Any) -> Any:
        f = Counting.figures
        return ctx.finish(Status.OK, "counted", {"source": 20000, "target": int(f["target"]),
                                                 "difference": int(f["target"]) - 20000})


CHECKS = (CheckConfig("account.count", "row_count", "account", every=timedelta(days=1), title="Accounts"),)


def hypercare_config(folder: Path) -> Config:
    config = build_config(folder, checks=CHECKS)
    return dataclasses.replace(config, hypercare=dataclasses.replace(
        config.hypercare, tolerances=(DriftTolerance("account.count.target", max_pct=0.03),)))


async def build_room(folder: Path, clock: FrozenClock) -> tuple[ControlRoom, Store]:
    """Go-live day: a run, the baseline; then Day 1 (+3 accounts, in tolerance), Day 2 (+10, out)."""
    config = hypercare_config(folder)
    store = await Store.open(config.state, clock=clock)
    engine = Engine(config, {"row_count": Counting}, store, Targets(None, None), actor=ACTOR, clock=clock)
    room = ControlRoom(config, store, engine, actor=ACTOR, clock=clock)
    Counting.figures = {"target": 20000}
    await room.run_checks()
    await room.freeze_baseline(reason="sign-off")
    for target in (20003, 20010):
        clock.advance(timedelta(days=1))
        Counting.figures = {"target": target}
        await room.run_hypercare()
    return room, store


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(GO_LIVE_AT)


@pytest.fixture
async def hroom(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[ControlRoom]:
    room, store = await build_room(tmp_path, clock)
    try:
        yield room
    finally:
        await store.close()


def drift_cell(app: CrmctlApp, metric: str, column: str) -> str:
    return app.screen.query_one("#hc-drift", DataTable).get_cell(metric, column).plain.strip()


async def open_hypercare(app: CrmctlApp, pilot: Any) -> HypercareScreen:
    await loaded(app)
    await pilot.press("7")
    await until(lambda: isinstance(app.screen, HypercareScreen) and app.screen.view is not None
                and app.screen.view.latest is not None)
    await pilot.pause()
    return app.screen  # type: ignore[return-value]


async def test_checkpoints_drift_table_and_sparkline(hroom: ControlRoom) -> None:
    app = CrmctlApp(hroom, **FAST)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_hypercare(app, pilot)
        checkpoints = text_of(screen.query_one("#hc-checkpoints", Static))
        assert "Day 1   ✔ PASS  2 drifted, all ok" in checkpoints
        assert "Day 7   ◌ UPCOMING  in 5 d (12-06)" in checkpoints
        baseline = text_of(screen.query_one("#hc-baseline", Static))
        assert "Go-live 2026-11-29 · Day 2" in baseline and "verified" in baseline and "sign-off" in baseline
        # Drifted metrics only, failing first: target is +10 (0.05 %) against a 0.03 % tolerance.
        table = screen.query_one("#hc-drift", DataTable)
        assert [r.key.value for r in table.ordered_rows] == ["account.count.target", "account.count.difference"]
        assert drift_cell(app, "account.count.target", "verdict") == "✖ FAIL"
        assert drift_cell(app, "account.count.target", "drift") == "+10 (+0.05 %)"
        assert drift_cell(app, "account.count.target", "tolerance") == "±0.03 %"
        assert drift_cell(app, "account.count.difference", "verdict") == "✔ ok"
        assert table.border_subtitle == "1 out of tolerance"
        # The selected metric's drift over time, one point per daily run.
        assert list(screen.query_one("#hc-spark", Sparkline).data or []) == [0.0, 3.0, 10.0]  # from the baseline
        caption = text_of(screen.query_one("#hc-spark-caption", Static))
        assert caption == "account.count.target: drift at each of 2 runs · min 3 · max 10 · latest 10"
        await pilot.press("f")
        await pilot.pause()
        assert "account.count.source" in [r.key.value for r in table.ordered_rows]  # unchanged ones too


async def test_h_runs_the_pack_and_b_replaces_the_baseline_with_a_reason(hroom: ControlRoom, clock: FrozenClock) -> None:
    app = CrmctlApp(hroom, **FAST)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        screen = await open_hypercare(app, pilot)
        clock.advance(timedelta(days=5))  # Day 7
        app.tick()
        Counting.figures = {"target": 20004}
        await pilot.press("h")
        await until(lambda: any(n.title == "Hypercare" for n in app._notifications))
        assert "Day 7: PASS" in str(next(n.message for n in app._notifications if n.title == "Hypercare"))
        await until(lambda: list(screen.query_one("#hc-spark", Sparkline).data or []) == [0.0, 3.0, 10.0, 4.0])
        assert "Day 7   ✔ PASS" in text_of(screen.query_one("#hc-checkpoints", Static))

        await pilot.press("b")
        await until(lambda: isinstance(app.screen, FormDialog))
        await pilot.press("enter")
        await pilot.pause()
        assert "A replacement needs a reason." in text_of(app.screen.query_one("#form-error", Static))
        await pilot.press(*"late delta load", "enter")
        await until(lambda: isinstance(app.screen, HypercareScreen))
        await until(lambda: "late delta load" in text_of(screen.query_one("#hc-baseline", Static)))
        baselines = await hroom.store.entries(kinds=[BASELINE_KIND])
        assert len(baselines) == 2 and baselines[1].payload["replaces"] == baselines[0].seq
        assert len(await hroom.store.entries(kinds=[STATUS_KIND])) == 3


async def test_read_only_and_history_grey_out_the_actions(hroom: ControlRoom) -> None:
    observer = ControlRoom(hroom.config, hroom.store, None, actor=ACTOR, clock=hroom.clock, read_only=True)
    app = CrmctlApp(observer, **FAST)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_hypercare(app, pilot)
        assert screen.check_action("run_hypercare", ()) is None
        assert screen.check_action("freeze_baseline", ()) is None


# ---------------------------------------------------------------------------------------------
# snapshot (80x24, the SSH case)


@pytest.fixture
def snap_room(tmp_path: Path) -> Iterator[ControlRoom]:
    clock = FrozenClock(GO_LIVE_AT)
    room, store = asyncio.run(build_room(tmp_path, clock))
    reopened = asyncio.run(Store.open(room.config.state, clock=clock))
    asyncio.run(store.close())
    try:
        yield ControlRoom(room.config, reopened, None, actor=ACTOR, clock=clock)
    finally:
        asyncio.run(reopened.close())


def test_hypercare_80x24(snap_compare: Any, snap_room: ControlRoom) -> None:
    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await until(lambda: app.snapshot.loaded)
        await pilot.press("7")
        await until(lambda: isinstance(app.screen, HypercareScreen) and app.screen.view is not None
                    and app.screen.view.latest is not None)
        await pilot.pause()

    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(80, 24), run_before=run_before)
