"""Many operators: 8 processes act on one state file at the same moments -> no lost update,
every conflict refused naming who and when, the chain verifies.

Each operator (`operator_child.py`) plays the same script; a file barrier lines all eight up
before each move, so each move is a real race between eight processes: a new run, every
runbook step's start / done / block / skip, acknowledging each incident; and eight incidents
raised and eight comments on each incident that must all land. The proof:

* every acknowledged action is in the journal exactly once, with the hash, kind and operator
  its process was told, and the journal holds nothing that was not acknowledged;
* each race has exactly one winner; the seven others are refused, and each refusal names the
  winner and the time it acted;
* the hash chain verifies; the runbook and incident register fold to what the winners did.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.scale import FULL, scaled

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

REPO = Path(__file__).resolve().parents[2]
CHILD = str(Path(__file__).with_name("operator_child.py"))
OPERATORS = 8
ROUNDS = scaled(2, 12)
HHMMSS = r"\d\d:\d\d:\d\d"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


def refusal_names_winner(why: str, winner: str) -> bool:
    """The sentence a loser got names the operator who won ("by op-3@host") and when."""
    named = re.search(rf"\bby {re.escape(winner)}(@\S+)?\b", why) is not None
    timed = re.search(rf"{HHMMSS}|{ISO}", why) is not None
    return named and timed


def test_eight_operators_racing_lose_nothing_and_refuse_conflicts(demo_config: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from crmctl.incidents import INCIDENT_KINDS, Register
    from crmctl.runbook import KINDS, fold, runbook_of
    from crmctl.cli import load_or_report
    from crmctl.store import Store, verify_file

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    began = time.monotonic()
    procs = [subprocess.Popen([sys.executable, CHILD, str(demo_config), str(k), str(OPERATORS), str(ROUNDS),
                               str(barrier)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(OPERATORS)]
    outputs: list[tuple[str, str]] = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=900))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.monotonic() - began
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and out.rstrip().endswith("DONE {}"), err[-4000:]

    acks: list[dict[str, Any]] = []
    moves: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"ack": [], "refused": []})
    for out, _err in outputs:
        for line in out.splitlines():
            tag, _, body = line.partition(" ")
            if tag == "ACK":
                record = json.loads(body)
                acks.append(record)
                moves[record["move"]]["ack"].append(record)
            elif tag == "REFUSED":
                record = json.loads(body)
                moves[record["move"]]["refused"].append(record)

    # Races: exactly one winner, seven refusals naming it; comments and raises: all land.
    races = refusals = 0
    for move, outcome in moves.items():
        if " comment " in move or " raise " in move:
            assert len(outcome["ack"]) == 1 and not outcome["refused"], (move, outcome)
            continue
        races += 1
        assert len(outcome["ack"]) == 1, (move, outcome)
        assert len(outcome["refused"]) == OPERATORS - 1, (move, outcome)
        winner = outcome["ack"][0]["operator"]
        for loser in outcome["refused"]:
            refusals += 1
            assert refusal_names_winner(loser["why"], winner), (move, winner, loser["why"])
    steps_per_round = sum(3 if s in ("freeze", "reconcile", "integrations", "signoff") else 2
                          for s in ("freeze", "delta", "reconcile", "integrations", "smoke", "signoff"))
    assert races == ROUNDS * (steps_per_round + OPERATORS) + (ROUNDS - 1)

    # No lost and no doubled update: the journal is exactly the acknowledged entries.
    report = verify_file(demo_config.parent / ".crmctl" / "state.db")
    assert report.ok, report.reason
    config = load_or_report(demo_config)
    assert config is not None

    async def read() -> list[Any]:
        async with await Store.open(config.state, readonly=True) as store:
            assert (await store.verify()).ok
            return await store.entries()

    entries = asyncio.run(read())
    by_seq = {e.seq: e for e in entries}
    acked = [a["seq"] for a in acks]
    assert len(acked) == len(set(acked)), "an entry was acknowledged to two operators"
    assert sorted(acked) == [e.seq for e in entries], "the journal holds entries nobody was told about"
    for ack in acks:
        entry = by_seq[ack["seq"]]
        assert (entry.hash, entry.kind, entry.operator) == (ack["hash"], ack["kind"], ack["operator"]), ack

    # The folds agree with the winners: every round's run finished, every incident acknowledged
    # once and carrying all eight comments.
    state = fold([e for e in entries if e.kind in KINDS], runbook_of(config))
    assert len(state.runs) == ROUNDS
    for run in state.runs.values():
        assert all(run.state_of(s.id).finished for s in config.runbook), run.name
    register = Register.from_entries([e for e in entries if e.kind in INCIDENT_KINDS])
    incidents = register.all()
    assert len(incidents) == ROUNDS * OPERATORS
    for incident in incidents:
        kinds = [item.kind for item in incident.timeline]
        assert kinds.count("incident.acknowledged") == 1, incident.id
        assert kinds.count("incident.note") == OPERATORS, incident.id
        assert incident.owner and incident.owner.startswith("op-")

    interleaved = sum(1 for a, b in zip(entries, entries[1:], strict=False) if a.operator != b.operator)
    figures = {
        "test": "many_operators",
        "mode": "full" if FULL else "make test",
        "operators": OPERATORS,
        "rounds": ROUNDS,
        "attempts": len(acks) + refusals,
        "acknowledged_actions": len(acks),
        "races": races,
        "refusals": refusals,
        "journal_entries": len(entries),
        "lost_or_doubled": 0,
        "operator_switches_in_journal": interleaved,
        "seconds": round(seconds, 1),
    }
    out = tmp_path / "many_operators_figures.json"
    out.write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(f"\nmany operators figures ({out}):\n{json.dumps(figures, indent=2)}")
    assert interleaved > OPERATORS, "the operators never interleaved: this proved little"
