"""Pilot tests of mode 5 (integrations), the entity drill-down, time travel, progress and cancel.

Each runs the real app on a real ControlRoom over a real state file: journal written with the
timestamps a night would have produced (tests/ui/integration_world.py), a real Engine whose
check kinds are canned, and the change feed reading from a second connection when another
"process" writes.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator, Callable, ClassVar

import pytest
from textual.widgets import Input, OptionList, Sparkline, Static
from textual.widgets._footer import FooterKey
from textual.worker import WorkerCancelled

from crmctl.clock import FrozenClock
from crmctl.config.sections import CheckConfig, CheckKindSpec, Config
from crmctl.control import ControlRoom
from crmctl.engine import Engine, Targets
from crmctl.model import Status
from crmctl.store import Store
from screens.app import CrmctlApp
from screens.checks import ChecksScreen
from screens.detail import CheckDetailScreen
from screens.entity import EntityScreen
from screens.integrations import IntegrationPaneWidget, IntegrationsScreen, TrendRow
from screens.timetravel import TimeTravelScreen
from tests.ui.conftest import FAST, loaded, text_of, until
from tests.ui.integration_world import (
    ERP_ERROR,
    FREEZE_DONE_AGO,
    INTEGRATION_CHECKS,
    build_integration_config,
    fill_store_timed,
    integration_results,
)
from tests.ui.world import ACTOR, CHECKS, NOW, CannedCheck, canned_registry, result


class SlowCheck:
    """A long check: reports rows page by page, then waits until released (or cancelled)."""

    kind: ClassVar[str] = "slow"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec()
    release: ClassVar[asyncio.Event | None] = None
    pages: ClassVar[int] = 3

    async def run(self, ctx):  # noqa: ANN001, ANN201 - the CheckKind protocol
        for page in range(1, self.pages + 1):
            ctx.report_progress(rows=page * 5000, pages=page, total=40_000)
        assert SlowCheck.release is not None
        await SlowCheck.release.wait()
        return ctx.finish(Status.OK, "slow check finished.", {"rows": 40_000})


SLOW = CheckConfig("account.reconcile", "slow", "account", every=timedelta(minutes=5), title="Accounts reconcile by key")


@pytest.fixture
def iconfig(tmp_path: Path) -> Config:
    config = build_integration_config(tmp_path)
    return replace(config, checks=config.checks + (SLOW,))


@pytest.fixture
async def iroom(iconfig: Config, clock: FrozenClock) -> AsyncIterator[ControlRoom]:
    """A room over the integration world, with a real engine on canned (and one slow) kinds."""
    await fill_store_timed(iconfig.state, integration_results())
    store = await Store.open(iconfig.state, clock=clock)
    registry = {**canned_registry(CHECKS + INTEGRATION_CHECKS), "slow": SlowCheck}
    engine = Engine(iconfig, registry, store, Targets(dynamics=None, source=None), actor=ACTOR, clock=clock)
    SlowCheck.release = asyncio.Event()
    try:
        yield ControlRoom(iconfig, store, engine, actor=ACTOR, clock=clock)
    finally:
        SlowCheck.release.set()
        await store.close()


@pytest.fixture
def iapp(iroom: ControlRoom) -> Callable[..., CrmctlApp]:
    def build(**overrides: object) -> CrmctlApp:
        return CrmctlApp(iroom, **{**FAST, "progress_interval": 0.05, **overrides})  # type: ignore[arg-type]

    return build


def pane(app: CrmctlApp, pane_id: str) -> IntegrationPaneWidget:
    return app.screen.query_one(f"#pane-{pane_id}", IntegrationPaneWidget)


def pane_text(widget: IntegrationPaneWidget) -> str:
    return "\n".join(text_of(s) for s in widget.query(Static) if s.display)


async def wait_runs(app: CrmctlApp) -> None:
    runs = [w for w in app.workers if w.group == "run-checks"]
    if runs:
        with suppress(WorkerCancelled):
            await asyncio.wait_for(app.workers.wait_for_complete(runs), timeout=5)


async def histories_loaded(app: CrmctlApp) -> None:
    await until(lambda: not [w for w in app.workers if w.group == "integration-history" and w.is_running])


# ---------------------------------------------------------------------------------------------
# mode 5: integrations


async def test_key_5_shows_one_pane_per_integration_with_figures_slo_error_and_keys(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(120, 60)) as pilot:
        await loaded(app)
        await pilot.press("5")
        assert isinstance(app.screen, IntegrationsScreen)
        await histories_loaded(app)
        await pilot.pause()
        ids = [w.pane_id for w in app.screen.query(IntegrationPaneWidget)]
        assert ids == ["erp-sync", "marketing-sync", "billing", "dynamics-api"]

        erp = pane(app, "erp-sync")
        text = pane_text(erp)
        assert "✖ BREACH" in text
        assert "SLO missed: p95 912 ms > 800 ms; error rate 3.4 % > 2 %" in text
        for figure in ("Failures 14", "Retries 28", "Backlog 58", "Error rate 3.4 % ✖", "p50 212 ms", "p95 912 ms ✖"):
            assert figure in text, figure
        assert f"Last error {ERP_ERROR} (job failed 21:09:12 UTC)" in " ".join(text.split())
        assert "failing job ids (3) 7c1e0d2a-0001, 7c1e0d2a-0002, 7c1e0d2a-0003" in text
        assert erp.border_title == "erp-sync · ERP Sync (order-to-cash)"
        assert erp.border_subtitle == "updated 6 s ago"  # each pane says how old its data is

        assert "✔ OK" in pane_text(pane(app, "marketing-sync")) and "within SLO" in pane_text(pane(app, "marketing-sync"))
        billing = pane_text(pane(app, "billing"))
        assert "… PENDING" in billing and "no data yet" in billing and "No checks watch this integration" in billing
        assert pane(app, "billing").border_subtitle == "no data yet"
        assert "p95 341 ms" in pane_text(pane(app, "dynamics-api"))


async def test_trends_are_sparklines_of_each_checks_journalled_history(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(120, 60)) as pilot:
        await loaded(app)
        await pilot.press("5")
        await histories_loaded(app)
        await pilot.pause()
        rows = list(pane(app, "erp-sync").query(TrendRow))
        assert [r.trend.label for r in rows] == ["error rate · erp-sync.jobs", "backlog · erp-sync.jobs", "p95 · erp-sync.probe"]
        probe = rows[2]
        # Ten earlier runs and the newest, oldest first, exactly as journalled.
        expected = [420 + 25 * (10 - i) + (i % 3) * 40 for i in range(10, 0, -1)] + [912.4]
        assert list(probe.query_one(Sparkline).data) == expected
        assert probe.trend.last_text == "912 ms"


async def test_integrations_say_no_data_yet_and_turn_stale_honestly(tmp_path: Path, clock: FrozenClock) -> None:
    config = build_integration_config(tmp_path)
    store = await Store.open(config.state, clock=clock)
    try:
        app = CrmctlApp(ControlRoom(config, store, None, actor=ACTOR, clock=clock), **FAST)
        async with app.run_test(size=(120, 60)) as pilot:
            await loaded(app)
            await pilot.press("5")
            await pilot.pause()
            text = pane_text(pane(app, "erp-sync"))
            assert "… PENDING" in text and "no data yet" in text
            assert "No data yet: waiting for the first run of erp-sync.jobs, erp-sync.probe" in text
            assert "Failures —" in text and "p95 —" in text  # never a zero nobody measured
            # A result lands (another process), then time passes beyond twice the cadence.
            writer = await Store.open(config.state, clock=clock)
            await writer.append_result(
                result("erp-sync.probe", Status.OK, "probe fine", {"p95_ms": 300.0, "p50_ms": 100.0},
                       kind="http_probe", ago=timedelta(0)),
                actor=ACTOR,
            )
            await writer.close()
            await until(lambda: "p95 300 ms" in pane_text(pane(app, "erp-sync")), timeout=1.0)
            clock.advance(timedelta(minutes=3))
            app.tick()
            await pilot.pause()
            text = pane_text(pane(app, "erp-sync"))
            assert "◌ STALE" in text and "no fresh data: erp-sync.probe STALE" in text
            assert "within SLO" not in text
    finally:
        await store.close()


async def test_tab_walks_panes_enter_opens_worst_check_and_R_reruns_the_pane(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(app)
        await pilot.press("5")
        await pilot.pause()
        await pilot.press("tab")
        assert app.screen.focused is pane(app, "erp-sync")
        await pilot.press("tab")
        assert app.screen.focused is pane(app, "marketing-sync")
        await pilot.press("up")
        assert app.screen.focused is pane(app, "erp-sync")
        await pilot.press("enter")
        assert isinstance(app.screen, CheckDetailScreen) and app.screen.check_id == "erp-sync.jobs"
        await pilot.press("escape")
        await pilot.press("R")
        await wait_runs(app)
        assert sorted(CannedCheck.calls) == ["erp-sync.jobs", "erp-sync.probe"]


async def test_live_update_redraws_panes_in_place_keeping_focus_and_scroll(iapp, iroom: ControlRoom) -> None:
    app = iapp()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press("5")
        await histories_loaded(app)
        await pilot.pause()
        marketing = pane(app, "marketing-sync")
        marketing.focus()
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        body = app.screen.query_one("#integrations-body")
        scrolled = body.scroll_y
        assert scrolled > 0  # at 80x24 the panes stack and scroll: the second one is below the fold
        writer = await Store.open(iroom.config.state, clock=iroom.clock)
        await writer.append_result(
            result("marketing-sync.jobs", Status.BREACH, "marketing-sync: 9 of 100 failed.",
                   {"failed_jobs": 9, "completed_jobs": 100, "error_rate": 0.09, "backlog": 4},
                   kind="system_jobs", ago=timedelta(0)),
            actor=ACTOR,
        )
        await writer.close()
        await until(lambda: "Failures 9" in pane_text(pane(app, "marketing-sync")), timeout=1.0)
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        assert pane(app, "marketing-sync") is marketing and app.screen.focused is marketing
        assert body.scroll_y == scrolled


# ---------------------------------------------------------------------------------------------
# checks drill-down per entity, key lists


async def test_e_opens_the_entity_with_every_check_values_thresholds_keys_and_queries(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(100, 50)) as pilot:
        await loaded(app)
        await pilot.press("2")
        assert isinstance(app.screen, ChecksScreen)
        await pilot.press("e")
        screen = app.screen
        assert isinstance(screen, EntityScreen) and screen.entity == "account"
        await pilot.pause()
        sections = {s.border_title: s for s in screen.query(".entity-check")}
        assert list(sections) == ["account.count", "account.nulls", "account.reconcile", "account.dupes"][:len(sections)]
        assert set(sections) == {"account.count", "account.nulls", "account.dupes", "account.reconcile"}
        count = "\n".join(text_of(s) for s in sections["account.count"].query(Static))
        assert "Values extra 1 · missing 37 · missing_pct 0.2965 · source 12,480 · target 12,443" in count
        assert "Thresholds warn >0 · breach >0.001" in count
        assert "missing keys (first 20 of 37): A-10017, A-10023, A-10088" in count
        assert "extra keys (1): A-99001" in count
        assert "SELECT account_id FROM accounts ORDER BY account_id" in count
        assert "429" in count and "Retry-After 2 s honoured" in count
        head = text_of(screen.query_one("#entity-head", Static))
        assert "✖ BREACH" in head and "account · 4 checks" in head
        await pilot.press("n")
        assert screen.entity == "contact"
        assert {s.border_title for s in screen.query(".entity-check")} == {"contact.count", "contact.orphans"}
        await pilot.press("p")
        assert screen.entity == "account"
        await pilot.press("p")
        assert screen.entity == "opportunity"  # wraps round; checks about no entity are not an entity
        await pilot.press("n")
        assert SlowCheck.release is not None
        SlowCheck.release.set()  # the entity's slow reconcile runs too: let it finish at once
        await pilot.press("R")
        await wait_runs(app)
        assert sorted(CannedCheck.calls) == ["account.count", "account.dupes", "account.nulls"]
        await until(lambda: app.snapshot.results["account.reconcile"].explanation == "slow check finished.")
        await pilot.press("escape")
        assert isinstance(app.screen, ChecksScreen)


async def test_detail_lists_the_keys_behind_a_difference(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(100, 50)) as pilot:
        await loaded(app)
        await pilot.press("2", "enter")
        assert isinstance(app.screen, CheckDetailScreen) and app.screen.check_id == "account.count"
        await pilot.pause()
        keys = text_of(app.screen.query_one("#detail-keys", Static))
        assert "missing keys (first 20 of 37)\nA-10017, A-10023" in keys and keys.endswith("A-10811, …")
        values = text_of(app.screen.query_one("#detail-values", Static))
        assert "missing_keys" not in values and "headline" not in values


async def test_palette_opens_an_entity(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app)
        await pilot.press("ctrl+p")
        app.screen.query_one(Input).value = "Entity: contact"
        from textual.command import CommandList

        await until(lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, EntityScreen))
        assert app.screen.entity == "contact" and app.current_mode == "checks"


# ---------------------------------------------------------------------------------------------
# time travel


async def test_t_travels_to_a_typed_time_marks_every_screen_and_pauses_live_updates(iapp, iroom: ControlRoom) -> None:
    app = iapp()
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(app)
        await pilot.press("t")
        assert isinstance(app.screen, TimeTravelScreen)
        app.screen.query_one(Input).value = "21:08"
        await pilot.press("enter")
        await until(lambda: app.as_of is not None)
        await pilot.pause()
        assert app.as_of == NOW.replace(minute=8, second=0)
        assert app.now == app.as_of and app.snapshot.as_of == app.as_of
        banner = app.screen.query_one("#hdr-asof")
        assert banner.display and "AS OF 21:08:00 UTC — historical view, live updates paused" in str(banner.render())
        # What was known at 21:08: no count result yet, bob's freeze (21:06:33) done.
        assert "account.count" not in app.snapshot.results
        assert "erp-sync.jobs" in app.snapshot.results
        assert "Freeze" in text_of(app.screen.query_one("#cutover-lines", Static))
        # Every screen shows the past, with the banner.
        for key, screen_type in (("2", ChecksScreen), ("5", IntegrationsScreen)):
            await pilot.press(key)
            assert isinstance(app.screen, screen_type) and app.screen.query_one("#hdr-asof").display
        assert "◌" not in pane_text(pane(app, "erp-sync"))  # 57 s old at 21:08: fresh then
        # Actions are off in the past; live updates are held back.
        assert app.check_action("run_checks", ()) is None
        await pilot.press("r")
        assert not CannedCheck.calls
        writer = await Store.open(iroom.config.state, clock=iroom.clock)
        await writer.append_result(result("contact.count", Status.ERROR, "written while in the past", ago=timedelta(0)), actor=ACTOR)
        await writer.close()
        await until(lambda: app._live.results["contact.count"].explanation == "written while in the past", timeout=1.0)
        assert "contact.count" not in app.snapshot.results
        # t again: back to live, with what arrived meanwhile.
        await pilot.press("t")
        assert app.as_of is None and not app.screen.query_one("#hdr-asof").display
        assert app.snapshot.results["contact.count"].explanation == "written while in the past"
        assert app.now == iroom.clock.now()


async def test_time_travel_by_picked_moment_by_seq_and_escape_returns(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(app)
        await pilot.press("t")
        options = app.screen.query_one("#tt-moments", OptionList)
        await until(lambda: options.option_count > 1)
        texts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        freeze = next(i for i, t in enumerate(texts) if "bob" in t)
        assert texts[freeze].startswith("21:06:33 UTC") and "runbook.step.done freeze" in texts[freeze]
        assert "results" in texts[0]  # results are grouped by minute, newest first
        options.focus()
        options.highlighted = freeze
        await pilot.press("enter")
        await until(lambda: app.as_of is not None)
        assert abs(app.as_of - (NOW - FREEZE_DONE_AGO)) < timedelta(milliseconds=1)  # bob's tick
        assert "Freeze" in text_of(app.screen.query_one("#cutover-lines", Static))
        await pilot.press("escape")
        assert app.as_of is None
        # By journal seq; a seq that does not exist is refused with the range.
        await pilot.press("t")
        app.screen.query_one(Input).value = "#9999"
        await pilot.press("enter")
        await until(lambda: "no journal entry #9999" in text_of(app.screen.query_one("#tt-error", Static)))
        app.screen.query_one(Input).value = "half past two"
        await pilot.press("enter")
        assert "neither a time" in text_of(app.screen.query_one("#tt-error", Static))
        app.screen.query_one(Input).value = "#5"
        await pilot.press("enter")
        await until(lambda: app.as_of is not None)
        assert app.snapshot.last_seq == 5
        await pilot.press("t")
        assert app.as_of is None


async def test_down_pressed_before_the_moments_are_read_still_lands_on_the_newest(iapp, iroom: ControlRoom) -> None:
    app = iapp()
    gate = asyncio.Event()
    read = iroom.recent_entries

    async def slow_read(limit: int = 300):  # noqa: ANN202 - the journal read held back until Down
        await gate.wait()
        return await read(limit)

    iroom.recent_entries = slow_read  # type: ignore[method-assign]
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(app)
        await pilot.press("t", "down")
        options = app.screen.query_one("#tt-moments", OptionList)
        assert options.has_focus and options.option_count == 0
        gate.set()
        await until(lambda: options.option_count > 1)
        await until(lambda: options.highlighted == 0)
        await pilot.press("enter")
        await until(lambda: app.as_of is not None)


# ---------------------------------------------------------------------------------------------
# long work: progress and cancel


async def test_running_check_shows_rows_pages_eta_and_x_cancels_it_as_error_naming_the_operator(
    iapp, iroom: ControlRoom
) -> None:
    app = iapp()
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(app)
        await pilot.press("2")
        screen = app.screen
        assert isinstance(screen, ChecksScreen)
        assert app.check_action("cancel_check", ()) is True and screen.check_action("cancel_check", ()) is False
        screen.table.move_cursor(row=screen.table.get_row_index("account.reconcile"))
        await pilot.press("R")
        panel = screen.query_one("#check-progress", Static)
        await until(lambda: panel.display and "15,000/40,000 rows" in text_of(panel), timeout=2.0)
        text = text_of(panel)
        assert "▶ account.reconcile" in text and "3 pages" in text and "ETA" in text and "38%" in text
        assert screen.check_action("cancel_check", ()) is True
        assert any(k.action == "cancel_check" for k in app.screen.query(FooterKey))
        await pilot.press("x")
        await wait_runs(app)
        await until(lambda: "account.reconcile" in app.snapshot.results and not panel.display, timeout=2.0)
        cancelled = app.snapshot.results["account.reconcile"]
        assert cancelled.status is Status.ERROR
        assert cancelled.explanation.startswith("Run cancelled by alice")
        entries = await iroom.store.entries(kinds=["check.result"])
        assert entries[-1].payload["check_id"] == "account.reconcile" and entries[-1].operator == "alice"
        assert iroom.progress == {}
        await pilot.pause()
        assert not any(k.action == "cancel_check" for k in app.screen.query(FooterKey))


async def test_x_on_a_check_not_running_here_says_so(iapp) -> None:
    app = iapp()
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await loaded(app)
        await pilot.press("2")
        assert app.cancel_check("account.count") is False
        await until(lambda: any("not running in this session" in n.message for n in app._notifications))


# ---------------------------------------------------------------------------------------------
# 80 columns: every key in the footer


@pytest.mark.parametrize("keys", [(), ("2",), ("5",), ("2", "e"), ("2", "enter"), ("t",)])
async def test_every_footer_key_is_on_screen_at_80_columns(iapp, keys: tuple[str, ...]) -> None:
    app = iapp()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app)
        await pilot.press(*keys)

        def shown() -> set[str]:
            return {b.binding.action for b in app.screen.active_bindings.values() if b.binding.show}

        # The footer recomposes whenever the bindings change (a worker finishing, a class
        # applied): wait for it to settle on every key, then check where each one landed.
        def settled() -> bool:
            keys_now = list(app.screen.query(FooterKey))
            return {k.action for k in keys_now} >= shown() - {"command_palette"} and all(
                k.region.width > 0 for k in keys_now
            )

        await until(settled)
        footer_keys = list(app.screen.query(FooterKey))
        assert {k.action for k in footer_keys} >= shown() - {"command_palette"}
        for key in footer_keys:
            region = key.region
            assert region.width > 0 and region.right <= 80, (key.action, region)


# ---------------------------------------------------------------------------------------------
# refreshing keeps selection and scroll


async def test_checks_table_and_entity_keep_cursor_and_scroll_through_live_updates(iapp, iroom: ControlRoom) -> None:
    app = iapp()
    async with app.run_test(size=(80, 20)) as pilot:
        await loaded(app)
        await pilot.press("2")
        screen = app.screen
        assert isinstance(screen, ChecksScreen)
        table = screen.table
        table.move_cursor(row=table.row_count - 1)  # the last row: the table scrolls
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        selected, scrolled = screen.selected_check, table.scroll_y
        assert scrolled > 0
        writer = await Store.open(iroom.config.state, clock=iroom.clock)
        await writer.append_result(result("contact.count", Status.BREACH, "contact: 5 missing.", {"missing": 5},
                                          ago=timedelta(0)), actor=ACTOR)
        await until(lambda: "BREACH" in table.get_cell("contact.count", "status").plain, timeout=1.0)
        iroom.clock.advance(timedelta(seconds=5))
        app.tick()
        await pilot.pause()
        assert screen.selected_check == selected and table.scroll_y == scrolled

        await pilot.press("e")
        entity = app.screen
        assert isinstance(entity, EntityScreen)
        box = entity.query_one("#entity-box")
        await pilot.pause()
        box.scroll_to(y=6, animate=False)  # part way down (at the end, shorter content would clamp it)
        await pilot.pause()
        bottom = box.scroll_y
        assert bottom == 6
        await writer.append_result(result("account.nulls", Status.OK, "no nulls now.", {"nulls": 0},
                                          ago=timedelta(0)), actor=ACTOR)
        await writer.close()
        await until(lambda: "no nulls now." in "\n".join(text_of(s) for s in entity.query(".entity-facts")), timeout=1.0)
        await pilot.pause()
        assert box.scroll_y == bottom
