"""Export edge cases: an empty journal, a secret in the journal, a taken destination, a broken chain."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crmctl.clock import FrozenClock
from crmctl.evidence import EvidenceLeak, export, verify
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status
from crmctl.store import Store
from tests.ui.world import build_config

T0 = datetime(2026, 11, 28, 21, 0, tzinfo=timezone.utc)
ACTOR = Actor("alice", "jump01")


async def test_an_empty_journal_exports_with_every_section_saying_none_recorded(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    async with await Store.open(config.state, clock=FrozenClock(T0)) as store:
        result = await export(config, store, tmp_path / "pack", None, clock=FrozenClock(T0), actor=ACTOR)
        assert [e.kind for e in await store.entries()] == ["evidence.exported"]  # the export itself is journalled
        [entry] = await store.entries()
        assert entry.payload["manifest_sha256"] == result.manifest_sha256 and entry.payload["head_seq"] == 0
    assert verify(result.path).ok
    doc = json.loads((result.path / "data" / "evidence.json").read_text())
    empty = {s["id"] for s in doc["sections"] if any("none recorded" in b.get("text", "").lower() for b in s["blocks"])}
    assert {"runbook", "decision", "incidents", "rehearsal", "hypercare", "baselines", "signoffs", "lessons", "exports",
            "screens"} <= empty
    assert "Screenshots were not taken for this export." in (result.path / "evidence.md").read_text()


async def test_a_secret_in_the_journal_stops_the_export_and_leaves_nothing(tmp_path: Path) -> None:
    """The journal is append-only and the pack must hold it byte for byte: if a credential ever got
    into it, the only safe answer is no pack (and a sentence naming what, never the value)."""
    config = build_config(tmp_path)
    async with await Store.open(config.state) as store:
        leaked = QueryRecord("dynamics", "GET", "https://org.example/api", 200, 5.0,
                             error="proxy echoed Authorization: Bearer AAAAbbbbCCCCddddEEEE1234")
        await store.append_result(CheckResult("c", "whoami", Status.OK, T0, T0, "ok", queries=(leaked,)), actor=ACTOR)
        with pytest.raises(EvidenceLeak) as caught:
            await export(config, store, tmp_path / "pack", None, actor=ACTOR)
    assert "journal/state.db contains a bearer credential" in str(caught.value)
    assert "AAAAbbbb" not in str(caught.value)
    assert not (tmp_path / "pack").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pack")] == []


async def test_the_destination_must_be_new(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    async with await Store.open(config.state) as store:
        with pytest.raises(FileExistsError):
            await export(config, store, tmp_path / "taken", None, actor=ACTOR)
        (tmp_path / "empty").mkdir()
        result = await export(config, store, tmp_path / "empty", None, actor=ACTOR)  # an empty folder is fine
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert verify(result.path).ok


async def test_a_broken_journal_is_exported_loudly_and_the_pack_does_not_verify(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    async with await Store.open(config.state) as store:
        for n in range(3):
            await store.append("note", {"n": n}, actor=ACTOR)
    conn = sqlite3.connect(config.state)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("UPDATE journal SET payload = '{\"n\":9}' WHERE seq = 2")
    conn.commit()
    conn.close()
    result = await export(config, config.state, tmp_path / "pack", None, actor=ACTOR)
    assert not result.journal_ok and "entry 2" in result.journal_reason
    assert "JOURNAL VERIFICATION FAILED" in (result.path / "index.html").read_text()
    report = verify(result.path)
    assert not report.ok and any("chain broken at entry 2" in p for p in report.problems)


async def test_csv_cells_cannot_become_spreadsheet_formulas(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    async with await Store.open(config.state) as store:
        await store.append("lesson.recorded", {"text": "=HYPERLINK(\"http://x\")", "category": "improve",
                                               "action": "-2 is a number", "owner": "@ops"}, actor=ACTOR)
        result = await export(config, store, tmp_path / "pack", None, actor=ACTOR)
    with open(result.path / "data" / "lessons-register.csv", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["Lesson"] == "'=HYPERLINK(\"http://x\")" and row["Owner"] == "'@ops"
    assert row["Action"] == "'-2 is a number"


def test_verify_reports_a_missing_or_broken_manifest(tmp_path: Path) -> None:
    assert verify(tmp_path / "nope").problems == [f"{tmp_path / 'nope'} is not a folder"]
    (tmp_path / "pack").mkdir()
    assert verify(tmp_path / "pack").problems == ["manifest.json is missing"]
    (tmp_path / "pack" / "manifest.json").write_text("{not json")
    assert "not a valid manifest" in verify(tmp_path / "pack").problems[0]
