"""The runbook screen through Pilot: the checklist from the journal, every key, refusals, modals,
read-only sessions, and snapshots at 80x24 and 160x48."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from crmctl.clock import FrozenClock
from crmctl.control import ControlRoom
from crmctl.runbook import KINDS
from crmctl.store import Store
from screens.app import CrmctlApp
from screens.runbook import RunbookScreen, RunbookTable
from screens.widgets.form import FormDialog
from tests.runbook.world import ALICE, BOB, SCENE_NOW, build_config, scene_room, write_scene
from tests.ui.conftest import FAST, after_load, text_of, until

SnapCompare = Callable[..., bool]


def keys(text: str) -> list[str]:
    """Characters as Pilot key names (a space is "space")."""
    return ["space" if c == " " else c for c in text]


@pytest.fixture
async def rb_room(tmp_path: Path) -> AsyncIterator[ControlRoom]:
    config = build_config(tmp_path)
    await write_scene(config)
    clock = FrozenClock(SCENE_NOW)
    store = await Store.open(config.state, clock=clock)
    try:
        yield ControlRoom(config, store, None, actor=ALICE, clock=clock)
    finally:
        await store.close()


async def open_runbook(app: CrmctlApp, pilot: Pilot) -> RunbookScreen:
    await until(lambda: app.snapshot.loaded)
    await pilot.press("3")
    await pilot.pause()
    assert isinstance(app.screen, RunbookScreen)
    return app.screen


def cell(screen: RunbookScreen, step: str, column: str) -> str:
    return screen.query_one(RunbookTable).get_cell(step, column).plain.strip()


def messages(app: CrmctlApp) -> list[str]:
    return [n.message for n in app._notifications]


async def entries(room: ControlRoom) -> list:
    return await room.store.entries(kinds=KINDS)


async def test_the_checklist_shows_state_timing_drift_and_gates(rb_room: ControlRoom) -> None:
    app = CrmctlApp(rb_room, **FAST)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_runbook(app, pilot)
        table = screen.query_one(RunbookTable)
        assert [r.key.value for r in table.ordered_rows] == [
            "freeze", "delta", "reconcile", "integrations", "smoke", "signoff", "rb-stop", "rb-repoint", "rb-unfreeze"]
        assert cell(screen, "freeze", "status") == "✔ DONE"
        assert (cell(screen, "freeze", "actual"), cell(screen, "freeze", "drift")) == ("20 min", "+5 min ▲")
        assert cell(screen, "reconcile", "planned") == "1 h"
        assert cell(screen, "delta", "status") == "▶ IN PROGRESS"
        assert cell(screen, "delta", "actual") == "▶ 55 min" and cell(screen, "delta", "drift") == "+10 min ▲"
        assert cell(screen, "reconcile", "drift") == "late start"
        assert cell(screen, "reconcile", "gate") == "✖ account.count BREACH +2"
        assert cell(screen, "integrations", "gate") == "✔ open"
        assert cell(screen, "smoke", "gate") == "—"
        assert cell(screen, "rb-stop", "step") == "↩ rb-stop"
        summary = text_of(screen.query_one("#runbook-summary", Static))
        assert "Phase cutover · since 18:00 UTC (implicit run)" in summary
        assert "Forecast 22:15 UTC, 45 min before no return · drift +15 min" in summary
        assert "Critical path freeze → delta → reconcile → integrations → smoke → signoff" in summary
        assert screen.query_one("#runbook-summary").border_subtitle == "no return in 3 h 45 min"
        detail = text_of(screen.query_one("#step-detail", Static))
        assert "18:00:00 UTC in progress by alice@ssh:10.0.0.5" in detail and "18:20:00 UTC done by alice" in detail


async def test_s_and_d_journal_through_the_rules_and_refusals_say_why(rb_room: ControlRoom) -> None:
    app = CrmctlApp(rb_room, **FAST)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = await open_runbook(app, pilot)
        before = len(await entries(rb_room))
        await pilot.press("d")  # freeze is done already
        await until(lambda: messages(app))
        assert messages(app)[-1] == "step 'freeze' was already completed by alice@ssh:10.0.0.5 at 18:20:00 UTC"
        await pilot.press("down", "down", "s")  # reconcile waits for delta
        await until(lambda: len(messages(app)) == 2)
        assert messages(app)[-1] == "step 'reconcile' cannot start before 'delta' (in progress)"
        assert len(await entries(rb_room)) == before
        await pilot.press("up", "d")  # delta: no gate, done
        await until(lambda: cell(screen, "delta", "status") == "✔ DONE")
        assert messages(app)[-1] == "Step 'delta' completed in run 'rehearsal-1' (entry #13)."
        await pilot.press("down", "s")
        await until(lambda: cell(screen, "reconcile", "status") == "▶ IN PROGRESS")
        await pilot.press("d")
        await until(lambda: "its gate is not OK (account.count is BREACH" in messages(app)[-1])
        assert cell(screen, "reconcile", "status") == "▶ IN PROGRESS"
        done = [e for e in await entries(rb_room) if e.kind == "runbook.step.done"]
        assert [e.payload["step"] for e in done] == ["freeze", "delta"]


async def test_skip_asks_a_reason_and_keeps_what_was_typed_when_refused(rb_room: ControlRoom) -> None:
    app = CrmctlApp(rb_room, **FAST)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_runbook(app, pilot)
        await pilot.press("down", "k")  # delta is in progress: it cannot be skipped
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, FormDialog) and modal.query_one("#form-box").border_title == "Skip step delta"
        await pilot.press("enter")  # empty reason: asked again, nothing written
        assert text_of(modal.query_one("#form-error", Static)) == "A reason is required to skip a step."
        await pilot.press(*keys("n/a"), "enter")
        await until(lambda: "Refused" in text_of(modal.query_one("#form-error", Static)))
        assert text_of(modal.query_one("#form-error", Static)).startswith(
            "Refused: step 'delta' is already in progress: started by bob@ssh:10.0.0.7")
        assert app.screen is modal and modal.query_one(Input).value == "n/a"  # nothing lost
        await pilot.press("escape")
        await pilot.press("down", "k", *keys("offline"), "enter")
        await until(lambda: cell(screen, "reconcile", "status") == "↷ SKIPPED")
        assert messages(app)[-1] == "Step 'reconcile' skipped in run 'rehearsal-1' (entry #13)."
        skipped = (await entries(rb_room))[-1]
        assert skipped.payload["reason"] == "offline" and skipped.operator == "alice"


async def test_override_needs_an_authority_and_a_reason_and_is_marked(rb_room: ControlRoom) -> None:
    await rb_room.step_action("done", "delta")
    await rb_room.step_action("start", "reconcile")
    app = CrmctlApp(rb_room, **FAST)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_runbook(app, pilot)
        await pilot.press("down", "down", "o")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, FormDialog)
        await pilot.press("ctrl+s")
        assert text_of(modal.query_one("#form-error", Static)) == "Choose the authority who allows the override."
        await pilot.press("enter", "down", "enter", "tab")  # open the list, pick Cutover Lead
        await pilot.press("enter")
        assert text_of(modal.query_one("#form-error", Static)) == "An override needs a reason."
        await pilot.press(*keys("INC-12"), "enter")
        await until(lambda: cell(screen, "reconcile", "status") == "✔ DONE")
        assert cell(screen, "reconcile", "gate") == "⚑ overridden by Cutover Lead"
        assert messages(app)[-1].endswith("completed with the gate OVERRIDDEN in run 'rehearsal-1' (entry #15).")
        payload = (await entries(rb_room))[-1].payload
        assert payload["override"]["authority"] == "Cutover Lead" and payload["override"]["reason"] == "INC-12"
        assert "OVERRIDE by Cutover Lead: INC-12" in text_of(screen.query_one("#step-detail", Static))


async def test_new_run_modal_refuses_bad_names_inside_the_dialog(rb_room: ControlRoom) -> None:
    await rb_room.step_action("done", "delta")
    app = CrmctlApp(rb_room, **FAST)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_runbook(app, pilot)
        await pilot.press("n", *keys("Rehearsal 2"), "enter")
        modal = app.screen
        await until(lambda: "Refused" in text_of(modal.query_one("#form-error", Static)))
        assert "'Rehearsal 2' is not a run name" in text_of(modal.query_one("#form-error", Static))
        modal.query_one(Input).value = ""
        await pilot.press(*keys("rehearsal-2"), "enter")
        await until(lambda: screen.query_one("#runbook-summary").border_title == "Run rehearsal-2")
        assert cell(screen, "freeze", "status") == "○ PENDING"
        assert "Phase Pre-cutover · since" in text_of(screen.query_one("#runbook-summary", Static))


async def test_read_only_sessions_see_the_keys_greyed_and_write_nothing(rb_room: ControlRoom) -> None:
    observer = ControlRoom(rb_room.config, rb_room.store, None, actor=BOB, clock=rb_room.clock, read_only=True)
    app = CrmctlApp(observer, **FAST)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_runbook(app, pilot)
        before = len(await entries(rb_room))
        enabled = {b.binding.action: b.enabled for b in screen.active_bindings.values()}
        assert enabled["step('start')"] is False and enabled["override"] is False and enabled["new_run"] is False
        await pilot.press("down", "s", "k", "o", "n")
        await pilot.pause()
        assert isinstance(app.screen, RunbookScreen)
        assert len(await entries(rb_room)) == before


async def test_another_sessions_step_shows_within_a_second(rb_room: ControlRoom) -> None:
    app = CrmctlApp(rb_room, **FAST)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runbook(app, pilot)
        other = await Store.open(rb_room.store.path, clock=rb_room.clock)
        try:
            await ControlRoom(rb_room.config, other, None, actor=BOB, clock=rb_room.clock).step_action("done", "delta")
        finally:
            await other.close()
        waited = await until(lambda: cell(screen, "delta", "status") == "✔ DONE")
        assert waited < 1.0


# --------------------------------------------------------------------------------------------
# snapshots


@pytest.fixture
def snap_room(tmp_path: Path) -> Iterator[ControlRoom]:
    yield from scene_room(tmp_path, ALICE)


def test_runbook_80x24(snap_compare: SnapCompare, snap_room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(80, 24), run_before=after_load("3", "down"))


def test_runbook_160x48(snap_compare: SnapCompare, snap_room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(160, 48), run_before=after_load("3", "down"))


def test_runbook_override_dialog_80x24(snap_compare: SnapCompare, snap_room: ControlRoom) -> None:
    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(80, 24),
                        run_before=after_load("3", "down", "down", "o"))
