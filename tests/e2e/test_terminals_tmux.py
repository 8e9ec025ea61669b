"""80x24 in real terminals: TERM=screen, tmux-256color, xterm-256color, and NO_COLOR.

Four read-only sessions (an observer's, so no emulator and no checks: only rendering is under
test) run side by side in one private tmux server on one journal. In each, the essentials must
be on screen at 80x24: who and what, the red items, every footer key; the checks and
integrations screens must show the journalled figures; with NO_COLOR not one colour with a
hue may be drawn, while the status words and glyphs still say everything.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store
from tests.conftest import require_tool
from tests.e2e.terminal import CRMCTL, Tmux, colours, crmctl_processes, hued, wait_gone

pytestmark = pytest.mark.e2e

TERMINALS = {
    "screen": {"TERM": "screen"},
    "tmux": {"TERM": "tmux-256color"},
    "xterm": {"TERM": "xterm-256color"},
    "nocolor": {"TERM": "xterm-256color", "NO_COLOR": "1"},
}


async def _journal(config_path: Path) -> None:
    from checks.registry import check_kinds
    from crmctl.config import load_config
    from crmctl.runtime import config_clock

    config = load_config(config_path, check_kinds=check_kinds())
    clock = config_clock(config)
    now = clock.now()
    store = await Store.open(config.state, clock=clock)
    results = [
        ("account.count", "row_count", Status.BREACH, "Dynamics has 34 fewer account records than source.",
         {"headline": "20,000 → 19,966 (-34)"}),
        ("contact.count", "row_count", Status.OK, "contact: 62,000 in source and in Dynamics.", {}),
        ("erp-sync.jobs", "system_jobs", Status.BREACH, "erp-sync: 12 of 52 completed jobs failed.",
         {"failed_jobs": 12, "retried_jobs": 25, "backlog": 3, "error_rate": 0.2308}),
        ("dynamics.whoami", "whoami", Status.ERROR, "Dynamics did not answer (connection refused).", {}),
    ]
    try:
        for check_id, kind, status, text, values in results:
            await store.append_result(
                CheckResult(check_id, kind, status, now - timedelta(seconds=1), now, text, values),
                actor=Actor("alice", "jump01"),
            )
    finally:
        await store.close()


def test_80x24_reads_the_same_in_every_terminal_and_without_colour(demo_config: Path) -> None:
    asyncio.run(_journal(demo_config))
    tmux = Tmux(require_tool("tmux"))
    try:
        for name, env in TERMINALS.items():
            tmux.start(name, f"{CRMCTL} tui --read-only --config {demo_config}", {**env, "CRMCTL_OPERATOR": name})
        for name in TERMINALS:
            screen = tmux.wait_for(name, lambda s: "Red items" in s and "account.count" in s, timeout=30)
            lines = screen.splitlines()
            assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
            assert "Contoso CRM to Dynamics 365" in lines[0] and f"{name}@" in lines[0] and "READ-ONLY" in lines[0]
            assert "Cutover" in screen and "Recommendation" in screen and "No return" in screen
            # The statuses read as words and glyphs, whatever the colours.
            assert "✖ BREACH" in screen and "⚠ ERROR" in screen
            footer = lines[-1]
            for key in ("Screens", "t History", "? Help", "q Quit", "^p palette"):
                assert key in footer, (name, key, footer)
            palette = colours(tmux.screen(name, escapes=True))
            if name == "nocolor":
                assert palette and not [c for c in palette if hued(c)], (name, [c for c in palette if hued(c)][:5])
            else:
                assert [c for c in palette if hued(c)], name  # the check above can fail: colour is there

        for name in TERMINALS:
            tmux.keys(name, "2")
        for name in TERMINALS:
            screen = tmux.wait_for(name, lambda s: "⏎ Details" in s and "Status" in s, timeout=10)
            assert "✖ BREACH" in screen and "account.count" in screen and "20,000 → 19,966 (-34)" in screen
            assert "e Entity" in screen.splitlines()[-2]  # this screen's keys, on a line of their own
            assert "q Quit" in screen.splitlines()[-1]
        for name in TERMINALS:
            tmux.keys(name, "5")
        for name in TERMINALS:
            screen = tmux.wait_for(name, lambda s: "erp-sync · ERP Sync" in s, timeout=10)
            assert "Failures 12" in screen and "Retries 25" in screen and "Backlog 3" in screen
            assert "Error rate 23.1 % ✖" in screen and "SLO missed" in screen

        shells = {name: tmux.pane_pid(name) for name in TERMINALS}
        for name in TERMINALS:
            tmux.keys(name, "q")
        for name, shell in shells.items():
            wait_gone(shell)
            assert not crmctl_processes(shell)
    finally:
        tmux.kill()
