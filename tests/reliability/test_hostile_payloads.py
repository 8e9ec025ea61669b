"""Hostile API payloads: 1 MB names, control characters, terminal escapes (ESC [ 2J, OSC 52, OSC 8,
BEL, 8-bit CSI), bidi overrides, Rich/Textual markup, CSV formulas, HTML and Markdown in record
names, job names, job error messages, plug-in trace messages, server error bodies and an incident
title -> shown safely in the TUI and written safely into the evidence pack.

The payloads travel the real path (`hostile_world`): rows in the emulator's data, read by the real
checks over HTTP, journalled by the engine, projected by `crmctl.views`, drawn by the real app
(Pilot, headless) and exported by `crmctl.evidence`. What the terminal would receive is taken from
the app's compositor: the exact byte stream a real terminal gets, Textual's own colour and
cursor sequences included, so any other escape in it came from a payload.

Deep JSON is a separate case: no row can hold it, so a small server answers with it directly.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from rich.cells import cell_len
from textual.widgets import DataTable

from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import load_config
from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.errors import MalformedResponse
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.querylog import QueryLog
from crmctl.control import ControlRoom
from crmctl.demo_world import GroundTruth
from crmctl.identity import Actor
from crmctl.model import Status
from crmctl.safetext import MAX_DEPTH, MAX_TEXT, TOO_DEEP, is_safe, one_line, safe_text, safe_value
from crmctl.views import build_detail, check_row
from screens.app import CrmctlApp
from screens.detail import CheckDetailScreen
from tests.checks.datachecks import world
from tests.reliability.faults_tui import press_and_wait, rendered, wait_for
from tests.reliability.hostile_world import CHECK_IDS, HUGE, MARKUP, PAYLOADS, copy_world, plant, write_config

ACTOR = Actor("hostile", "test-host")
SIZE = (120, 40)

_OWN_SEQUENCES = re.compile(r"\x1b\[[0-9;:]*m|\x1b\[\d+;\d+H|\x1b\[\d*[ABCDG]")
"""What Textual itself writes between characters: colours (SGR) and cursor moves."""
LONGEST_CELL = 100_000
"""No CSV cell of the pack may hold more (a 1 MB name must have been cut on the way)."""
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters that must never reach a terminal or a pack file raw (tab and newline excepted)."""


# -- the core rule, on its own --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_safe_text_neutralises_every_payload(name: str) -> None:
    text = PAYLOADS[name]
    safe = safe_text(text)
    assert not _UNSAFE.search(safe.replace("\n", "").replace("\t", "")), repr(safe[:200])
    assert is_safe(safe) and len(safe) <= MAX_TEXT
    line = one_line(text, 80)
    assert len(line) <= 80 and "\n" not in line and "\t" not in line and not _UNSAFE.search(line)
    if len(text) > 80:
        assert line.endswith("…")
    if "\x1b" in text:
        assert "\\x1b" in safe, "an escape is shown as visible text, not dropped without a trace"


def test_safe_value_bounds_depth_and_size() -> None:
    deep: Any = "bottom"
    for _ in range(5000):
        deep = {"k": [deep]}
    safe = safe_value({"deep": deep, "huge": HUGE, "\x1bkey": 1, "n": 3.5, "ok": True, "none": None})
    assert json.dumps(safe)  # a plain recursive encoder copes: the depth is bounded
    assert len(safe["huge"]) == MAX_TEXT and safe["huge"].endswith("…")
    assert "\\x1bkey" in safe and safe["n"] == 3.5 and safe["ok"] is True and safe["none"] is None
    level, node = 0, safe["deep"]
    while isinstance(node, (dict, list)):
        node = node["k"] if isinstance(node, dict) else node[0]
        level += 1
    assert node == TOO_DEEP and level < MAX_DEPTH


# -- deep JSON from the API -----------------------------------------------------------------


