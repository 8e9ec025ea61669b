"""A private tmux server for end-to-end tests: several sessions, each with its own size, TERM and env.

Every test gets its own socket (`tmux -L`), so nothing touches a developer's tmux, and killing
the server ends every session it started. `escape-time 0` makes tmux pass escape straight on
(otherwise an escape followed quickly by a key arrives as alt+key).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping

CRMCTL = Path(sys.executable).with_name("crmctl")
SGR = re.compile(r"\x1b\[([0-9;:]*)m")


class Tmux:
    """One private tmux server; sessions are addressed by name."""

    def __init__(self, tmux: str) -> None:
        self.tmux = tmux
        self.socket = f"crmctl-e2e-{uuid.uuid4().hex[:8]}"
        self._started = False

    def run(self, *args: str, check: bool = False) -> str:
        done = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        if check and done.returncode:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr}")
        return done.stdout

    def start(self, name: str, command: str, env: Mapping[str, str], *, size: tuple[int, int] = (80, 24)) -> None:
        """Starts `command` (with exactly `env`, plus PATH and HOME) in a new session `name`.

        The shell then sleeps, so the pane stays readable after the command ends and the test
        can tell "exited" (no child left but the sleep) from "never started".
        """
        base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**base, **env}.items())
        width, height = size
        self.run("new-session", "-d", "-x", str(width), "-y", str(height), "-s", name,
                 f"env -i {exports} {command}; sleep 60", check=True)
        if not self._started:
            self.run("set", "-s", "escape-time", "0")
            self._started = True

    def screen(self, name: str, *, escapes: bool = False) -> str:
        """The visible pane as text (with SGR escapes when `escapes`)."""
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", name)

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", name, "-l", text)

    def pane_pid(self, name: str) -> int:
        return int(self.run("display-message", "-p", "-t", name, "#{pane_pid}").strip())

    def wait_for(self, name: str, predicate: Callable[[str], object], timeout: float, *, poll: float = 0.05) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen(name)
            if predicate(text):
                return text
            time.sleep(poll)
        raise AssertionError(f"{name}: screen never matched within {timeout} s:\n{text}")

    def kill(self) -> None:
        self.run("kill-server")


def descendants(pid: int) -> list[int]:
    """Every process below `pid`."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [g for k in kids for g in descendants(k)]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def crmctl_processes(shell: int) -> list[int]:
    """The processes under a pane's shell that are not its trailing `sleep`."""
    return [p for p in descendants(shell) if "sleep" not in command_line(p)]


def wait_gone(shell: int, timeout: float = 10.0) -> None:
    """Waits until nothing but the trailing sleep is left under the pane's shell."""
    deadline = time.monotonic() + timeout
    while crmctl_processes(shell):
        assert time.monotonic() < deadline, f"left behind: {[command_line(p) for p in crmctl_processes(shell)]}"
        time.sleep(0.1)


GREY_256 = frozenset({0, 7, 8, 15, 16, 59, 102, 145, 188, 231, *range(232, 256)})
"""xterm-256 palette entries without hue (black, greys, white)."""


def colours(screen_with_escapes: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every foreground/background colour the pane uses: ("rgb", (r, g, b)) or ("256", (n,)) or ("16", (n,))."""
    found: list[tuple[str, tuple[int, ...]]] = []
    for params in SGR.findall(screen_with_escapes):
        parts = [int(p) for p in re.split("[;:]", params) if p.isdigit()]
        i = 0
        while i < len(parts):
            code = parts[i]
            if code in (38, 48) and i + 1 < len(parts) and parts[i + 1] == 2 and i + 4 < len(parts):
                found.append(("rgb", tuple(parts[i + 2 : i + 5])))
                i += 5
            elif code in (38, 48) and i + 2 < len(parts) and parts[i + 1] == 5:
                found.append(("256", (parts[i + 2],)))
                i += 3
            else:
                if 30 <= code <= 37 or 40 <= code <= 47 or 90 <= code <= 97 or 100 <= code <= 107:
                    found.append(("16", (code,)))
                i += 1
    return found


def hued(colour: tuple[str, tuple[int, ...]]) -> bool:
    """True for a colour with a hue (not black, grey or white)."""
    kind, value = colour
    if kind == "rgb":
        return len(set(value)) > 1
    if kind == "256":
        return value[0] not in GREY_256
    return value[0] % 10 not in (0, 7)  # 16 colours: black and white/grey are hue-free
