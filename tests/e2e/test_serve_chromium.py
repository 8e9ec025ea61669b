"""The wall screen: `crmctl serve` shows the Overview, read-only, in headless Chromium."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store
from tests.conftest import require_tool
from tests.e2e.browser import Browser, png_pixels

pytestmark = pytest.mark.e2e
CRMCTL = Path(sys.executable).with_name("crmctl")
SHOTS = Path(os.environ.get("CRMCTL_SHOTS", "")) if os.environ.get("CRMCTL_SHOTS") else None
"""Set CRMCTL_SHOTS=<folder> to keep the screenshot for a person to look at."""

CALM_SURFACE = (0x16, 0x1D, 0x25)
CALM_PANEL = (0x1E, 0x28, 0x33)
"""The control room theme's surface and panel colours (screens/app.py CALM_THEME): pixels that
only the app draws, never textual-serve's intro page (#0c181f / #12232d)."""


async def _journal(config_path: Path) -> None:
    """Two results, as an operator's session would journal them (on the cutover's own clock)."""
    from checks.registry import check_kinds
    from crmctl.config import load_config
    from crmctl.runtime import config_clock

    config = load_config(config_path, check_kinds=check_kinds())
    clock = config_clock(config)
    now = clock.now()
    store = await Store.open(config.state, clock=clock)
    try:
        for check_id, kind, status, text in (
            ("account.count", "row_count", Status.BREACH, "Dynamics has 37 fewer account records than source."),
            ("dynamics.whoami", "whoami", Status.OK, "Signed in as the wall-screen test."),
        ):
            await store.append_result(
                CheckResult(check_id, kind, status, now - timedelta(seconds=2), now, text), actor=Actor("alice", "jump01")
            )
    finally:
        await store.close()


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [g for k in kids for g in _descendants(k)]


def _served_url(process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "read-only, on http://127.0.0.1:" in line:
            return line.rsplit(" ", 1)[1].strip() + "/"
        if not line and process.poll() is not None:
            break
    raise AssertionError("crmctl serve did not say where it serves")


async def _look(chromium: str, url: str, profile: Path, shot: Path) -> tuple[str, bytes, bytes]:
    async with Browser(chromium, profile, size=(1600, 1000)) as browser:
        await browser.send("Page.navigate", url=url)
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = await browser.terminal_text()
            if all(word in text for word in ("Recommendation", "account.count", "READ-ONLY", "Cutover")):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.8)  # the page fades the terminal in (0.3 s) and xterm paints on a frame
        full = await browser.screenshot(shot)
        clip = await browser.send(
            "Page.captureScreenshot", format="png", clip={"x": 0, "y": 0, "width": 600, "height": 240, "scale": 1}
        )
        import base64

        return text, full, base64.b64decode(clip["data"])


def test_serve_publishes_the_overview_read_only_to_a_browser(demo_config: Path, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    import textual_serve  # noqa: F401 - the serve extra is part of `make test`: missing is a failure

    asyncio.run(_journal(demo_config))
    serve = subprocess.Popen(
        [str(CRMCTL), "serve", "--config", str(demo_config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CRMCTL_OPERATOR": "wall"},
    )
    shot = (SHOTS or tmp_path) / "wall.png"
    try:
        url = _served_url(serve, timeout=20)
        assert url.startswith("http://127.0.0.1:")
        text, full, clip = asyncio.run(_look(chromium, url, tmp_path / "chromium", shot))
        # What the browser received from the served app: the Overview of this cutover, read-only,
        # with the journalled BREACH (so the data comes from the state file, not a placeholder).
        assert "Contoso CRM to Dynamics 365" in text
        for word in ("Overview", "Cutover", "Recommendation", "READ-ONLY", "account.count", "BREACH"):
            assert word in text, (word, text[-2000:])
        # And what it drew: a real screenshot whose top-left is the app in the control room's
        # theme, not textual-serve's intro page or a blank canvas.
        assert len(full) > 30_000
        width, height, pixels = png_pixels(clip)
        assert (width, height) == (600, 240)
        colours = collections.Counter(pixels)
        assert colours[CALM_SURFACE] > 0.4 * len(pixels)  # the Cutover panel, in the calm theme
        header = collections.Counter(pixels[: width * 12])  # the top 12 pixel rows: the header line
        assert header[CALM_PANEL] > 0.5 * width * 12
        assert len(colours) > 20  # and text on it: glyphs in several colours, not a blank canvas
        # Read-only: the served session runs nothing, so the journal holds only our two results.
        served = [p for p in _descendants(serve.pid)]
        assert served, "no app process was started for the browser session"
    finally:
        serve.terminate()
        serve.wait(timeout=15)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in served) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in served if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    assert serve.returncode == 0
