"""`crmctl step | decide | runs | runbook` on a real config file and state file, and the config
loader's check of rollback expressions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from crmctl.cli import main
from crmctl.store import Store

REPO = Path(__file__).resolve().parents[2]


CONFIG = """\
project: Test cutover
state: .crmctl/state.db
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator, data: dataverse.db}
entities:
  - name: account
    source: {table: accounts, key: account_id}
    target: {entity_set: accounts, key: new_legacyid}
checks:
  - {id: account.count, kind: row_count, entity: account, warn: 0, breach: 0.001, every: 60s}
  - {id: dynamics.whoami, kind: whoami, warn: 500, breach: 2000, every: 30s}
runbook:
  - {id: freeze, phase: cutover, title: Freeze, owner: CRM Ops, planned: 15m}
  - {id: delta, phase: cutover, title: Delta load, owner: Data Engineering, planned: 45m, after: [freeze]}
  - {id: reconcile, phase: validation, title: Reconcile, planned: 60m, after: [delta], gate: [account.count]}
  - {id: integrations, phase: switch-over, title: Integrations, planned: 30m, after: [reconcile],
     gate: [dynamics.whoami]}
rollback:
  authority: [Cutover Lead, Business Owner]
  sla: 2h
  point_of_no_return: 2099-11-28T23:00:00Z
  criteria:
    - {id: data-loss-accounts, title: Accounts missing, check: account.count,
       rollback_if: "difference_pct > 0.5", hold_if: "difference_pct > 0"}
  runbook:
    - {id: rb-stop, phase: rollback, title: Stop integrations, planned: 15m}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A small cutover config (no command here runs a check, so no world is needed)."""
    path = tmp_path / "crmctl.yaml"
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def journal(cfg: Path) -> list:
    async def read() -> list:
        store = await Store.open(cfg.parent / ".crmctl" / "state.db")
        try:
            return await store.entries()
        finally:
            await store.close()

    return asyncio.run(read())


def test_steps_decisions_and_runs_from_the_command_line(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = str(cfg)
    code, out, err = run(capsys, "step", "done", "freeze", "-c", c)
    assert code == 1 and out == ""
    assert err == "crmctl step: refused: step 'freeze' cannot be completed: it has not been started\n"
    assert journal(cfg) == []  # refused: nothing written (the state file is created, empty)
    code, out, _ = run(capsys, "step", "start", "freeze", "-c", c, "--operator", "alice")
    assert code == 0 and out.startswith("step 'freeze' started in run 'rehearsal-1' (journal entry 1, by alice@")
    assert run(capsys, "step", "done", "freeze", "-c", c, "--operator", "alice")[0] == 0
    code, _, err = run(capsys, "step", "done", "freeze", "-c", c, "--operator", "bob")
    assert code == 1 and "step 'freeze' was already completed by alice@" in err
    for argv in (("start", "delta"), ("done", "delta"), ("start", "reconcile")):
        assert run(capsys, "step", *argv, "-c", c)[0] == 0
    code, _, err = run(capsys, "step", "done", "reconcile", "-c", c)
    assert code == 1 and "its gate is not OK (account.count is PENDING: no result yet" in err
    code, _, err = run(capsys, "step", "done", "reconcile", "-c", c, "--override")
    assert code == 2 and "--override needs --authority NAME" in err
    code, _, err = run(capsys, "step", "done", "reconcile", "-c", c, "--override", "--authority", "Eve", "--reason", "x")
    assert code == 1 and "'Eve' is not an authority" in err
    code, out, _ = run(capsys, "step", "done", "reconcile", "-c", c, "--override", "--authority", "Cutover Lead",
                       "--reason", "counts run after the window")
    assert code == 0 and "(gate OVERRIDDEN)" in out
    assert journal(cfg)[-1].payload["override"]["authority"] == "Cutover Lead"

    code, _, err = run(capsys, "decide", "rollback", "--rationale", "x", "-c", c)
    assert code == 1 and "needs a named authority: one of Cutover Lead, Business Owner" in err
    code, _, err = run(capsys, "decide", "hold", "--rationale", "x", "--reason", "y", "-c", c)
    assert code == 2 and "--reason is only used with --override" in err
    code, out, _ = run(capsys, "decide", "hold", "--as", "Business Owner", "--rationale", "fix forward", "-c", c)
    assert code == 0 and out.startswith("HOLD recorded by Business Owner in run 'rehearsal-1'")
    assert "the matrix recommended HOLD" in out

    code, out, _ = run(capsys, "runbook", "-c", c)
    assert code == 0
    assert "Run since" in out and "phase validation" in out
    assert "⚑ overridden by Cutover Lead" in out and "ready to start: integrations" in out
    assert "decision: " in out and "RECORDED HOLD by Business Owner" in out
    data = json.loads(run(capsys, "runbook", "-c", c, "--format", "json")[1])
    assert [s["state"] for s in data["steps"][:4]] == ["DONE", "DONE", "DONE", "PENDING"]
    assert data["recommendation"]["overall"] == "HOLD"

    assert run(capsys, "runs", "start", "rehearsal-2", "-c", c)[0] == 0
    code, _, err = run(capsys, "runs", "start", "rehearsal-2", "-c", c)
    assert code == 1 and "run 'rehearsal-2' already exists" in err
    listing = json.loads(run(capsys, "runs", "list", "-c", c, "--format", "json")[1])
    assert [(r["name"], r["current"], r["done"]) for r in listing["runs"]] == [("rehearsal-1", False, 3),
                                                                              ("rehearsal-2", True, 0)]
    code, out, _ = run(capsys, "runs", "compare", "rehearsal-1", "rehearsal-2", "-c", c)
    assert code == 0 and out.startswith("Runs compared: A = rehearsal-1, B = rehearsal-2")
    data = json.loads(run(capsys, "runs", "compare", "rehearsal-1", "rehearsal-2", "-c", c, "--format", "json")[1])
    assert data["steps"][0]["a"]["state"] == "DONE" and data["steps"][0]["b"]["state"] == "PENDING"
    code, _, err = run(capsys, "runs", "compare", "rehearsal-1", "production", "-c", c)
    assert code == 2 and "no run named 'production'" in err
    code, out, _ = run(capsys, "runbook", "-c", c, "--run", "rehearsal-1")
    assert code == 0 and "⚑ overridden by Cutover Lead" in out
    assert run(capsys, "runbook", "-c", c, "--run", "nope")[0] == 2


def test_two_processes_cannot_both_complete_a_step(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = str(cfg)
    assert run(capsys, "step", "start", "freeze", "-c", c)[0] == 0
    command = [sys.executable, "-c", "import sys; from crmctl.cli import main; sys.exit(main(sys.argv[1:]))",
               "step", "done", "freeze", "-c", c]
    procs = [subprocess.Popen(command + ["--operator", who], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("alice", "bob")]
    outcomes = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 1], outcomes
    loser = next(err for code, _, err in outcomes if code == 1)
    assert "step 'freeze' was already completed by" in loser
    assert [e.kind for e in journal(cfg)].count("runbook.step.done") == 1


def test_bad_rollback_expressions_are_reported_at_config_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = CONFIG.replace('rollback_if: "difference_pct > 0.5", hold_if: "difference_pct > 0"}',
                          'rollback_if: "difference_pct => 0.5", hold_if: "difference_pct"}')
    assert text != CONFIG
    path = tmp_path / "crmctl.yaml"
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "difference_pct => 0.5" in t)
    code, _, err = run(capsys, "validate", str(path))
    assert code == 2
    problems = err.strip().splitlines()
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{path}:{line}:")
    assert ("rollback.criteria[0].rollback_if: bad expression 'difference_pct => 0.5': '=>' is not an operator"
            " at character 16; expected >=") in problems[0]
    assert ("rollback.criteria[0].hold_if: bad expression 'difference_pct': the expression gives a value, not true"
            " or false at character 1; expected a condition such as missing > 0") in problems[1]