@pytest.fixture
async def deep_server() -> AsyncIterator[str]:
    """Answers every GET with JSON nested 100,000 deep (a hostile or broken proxy)."""

    async def handle(request: web.Request) -> web.Response:
        depth = 100_000
        return web.Response(text='{"value": ' + "[" * depth + "]" * depth + "}", content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/api/data/v9.2/"
    finally:
        await runner.cleanup()


async def test_deep_json_from_the_api_is_a_malformed_answer_not_a_crash(deep_server: str) -> None:
    client = DataverseClient(deep_server, StaticTokenProvider("t" * 20), TargetLimiter(2, 100, 300.0), retries=0)
    try:
        with pytest.raises(MalformedResponse) as caught:
            await client.get_json("WhoAmI", log=QueryLog("dynamics", deadline=time.monotonic() + 30))
    finally:
        await client.close()
    assert "WhoAmI" in str(caught.value) and len(str(caught.value)) < 600


# -- end to end: emulator -> checks -> journal -> TUI and evidence ---------------------------


@pytest.fixture(scope="module")
def hostile_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


def frame_problems(frame: str, width: int, where: str) -> list[str]:
    """Raw escapes or controls a payload smuggled in, and lines that do not fill the width."""
    problems = []
    rest = _OWN_SEQUENCES.sub("\x00", frame)  # each own sequence becomes one separator
    leaked = _UNSAFE.findall(rest.replace("\x00", ""))
    if leaked:
        sample = sorted({repr(c) for c in leaked})
        problems.append(f"{where}: raw control characters reached the terminal: {sample}")
    lines = [seg for seg in re.split(r"\x1b\[\d+;1H", frame) if seg]
    for n, line in enumerate(lines):
        text = _OWN_SEQUENCES.sub("", line)
        if cell_len(text) != width:
            problems.append(f"{where}: line {n} is {cell_len(text)} cells wide, not {width}: {text[:60]!r}")
            break
    return problems


async def test_hostile_payloads_are_shown_and_exported_safely(hostile_source: Path, tmp_path: Path) -> None:
    truth = GroundTruth.load(hostile_source)
    now = truth.now_dt
    world_dir = copy_world(hostile_source, tmp_path / "world")
    planted = plant(world_dir, now)
    config = load_config(write_config(tmp_path, world_dir, now), check_kinds=check_kinds())
    clock = FrozenClock(now)
    cases = 0
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR, clock=clock) as room:
        results = {r.check_id: r for r in await room.run_checks()}
        await room.raise_incident("Sev " + " ".join(PAYLOADS.values()), severity="sev2")
        await room.raise_incident(PAYLOADS["csv-formula"], severity="sev3")  # a cell that starts with "="

        # The model boundary: nothing raw, nothing unbounded, in what the engine journalled.
        stored = await room.store.latest_results()
        assert set(stored) == set(CHECK_IDS)
        for check_id, result in stored.items():
            blob = json.dumps(result.to_json(), ensure_ascii=False)
            assert not _UNSAFE.search(blob.replace("\\n", "")), (check_id, _UNSAFE.findall(blob)[:5])
            assert len(blob) < 200_000, f"{check_id}: {len(blob):,} characters journalled for one result"
            assert "Internal error" not in result.explanation, result.explanation
        assert results["erp-sync.jobs"].status is Status.BREACH, results["erp-sync.jobs"].explanation
        assert results["dynamics.whoami"].status is Status.ERROR and "0x80040220" in results["dynamics.whoami"].explanation
        assert "\\x1b[2J" in results["dynamics.whoami"].explanation  # the server's words, made visible
        assert results["contact.duplicates"].status in (Status.WARN, Status.BREACH)
        for result in stored.values():  # the views bound and clean every text they hand a screen
            row, detail = check_row(None, result, now), build_detail(None, result, now)
            texts = [row.title, row.value_text, row.explanation, *(v for _, v in detail.values),
                     *(q.error for q in detail.queries), *(k for kl in detail.key_lists for k in kl.keys)]
            assert all(is_safe(t) and len(t) <= 2000 for t in texts), result.check_id
            cases += len(texts)

        # The TUI: every screen that shows outside words, drawn and inspected.
        app = CrmctlApp(room, auto_run=False, poll_interval=0.05, clock_tick=3600.0)
        frames: list[tuple[str, str]] = []
        async with app.run_test(size=SIZE):
            await wait_for(lambda: app.snapshot.loaded, "the first journal read")
            for key, name in (("1", "overview"), ("2", "checks"), ("5", "integrations"), ("6", "incidents")):
                await press_and_wait(app, key, lambda: app.current_mode == name and app.screen.size.area > 0)
                await asyncio.sleep(0.1)  # let the screen's workers project the journal
                frames.append((name, rendered(app)))
                if name == "checks":  # every check's detail: values, keys, queries, the explanation
                    table = app.screen.query_one("#checks-table", DataTable)
                    for n, check_id in enumerate(CHECK_IDS):
                        if n:
                            await press_and_wait(app, "down", lambda n=n: table.cursor_row == n)
                        await press_and_wait(app, "enter", lambda: isinstance(app.screen, CheckDetailScreen))
                        await asyncio.sleep(0.1)
                        frames.append((f"detail of {check_id}", rendered(app)))
                        await press_and_wait(app, "escape", lambda: not isinstance(app.screen, CheckDetailScreen))
            assert app.is_running, "a payload (e.g. [@click=app.quit]) stopped the app"
        problems = [p for where, frame in frames for p in frame_problems(frame, SIZE[0], where)]
        plain = {where: _OWN_SEQUENCES.sub("", frame) for where, frame in frames}
        squashed = "".join(re.sub(r"\s+", "", text) for text in plain.values())
        for markup in MARKUP:  # markup is drawn as the text it is (wrapping may break it across lines)
            if re.sub(r"\s+", "", markup) not in squashed:
                problems.append(f"{markup!r} is not shown literally on any screen")
        for where, text in plain.items():
            if HUGE[:SIZE[0] * SIZE[1]] in re.sub(r"\s+", "", text):
                problems.append(f"{where}: a 1 MB name fills the screen instead of being cut")
        if not any("…" in text for text in plain.values()):
            problems.append("no long value was ellipsised on any screen")
        assert not problems, "\n".join(problems)

        # The evidence pack: every file, every format.
        pack = await room.export_evidence(tmp_path / "pack")
        files = pack_problems(pack.path)
        assert not files["problems"], "\n".join(files["problems"])
        cases += files["cells"]
    print(f"\nhostile payloads: {len(PAYLOADS)} payloads in {sum(planted.values())} planted rows + 1 server error "
          f"+ 2 incidents; {len(frames)} TUI frames inspected, {cases} texts/cells judged")


