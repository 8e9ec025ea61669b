"""Crash safety: SIGKILL the CLI and the app at random moments of a stream of operator actions
and check runs, then prove that nothing acknowledged was lost, the chain is intact, and every
view resumes from the journal.

Three kinds of victims share one state file, in a seeded random order:

* **CLI**: `crmctl step|runs start|decide|incident raise|ack|note` as real processes, killed
  after a random delay drawn around their own measured run time (so kills land in start-up,
  config loading, the store's open and recovery, and the write itself). A command that printed
  "journal entry N" before the kill acknowledged N.
* **app**: `crash_child.py app`: the real `ControlRoom.open` (store, embedded demo emulator,
  engine) and the real `CrmctlApp` on it (headless, Pilot key presses switching screens),
  streaming step/run/incident/decision actions and check runs; it prints `ACK` for each only
  after the call returned, and is killed after a random number of acknowledgements.
* **tui**: `crmctl tui` itself in a pseudo-terminal, with its scheduler running every check
  against the emulator, killed at a random moment once it has drawn its first screen on the
  state file the earlier kills left behind.

After every kill: `verify_file` passes, every acknowledged entry is in the journal as it was
acknowledged (seq, hash, kind, operator; a check result exactly once), and journal time never
runs backwards. At the end (and every 40 kills under `make reliability`): the same for all,
`crmctl verify` as a process, and a restart: every ControlRoom projection (snapshot, runbook,
incidents, hypercare, closure) builds and holds every acknowledged action, and the app under
Pilot shows all eight screens, the runbook and the incident register as the journal holds them.
The figures (kills per victim, acknowledgements per kind, refusals, time) are printed and
written to `crash_safety_figures.json` in the test's tmp folder.

The seed is printed (and in the figures file); CRMCTL_CRASH_SEED=<seed> replays the same order
of victims, commands and delays (timing on a loaded machine still varies where a kill lands).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.scale import FULL, scaled

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes, signals and ptys")

REPO = Path(__file__).resolve().parents[2]
CHILD = str(Path(__file__).with_name("crash_child.py"))
CRMCTL = str(Path(sys.executable).with_name("crmctl"))
VICTIMS = {"cli": scaled(14, 200), "app": scaled(5, 105), "tui": scaled(1, 15)}
"""Kills per victim in `make test` / `make reliability` (the app and the tui take seconds to
start, a CLI command well under one)."""
KILLS = sum(VICTIMS.values())
RESTART_EVERY = scaled(KILLS, 40)
"""Kills between two full restarts of every view (always one at the end)."""
ENTRY = re.compile(r"\(journal entry (\d+)")
CUTOVER_STEPS = ("freeze", "delta", "reconcile", "integrations", "smoke", "signoff")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CRMCTL_CONFIG", None)
    return env


# --------------------------------------------------------------------------------------------
# reading a victim's output without ever blocking the harness


class Lines:
    """Collects a pipe's complete lines in a thread; a line cut by the kill is never complete."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.partial = ""
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        buf = ""
        while True:
            chunk = self._stream.read1(65536) if hasattr(self._stream, "read1") else self._stream.read(65536)
            if not chunk:
                break
            buf += chunk.decode("utf-8", "replace")
            *done, buf = buf.split("\n")
            self.lines.extend(done)
        self.partial = buf

    def join(self) -> list[str]:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "a killed child's pipe never closed"
        return self.lines

    def count(self, prefix: str) -> int:
        return sum(1 for line in list(self.lines) if line.startswith(prefix))


