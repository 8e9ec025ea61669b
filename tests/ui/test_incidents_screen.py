"""Pilot tests of incidents in the control room: `i` on a red check, the Incidents screen's keys,
countdowns on the room's clock, refusals, and notifications that never block the UI."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest
from textual.widgets import DataTable, Static
from textual.worker import WorkerCancelled

from crmctl.clock import FrozenClock
from crmctl.config import IncidentsConfig, NotifyConfig, Secret, SeverityConfig
from crmctl.control import ControlRoom
from crmctl.incidents import ACKNOWLEDGED, INCIDENT_KINDS, RAISED, IncidentDesk
from crmctl.notify import FAILED
from crmctl.store import Store
from screens.app import CrmctlApp
from screens.checks import ChecksScreen
from screens.incidents import IncidentsScreen
from screens.widgets.form import FormDialog
from tests.notify.receiver import Answer, Receiver
from tests.ui.conftest import FAST, loaded, text_of, until
from tests.ui.world import ACTOR, NOW, build_config, fill_store, sample_results

AppFactory = Callable[..., CrmctlApp]


def incidents_table(app: CrmctlApp) -> DataTable:
    return app.screen.query_one("#incidents-table", DataTable)


def cell(app: CrmctlApp, number: int, column: str) -> str:
    return incidents_table(app).get_cell(str(number), column).plain.strip()


async def settle(app: CrmctlApp) -> None:
    """Waits for this session's incident workers (never hand wait_for_complete an empty list)."""
    busy = [w for w in app.workers if w.group in ("incident-actions", "incidents-feed", "form-submit")]
    if busy:
        with suppress(WorkerCancelled):
            await app.workers.wait_for_complete(busy)


async def raised(store: Store) -> list:  # noqa: ANN201
    return await store.entries(kinds=[RAISED])


async def test_i_on_a_breach_raises_an_incident_the_incidents_screen_shows(make_app: AppFactory, room: ControlRoom) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await loaded(app)
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ChecksScreen) and screen.selected_check == "account.count"  # BREACH
        await pilot.press("i")
        await until(lambda: any("raised from account.count" in str(n.message) for n in app._notifications))
        (entry,) = await raised(room.store)
        assert entry.payload["check"] == "account.count" and entry.payload["evidence"]["status"] == "BREACH"

        # A green check: `i` is greyed out, and pressing it anyway raises nothing.
        await pilot.press("down")  # contact.count, OK
        await pilot.pause()
        assert screen.selected_check == "contact.count"
        assert screen.check_action("raise_incident", ()) is None
        await pilot.press("i")
        await pilot.pause()
        assert len(await raised(room.store)) == 1

        await pilot.press("6")
        await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 1)
        await settle(app)
        await pilot.pause()
        number = entry.seq
        assert cell(app, number, "id") == f"INC-{number}"
        assert (cell(app, number, "sev"), cell(app, number, "state")) == ("UNKNOWN", "open")
        # UNKNOWN is timed as SEV1 (the default 15 min).
        assert cell(app, number, "escalation") == "→ the escalation contact in 15 min"
        detail = text_of(app.screen.query_one("#incident-lines", Static))
        assert "Evidence BREACH Dynamics has 37 fewer accounts" in detail
        assert f"result seq {entry.payload['evidence']['result_seq']}" in detail


async def test_keys_move_an_incident_through_every_state(make_app: AppFactory, room: ControlRoom) -> None:
    desk = IncidentDesk(room.config, room.store, actor=ACTOR, clock=room.clock)
    incident = await desk.raise_incident("ERP orders stuck", severity="sev2")
    n = incident.number
    app = make_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await loaded(app)
        await pilot.press("6")
        await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 1)
        screen = app.screen
        assert screen.check_action("act", ("mitigate",)) is None  # acknowledge first
        await pilot.press("a")
        await until(lambda: cell(app, n, "state") == "acknowledged")
        assert cell(app, n, "owner") == "alice"
        await pilot.press("m")
        await until(lambda: cell(app, n, "state") == "mitigating")

        await pilot.press("n")
        await until(lambda: isinstance(app.screen, FormDialog))
        await pilot.press(*"restarted the connector", "enter")
        await until(lambda: isinstance(app.screen, IncidentsScreen))
        await until(lambda: "restarted the connector" in text_of(screen.query_one("#incident-lines", Static)))

        await pilot.press("s")
        await until(lambda: isinstance(app.screen, FormDialog))
        await pilot.press("enter")  # empty: the dialog says what is missing and stays
        await pilot.pause()
        assert "Say how it was resolved." in text_of(app.screen.query_one("#form-error", Static))
        await pilot.press(*"credentials rotated", "enter")
        await until(lambda: isinstance(app.screen, IncidentsScreen))
        await pilot.press("f")  # show resolved ones too
        await until(lambda: str(n) in incidents_table(app).rows and cell(app, n, "state") == "resolved")
        await pilot.press("c")
        await until(lambda: cell(app, n, "state") == "closed")
        kinds = [e.kind for e in await room.store.entries(kinds=INCIDENT_KINDS)]
        assert kinds == ["incident.raised", "incident.acknowledged", "incident.mitigating", "incident.note",
                         "incident.resolved", "incident.closed"]


