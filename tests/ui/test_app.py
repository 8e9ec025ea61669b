"""Pilot tests of the control room: every binding, both screens, the detail and the live feed."""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Callable, ClassVar

from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Input, Label, Static
from textual.worker import WorkerCancelled, WorkerState

from crmctl.clock import FrozenClock
from crmctl.config.sections import CheckConfig, CheckKindSpec
from crmctl.control import ControlRoom
from crmctl.model import Status
from crmctl.store import Store
from screens.app import SCREENS, CrmctlApp
from screens.checks import ChecksScreen, ChecksTable
from screens.detail import CheckDetailScreen
from screens.help import HelpScreen
from screens.overview import OverviewScreen
from tests.ui.conftest import FAST, loaded, text_of, until
from tests.ui.world import ACTOR, CHECKS, NOW, CannedCheck, result

AppFactory = Callable[..., CrmctlApp]


def table(app: CrmctlApp) -> ChecksTable:
    return app.screen.query_one("#checks-table", ChecksTable)


def shown(t: DataTable) -> list[str]:
    """Row keys in display order."""
    return [row.key.value for row in t.ordered_rows]


def status_cell(app: CrmctlApp, check_id: str) -> str:
    return table(app).get_cell(check_id, "status").plain.strip()


async def wait_runs(app: CrmctlApp) -> None:
    """Waits for the check runs this session started (finished workers leave the manager).

    Never hand `wait_for_complete` an empty list: it then waits for *every* worker, and the
    journal feed never completes.
    """
    runs = [w for w in app.workers if w.group == "run-checks"]
    if runs:
        with suppress(WorkerCancelled):
            await app.workers.wait_for_complete(runs)


# ---------------------------------------------------------------------------------------------
# overview


async def test_overview_shows_phase_countdowns_counts_red_items_and_recommendation(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, OverviewScreen)
        cutover = text_of(screen.query_one("#cutover-lines", Static))
        assert "Pre-cutover" in cutover
        assert "23:00 UTC · in 1 h 45 min" in cutover
        assert "2026-11-29 00:00 UTC · in 2 h 45 min" in cutover
        rec = text_of(screen.query_one("#recommendation", Static))
        assert "ROLLBACK?" in rec and "account.count" in rec and "Provisional" in rec
        assert screen.query_one("#recommendation").border_title == "Recommendation · provisional"
        counts = text_of(screen.query_one("#status-counts", Static))
        for label in ("✔ OK  3", "▲ WARN  1", "✖ BREACH  1", "⚠ ERROR  1", "◌ STALE  1", "… PENDING  1"):
            assert label in counts, (label, counts)
        red = text_of(screen.query_one("#red-list", Static))
        assert "Red items (3)" in red
        assert red.index("account.count") < red.index("contact.orphans") < red.index("opportunity.count")
        assert "account.nulls" not in red  # WARN is not a red item
        # Every panel says how old its data is (the newest result finished 5 s before NOW).
        for panel in ("#cutover", "#recommendation", "#checks-panel"):
            assert screen.query_one(panel).border_subtitle == "updated 5 s ago"
        header = app.screen.query_one("#hdr-clock", Label)
        assert text_of(header) == "2026-11-28 21:14:03 UTC"
        assert text_of(app.screen.query_one("#hdr-actor", Label)) == "alice@jump01"
        assert not app.screen.query("#hdr-readonly")


