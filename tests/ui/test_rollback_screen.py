"""The rollback screen through Pilot: the matrix live from the journal, the clocks, recording a
decision with D (refusals kept in the dialog), read-only sessions, and snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static

from crmctl.clock import FrozenClock
from crmctl.control import ControlRoom
from crmctl.runbook import KINDS
from crmctl.store import Store
from screens.app import CrmctlApp
from screens.rollback import RollbackScreen
from screens.widgets.form import FormDialog
from tests.runbook.world import ALICE, BOB, MIN, PONR, SCENE_NOW, build_config, count_result, scene_room, write_scene
from tests.ui.conftest import FAST, after_load, text_of, until

SnapCompare = Callable[..., bool]


def keys(text: str) -> list[str]:
    return ["space" if c == " " else c for c in text]


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[tuple[ControlRoom, ControlRoom]]:
    """(alice's room, bob's room) over the scene: a HOLD proposed by alice waits for approval."""
    config = build_config(tmp_path)
    await write_scene(config)
    clock = FrozenClock(SCENE_NOW)
    store = await Store.open(config.state, clock=clock)
    try:
        yield (ControlRoom(config, store, None, actor=ALICE, clock=clock),
               ControlRoom(config, store, None, actor=BOB, clock=clock))
    finally:
        await store.close()


async def open_rollback(app: CrmctlApp, pilot: Pilot) -> RollbackScreen:
    await until(lambda: app.snapshot.loaded)
    await pilot.press("4")
    await pilot.pause()
    assert isinstance(app.screen, RollbackScreen)
    return app.screen


def cell(screen: RollbackScreen, row: str, column: str) -> str:
    return screen.query_one(DataTable).get_cell(row, column).plain.strip()


async def test_the_matrix_shows_outcome_value_and_evidence_age(scene: tuple[ControlRoom, ControlRoom]) -> None:
    alice, _ = scene
    app = CrmctlApp(alice, **FAST)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_rollback(app, pilot)
        assert cell(screen, "data-loss-accounts", "outcome") == "▲ HOLD"
        assert cell(screen, "data-loss-accounts", "value") == "difference_pct 0.17"
        assert cell(screen, "data-loss-accounts", "age") == "30 s"
        assert cell(screen, "dynamics-slow", "outcome") == "✔ GO"
        assert cell(screen, "data-loss-contacts", "expression") == (
            "ROLLBACK if difference_pct > 0.5 · HOLD if difference_pct > 0")
        summary = text_of(screen.query_one("#rollback-summary", Static))
        assert "Recommendation  ▲ HOLD  2 of 3 criteria hold: data-loss-accounts, data-loss-contacts." in summary
        assert "No return in 3 h 45 min · forecast 22:15 UTC, 45 min before no return" in summary
        detail = text_of(screen.query_one("#rollback-detail", Static))
        assert "WAITING FOR APPROVAL  HOLD proposed by Cutover Lead (alice@ssh:10.0.0.5)" in detail
        assert "hold_if difference_pct > 0 is true" in detail
        # A fresh result moves the matrix live: contacts lost past the rollback line.
        await alice.store.append_result(count_result("contact.count", 62_000, 61_000, at=SCENE_NOW), actor=ALICE)
        await until(lambda: cell(screen, "data-loss-contacts", "outcome") == "✖ ROLLBACK")
        await pilot.pause()
        assert "1 of 3 criteria says ROLLBACK: data-loss-contacts." in text_of(screen.query_one("#rollback-summary", Static))


async def test_d_approves_the_waiting_proposal_as_a_second_authority(scene: tuple[ControlRoom, ControlRoom]) -> None:
    alice, bob = scene
    app = CrmctlApp(bob, **FAST)
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        screen = await open_rollback(app, pilot)
        await pilot.press("D")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, FormDialog)
        assert modal.query_one("#field-decision", Select).value == "hold"  # the matrix's recommendation
        assert modal.query_one("#field-mode", Select).value == "approve"
        await pilot.press("ctrl+s")
        assert text_of(modal.query_one("#form-error", Static)) == "Choose the authority taking the decision."
        # Pick the first authority (Cutover Lead): the proposer's own role, so the rule refuses it.
        modal.query_one("#field-authority", Select).focus()
        await pilot.press("enter", "down", "enter")
        modal.query_one("#field-rationale", Input).focus()
        await pilot.press(*keys("agreed"), "enter")
        await until(lambda: "Refused" in text_of(modal.query_one("#form-error", Static)))
        assert text_of(modal.query_one("#form-error", Static)) == (
            "Refused: two-person rule: Cutover Lead proposed this decision; a different authority must approve it")
        assert app.screen is modal and modal.query_one("#field-rationale", Input).value == "agreed"
        modal.query_one("#field-authority", Select).focus()
        await pilot.press("enter", "down", "enter", "ctrl+s")
        await until(lambda: app.screen is screen)
        notes = [n.message for n in app._notifications]
        assert notes[-1] == "HOLD recorded by Business Owner in run 'rehearsal-1' (entry #13)."
        decision = (await bob.store.entries(kinds=KINDS))[-1]
        assert decision.kind == "decision.recorded" and decision.operator == "bob"
        assert decision.payload["approves"] == 8 and decision.payload["proposer"] == "Cutover Lead"
        assert decision.payload["matrix"]["overall"] == "HOLD"
        await until(lambda: "RECORDED HOLD by Business Owner" in text_of(screen.query_one("#rollback-detail", Static)))
        assert "WAITING FOR APPROVAL" not in text_of(screen.query_one("#rollback-detail", Static))


async def test_after_the_point_of_no_return_the_dialog_asks_for_an_override(scene: tuple[ControlRoom, ControlRoom]) -> None:
    alice, _ = scene
    alice.clock.advance(PONR - SCENE_NOW + 10 * MIN)  # type: ignore[attr-defined]
    app = CrmctlApp(alice, **FAST)
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await open_rollback(app, pilot)
        await pilot.press("D")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, FormDialog) and modal.query("#field-override")
        modal.query_one("#field-mode", Select).value = "record"
        modal.query_one("#field-decision", Select).value = "rollback"
        modal.query_one("#field-authority", Select).value = "Business Owner"
        modal.query_one("#field-rationale", Input).value = "ERP cannot post orders"
        await pilot.press("ctrl+s")
        assert text_of(modal.query_one("#form-error", Static)) == (
            "After the point of no return a decision needs an override reason.")
        modal.query_one("#field-override", Input).focus()
        await pilot.press(*keys("business accepts"), "enter")
        await until(lambda: not isinstance(app.screen, FormDialog))
        decision = (await alice.store.entries(kinds=KINDS))[-1]
        assert decision.payload["decision"] == "rollback" and decision.payload["override"] == "business accepts"
        await until(lambda: "Rollback SLA" in text_of(app.screen.query_one("#rollback-summary", Static)))
        assert "Rollback SLA in 2 h 00 min · ROLLBACK decided 23:10:00 UTC by Business Owner" in text_of(
            app.screen.query_one("#rollback-summary", Static))


async def test_read_only_sessions_cannot_decide(scene: tuple[ControlRoom, ControlRoom]) -> None:
    alice, _ = scene
    observer = ControlRoom(alice.config, alice.store, None, actor=BOB, clock=alice.clock, read_only=True)
    app = CrmctlApp(observer, **FAST)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_rollback(app, pilot)
        enabled = {b.binding.action: b.enabled for b in screen.active_bindings.values()}
        assert enabled["decide"] is False
        await pilot.press("D")
        await pilot.pause()
        assert app.screen is screen


# --------------------------------------------------------------------------------------------
# snapshots


@pytest.fixture
def snap_room(tmp_path: Path) -> Iterator[ControlRoom]:
    yield from scene_room(tmp_path, BOB)


def test_rollback_80x24(snap_compare: SnapCompare, snap_room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(80, 24), run_before=after_load("4"))


def test_rollback_160x48(snap_compare: SnapCompare, snap_room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(160, 48), run_before=after_load("4"))


def test_rollback_decision_dialog_80x24(snap_compare: SnapCompare, snap_room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(80, 24), run_before=after_load("4", "D"))
