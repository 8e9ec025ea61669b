"""End to end in a real terminal: `crmctl demo` inside tmux shows live results and quits cleanly."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.e2e
CRMCTL = Path(sys.executable).with_name("crmctl")


class Tmux:
    """A private tmux server (its own socket) running one 80x24 window."""

    def __init__(self, tmux: str) -> None:
        self.tmux = tmux
        self.socket = f"crmctl-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=20
        ).stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.run("new-session", "-d", "-x", "80", "-y", "24", "-s", "t", f"env {exports} {command}; sleep 30")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def pane_pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", "t", "#{pane_pid}").strip())

    def kill(self) -> None:
        self.run("kill-server")

    def wait_for(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"screen never matched within {timeout} s:\n{text}")


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [g for k in kids for g in _descendants(k)]


def test_demo_shows_live_results_within_10s_and_quits_clean(demo_config: Path) -> None:
    tmux = Tmux(require_tool("tmux"))
    env = {"TERM": "xterm-256color", "CRMCTL_OPERATOR": "e2e", "PATH": os.environ["PATH"]}
    try:
        began = time.monotonic()
        tmux.start(f"{CRMCTL} demo --config {demo_config}", env)
        # a journalled result, not a placeholder: a count check drawn as BREACH on the Overview
        screen = tmux.wait_for(lambda s: re.search(r"BREACH\s+(account|contact)\.count", s) is not None, timeout=10)
        elapsed = time.monotonic() - began
        assert "Contoso" in screen or "crmctl" in screen
        shell = tmux.pane_pid()
        assert _descendants(shell), "crmctl is not running"
        tmux.keys("2")
        tmux.wait_for(lambda s: "account.count" in s, timeout=5)
        tmux.keys("C-q")
        deadline = time.monotonic() + 10
        while _descendants(shell) and [p for p in _descendants(shell) if "sleep" not in _cmd(p)]:
            assert time.monotonic() < deadline, "crmctl left processes behind after quitting"
            time.sleep(0.2)
        print(f"first live results after {elapsed:.1f} s")
    finally:
        tmux.kill()


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