async def test_clock_tick_moves_ages_countdowns_and_turns_old_results_stale(
    make_app: AppFactory, clock: FrozenClock
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        clock.advance(timedelta(minutes=3))
        app.tick()
        await pilot.pause()
        screen = app.screen
        assert text_of(screen.query_one("#hdr-clock", Label)) == "2026-11-28 21:17:03 UTC"
        assert "in 1 h 42 min" in text_of(screen.query_one("#cutover-lines", Static))
        assert screen.query_one("#recommendation").border_subtitle == "updated 3 min 5 s ago"
        # contact.count (every 1 min) is now 3 min 12 s old: STALE, and so a red item.
        assert "contact.count" in text_of(screen.query_one("#red-list", Static))
        await pilot.press("2")
        assert status_cell(app, "contact.count") == "◌ STALE"
        assert status_cell(app, "account.count") == "✖ BREACH"  # an old breach stays a breach
        assert status_cell(app, "account.dupes") == "✔ OK"  # every 5 min: still fresh


async def test_phase_follows_runbook_entries_from_the_journal(make_app: AppFactory, room: ControlRoom) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        other = await Store.open(room.store.path, clock=FrozenClock(NOW))
        try:
            await other.append("runbook.step.started", {"step": "delta"}, actor=ACTOR)
        finally:
            await other.close()
        cutover = app.screen.query_one("#cutover-lines", Static)
        await until(lambda: "Delta load" in text_of(cutover))
        await pilot.pause()


# ---------------------------------------------------------------------------------------------
# navigation, help, palette, quit


async def test_number_keys_switch_screens_and_screens_persist(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        overview = app.screen
        await pilot.press("2")
        assert app.current_mode == "checks" and isinstance(app.screen, ChecksScreen)
        checks = app.screen
        await pilot.press("1")
        assert app.current_mode == "overview" and app.screen is overview
        await pilot.press("2")
        assert app.screen is checks


async def test_help_lists_the_keys_of_the_current_screen_and_closes(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {(k.key, k.description) for k in app.screen.keys}
        for entry in (("R", "Re-run"), ("f", "Problems"), ("r", "Run all"), ("1", "Overview"), ("2", "Checks"), ("?", "Help"), ("q", "Quit"), ("ctrl+p", "Command palette: every screen, action and check")):
            assert entry in listed, entry
        await pilot.press("escape")
        assert isinstance(app.screen, ChecksScreen)
        await pilot.press("question_mark")
        await pilot.press("q")  # q closes help; it does not quit
        assert isinstance(app.screen, ChecksScreen) and app.is_running


async def test_command_palette_lists_screens_actions_and_checks(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app)
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        # Typing key by key costs an idle-wait per key; setting the input searches just the same.
        app.screen.query_one(Input).value = "Screen: Checks"
        await until(lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await until(lambda: app.current_mode == "checks")
        # A check by id opens its detail.
        await pilot.press("ctrl+p")
        app.screen.query_one(Input).value = "Check: account.nulls"
        await until(lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, CheckDetailScreen))
        assert app.screen.check_id == "account.nulls"
        await pilot.press("escape")
        assert isinstance(app.screen, ChecksScreen)
        # From the overview, a check opens over the checks screen, and escape lands there.
        await pilot.press("1", "ctrl+p")
        app.screen.query_one(Input).value = "Check: contact.orphans"
        await until(lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, CheckDetailScreen))
        assert app.current_mode == "checks" and app.screen.check_id == "contact.orphans"
        await pilot.press("escape")
        assert isinstance(app.screen, ChecksScreen)


async def test_palette_provider_covers_every_screen_action_and_check(make_app: AppFactory) -> None:
    from screens.commands import ControlRoomCommands

    app = make_app()
    async with app.run_test(size=(80, 24)):
        provider = ControlRoomCommands(app.screen)
        names = [name for name, _, _ in provider.commands()]
        screens = [f"Screen: {title}" for _, _, title, _ in SCREENS]
        assert names[: len(screens)] == screens  # every screen, in key order, first
        for action in ("Run all checks now", "Time travel: view as of a past moment", "Show keys (help)", "Quit crmctl"):
            assert action in names, action
        assert [n for n in names if n.startswith("Check: ")] == [f"Check: {c.id}" for c in CHECKS]
        entities = dict.fromkeys(c.entity for c in CHECKS if c.entity)
        assert [n for n in names if n.startswith("Entity: ")] == [f"Entity: {e}" for e in entities]


async def test_q_quits_and_cancels_the_scheduler_and_the_feed(make_app: AppFactory) -> None:
    app = make_app(auto_run=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        # The scheduler starts once the first screen is drawn (after the first journal read).
        await until(lambda: {"journal", "scheduler"} <= {w.group for w in app.workers})
        workers = {w.group: w for w in app.workers}
        await pilot.press("q")
        await until(lambda: not app.is_running)
    assert workers["scheduler"].state is WorkerState.CANCELLED
    assert workers["journal"].state is WorkerState.CANCELLED


async def test_header_shows_when_this_session_runs_checks(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        activity = app.screen.query_one("#hdr-activity", Label)
        assert not activity.display
        app.running = 1
        await pilot.pause()
        assert activity.display and text_of(activity) == "running checks…"
        app.running = 0
        await pilot.pause()
        assert not activity.display


async def test_ctrl_q_quits(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("ctrl+q")
        await until(lambda: not app.is_running)


# ---------------------------------------------------------------------------------------------
# checks screen


async def test_checks_table_is_keyed_by_check_id_with_glyph_and_word(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2")
        t = table(app)
        assert shown(t) == [c.id for c in CHECKS]
        assert status_cell(app, "account.count") == "✖ BREACH"
        assert status_cell(app, "contact.count") == "✔ OK"
        assert status_cell(app, "account.nulls") == "▲ WARN"
        assert status_cell(app, "contact.orphans") == "⚠ ERROR"
        assert status_cell(app, "opportunity.count") == "◌ STALE"
        assert status_cell(app, "erp.sync") == "… PENDING"
        # STALE and ERROR (and BREACH) are drawn in reverse video: unmistakable without colour.
        for check_id in ("contact.orphans", "opportunity.count", "account.count"):
            assert t.get_cell(check_id, "status").style.reverse
        assert not t.get_cell("contact.count", "status").style.reverse
        assert t.get_cell("opportunity.count", "age").plain == "5 min 2 s"
        assert t.get_cell("account.count", "value").plain.startswith("missing 37")
        assert t.get_cell("account.count", "threshold").plain == "warn >0 · breach >0.001"
        assert t.get_cell("account.count", "explanation").plain.startswith("Dynamics has 37 fewer")
        assert t.border_subtitle == "updated 5 s ago"
        summary = app.screen.query_one("#check-summary", Static)
        assert "[A-10017]" in text_of(summary)  # markup-like text prints as written
        assert summary.border_title == "account.count"


async def test_a_result_appended_by_another_process_shows_by_itself(
    make_app: AppFactory, room: ControlRoom
) -> None:
    """No key, no reload: the change feed brings another process's result onto the table. (How
    fast is measured between two real processes by tests/e2e/test_two_sessions_tmux.py; here a
    loaded test machine must not fail a correct feed.)"""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2")
        assert status_cell(app, "contact.count") == "✔ OK"
        other = await Store.open(room.store.path, clock=FrozenClock(NOW))
        try:
            await other.append_result(
                result("contact.count", Status.BREACH, "Dynamics lost 12 contacts.", {"missing": 12}, ago=timedelta(0)),
                actor=ACTOR,
            )
            await until(lambda: status_cell(app, "contact.count") == "✖ BREACH", timeout=15.0)
        finally:
            await other.close()
        assert table(app).get_cell("contact.count", "explanation").plain == "Dynamics lost 12 contacts."


async def test_updates_keep_cursor_and_rows_in_place(make_app: AppFactory, room: ControlRoom) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2", "down", "down", "down")
        t = table(app)
        assert app.screen.selected_check == "contact.orphans"
        first_row_before = t.get_row_at(0)
        other = await Store.open(room.store.path, clock=FrozenClock(NOW))
        try:
            for check_id in ("account.count", "contact.orphans", "brand.new"):
                await other.append_result(
                    result(check_id, Status.OK, f"{check_id} fine now.", ago=timedelta(0)), actor=ACTOR
                )
        finally:
            await other.close()
        await until(lambda: "brand.new" in t.rows)
        await pilot.pause()
        assert app.screen.selected_check == "contact.orphans"
        assert t.cursor_coordinate.row == 3
        assert status_cell(app, "contact.orphans") == "✔ OK"
        assert t.get_row_at(0) != first_row_before  # updated in place
        # A journalled check that is not configured is still shown, at the end.
        assert shown(t)[-1] == "brand.new"


async def test_f_shows_problems_only_and_back(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2", "down", "down")  # account.nulls (WARN)
        await pilot.press("f")
        t = table(app)
        assert shown(t) == ["account.count", "account.nulls", "contact.orphans", "opportunity.count", "erp.sync"]
        assert app.screen.selected_check == "account.nulls"
        assert t.border_title == "Checks · problems only (5 of 8)"
        await pilot.press("f")
        assert t.row_count == 8 and app.screen.selected_check == "account.nulls"


async def test_a_check_turning_red_under_the_filter_takes_its_config_place(
    make_app: AppFactory, room: ControlRoom
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2", "f", "down")  # cursor on account.nulls
        t = table(app)
        other = await Store.open(room.store.path, clock=FrozenClock(NOW))
        try:
            await other.append_result(result("contact.count", Status.WARN, "2 contacts late.", ago=timedelta(0)), actor=ACTOR)
        finally:
            await other.close()
        await until(lambda: "contact.count" in t.rows)
        await pilot.pause()
        assert shown(t) == ["account.count", "contact.count", "account.nulls", "contact.orphans", "opportunity.count", "erp.sync"]
        assert app.screen.selected_check == "account.nulls"


async def test_r_runs_every_check_through_engine_store_and_feed(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await loaded(app)
        await pilot.press("2", "r")
        await wait_runs(app)
        assert app.running == 0
        await until(lambda: all(status_cell(app, c.id) == "✔ OK" for c in CHECKS))
        assert sorted(CannedCheck.calls) == sorted(c.id for c in CHECKS)
        assert table(app).get_cell("erp.sync", "explanation").plain == "erp.sync ran (canned)."
        await pilot.pause()
        assert any("8 checks ran" in n.message for n in app._notifications)


async def test_shift_r_reruns_only_the_selected_check(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2", "down", "down", "R")
        await wait_runs(app)
        assert CannedCheck.calls == ["account.nulls"]
        await until(lambda: status_cell(app, "account.nulls") == "✔ OK")
        assert status_cell(app, "account.count") == "✖ BREACH"


async def test_enter_opens_the_detail_with_values_thresholds_and_queries(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2", "enter")
        screen = app.screen
        assert isinstance(screen, CheckDetailScreen) and screen.check_id == "account.count"
        head = text_of(screen.query_one("#detail-head", Static))
        assert "✖ BREACH" in head and "Accounts migrated" in head and "37 fewer accounts" in head
        assert "missing_pct" in text_of(screen.query_one("#detail-values", Static))
        assert text_of(screen.query_one("#detail-thresholds", Static)).splitlines() == ["warn   0", "breach 0.001"]
        facts = text_of(screen.query_one("#detail-facts", Static))
        assert "4 requests" in facts and "every 1 min" in facts and "0.84 s" in facts
        queries = screen.query_one("#detail-queries", DataTable)
        assert queries.row_count == 4
        assert queries.border_title == "Queries (4) · 4 requests"
        row = queries.get_row_at(1)
        assert [c.plain for c in row[:4]] == ["GET", "200", "412 ms", "accounts?$select=new_legacyid&$top=5000"]
        assert "Retry-After" in queries.get_row_at(2)[3].plain
        assert queries.border_subtitle == "URLs relative to https://contoso.crm.dynamics.com/api/data/v9.2/"
        # R re-runs this check from the detail; the detail follows the journal.
        await pilot.press("R")
        await wait_runs(app)
        await until(lambda: "✔ OK" in text_of(screen.query_one("#detail-head", Static)))
        await until(lambda: "✖ BREACH" in text_of(screen.query_one("#detail-history", Static)))
        assert CannedCheck.calls == ["account.count"]
        await pilot.press("escape")
        assert isinstance(app.screen, ChecksScreen)


# ---------------------------------------------------------------------------------------------
# read-only, errors, scheduler


async def test_read_only_session_shows_badge_and_runs_nothing(room: ControlRoom) -> None:
    observer = ControlRoom(room.config, room.store, None, actor=ACTOR, clock=room.clock, read_only=True)
    app = CrmctlApp(observer, **{**FAST, "auto_run": True})
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await loaded(app)
        assert text_of(app.screen.query_one("#hdr-readonly", Label)).strip() == "READ-ONLY"
        assert app.screen.active_bindings["r"].enabled is False
        await pilot.press("r", "2", "R")
        await pilot.pause()
        assert not [w for w in app.workers if w.group in ("run-checks", "scheduler")]
        assert app.screen.active_bindings["R"].enabled is False
    assert CannedCheck.calls == []


async def test_a_failing_run_is_reported_not_fatal(room: ControlRoom) -> None:
    no_engine = ControlRoom(room.config, room.store, None, actor=ACTOR, clock=room.clock)
    app = CrmctlApp(no_engine, **FAST)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await loaded(app)
        await pilot.press("r")
        await wait_runs(app)
        await until(lambda: app._notifications)
        [note] = list(app._notifications)
        assert note.severity == "error" and "No check engine" in note.message
        assert app.is_running


async def test_auto_run_starts_the_scheduler_and_results_arrive(make_app: AppFactory) -> None:
    app = make_app(auto_run=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("2")
        await until(lambda: all(status_cell(app, c.id) == "✔ OK" for c in CHECKS))
        app.workers.cancel_group(app, "scheduler")
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------
# the engine runs off the UI's event loop


class HoldingCheck:
    """A check that asks the real (embedded) emulator who it is, reports a page, then holds its
    event loop with a blocking wait until the test lets go (as a synchronous driver call or a
    long CPU-bound comparison would), then waits to be cancelled.

    With the engine on the UI's loop, nothing on screen could move while it holds: the wait
    times out after `HOLD_S` and `let_go` tells the test that keys only took effect afterwards.
    """

    kind: ClassVar[str] = "holding"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec()
    HOLD_S: ClassVar[float] = 60.0
    holding: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()
    let_go: ClassVar[threading.Event] = threading.Event()
    thread: ClassVar[str] = ""

    async def run(self, ctx):  # noqa: ANN001, ANN201 - the CheckKind protocol
        await ctx.dynamics.whoami(log=ctx.dynamics_log)
        ctx.report_progress(rows=5000, pages=1, total=20_000)
        HoldingCheck.thread = threading.current_thread().name
        HoldingCheck.holding.set()
        HoldingCheck.release.wait(timeout=self.HOLD_S)  # blocking on purpose: the loop stops here
        HoldingCheck.let_go.set()
        ctx.report_progress(rows=10_000, pages=2)
        await asyncio.sleep(3600)  # until x cancels it
        return ctx.finish(Status.OK, "never cancelled")


HOLDING = CheckConfig("ui.holding", "holding", "account", every=timedelta(minutes=5), title="Holds its loop")


async def test_keys_take_effect_while_a_check_holds_the_engines_loop_and_x_cancels_it(demo_config: Path) -> None:
    from checks.registry import REGISTRY, check_kinds
    from crmctl.config import load_config

    loaded_config = load_config(demo_config, check_kinds=check_kinds())
    config = replace(loaded_config, checks=(HOLDING, *loaded_config.checks))  # first row: selected
    for flag in (HoldingCheck.holding, HoldingCheck.release, HoldingCheck.let_go):
        flag.clear()
    try:
        async with ControlRoom.open(
            config, {**REGISTRY, "holding": HoldingCheck}, actor=ACTOR, engine_thread=True
        ) as room:
            app = CrmctlApp(room, **{**FAST, "progress_interval": 0.05})
            async with app.run_test(size=(120, 40), notifications=True) as pilot:
                await loaded(app)
                await pilot.press("2")
                await until(lambda: isinstance(app.screen, ChecksScreen) and app.screen.selected_check == "ui.holding")
                await pilot.press("R")
                await until(HoldingCheck.holding.is_set, timeout=60)
                assert HoldingCheck.thread == "crmctl-engine"  # the check runs on the engine's thread

                # While the engine's loop is held: screens switch, help opens and closes, and the
                # progress reported before the hold reaches the Checks screen.
                await pilot.press("1")
                await until(lambda: isinstance(app.screen, OverviewScreen), timeout=10)
                await pilot.press("question_mark")
                await until(lambda: isinstance(app.screen, HelpScreen), timeout=10)
                await pilot.press("escape", "2")
                await until(lambda: isinstance(app.screen, ChecksScreen), timeout=10)
                panel = app.screen.query_one("#check-progress", Static)
                await until(lambda: "5,000/20,000 rows" in text_of(panel), timeout=10)
                assert "ui.holding" in text_of(panel) and "1 page" in text_of(panel)
                await pilot.press("x")
                await until(lambda: any("Cancelling ui.holding" in n.message for n in app._notifications), timeout=10)
                assert not HoldingCheck.let_go.is_set(), "keys took effect only after the engine let go"

                # Let go: the cancel queued meanwhile lands; the ERROR names the operator.
                HoldingCheck.release.set()
                await until(lambda: "ui.holding" in app.snapshot.results, timeout=30)
                cancelled = app.snapshot.results["ui.holding"]
                assert cancelled.status is Status.ERROR
                assert cancelled.explanation.startswith("Run cancelled by alice")
                await until(lambda: not app.progress, timeout=10)
                await pilot.press("q")
                await until(lambda: not app.is_running, timeout=10)
    finally:
        HoldingCheck.release.set()
    assert not [t for t in threading.enumerate() if t.name == "crmctl-engine"], "the engine thread outlived the room"