async def test_a_raise_by_hand_and_a_refusal_from_another_operator(make_app: AppFactory, room: ControlRoom) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await loaded(app)
        await pilot.press("6")
        await pilot.pause()
        await pilot.press("i")
        await until(lambda: isinstance(app.screen, FormDialog))
        await pilot.press(*"Marketing consent flags lost", "enter")
        await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 1)
        (entry,) = await raised(room.store)
        assert (entry.payload["title"], entry.payload["severity"]) == ("Marketing consent flags lost", "UNKNOWN")

        # Bob acknowledges from his own session; our screen has not heard yet when alice presses a.
        bob = IncidentDesk(room.config, room.store, actor=dataclasses.replace(ACTOR, operator="bob"), clock=room.clock)
        screen = app.screen
        assert isinstance(screen, IncidentsScreen)
        await bob.acknowledge(entry.seq)
        screen.action_act("ack")
        await until(lambda: any(n.title == "Refused" for n in app._notifications))
        message = next(str(n.message) for n in app._notifications if n.title == "Refused")
        assert f"INC-{entry.seq} is already acknowledged (acknowledged by bob" in message
        await until(lambda: cell(app, entry.seq, "owner") == "bob")
        assert len(await room.store.entries(kinds=[ACKNOWLEDGED])) == 1


async def test_countdowns_follow_the_room_clock_and_escalation_is_shown(tmp_path: Path) -> None:
    config = dataclasses.replace(build_config(tmp_path), incidents=IncidentsConfig(severities={
        "sev1": SeverityConfig(timedelta(minutes=15), "Cutover Lead"),
        "sev2": SeverityConfig(timedelta(hours=1), "Migration Lead"),
        "sev3": SeverityConfig(timedelta(hours=4)),
        "sev4": SeverityConfig(timedelta(days=1)),
    }))
    await fill_store(config.state, sample_results())
    clock = FrozenClock(NOW)
    store = await Store.open(config.state, clock=clock)
    try:
        room = ControlRoom(config, store, None, actor=ACTOR, clock=clock)
        incident = await room.raise_incident("Dynamics unreachable", severity="sev1")
        n = incident.number
        app = CrmctlApp(room, **FAST)
        async with app.run_test(size=(100, 30)) as pilot:
            await loaded(app)
            await pilot.press("6")
            await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 1)
            assert cell(app, n, "escalation") == "→ Cutover Lead in 15 min"
            clock.advance(timedelta(minutes=11, seconds=30))
            app.tick()
            await pilot.pause()
            assert cell(app, n, "escalation") == "→ Cutover Lead in 3 min 30 s"
            clock.advance(timedelta(minutes=5))
            app.tick()
            await pilot.pause()
            assert cell(app, n, "escalation") == "OVERDUE 1 min 30 s → Cutover Lead"
            assert app.screen.table.border_subtitle == "1 overdue"
            await room.tick_escalations()  # what the session's background timer does
            await until(lambda: cell(app, n, "escalation").startswith("escalated to Cutover Lead"))
    finally:
        await store.close()


async def test_read_only_sessions_see_but_cannot_act(make_app: AppFactory, room: ControlRoom) -> None:
    await room.raise_incident("x", severity="sev3")
    observer = ControlRoom(room.config, room.store, None, actor=ACTOR, clock=room.clock, read_only=True)
    app = CrmctlApp(observer, **FAST)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app)
        await pilot.press("6")
        await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 1)
        assert app.screen.check_action("act", ("ack",)) is None
        assert app.screen.check_action("raise_incident", ()) is None


async def test_history_shows_incidents_as_they_stood_and_takes_no_actions(make_app: AppFactory, room: ControlRoom,
                                                                            clock: FrozenClock) -> None:
    incident = await room.raise_incident("Contacts missing", severity="sev2")
    n = incident.number
    clock.advance(timedelta(minutes=10))
    await room.incident_action("ack", n)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app)
        await pilot.press("6")
        await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 1)
        await until(lambda: cell(app, n, "state") == "acknowledged")
        app.travel_to(NOW + timedelta(minutes=1))  # after the raise, before the acknowledgement
        await until(lambda: app.as_of is not None and cell(app, n, "state") == "open")
        assert app.screen.check_action("act", ("ack",)) is None
        app.action_back_to_live()
        await until(lambda: app.as_of is None and cell(app, n, "state") == "acknowledged")


