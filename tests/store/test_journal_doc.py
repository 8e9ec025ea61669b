"""The hand-verification recipes in docs/journal.md must keep working on real state files."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from crmctl.identity import Actor
from crmctl.store import Store

DOC = Path(__file__).resolve().parents[2] / "docs" / "journal.md"


def recipe(name: str) -> str:
    match = re.search(rf"<!-- recipe:{name} -->\s*```\w+\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"recipe {name} not found in {DOC}"
    return match.group(1)


@pytest.fixture
async def db(tmp_path) -> Path:
    path = tmp_path / "state.db"
    async with await Store.open(path) as store:
        for i in range(1, 20):
            await store.append(
                f"kind.{i % 3}",
                {
                    "i": i,
                    "text": f'line\nbreak "quoted" \\ ünïcödé ✓ {i}',
                    "f": i / 3,
                    "none": None,
                },
                actor=Actor(operator="Zoë \x7f", host=f"ssh:fe80::{i}"),
            )
    return path


async def test_python_recipe(db, tmp_path):
    script = tmp_path / "verify_journal.py"
    script.write_text(recipe("python"))
    ok = subprocess.run([sys.executable, str(script), str(db)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    head = sqlite3.connect(db).execute("SELECT hash FROM journal WHERE seq = 19").fetchone()[0]
    assert ok.stdout.strip() == f"OK 19 entries, head {head}"

    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("DROP INDEX journal_result_check")
    conn.execute(
        "UPDATE journal SET payload = replace(payload, '\"i\":5', '\"i\":6') WHERE seq = 5"
    )
    conn.commit()
    conn.close()
    bad = subprocess.run([sys.executable, str(script), str(db)], capture_output=True, text=True)
    assert bad.returncode != 0 and "entry 5: hash mismatch" in bad.stderr


@pytest.mark.skipif(
    not (shutil.which("sqlite3") and shutil.which("sha256sum")),
    reason="needs sqlite3 and sha256sum",
)
async def test_shell_recipe(db):
    script = recipe("shell").replace("DB=state.db N=17", f"DB='{db}' N=17")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    computed, stored = out.stdout.split()
    assert computed == stored and len(stored) == 64
