"""Pilot tests of the Evidence & sign-off screen: closure, sign-off and lesson modals, the pack."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from textual.widgets import DataTable, Input, Select, Static

from crmctl.control import ControlRoom, ReadOnlyError
from crmctl.evidence import verify
from screens.app import SCREENS, CrmctlApp
from screens.evidence import EvidenceScreen
from screens.widgets.form import FormDialog
from tests.ui.conftest import FAST, loaded, text_of, until
from tests.ui.world import ACTOR

AppFactory = Callable[..., CrmctlApp]


def rows(screen: EvidenceScreen, table_id: str) -> list[list[str]]:
    table = screen.query_one(table_id, DataTable)
    return [[str(c) for c in table.get_row(key)] for key in (r.key for r in table.ordered_rows)]


def messages(app: CrmctlApp) -> list[str]:
    return [n.message for n in app._notifications]


async def open_evidence(app: CrmctlApp, pilot: object) -> EvidenceScreen:
    await loaded(app)
    await pilot.press("8")  # type: ignore[attr-defined]
    await until(lambda: isinstance(app.screen, EvidenceScreen) and app.screen.records is not None)
    return app.screen  # type: ignore[return-value]


def test_the_screen_is_mode_8_in_the_table() -> None:
    assert ("8", "evidence", "Evidence", "Sign-offs, lessons learned, and the audit evidence pack") in SCREENS
    assert CrmctlApp.MODES["evidence"] is EvidenceScreen


async def test_empty_journal_says_none_recorded_and_closure_is_open(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_evidence(app, pilot)
        closure = text_of(screen.query_one("#closure", Static))
        assert "✖ BUSINESS  not signed yet" in closure and "✖ TECHNICAL  not signed yet" in closure
        assert "closure open" in closure
        assert rows(screen, "#signoff-table")[0][2] == "none recorded"
        assert rows(screen, "#lesson-table")[0][2] == "none recorded"
        assert "No evidence pack exported yet" in text_of(screen.query_one("#export-panel", Static))


async def test_sign_off_and_lesson_through_the_modals(make_app: AppFactory, room: ControlRoom) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_evidence(app, pilot)
        await pilot.press("s")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, FormDialog) and modal.query_one("#form-box").border_title == "Sign off"
        await pilot.press("ctrl+s")  # nothing chosen: asked, nothing written
        assert text_of(modal.query_one("#form-error", Static)) == "Choose business or technical."
        modal.query_one("#field-role", Select).value = "technical"
        modal.query_one("#field-title", Input).value = "Migration Lead"
        modal.query_one("#field-statement", Input).value = "Data, integrations and monitoring verified."
        await pilot.press("ctrl+s")
        await until(lambda: app.screen is screen and rows(screen, "#signoff-table")[0][2] == ACTOR.operator)
        assert rows(screen, "#signoff-table")[0][1] == "technical"
        assert messages(app)[-1].startswith("Technical sign-off by alice recorded (entry #")
        assert "✔ TECHNICAL  alice, Migration Lead" in text_of(screen.query_one("#closure", Static))

        await pilot.press("l")
        await pilot.pause()
        lesson = app.screen
        assert isinstance(lesson, FormDialog)
        lesson.query_one("#field-text", Input).value = "Pause ERP Sync at the freeze"
        lesson.query_one("#field-owner", Input).value = "Integration Team"
        await pilot.press("ctrl+s")
        await until(lambda: app.screen is screen and rows(screen, "#lesson-table")[0][2] == "Pause ERP Sync at the freeze")
        assert rows(screen, "#lesson-table")[0][4] == "Integration Team"

    kinds = [(e.kind, e.operator) for e in await room.store.entries(kinds=["signoff.recorded", "lesson.recorded"])]
    assert kinds == [("signoff.recorded", "alice"), ("lesson.recorded", "alice")]


async def test_another_sessions_signoff_appears_through_the_feed(make_app: AppFactory, room: ControlRoom) -> None:
    from crmctl.identity import Actor
    from crmctl.signoff import record_signoff

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_evidence(app, pilot)
        await record_signoff(room.store, Actor("bob", "jump02"), role="business", statement="Accepted.", name="Jane Doe")
        await until(lambda: rows(screen, "#signoff-table")[0][2] == "Jane Doe", timeout=5)
        assert "✔ BUSINESS  Jane Doe" in text_of(screen.query_one("#closure", Static))


async def test_export_writes_a_verifying_pack_with_screenshots_from_inside_the_app(make_app: AppFactory, room: ControlRoom) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_evidence(app, pilot)
        await pilot.press("x")
        await until(lambda: "Evidence pack written" in [n.title for n in app._notifications], timeout=60)
        await until(lambda: "✔ intact" in text_of(screen.query_one("#export-panel", Static)), timeout=10)
        [export] = await room.store.entries(kinds=["evidence.exported"])
        path = Path(export.payload["path"])
        assert path.parent == room.config.state.parent / "evidence"
        assert verify(path).ok
        assert {"overview.svg", "checks.svg", "evidence.svg"} <= {p.name for p in (path / "screens").iterdir()}
        await pilot.press("v")
        await until(lambda: messages(app)[-1].startswith("✔ intact"))


async def test_a_read_only_session_cannot_sign(room: ControlRoom) -> None:
    observer = ControlRoom(room.config, room.store, None, actor=ACTOR, clock=room.clock, read_only=True)
    app = CrmctlApp(observer, **FAST)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_evidence(app, pilot)
        assert screen.check_action("sign_off", ()) is None and screen.check_action("add_lesson", ()) is None
        await pilot.press("s", "l")  # greyed out: no dialog opens
        await pilot.pause()
        assert app.screen is screen
    with pytest.raises(ReadOnlyError):
        await observer.record_signoff("business", "Accepted.")
    with pytest.raises(ReadOnlyError):
        await observer.record_lesson("x")
    assert await room.store.entries(kinds=["signoff.recorded", "lesson.recorded"]) == []
