"""`crmctl incident ...` and `crmctl hypercare ...` end to end: real config file, real journal,
real local webhook receiver, real processes for the race, the embedded emulator for the pack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Iterator

import pytest

from crmctl.cli import main
from crmctl.store import Store
from tests.notify.receiver import Receiver

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A receiver on its own loop in a thread: the CLI runs its own asyncio.run in the test's thread."""
    loop = asyncio.new_event_loop()
    receiver = Receiver()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(5)
    monkeypatch.setenv("CRMCTL_TEST_TEAMS", receiver.url)
    try:
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "crmctl.yaml"
    path.write_text(textwrap.dedent("""\
        project: CLI test cutover
        source: {kind: sql, url: "sqlite:///source.db"}
        target: {kind: emulator}
        checks:
          - {id: dynamics.whoami, kind: whoami}
        incidents:
          severities:
            sev1: {respond: 15m, escalate_to: Cutover Lead}
          notify: {teams_webhook: "${env:CRMCTL_TEST_TEAMS}"}
        """))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_incident_commands_walk_the_lifecycle(cfg: Path, hook: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("-c", str(cfg), "--operator", "alice")
    code, out, err = run(capsys, "incident", "raise", "ERP orders stuck", "--severity", "sev1", "--check",
                         "dynamics.whoami", *c)
    assert code == 0 and out.startswith("INC-1 raised: SEV1 ERP orders stuck (journal entry 1, by alice)")
    assert "escalates to Cutover Lead at " in out
    assert "notified teams: INC-1 incident.raised (attempt 1, HTTP 202)" in err
    assert len(hook.received) == 1 and hook.received[0].json()["type"] == "message"

    code, _, err = run(capsys, "incident", "raise", "again", "--check", "dynamics.whoami", *c)
    assert code == 1 and "refused: INC-1 is already open for check dynamics.whoami" in err

    assert run(capsys, "incident", "ack", "INC-1", *c)[0] == 0
    code, _, err = run(capsys, "incident", "ack", "1", "-c", str(cfg), "--operator", "bob")
    assert code == 1 and "refused: INC-1 is already acknowledged (acknowledged by alice" in err
    assert run(capsys, "incident", "mitigate", "1", "--note", "restarted", *c)[0] == 0
    assert run(capsys, "incident", "note", "1", "backlog draining", *c)[0] == 0
    with pytest.raises(SystemExit) as usage:
        main(["incident", "resolve", "1", *c])  # --note is required
    assert usage.value.code == 2
    capsys.readouterr()
    code, out, _ = run(capsys, "incident", "resolve", "1", "--note", "credentials rotated", *c)
    assert code == 0 and out.startswith("INC-1 resolved: Resolved: credentials rotated")
    assert run(capsys, "incident", "close", "1", *c)[0] == 0
    code, out, _ = run(capsys, "incident", "list", "-c", str(cfg))
    assert (code, out.strip()) == (0, "no active incidents")
    code, out, _ = run(capsys, "incident", "list", "--all", "--format", "json", "-c", str(cfg))
    (listed,) = json.loads(out)["incidents"]
    assert (listed["id"], listed["state"], listed["owner"]) == ("INC-1", "closed", "alice")
    code, out, _ = run(capsys, "incident", "show", "1", "-c", str(cfg))
    assert "timeline:" in out and "credentials rotated" in out
    assert "teams    incident.raised: delivered" in out
    assert run(capsys, "incident", "escalate", *c)[1].strip() == "no escalation due"
    # Raised, acknowledged, resolved were announced; mitigating, notes and closing were not.
    events = [r.json()["attachments"][0]["content"]["body"][0]["text"].split(":")[0] for r in hook.received]
    assert events == ["Incident raised", "Incident acknowledged", "Incident resolved"]
    # The secret URL is nowhere in the journal.
    assert "S3cr3tSig" not in json.dumps([e.to_json() for e in asyncio.run(_entries(cfg))])


async def _entries(cfg: Path) -> list:  # noqa: ANN202
    store = await Store.open(cfg.parent / ".crmctl" / "state.db")
    try:
        return await store.entries()
    finally:
        await store.close()


def test_bad_usage_exits_2(cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMCTL_TEST_TEAMS", "https://contoso.webhook.office.com/webhookb2/x")
    with pytest.raises(SystemExit) as bad:
        main(["incident", "ack", "INC-x", "-c", str(cfg)])
    assert bad.value.code == 2
    code, _, err = run(capsys, "incident", "raise", "-c", str(cfg))
    assert code == 2 and "give a TITLE" in err
    code, _, err = run(capsys, "incident", "raise", "x", "--severity", "critical", "-c", str(cfg))
    assert code == 2 and "unknown severity 'critical'" in err


def test_two_processes_acknowledging_at_once_one_wins(cfg: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg.write_text(cfg.read_text().replace('  notify: {teams_webhook: "${env:CRMCTL_TEST_TEAMS}"}\n', ""))
    assert run(capsys, "incident", "raise", "race", "-c", str(cfg))[0] == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", "import sys; from crmctl.cli import main; sys.exit(main(sys.argv[1:]))",
                          "incident", "ack", "1", "-c", str(cfg), "--operator", name],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name in ("alice", "bob")
    ]
    codes = sorted(p.wait(60) for p in procs)
    assert codes == [0, 1]

    assert [e.kind for e in asyncio.run(_entries(cfg))] == ["incident.raised", "incident.acknowledged"]


def test_hypercare_commands_exit_like_crmctl_check(demo_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("-c", str(demo_config), "--operator", "cron")
    code, out, _ = run(capsys, "hypercare", "run", *c)
    assert code == 1  # the demo world has checks in BREACH (exit 1 wins over 3, as in crmctl check)
    assert "no go-live baseline yet" in out
    code, out, _ = run(capsys, "hypercare", "baseline", *c)
    assert code == 0 and out.startswith("go-live baseline frozen: ")
    code, _, err = run(capsys, "hypercare", "baseline", *c)
    assert code == 1 and "already frozen" in err
    code, _, err = run(capsys, "hypercare", "baseline", "--replace", *c)
    assert code == 2 and "--replace needs --reason" in err
    code, out, _ = run(capsys, "hypercare", "run", "--format", "json", *c)
    status = json.loads(out)
    assert code == status["exit_code"] == 1 and status["verdict"] == "FAIL"
    assert status["baseline_seq"] is not None and status["checks"]["account.count"]["status"] == "BREACH"
    # The demo's auto-raise rules ran too (cron may be the only process awake).
    code, out, _ = run(capsys, "incident", "list", "--format", "json", "-c", str(demo_config))
    raised = {i["check"] for i in json.loads(out)["incidents"]}
    assert {"account.count", "contact.count", "erp-sync.jobs"} <= raised
    code, out, _ = run(capsys, "hypercare", "status", "--format", "json", "-c", str(demo_config))
    view = json.loads(out)
    assert code == 0 and view["baseline"]["intact"] is True and [c["label"] for c in view["checkpoints"]] == [
        "Day 1", "Day 7", "Day 30"]
