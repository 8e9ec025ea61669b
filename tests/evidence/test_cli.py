"""`crmctl baseline|evidence|signoff|lesson` end to end on the demo config: output and exit codes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from crmctl.baseline import Baseline, QueryBaseline, record
from crmctl.cli import main
from crmctl.identity import Actor
from crmctl.store import Store

T0 = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)


def journal_baseline(state: Path, name: str, durations: list[float]) -> None:
    q = QueryBaseline("account-view", "accounts?$select=name&$top=50", len(durations), len(durations), tuple(durations),
                      0, 0, len(durations), {"200": len(durations)}, 500)
    b = Baseline(name, T0, T0, "emulator", (q,), {}, 24.0, {}, (), tuple([0] * 24), ())

    async def write() -> None:
        async with await Store.open(state) as store:
            await record(store, b, actor=Actor("perf", "jump01"))

    asyncio.run(write())


def test_baseline_commands(demo_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["baseline", "capture", "--name", "pre-tuning", "--samples", "4", "--max-requests", "200", "-c", str(demo_config)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Baseline 'pre-tuning' (journal entry 1)" in out and "account-view" in out and "Batch job windows" in out

    state = demo_config.parent / ".crmctl" / "state.db"
    journal_baseline(state, "steady-a", [100.0 + (i % 7) for i in range(20)])
    journal_baseline(state, "steady-b", [101.0 + (i % 6) for i in range(20)])
    journal_baseline(state, "regressed", [180.0 + (i % 7) for i in range(20)])

    assert main(["baseline", "compare", "steady-a", "steady-b", "-c", str(demo_config)]) == 0
    assert "NO CHANGE" in capsys.readouterr().out
    assert main(["baseline", "compare", "steady-a", "regressed", "-c", str(demo_config)]) == 1
    out = capsys.readouterr().out
    assert "SLOWER" in out and "beyond the noise" in out
    assert main(["baseline", "compare", "steady-a", "nope", "-c", str(demo_config)]) == 2
    assert "no baseline 'nope'" in capsys.readouterr().err

    assert main(["baseline", "thresholds", "steady-a", "-c", str(demo_config)]) == 0
    snippet = yaml.safe_load(capsys.readouterr().out)
    assert snippet["slos"][0]["p95_ms"] == 160  # p95 106 -> max(159, 106) -> 160

    assert main(["baseline", "list", "-c", str(demo_config)]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("pre-tuning", "steady-a", "steady-b", "regressed"))


def test_signoff_lesson_export_and_verify(demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ["-c", str(demo_config)]
    assert main(["signoff", "--role", "business", "--statement", "Accepted.", "--name", "Jane Doe", *cfg]) == 0
    assert "Business sign-off by Jane Doe recorded as journal entry 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["signoff", "--role", "finance", "--statement", "x", *cfg])
    assert bad.value.code == 2
    assert main(["signoff", "--role", "technical", "--statement", " ", *cfg]) == 2
    assert main(["lesson", "add", "Pause ERP Sync at the freeze", "--action", "runbook step", "--owner", "Ops", *cfg]) == 0
    capsys.readouterr()
    assert main(["lesson", "list", *cfg]) == 0
    listed = capsys.readouterr().out
    assert "Business sign-off: signed by Jane Doe" in listed and "Technical sign-off: MISSING" in listed
    assert "Pause ERP Sync at the freeze -> runbook step (Ops)" in listed

    pack = tmp_path / "pack"
    assert main(["evidence", "export", "--out", str(pack), "--no-screenshots", *cfg]) == 0
    out = capsys.readouterr().out
    assert f"Evidence pack written to {pack}" in out and "manifest.json SHA-256" in out
    assert main(["evidence", "export", "--out", str(pack), "--no-screenshots", *cfg]) == 2  # never overwritten
    capsys.readouterr()

    assert main(["evidence", "verify", str(pack)]) == 0
    assert "evidence pack intact" in capsys.readouterr().out
    md = pack / "evidence.md"
    md.write_bytes(md.read_bytes().replace(b"Jane Doe", b"Jane Roe", 1))
    assert main(["evidence", "verify", str(pack)]) == 1
    err = capsys.readouterr().err
    assert "EVIDENCE PACK DOES NOT VERIFY" in err and "evidence.md: SHA-256 mismatch" in err


def test_verify_and_compare_never_load_textual(tmp_path: Path) -> None:
    """An auditor's host verifies a pack with crmctl's core alone; Textual is for the app."""
    script = (
        "import sys\n"
        "from crmctl.cli import main\n"
        f"main(['evidence', 'verify', {str(tmp_path)!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'screens'))\n"
        "print('LOADED', loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "LOADED []" in proc.stdout, proc.stdout + proc.stderr
