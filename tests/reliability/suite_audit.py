"""Suite-wide guarantees, checked once at the end of every pytest session (loaded by tests/conftest.py).

1. **Read-only against Dynamics.** Every emulator started during the session, in the test process
   or in a `crmctl` subprocess, appends each request's method, path, status and User-Agent to the
   file named by `CRMCTL_EMULATOR_AUDIT` (crmctl/emulator/audit.py), which this plugin sets before
   the first test so subprocesses inherit it. At session end every line is read back:

   - a non-GET request sent by crmctl (User-Agent ``crmctl/...``, what `DataverseClient` sends)
     fails the session, whatever the emulator answered;
   - a non-GET request that the emulator did *not* refuse (no status, or a 2xx/3xx) fails it too;
   - a non-GET request from another client that the emulator refused (4xx: 405 "does not support
     http method", 404 for functions, 401 before routing) is a test *probing the refusal*
     (tests/emulator/test_emulator_api.py): it is counted and reported as such, not failed.

   So "the emulator's log shows no request other than GET to Dynamics" reads: no non-GET from
   crmctl at all, and no non-GET from anyone that the emulator acted upon.

2. **Canary secrets never reach a file.** The suite's fixtures set canary-shaped secrets
   (`CANARIES` below: the OIDC peer's client secret, the connector tests' bearer token, the
   MSAL tests' client secret, the webhook receiver's signature) and every emulator's bearer tokens
   are known by digest (the audit file holds SHA-256 digests, never tokens). At session end every
   file under pytest's basetemp, and under the repo's data/demo/.crmctl when written during the
   session, is scanned for each canary in plain, URL-encoded, JSON-escaped and base64 forms, and
   for any 43-character token whose digest an emulator issued. A hit fails the session naming the
   file and the canary's name, never its value.

The hook cannot pass vacuously: it reports how many files and bytes it read and how many
requests it audited, and before scanning it plants a probe file holding a *probe* canary in every
form and fails the session unless the scanner finds each form in it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import quote, quote_plus

import pytest

AUDIT_ENV = "CRMCTL_EMULATOR_AUDIT"
"""The variable crmctl/emulator/audit.py reads (kept literal here: the plugin must not import crmctl
before the session's own imports, and a renamed variable must fail loudly, see `_self_check`)."""

REPO = Path(__file__).resolve().parents[2]

CANARY_PEER_CLIENT_SECRET = "Sup3r~Secret.Value-never-shown_9f2c"
"""The OIDC peer's client secret (tests/peers/oidc_peer.py CLIENT_SECRET): set by tests/auth."""
CANARY_MSAL_SECRET = "s3cr3t-Value~that.must.never.show"
"""The client secret of tests/connectors/test_auth.py (SECRET)."""
CANARY_TOKEN_SIGNATURE = "Y25yeS10b2tlbi1zaWctN2YzYTljMmU1YjFk"
CANARY_TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJjcm1jdGwtdGVzdCJ9." + CANARY_TOKEN_SIGNATURE
"""The bearer token of the connector tests (tests/connectors/conftest.py TOKEN), JWT-shaped so the
token scrubbing is exercised; its signature segment is the canary."""
CANARY_WEBHOOK_SIG = "S3cr3tSig-cnry-4b8e1d"
"""The signature in the notify receiver's Workflows-shaped URL (tests/notify/receiver.py)."""

CANARIES: dict[str, str] = {
    "OIDC peer client secret": CANARY_PEER_CLIENT_SECRET,
    "MSAL test client secret": CANARY_MSAL_SECRET,
    "connector test bearer token": CANARY_TOKEN,
    "connector test token signature": CANARY_TOKEN_SIGNATURE,
    "webhook receiver signature": CANARY_WEBHOOK_SIG,
}
"""name -> value of every canary the suite's fixtures set. Failure messages print the name only."""

PROBE_CANARY = "cnry-probe~Value/with+odd&chars=9d2f"
"""Planted by the plugin itself in every form to prove the scanner finds what it looks for."""

PEER_SIDE_FILES = frozenset({"oidc.json", "oidc.log"})
"""Files of the OIDC *provider* (tests/peers): the provider must know its clients' secrets; a
secret there is not crmctl's doing. Reported as skipped, by count."""
PROBE_NAME = "suite-audit-probe.txt"
CHUNK = 8 * 1024 * 1024
TOKEN_SCAN_MAX = 32 * 1024 * 1024
"""Files larger than this (the generated demo worlds, tens of MB of seeded rows) are scanned for
every canary form but not for emulator tokens by digest: that regex runs at ~30 MB/s and no
token can reach a seeded world. The summary reports the bytes left out of the digest scan."""
_TOKEN_SHAPE = re.compile(rb"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
"""`secrets.token_urlsafe(32)`: what the emulator issues."""


def forms(value: str) -> set[bytes]:
    """`value` as it may travel: plain, URL-encoded (both hex cases, `+` for spaces), JSON-escaped
    (with and without `ensure_ascii`), and base64 (standard and URL-safe, at each of the three
    byte alignments it can take inside a longer encoded blob)."""
    out: set[str] = {
        value,
        quote(value, safe=""),
        quote(value, safe="").lower(),
        quote(value, safe="/"),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    raw = value.encode("utf-8")
    found = {f.encode("utf-8") for f in out if f}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        # Drop the characters touched by the padding prefix and by the unknown bytes after.
        start = {0: 0, 1: 2, 2: 3}[pad]
        stable_end = ((pad + len(raw)) // 3) * 4
        core = encoded[start:stable_end]
        if len(core) >= 8:
            found.add(core)
            found.add(core.replace(b"+", b"-").replace(b"/", b"_"))
    return found


@dataclass
class Hit:
    path: Path
    what: str


@dataclass
class ScanReport:
    files: int = 0
    bytes: int = 0
    bytes_without_token_scan: int = 0
    skipped_peer_files: int = 0
    hits: list[Hit] = field(default_factory=list)


class Scanner:
    """Looks for every form of every canary (and for issued emulator tokens, by digest) in files."""

    def __init__(self, canaries: dict[str, str], token_digests: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.patterns: list[tuple[str, bytes]] = []
        for name, value in canaries.items():
            for form in sorted(forms(value)):
                self.patterns.append((name, form))
        self.token_digests = set(token_digests)
        self.overlap = max((len(p) for _, p in self.patterns), default=1) + 64

    def scan_bytes(self, data: bytes, *, tokens: bool = True) -> set[str]:
        found = {name for name, form in self.patterns if form in data}
        if tokens and self.token_digests:
            for match in _TOKEN_SHAPE.finditer(data):
                if hashlib.sha256(match.group(0)).hexdigest() in self.token_digests:
                    found.add("an emulator bearer token")
                    break
        return found

    def scan_file(self, path: Path) -> tuple[int, set[str]]:
        found: set[str] = set()
        size = 0
        tokens = path.stat().st_size <= TOKEN_SCAN_MAX
        with path.open("rb") as fh:
            tail = b""
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                found |= self.scan_bytes(tail + chunk, tokens=tokens)
                tail = chunk[-self.overlap:]
        return size, found

    def scan_tree(self, roots: Iterable[Path], *, newer_than: dict[Path, float] | None = None,
                  skip: Iterable[Path] = ()) -> ScanReport:
        report = ScanReport()
        skipped = {p.resolve() for p in skip}
        for root in roots:
            cutoff = (newer_than or {}).get(root)
            for path in _files(root):
                if path.resolve() in skipped:
                    continue
                if path.name in PEER_SIDE_FILES:
                    report.skipped_peer_files += 1
                    continue
                try:
                    if cutoff is not None and path.stat().st_mtime < cutoff:
                        continue
                    size, found = self.scan_file(path)
                except OSError:
                    continue  # removed while we looked (a socket, a lock file): nothing to read
                report.files += 1
                report.bytes += size
                if size > TOKEN_SCAN_MAX:
                    report.bytes_without_token_scan += size
                report.hits.extend(Hit(path, what) for what in sorted(found))
        return report


def _files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for folder, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


@dataclass
class AuditReport:
    lines: int = 0
    emulators: int = 0
    requests: int = 0
    gets: int = 0
    refused_probes: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    token_digests: set[str] = field(default_factory=set)
    unreadable: int = 0


def read_audit(path: Path) -> AuditReport:
    """Reads the audit file and applies the read-only rule (see the module docstring)."""
    report = AuditReport()
    if not path.exists():
        return report
    with path.open("rb") as fh:
        for raw in fh:
            report.lines += 1
            try:
                record = json.loads(raw)
            except ValueError:
                report.unreadable += 1  # a subprocess killed mid-write (crash tests): counted
                continue
            event = record.get("event")
            if event == "start":
                report.emulators += 1
            elif event == "token":
                report.token_digests.add(str(record.get("sha256")))
            elif event == "request":
                report.requests += 1
                method = str(record.get("method"))
                status = record.get("status")
                ua = str(record.get("ua") or "")
                where = f"{method} {record.get('path')} -> {status} (pid {record.get('pid')}, User-Agent {ua!r})"
                if method == "GET":
                    report.gets += 1
                elif ua.startswith("crmctl"):
                    report.violations.append(f"crmctl itself sent a non-GET request to Dynamics: {where}")
                elif not isinstance(status, int) or status < 400:
                    report.violations.append(f"a non-GET request was not refused by the emulator: {where}")
                else:
                    key = f"{method} -> {status}"
                    report.refused_probes[key] = report.refused_probes.get(key, 0) + 1
    return report


class SuiteAudit:
    """The plugin object: sets the audit variable at configure time, checks everything at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.time()
        self.previous = os.environ.get(AUDIT_ENV)
        factory = getattr(config, "_tmp_path_factory", None)
        self.basetemp = Path(factory.getbasetemp()) if factory is not None else Path(tempfile.mkdtemp(prefix="suite-audit-"))
        self.audit_path = self.basetemp / "emulator-audit.jsonl"
        self.audit_path.touch()
        os.environ[AUDIT_ENV] = str(self.audit_path)
        self.lines: list[str] = []
        self.failed = False
        self.figures: dict[str, str] = {}
        """Figures the reliability tests report (`record_figure`), printed in the summary."""

    def restore_env(self) -> None:
        if self.previous is None:
            os.environ.pop(AUDIT_ENV, None)
        else:
            os.environ[AUDIT_ENV] = self.previous

    def _self_check(self, scanner_canaries: dict[str, str]) -> list[str]:
        """Plants the probe canary in every form and proves the scanner sees each one."""
        problems = []
        probe = self.basetemp / PROBE_NAME
        probe_forms = sorted(forms(PROBE_CANARY))
        detector = Scanner({"probe": PROBE_CANARY})
        for form in probe_forms:
            probe.write_bytes(b"padding " * 3 + form + b" trailing")
            if detector.scan_file(probe)[1] != {"probe"}:
                problems.append(f"the scanner missed a form of the probe canary ({form[:6]!r}...)")
        probe.unlink()
        token = "A" * 10 + "b-_" + "C" * 30  # 43 characters, the emulator's token shape
        hashed = Scanner({}, {hashlib.sha256(token.encode()).hexdigest()})
        if hashed.scan_bytes(b'{"Authorization": "Bearer ' + token.encode() + b'"}') != {"an emulator bearer token"}:
            problems.append("the scanner missed a token known by digest")
        self.probe_forms = len(probe_forms)
        self.canary_forms = sum(len(forms(v)) for v in scanner_canaries.values())
        return problems

    def finish(self, session: pytest.Session) -> None:
        problems: list[str] = []
        audit = read_audit(self.audit_path)
        for violation in audit.violations:
            problems.append(violation)
        problems += self._self_check(CANARIES)
        scanner = Scanner(CANARIES, audit.token_digests)
        roots = [self.basetemp]
        newer: dict[Path, float] = {}
        demo_state = REPO / "data" / "demo" / ".crmctl"
        if demo_state.is_dir():
            roots.append(demo_state)
            newer[demo_state] = self.started
        t0 = time.monotonic()
        scan = scanner.scan_tree(roots, newer_than=newer)
        elapsed = time.monotonic() - t0
        for hit in scan.hits:
            problems.append(f"{hit.what} found in {hit.path}")
        probes = ", ".join(f"{k} x{v}" for k, v in sorted(audit.refused_probes.items())) or "none"
        self.lines = [
            f"read-only audit: {audit.requests} requests audited from {audit.emulators} emulators started "
            f"({audit.gets} GET; non-GET refused by the emulator, sent by tests probing the refusal: {probes}; "
            f"non-GET from crmctl: {sum('crmctl itself' in v for v in audit.violations)})"
            + (f"; {audit.unreadable} torn lines" if audit.unreadable else ""),
            f"canary scan: {scan.files} files, {scan.bytes:,} bytes under {', '.join(str(r) for r in roots)} "
            f"in {elapsed:.1f} s; {len(CANARIES)} canaries in {self.canary_forms} forms, "
            f"{len(audit.token_digests)} emulator tokens by digest (files over {TOKEN_SCAN_MAX >> 20} MB, "
            f"{scan.bytes_without_token_scan:,} bytes, left out of that); {scan.skipped_peer_files} provider-side files "
            f"skipped; scanner self-check: {self.probe_forms} probe forms planted and found",
        ]
        self.lines += [f"{name}: {text}" for name, text in sorted(self.figures.items())]
        if problems:
            self.failed = True
            self.lines.append("SUITE AUDIT FAILED:")
            self.lines += [f"  - {p}" for p in problems]
            if session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        else:
            self.lines.append("suite audit: clean (no non-GET from crmctl, no canary in any file)")


_KEY = pytest.StashKey[SuiteAudit]()


def record_figure(config: pytest.Config, name: str, text: str) -> None:
    """Reports a figure of a reliability test (fuzz cases, files scanned) in the session summary;
    `make reliability` prints them, and docs/reliability.md quotes them."""
    audit = config.stash.get(_KEY, None)
    if audit is not None:
        audit.figures[name] = text


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller audits
        return
    config.stash[_KEY] = SuiteAudit(config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    audit = session.config.stash.get(_KEY, None)
    if audit is not None:
        audit.finish(session)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    audit = config.stash.get(_KEY, None)
    if audit is None or not audit.lines:
        return
    terminalreporter.section("suite audit", red=audit.failed, green=not audit.failed)
    for line in audit.lines:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    audit = config.stash.get(_KEY, None)
    if audit is not None:
        audit.restore_env()
