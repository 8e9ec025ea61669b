"""The session-end audit (tests/reliability/suite_audit.py) fails a session that writes to Dynamics or
leaks a canary, names the file but never the secret, and passes a clean one — run as real pytest
sessions in subprocesses, so the hooks are exercised exactly as in `make test`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests.reliability.suite_audit import CANARIES, CANARY_TOKEN, forms

REPO = Path(__file__).resolve().parents[2]

LEAKY = '''
import base64, json, os
from tests.reliability.suite_audit import CANARY_TOKEN, CANARY_WEBHOOK_SIG

def test_writes_to_dynamics_and_leaks(tmp_path):
    (tmp_path / "leak.log").write_text("token " + CANARY_TOKEN)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "encoded.json").write_text(json.dumps({"x": base64.b64encode(("sig=" + CANARY_WEBHOOK_SIG).encode()).decode()}))
    with open(os.environ["CRMCTL_EMULATOR_AUDIT"], "a") as audit:
        for method, status, agent in (("PATCH", 204, "crmctl/0.1.0"), ("POST", 201, "curl/8"),
                                      ("DELETE", 405, "Python/3.11 aiohttp/3.9"), ("GET", 200, "crmctl/0.1.0")):
            audit.write(json.dumps({"event": "request", "method": method, "path": "/api/data/v9.2/accounts",
                                    "status": status, "ua": agent, "pid": 1}) + "\\n")
'''
CLEAN = '''
def test_clean(tmp_path):
    (tmp_path / "note.txt").write_text("nothing secret here")
'''


def _session(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "inner"
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_inner.py").write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CRMCTL_EMULATOR_AUDIT", None)
    # The inner session's deliberate leak lives outside this session's basetemp (and is removed),
    # or this session's own audit would rightly fail on it.
    basetemp = Path(tempfile.mkdtemp(prefix="suite-audit-inner-"))
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.reliability.suite_audit",
             "--basetemp", str(basetemp / "bt"), str(folder / "test_inner.py")],
            capture_output=True, text=True, cwd=folder, env=env, timeout=300,
        )
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)


def test_a_write_or_a_leak_fails_the_session_naming_the_file_not_the_secret(tmp_path: Path) -> None:
    run = _session(tmp_path, LEAKY)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "SUITE AUDIT FAILED" in out
    assert "crmctl itself sent a non-GET request to Dynamics: PATCH" in out
    assert "a non-GET request was not refused by the emulator: POST" in out
    assert "DELETE -> 405 x1" in out  # a test probing the refusal: reported, not failed
    assert "connector test bearer token found in" in out and "leak.log" in out
    assert "webhook receiver signature found in" in out and "encoded.json" in out
    assert "4 requests audited" in out and "files," in out and "bytes" in out
    for value in CANARIES.values():
        assert not any(form.decode() in out for form in forms(value)), "the failure message quotes a secret"


def test_a_clean_session_passes_and_says_what_it_scanned(tmp_path: Path) -> None:
    run = _session(tmp_path, CLEAN)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "suite audit: clean" in out
    assert "canary scan: " in out and "scanner self-check: 8 probe forms planted and found" in out
    assert CANARY_TOKEN not in out