class PtyScreen:
    """Drains a pseudo-terminal's master side so the app never blocks on a full terminal."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.data = bytearray()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.data.extend(chunk)

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace")

    def close(self) -> None:
        try:
            os.close(self.master)
        except OSError:
            pass
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------------------------
# the harness


@dataclass
class Harness:
    config: Path
    state: Path
    seed: int
    rng: random.Random
    acks: list[dict[str, Any]] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=lambda: {"cli": 0, "app": 0, "tui": 0})
    finished: dict[str, int] = field(default_factory=lambda: {"cli": 0, "app": 0, "tui": 0})
    refusals: int = 0
    cli_time: list[float] = field(default_factory=list)
    incidents: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"cli": 0.0, "app": 0.0, "tui": 0.0})

    def say(self, text: str) -> str:
        return f"seed {self.seed}: {text} (replay with CRMCTL_CRASH_SEED={self.seed})"

    # ---------------------------------------------------------------- the victims

    def cli_command(self, n: int) -> tuple[list[str], str, str]:
        """A random real command, its expected journal kind and the operator it runs as."""
        rng = self.rng
        op = f"cli-{n % 5}"
        roll = rng.random()
        if roll < 0.45:
            action = rng.choice(["start", "start", "done", "fail", "skip", "block"])
            step = rng.choice(CUTOVER_STEPS)
            args = ["step", action, step]
            if action in ("skip", "block", "fail"):
                args += ["--reason", f"crash harness {n}"]
            kind = {"start": "runbook.step.started", "done": "runbook.step.done", "fail": "runbook.step.failed",
                    "skip": "runbook.step.skipped", "block": "runbook.step.blocked"}[action]
        elif roll < 0.55:
            args, kind = ["runs", "start", f"cli-run-{n}-{rng.randrange(10**6)}"], "run.started"
        elif roll < 0.62:
            args = ["decide", rng.choice(["go", "hold"]), "--as", "Cutover Lead",
                    "--rationale", f"crash harness decision {n}"]
            kind = "decision.recorded"
        elif roll < 0.80 or not self.incidents:
            args = ["incident", "raise", f"cli incident {n}", "--severity", rng.choice(["sev2", "sev3", "sev4"])]
            kind = "incident.raised"
        elif roll < 0.90:
            args, kind = ["incident", "ack", str(rng.choice(self.incidents))], "incident.acknowledged"
        else:
            args = ["incident", "note", str(rng.choice(self.incidents)), f"cli comment {n}"]
            kind = "incident.note"
        return [CRMCTL, *args, "--config", str(self.config), "--operator", op], kind, op

    def run_cli(self, n: int) -> None:
        argv, kind, op = self.cli_command(n)
        recent = sorted(self.cli_time[-5:])
        typical = recent[len(recent) // 2] if recent else 1.0
        # Mostly late in the run, where config, store and write are; sometimes anywhere. Some
        # commands run to their end: it measures how long commands take on this machine
        # now (the delays follow the load) and acknowledges for certain.
        if not self.cli_time or self.rng.random() < 0.15:
            delay = None
        elif self.rng.random() < 0.75:
            delay = self.rng.uniform(0.5, 1.05) * typical
        else:
            delay = self.rng.uniform(0, typical)
        began = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                                cwd=self.config.parent)
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        try:
            proc.wait(timeout=120 if delay is None else delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        assert delay is not None or code != -signal.SIGKILL, self.say(f"{' '.join(argv[1:])} hung for 120 s")
        lines = out.join()
        errors = err.join()
        if code == -signal.SIGKILL:
            self.kills["cli"] += 1
        else:
            self.finished["cli"] += 1
            self.cli_time.append(time.monotonic() - began)
            assert code in (0, 1), self.say(f"{' '.join(argv[1:])} exited {code}: {errors}")
            if code == 1:
                assert any("refused" in e for e in errors), self.say(f"exit 1 without a refusal: {errors}")
                self.refusals += 1
        for line in lines:
            found = ENTRY.search(line)
            if found:
                self.acks.append({"seq": int(found.group(1)), "kind": kind, "operator": op, "what": line,
                                  "by": "cli"})
                if kind == "incident.raised":
                    self.incidents.append(int(found.group(1)))

    def run_app(self, n: int) -> None:
        wanted = self.rng.choice([0, 0, 1, 2, 4, 8, 16, 32] if FULL else [0, 1, 2, 4, 8, 12])
        argv = [sys.executable, CHILD, "app", str(self.config), f"app-{n % 3}", str(self.rng.randrange(10**9))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                                cwd=self.config.parent)
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        deadline = time.monotonic() + 120
        if wanted == 0:
            # May land in start-up, the store's open and recovery, or the emulator's start.
            time.sleep(self.rng.uniform(0.0, 3.0))
        else:
            while out.count("ACK") < wanted and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(self.rng.uniform(0.0, 0.05))
        assert proc.poll() is None, self.say(f"app child died before the kill: {''.join(err.join())[-3000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        self.kills["app"] += 1
        for line in out.join():
            tag, _, body = line.partition(" ")
            if tag == "ACK":
                record = json.loads(body)
                record["by"] = "app"
                self.acks.append(record)
                if record["kind"] == "incident.raised":
                    self.incidents.append(record["seq"])
            elif tag == "REFUSED":
                self.refusals += 1
        err.join()

    def run_tui(self, n: int) -> None:
        master, slave = pty.openpty()
        env = child_env() | {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        proc = subprocess.Popen([CRMCTL, "tui", "--config", str(self.config), "--operator", f"tui-{n % 2}"],
                                stdin=slave, stdout=slave, stderr=slave, env=env, cwd=self.config.parent,
                                start_new_session=True)
        os.close(slave)
        screen = PtyScreen(master)
        try:
            deadline = time.monotonic() + 120
            # Drawn its first screen: it opened the state file the earlier kills left behind.
            while "Overview" not in screen.text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "Overview" in screen.text(), self.say(f"crmctl tui never drew a screen:\n{screen.text()[-3000:]}")
            for key in self.rng.sample("12345678", 3):
                os.write(master, key.encode())
                time.sleep(self.rng.uniform(0.05, 0.5))
            time.sleep(self.rng.uniform(0.0, 2.0))  # its scheduler is journalling results meanwhile
            assert proc.poll() is None, self.say(f"crmctl tui ended by itself:\n{screen.text()[-3000:]}")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            self.kills["tui"] += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
            screen.close()

    # ---------------------------------------------------------------- the verdicts

    def check_journal(self, *, since: int = 0) -> int:
        """verify passes and every acknowledged action (from `since` on) is in the journal, as
        it was acknowledged; journal time never runs backwards. Returns the entry count."""
        from crmctl.store import verify_file

        report = verify_file(self.state)
        assert report.ok, self.say(f"journal broken after a kill: {report.reason}")
        seen = {a["seq"] for a in self.acks[:since] if "seq" in a}
        with closing(sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)) as conn:
            for ack in self.acks[since:]:
                if ack["kind"] == "check.result":
                    (count,) = conn.execute(
                        "SELECT count(*) FROM journal WHERE kind = 'check.result'"
                        " AND json_extract(payload, '$.check_id') = ? AND json_extract(payload, '$.started') = ?"
                        " AND json_extract(payload, '$.finished') = ?",
                        (ack["check_id"], ack["started"], ack["finished"])).fetchone()
                    assert count == 1, self.say(f"acknowledged result {ack} found {count} times")
                    continue
                seq = ack["seq"]
                assert seq not in seen, self.say(f"entry {seq} acknowledged twice: {ack}")
                seen.add(seq)
                row = conn.execute("SELECT kind, operator, hash FROM journal WHERE seq = ?", (seq,)).fetchone()
                assert row is not None, self.say(f"acknowledged entry {seq} LOST: {ack}")
                kind, operator, digest = row
                assert (kind, operator) == (ack["kind"], ack["operator"]), self.say(
                    f"entry {seq} is {kind} by {operator}, acknowledged as {ack}")
                if "hash" in ack:
                    assert digest == ack["hash"], self.say(f"entry {seq} changed after its acknowledgement")
            # `model.iso` writes one fixed-width form, so text order is time order.
            backwards = [seq for (seq,) in conn.execute(
                "SELECT b.seq FROM journal AS a JOIN journal AS b ON b.seq = a.seq + 1 WHERE b.ts < a.ts")]
        assert not backwards, self.say(f"journal time goes backwards at entries {backwards[:5]}")
        return report.entries


async def restart_views(config_path: Path, acks: list[dict[str, Any]]) -> dict[str, int]:
    """Opens the crashed state file the way the next operator would, and every view on it."""
    from checks.registry import REGISTRY
    from crmctl.cli import load_or_report
    from crmctl.control import ControlRoom
    from crmctl.hypercare import build_view
    from crmctl.identity import Actor
    from crmctl.runbook import KINDS
    from screens.app import SCREENS, CrmctlApp
    from screens.incidents import IncidentsTable
    from screens.runbook import RunbookTable

    config = load_or_report(config_path)
    assert config is not None
    async with ControlRoom.open(config, REGISTRY, actor=Actor("auditor", "restart"), read_only=True) as room:
        snapshot = await room.snapshot()
        last = await room.store.last_seq()
        assert snapshot.last_seq == last
        state = await room.runbook_state()
        register = await room.incident_desk().register()
        hypercare = build_view(config, await room.hypercare_entries(), room.clock.now())
        closure = await room.closure_state()
        assert closure is not None and hypercare is not None
        runbook_seqs = {e.seq for e in snapshot.runbook}
        numbers = {i.number for i in register.all()}
        for ack in acks:
            if ack["kind"] in KINDS:
                assert ack["seq"] in runbook_seqs, f"acknowledged {ack} missing from the runbook view"
            if ack["kind"] == "incident.raised":
                assert ack["seq"] in numbers, f"acknowledged {ack} missing from the incident register"
        results = snapshot.results
        for ack in acks:
            if ack["kind"] == "check.result":
                assert ack["check_id"] in results, f"acknowledged {ack} missing from the overview"

        app = CrmctlApp(room, auto_run=False, poll_interval=0.05, clock_tick=3600.0)
        async with app.run_test(size=(160, 48)) as pilot:
            for _ in range(400):
                if app.snapshot.loaded:
                    break
                await asyncio.sleep(0.05)
            assert app.snapshot.loaded and app.snapshot.last_seq == last
            for key, mode, _title, _about in SCREENS:
                await pilot.press(key)
                await pilot.pause()
                assert app.current_mode == mode, f"key {key} did not show {mode}"
                if mode == "runbook":
                    table = app.screen.query_one(RunbookTable)
                    for _ in range(200):
                        if table.row_count:
                            break
                        await pilot.pause(0.05)
                    shown = {row.key.value for row in table.ordered_rows}
                    assert set(CUTOVER_STEPS) <= shown
                    for step in CUTOVER_STEPS:
                        label = table.get_cell(step, "status").plain
                        assert state.current.state_of(step).value in label, (step, label)
                if mode == "incidents":
                    table = app.screen.query_one(IncidentsTable)
                    for _ in range(200):
                        if table.row_count or not register.active():
                            break
                        await pilot.pause(0.05)
                    shown = {row.key.value for row in table.ordered_rows}
                    for incident in register.active():
                        assert any(str(incident.number) in key for key in shown), (incident.id, shown)
        return {"incidents": len(numbers), "runs": len(state.runs), "checks_with_results": len(results)}


def test_sigkill_at_random_points_loses_no_acknowledged_action(demo_config: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("CRMCTL_CRASH_SEED", time.time_ns() % 10**9))
    with capsys.disabled():
        print(f"\ncrash safety: seed {seed}, {KILLS} kills (CRMCTL_CRASH_SEED={seed} to replay)")
    rng = random.Random(seed)
    state = demo_config.parent / ".crmctl" / "state.db"
    h = Harness(config=demo_config, state=state, seed=seed, rng=rng)
    began = time.monotonic()
    plan = [victim for victim, count in VICTIMS.items() for _ in range(count)]
    rng.shuffle(plan)
    n = restarts = 0
    views_at = RESTART_EVERY
    while plan:
        n += 1
        victim = plan[-1]
        killed, before = h.kills[victim], len(h.acks)
        started = time.monotonic()
        getattr(h, f"run_{victim}")(n)
        h.seconds[victim] += time.monotonic() - started
        if h.kills[victim] > killed:
            plan.pop()
        if state.exists():
            h.check_journal(since=before)
        if plan and sum(h.kills.values()) >= views_at:
            views_at += RESTART_EVERY
            restarts += 1
            asyncio.run(restart_views(demo_config, h.acks))
    entries = h.check_journal()

    done = subprocess.run([CRMCTL, "verify", "--state", str(state)], capture_output=True, text=True,
                          env=child_env(), timeout=120)
    assert done.returncode == 0 and "journal intact" in done.stdout, h.say(done.stdout + done.stderr)

    views = asyncio.run(restart_views(demo_config, h.acks))
    kinds: dict[str, int] = {}
    for ack in h.acks:
        kinds[ack["kind"]] = kinds.get(ack["kind"], 0) + 1
    figures = {
        "test": "crash_safety",
        "mode": "full" if FULL else "make test",
        "seed": seed,
        "kills": sum(h.kills.values()),
        "kills_by_victim": h.kills,
        "completed_before_the_kill": h.finished,
        "acknowledged_actions": len(h.acks),
        "acknowledged_by_kind": dict(sorted(kinds.items())),
        "acknowledged_lost": 0,
        "refusals": h.refusals,
        "seconds_by_victim": {k: round(v, 1) for k, v in h.seconds.items()},
        "journal_entries": entries,
        "restart": views,
        "restarts_of_every_view": restarts + 1,
        "seconds": round(time.monotonic() - began, 1),
    }
    out = tmp_path / "crash_safety_figures.json"
    out.write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(f"crash safety figures ({out}):\n{json.dumps(figures, indent=2)}")
    assert h.kills == VICTIMS, h.say(f"kills {h.kills}, planned {VICTIMS}")
    assert len(h.acks) >= KILLS // 2, h.say("too few acknowledged actions to prove anything")
