"""The demo's evidence pack: complete, self-verifying, tamper-evident, and free of secrets."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from crmctl.evidence import MANIFEST, SUMS, verify
from crmctl.journal import verify_file
from tests.evidence.conftest import CANARY_BEARER, CANARY_SECRET, CANARY_WEBHOOK, DemoPack


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_the_pack_holds_every_part_and_verifies(demo_pack: DemoPack) -> None:
    root = demo_pack.path
    for part in ("index.html", "evidence.md", MANIFEST, SUMS, "journal/state.db", "data/journal.json",
                 "data/journal.csv", "data/evidence.json", "data/checks-latest.csv", "data/config.redacted.yaml"):
        assert (root / part).is_file(), part
    shots = sorted(p.name for p in (root / "screens").glob("*.svg"))
    assert {"overview.svg", "checks.svg", "evidence.svg"} <= set(shots)
    assert all((root / "screens" / s).read_text().lstrip().startswith("<svg") for s in shots)

    report = verify(root)
    assert report.ok, report.problems
    manifest = json.loads((root / MANIFEST).read_text())
    chain = verify_file(root / "journal/state.db")
    assert chain.ok and (chain.head_seq, chain.head_hash) == (manifest["journal"]["head_seq"], manifest["journal"]["head_hash"])
    assert report.files == len(files_of(root)) == len(manifest["files"]) + 2
    listed = {f["path"] for f in manifest["files"]}
    assert listed == {p.relative_to(root).as_posix() for p in files_of(root)} - {MANIFEST, SUMS}


def test_sha256sums_checks_out_without_crmctl(demo_pack: DemoPack) -> None:
    """What the pack tells the auditor to run, run: coreutils agrees with the manifest."""
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        pytest.skip("sha256sum not installed")
    proc = subprocess.run([sha256sum, "--strict", "-c", SUMS], cwd=demo_pack.path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK") == len(files_of(demo_pack.path)) - 1


def test_one_changed_byte_in_any_file_is_caught(pack_copy: Path) -> None:
    """Every file, one byte at a (seeded) random place; the two files that hold the hashes also
    at their first and last byte."""
    rng = random.Random(20261128)
    files = files_of(pack_copy)
    assert len(files) > 20
    for path in files:
        original = path.read_bytes()
        places = {rng.randrange(len(original))}
        if path.name in (MANIFEST, SUMS):
            places |= {0, len(original) - 1}
        for at in places:
            changed = bytearray(original)
            changed[at] ^= 0x01
            path.write_bytes(bytes(changed))
            report = verify(pack_copy)
            assert not report.ok, f"a flipped byte at {at} of {path.relative_to(pack_copy)} went unnoticed"
        path.write_bytes(original)
    assert verify(pack_copy).ok


def test_added_removed_and_replaced_files_are_caught(pack_copy: Path) -> None:
    (pack_copy / "data" / "extra.csv").write_text("a,b\n")
    assert any("not in the manifest" in p for p in verify(pack_copy).problems)
    (pack_copy / "data" / "extra.csv").unlink()
    removed = pack_copy / "data" / "journal.csv"
    removed.unlink()
    assert any("missing" in p for p in verify(pack_copy).problems)


def test_a_consistently_rewritten_pack_is_still_caught_by_the_journal_head(pack_copy: Path, tmp_path: Path) -> None:
    """Someone replaces the journal with a shorter (valid) one and recomputes every hash: the chain
    verifies, but the head no longer matches the manifest's record of it."""
    journal = pack_copy / "journal" / "state.db"
    conn = sqlite3.connect(journal)
    conn.execute("DROP TRIGGER journal_no_delete")
    conn.execute("DELETE FROM journal WHERE seq = (SELECT MAX(seq) FROM journal)")
    conn.commit()
    conn.close()
    manifest = json.loads((pack_copy / MANIFEST).read_text())
    for f in manifest["files"]:
        f["sha256"] = hashlib.sha256((pack_copy / f["path"]).read_bytes()).hexdigest()
        f["bytes"] = (pack_copy / f["path"]).stat().st_size
    (pack_copy / MANIFEST).write_text(json.dumps(manifest))
    from crmctl.evidence import render_sums

    (pack_copy / SUMS).write_text(render_sums(manifest, hashlib.sha256((pack_copy / MANIFEST).read_bytes()).hexdigest()))
    problems = verify(pack_copy).problems
    assert problems and all("journal" in p for p in problems), problems


def _forms(secret: str) -> set[bytes]:
    return {f.encode() for f in (secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1])}


def test_canaries_appear_nowhere_in_the_pack(demo_pack: DemoPack) -> None:
    # They were live: the probe was called with the secret, Dynamics with the bearer token.
    assert demo_pack.probe_queries and all(CANARY_SECRET in q for q in demo_pack.probe_queries)
    assert demo_pack.emulator_token == CANARY_BEARER
    canaries = _forms(CANARY_SECRET) | _forms(CANARY_BEARER) | _forms(CANARY_WEBHOOK) | {b"canaryBearer", b"7f3a9c2e51d84b06"}
    leaks = [f"{p.relative_to(demo_pack.path)}: {c!r}" for p in files_of(demo_pack.path) for c in canaries if c in p.read_bytes()]
    assert leaks == []
    # ...and where the operators pasted them, the pack says what was removed.
    text = (demo_pack.path / "evidence.md").read_text()
    assert "$\\{env:CRMCTL\\_CANARY\\_SECRET\\}" in text
    assert "Authorization: \\*\\*\\*" in text


def test_hostile_text_is_shown_but_cannot_act(demo_pack: DemoPack) -> None:
    for path in files_of(demo_pack.path):
        if path.suffix in (".html", ".md", ".csv", ".json", ".svg", ".yaml"):
            raw = path.read_bytes()
            assert b"\x1b" not in raw and b"\x07" not in raw, path
            assert "\u202e".encode() not in raw, path
    html = (demo_pack.path / "index.html").read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\x1b[2J" in html and "\\u202e" in html
    assert 'href="javascript' not in html
    md = (demo_pack.path / "evidence.md").read_text()
    assert not re.search(r"(?<!\\)<script", md) and "\\<script\\>" in md and "\\[x\\]\\(javascript" in md


def test_every_journal_entry_and_kind_is_in_the_pack(demo_pack: DemoPack) -> None:
    root = demo_pack.path
    journal = json.loads((root / "data" / "journal.json").read_text())
    assert [e["seq"] for e in journal] == list(range(1, demo_pack.head_seq + 1))
    with open(root / "data" / "journal.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == demo_pack.head_seq
    kinds = {e["kind"] for e in journal}
    doc = json.loads((root / "data" / "evidence.json").read_text())
    kind_table = next(b for s in doc["sections"] if s["id"] == "summary" for b in s["blocks"] if b.get("id") == "kinds")
    assert {row[0] for row in kind_table["rows"]} == kinds
    other = next(s for s in doc["sections"] if s["id"] == "other")
    assert "vendor.custom" in json.dumps(other)  # a kind nobody knows is still shown
    titles = [s["title"] for s in doc["sections"]]
    for wanted in ("Cutover runbook with timings", "Checks, results and the queries that ran", "Rollback matrix and decision",
                   "Incidents", "Rehearsal comparisons", "Performance baselines", "Sign-offs", "Lessons learned"):
        assert wanted in titles
    html = (root / "index.html").read_text()
    for snippet in ("Jane Doe", "Raj Patel", "Pause ERP Sync at the freeze", "pre-tuning", "ERP Sync throttled",
                    "Cutover Lead", "freeze announced", "accounts?$select=name&amp;$top=50"):
        assert snippet in html, snippet