def pack_problems(root: Path) -> dict[str, Any]:
    """Raw controls in any text file, unescaped HTML, live Markdown links, CSV formulas."""
    problems: list[str] = []
    cells = 0
    seen = {"html escaped": False, "markdown escaped": False, "csv formula neutralised": False}
    csv.field_size_limit(10**9)  # read whatever was written, then judge its size
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".db", ".png"):
            continue
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root)
        leaked = _UNSAFE.findall(text.replace("\r\n", "\n"))
        if leaked:
            problems.append(f"{rel}: raw control characters {sorted({repr(c) for c in leaked})}")
        if HUGE[:LONGEST_CELL] in text:
            problems.append(f"{rel}: a 1 MB name is written in full (or nearly)")
        if path.suffix in (".html", ".svg") and ("<script>" in text or "onerror=alert" in text.replace("&#x27;", "")
                                                 and "<img src=x" in text):
            problems.append(f"{rel}: markup from a payload is live")
        if path.suffix == ".md" and "](javascript:" in text:
            problems.append(f"{rel}: a payload became a Markdown link")
        seen["html escaped"] |= path.suffix == ".html" and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        seen["markdown escaped"] |= path.suffix == ".md" and "\\[click\\]\\(javascript:alert\\(1\\)\\)" in text
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    for cell in row:
                        cells += 1
                        seen["csv formula neutralised"] |= cell.startswith("'=cmd|")
                        if len(cell) > LONGEST_CELL:
                            problems.append(f"{rel}: a cell of {len(cell):,} characters: {cell[:80]!r}")
                        if cell[:1] in ("=", "+", "@", "\t", "\r") or (cell[:1] == "-" and not re.match(r"^-[\d.,]+$", cell)):
                            problems.append(f"{rel}: a cell a spreadsheet would run: {cell[:60]!r}")
                            break
    # The payloads did reach the pack (else the checks above proved nothing), in their safe form.
    problems += [f"no file shows the payload {what}" for what, found in seen.items() if not found]
    return {"problems": problems, "cells": cells}
