"""End to end: the real `crmctl demo` in tmux — every screen, a runbook step, an incident, time travel, quit.

Drives the product as an engineer on a jump host would: keys in, text on the screen out. The
demo runs its embedded emulator and its checks; the journal it writes is read back afterwards
to prove that what the screen acknowledged was journalled.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.e2e.terminal import CRMCTL, Tmux, crmctl_processes, wait_gone

pytestmark = pytest.mark.e2e

SCREEN_TITLES = {
    "1": "Overview",
    "2": "Checks",
    "3": "Runbook",
    "4": "Rollback",
    "5": "Integrations",
    "6": "Incidents",
    "7": "Hypercare",
    "8": "Evidence",
}
"""The number keys and the title each screen puts in the header (screens/app.py SCREENS)."""


def _journal(state: Path) -> list[tuple[int, str, str, str]]:
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT seq, operator, kind, payload FROM journal ORDER BY seq").fetchall()


def test_control_room_every_screen_a_step_an_incident_history_and_quit(demo_config: Path) -> None:
    from screens.app import SCREENS

    assert {key: title for key, _, title, _ in SCREENS} == SCREEN_TITLES  # every screen there is
    tmux = Tmux(require_tool("tmux"))
    env = {"TERM": "xterm-256color", "CRMCTL_OPERATOR": "erin"}
    try:
        tmux.start("room", f"{CRMCTL} demo --config {demo_config}", env, size=(120, 34))
        shell = tmux.pane_pid("room")
        # Live results, not placeholders: the overview counts no PENDING check once every check ran.
        tmux.wait_for("room", lambda s: "PENDING  0" in s and "Red items" in s, timeout=40)
        assert "erin@" in tmux.screen("room")

        for key, title in SCREEN_TITLES.items():
            tmux.keys("room", key)
            header = tmux.wait_for("room", lambda s, t=title: t in s.splitlines()[0], timeout=8).splitlines()[0]
            assert "Contoso CRM to Dynamics 365" in header and "erin@" in header

        # Integrations (5): a pane per integration, with the journalled figures.
        tmux.keys("room", "5")
        screen = tmux.wait_for("room", lambda s: "erp-sync · ERP Sync" in s and "Failures" in s, timeout=8)
        assert "marketing-sync" in screen and "SLO" in screen

        # Runbook (3): start the freeze, then complete it over its red gate (the demo's late
        # writes), as the Cutover Lead, with a reason.
        tmux.keys("room", "3")
        tmux.wait_for("room", lambda s: "Checklist (0/6 done)" in s, timeout=8)
        tmux.keys("room", "s")
        tmux.wait_for("room", lambda s: "IN PROGRESS" in s and "freeze" in s, timeout=8)
        tmux.keys("room", "o")
        tmux.wait_for("room", lambda s: "Override the gate of freeze" in s, timeout=8)
        tmux.keys("room", "Enter")  # open the authority list
        tmux.wait_for("room", lambda s: "Business Owner" in s, timeout=5)
        tmux.keys("room", "Down")
        time.sleep(0.3)
        tmux.keys("room", "Enter")
        tmux.wait_for("room", lambda s: "Cutover Lead" in s and "Business Owner" not in s, timeout=5)
        tmux.keys("room", "C-i")  # tab: tmux's "Tab" key name does not reach the app as tab
        time.sleep(0.3)
        tmux.type("room", "26 late writes accepted as known (e2e)")
        tmux.wait_for("room", lambda s: "26 late writes accepted as known (e2e)" in s, timeout=5)
        tmux.keys("room", "Enter")
        screen = tmux.wait_for("room", lambda s: "Checklist (1/6 done)" in s, timeout=8)
        assert re.search(r"✔ DONE\s+freeze", screen)

        # Incidents (6): raise one by hand.
        tmux.keys("room", "6")
        screen = tmux.wait_for("room", lambda s: re.search(r"Incidents · (\d+) active", s), timeout=8)
        active = int(re.search(r"Incidents · (\d+) active", screen).group(1))  # type: ignore[union-attr]
        tmux.keys("room", "i")
        tmux.wait_for("room", lambda s: "Raise an incident" in s, timeout=8)
        tmux.type("room", "E2E: ERP sync failing")
        time.sleep(0.3)
        tmux.keys("room", "Enter")
        tmux.wait_for("room", lambda s: f"Incidents · {active + 1} active" in s and "Raise an incident" not in s, timeout=8)

        # Time travel (t): back to the first moment in the list, marked, then live again.
        tmux.keys("room", "1", "t")
        tmux.wait_for("room", lambda s: "Recent moments" in s and re.search(r"UTC\s+#\d+\s", s), timeout=8)
        tmux.keys("room", "Down")
        time.sleep(0.3)
        tmux.keys("room", "Enter")
        screen = tmux.wait_for("room", lambda s: "AS OF" in s, timeout=8)
        assert "historical view, live updates paused" in screen
        tmux.keys("room", "t")
        tmux.wait_for("room", lambda s: "AS OF" not in s, timeout=8)

        # Quit: the process and its embedded emulator are gone.
        assert crmctl_processes(shell), "crmctl is not running"
        tmux.keys("room", "q")
        wait_gone(shell, timeout=10)
    finally:
        tmux.kill()

    entries = _journal(demo_config.parent / ".crmctl" / "state.db")
    kinds = [kind for _, _, kind, _ in entries]
    assert any(k.startswith("runbook.") for k in kinds)
    done = [p for _, who, kind, p in entries if kind.startswith("runbook.") and who == "erin" and '"freeze"' in p]
    assert any("26 late writes accepted as known (e2e)" in p for p in done)
    assert any("E2E: ERP sync failing" in p for _, who, kind, p in entries if kind.startswith("incident.") and who == "erin")
