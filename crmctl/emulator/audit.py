"""The emulator's audit trail across processes: every request's method and path, appended to one file.

"crmctl never writes to Dynamics" is proven over a whole test run, not one test: the test suite
names a file in `CRMCTL_EMULATOR_AUDIT`, every emulator started while it is set (in the test
process or in a `crmctl` subprocess, which inherits the variable) appends one JSON line per
request to it, and the suite's session-end hook reads it back (tests/reliability/suite_audit.py).

Lines are written with one `os.write` on an `O_APPEND` descriptor, so lines from concurrent
emulators in several processes never interleave (each is far below PIPE_BUF). The bearer token
is never written: only a SHA-256 digest of each token the emulator issues, so that the suite can
recognise a leaked token in its files without the audit file itself becoming a leak.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

ENV_VAR = "CRMCTL_EMULATOR_AUDIT"


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of a bearer token (what the audit file holds instead of the token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AuditTrail:
    """Appends audit lines to the file named by `CRMCTL_EMULATOR_AUDIT`; a no-op when it is unset."""

    def __init__(self, path: str | None = None) -> None:
        path = os.environ.get(ENV_VAR) if path is None else path
        self._fd: int | None = None
        if path:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        record["pid"] = os.getpid()
        try:
            os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
        except OSError:
            pass  # an audit that cannot be written must not take the emulator down; the count shows it

    def started(self, url: str) -> None:
        self._write({"event": "start", "url": url})

    def token(self, token: str) -> None:
        self._write({"event": "token", "sha256": token_digest(token)})

    def request(self, method: str, path: str, status: int | None, user_agent: str) -> None:
        self._write({"event": "request", "method": method, "path": path, "status": status, "ua": user_agent})

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
