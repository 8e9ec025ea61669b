"""The demo's evidence pack opens in a real browser: headless Chromium renders index.html."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool
from tests.evidence.conftest import DemoPack

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium(tool: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([tool, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=120)


def test_the_demo_pack_renders_in_headless_chromium(demo_pack: DemoPack, tmp_path: Path) -> None:
    tool = require_tool("chromium")
    page = (demo_pack.path / "index.html").as_uri()

    dom = chromium(tool, tmp_path / "profile-dom", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    # The browser parsed the page into the document we wrote: every section, the sign-offs.
    for heading in ("Summary and integrity", "Cutover runbook with timings", "Checks, results and the queries that ran",
                    "Rollback matrix and decision", "Performance baselines", "Sign-offs", "Lessons learned", "Screenshots"):
        assert f">{heading}</h2>" in html, heading
    assert "Jane Doe" in html and "<script" not in html

    shot = tmp_path / "pack.png"
    png = chromium(tool, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400", page)
    assert png.returncode == 0, png.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000  # a rendered page of tables, not a blank or an error page