@pytest.fixture
async def receiver():  # noqa: ANN201
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def test_a_failing_webhook_never_blocks_the_ui_and_the_failure_is_shown(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMCTL_TEST_TEAMS", receiver.url)
    receiver.default = Answer(503)  # refused, every time...
    receiver.gate = asyncio.Event()  # ...after hanging until the test has looked around
    config = dataclasses.replace(
        build_config(tmp_path), incidents=IncidentsConfig(notify=NotifyConfig(teams_webhook=Secret("CRMCTL_TEST_TEAMS"))))
    await fill_store(config.state, sample_results())
    clock = FrozenClock(NOW)
    store = await Store.open(config.state, clock=clock)
    try:
        room = ControlRoom(config, store, None, actor=ACTOR, clock=clock)
        room.notifier.max_attempts = 3
        room.notifier.backoff = 0.2
        app = CrmctlApp(room, **FAST)
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await loaded(app)
            app._run_incident_services()  # FAST does not auto-run; the real app starts it on mount
            await pilot.press("2")
            await pilot.pause()
            await pilot.press("i")
            # The operator's action is acknowledged at its commit, not after Teams answers.
            await until(lambda: any(n.title == "Incident" for n in app._notifications), timeout=5)
            await until(lambda: len(receiver.received) == 1, timeout=5)
            # Teams is slow and failing right now; the operator keeps working without waiting.
            # (Timed with run_action, not pilot.press: Pilot waits for an idle CPU, which the
            # background feed never gives it, and would measure that instead of the app.)
            assert room.notifier.pending == 1
            for mode in ("incidents", "overview", "incidents"):
                started = time.monotonic()
                await app.run_action(f"switch_mode('{mode}')")
                await until(lambda: app.current_mode == mode and app.screen.is_mounted)
                assert time.monotonic() - started < 2.0  # generous for a loaded CI box; blocked = forever
            await until(lambda: app.screen.table.row_count == 1)
            assert room.notifier.pending == 1 and len(receiver.received) == 1  # Teams still has not answered
            receiver.gate.set()

            await until(lambda: any(n.title == "Notification failed" for n in app._notifications), timeout=10)
            toast = next(str(n.message) for n in app._notifications if n.title == "Notification failed")
            assert "teams: INC-" in toast and "HTTP 503 after 3 attempts" in toast
            screen = app.screen
            await until(lambda: "FAILED" in text_of(screen.query_one("#incident-lines", Static)))
            assert "teams ✖ FAILED" in str(screen.query_one("#incident-detail").border_subtitle)
            (failure,) = await store.entries(kinds=[FAILED])
            assert failure.payload["reason"] == "HTTP 503 after 3 attempts"
            shown = app.export_screenshot()
            assert "S3cr3tSig" not in shown and "S3cr3tSig" not in str(failure.payload)
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------
# snapshot (80x24, the SSH case)


@pytest.fixture
def snap_room(tmp_path: Path):  # noqa: ANN201
    """Two incidents: a SEV1 counting down to its escalation, and one being mitigated."""
    config = dataclasses.replace(build_config(tmp_path), incidents=IncidentsConfig(severities={
        "sev1": SeverityConfig(timedelta(minutes=15), "Cutover Lead"),
        "sev2": SeverityConfig(timedelta(hours=1), "Migration Lead"),
        "sev3": SeverityConfig(timedelta(hours=4), "CRM Ops"),
        "sev4": SeverityConfig(timedelta(days=1), "Hypercare Desk"),
    }))
    clock = FrozenClock(NOW - timedelta(minutes=20))

    async def setup() -> Store:
        await fill_store(config.state, sample_results())
        store = await Store.open(config.state, clock=clock)
        desk = IncidentDesk(config, store, actor=ACTOR, clock=clock)
        erp = await desk.raise_incident("ERP order sync failing since 20:50", severity="sev2", check="erp.sync")
        await desk.acknowledge(erp.number, owner="bob")
        await desk.mitigate(erp.number, note="connector restarted")
        clock.advance(timedelta(minutes=12))
        await desk.raise_from_check("account.count", severity="sev1")
        clock.advance(timedelta(minutes=8))
        return store

    store = asyncio.run(setup())
    try:
        yield ControlRoom(config, store, None, actor=ACTOR, clock=clock)
    finally:
        asyncio.run(store.close())


def test_incidents_80x24(snap_compare, snap_room: ControlRoom) -> None:  # noqa: ANN001
    async def run_before(pilot) -> None:  # noqa: ANN001
        app = pilot.app
        await until(lambda: app.snapshot.loaded)
        await pilot.press("6")
        await until(lambda: isinstance(app.screen, IncidentsScreen) and app.screen.table.row_count == 2)
        await pilot.pause()

    assert snap_compare(CrmctlApp(snap_room, **FAST), terminal_size=(80, 24), run_before=run_before)
