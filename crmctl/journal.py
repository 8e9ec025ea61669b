"""The journal's canonical form, its hash chain, and the verifier.

This module is deliberately free of asyncio and aiosqlite: the hash rule must be reproducible by
an auditor with nothing but Python's standard library (see docs/journal.md), and `verify_file`
must run on a copy of a state file taken off the jump host, long after crmctl is gone.

Hash rule::

    canonical = json.dumps({"seq", "ts", "operator", "host", "kind", "payload"},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    hash      = sha256((prev_hash + canonical).encode("utf-8")).hexdigest()

with `prev_hash` of the first entry equal to 64 zeros (GENESIS_HASH).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from crmctl.model import iso

__all__ = [
    "GENESIS_HASH",
    "JournalEntry",
    "VerifyReport",
    "ChainVerifier",
    "canonical_payload",
    "canonical_entry",
    "entry_hash",
    "verify_file",
    "VERIFY_SQL",
]

GENESIS_HASH = "0" * 64
"""The prev_hash of entry 1: there is nothing before it."""

VERIFY_SQL = (
    "SELECT seq, CAST(ts AS BLOB), CAST(operator AS BLOB), CAST(host AS BLOB),"
    " CAST(kind AS BLOB), CAST(payload AS BLOB), CAST(prev_hash AS BLOB), CAST(hash AS BLOB)"
    " FROM journal WHERE seq > ? ORDER BY seq LIMIT ?"
)
"""Reads raw column bytes in seq order, one chunk after `seq`.

Columns are read as BLOBs so that a flipped byte that breaks UTF-8 is reported as an altered
entry instead of crashing the verifier with a UnicodeDecodeError; chunks keep memory flat and
let the async store release its connection between them.
"""

VERIFY_CHUNK = 2000


# --------------------------------------------------------------------------------------------
# canonical form and hashing


def _json_default(obj: Any) -> Any:
    """Lets nested read-only mappings through (they are JSON objects); refuses anything else.

    Silently stringifying a datetime or a Decimal would make the journalled value differ from
    what the caller thinks it wrote, so those are refused and the caller converts explicitly.
    """
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"payload value of type {type(obj).__name__} is not JSON-serialisable")


def canonical_payload(payload: Mapping[str, Any]) -> str:
    """Returns the one JSON text a payload is stored as; raises TypeError if it is not JSON.

    NaN and infinities are refused (they are not JSON, and other tools reading the evidence would
    choke on them); mixed key types are refused by `sort_keys` itself.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping, not {type(payload).__name__}")
    try:
        return json.dumps(
            dict(payload),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_json_default,
        )
    except ValueError as exc:  # NaN / Infinity, circular references
        raise TypeError(f"payload is not JSON-serialisable: {exc}") from exc


def canonical_entry(seq: int, ts: str, operator: str, host: str, kind: str, payload: Any) -> str:
    """The exact text that is hashed for one entry (payload as a parsed JSON value)."""
    return json.dumps(
        {
            "seq": seq,
            "ts": ts,
            "operator": operator,
            "host": host,
            "kind": kind,
            "payload": payload,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def entry_hash(prev_hash: str, canonical: str) -> str:
    """sha256 over the previous entry's hex hash followed by this entry's canonical JSON."""
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# value types


@dataclass(frozen=True)
class JournalEntry:
    """One committed journal entry, as read back from the state file.

    `payload` is the JSON value exactly as stored (a fresh dict per read; do not mutate it to
    "fix" history: the journal is append-only).
    """

    seq: int
    ts: datetime
    operator: str
    host: str
    kind: str
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str

    def canonical(self) -> str:
        """The text this entry's hash covers (given `ts` was written by `model.iso`)."""
        return canonical_entry(
            self.seq, iso(self.ts), self.operator, self.host, self.kind, self.payload
        )

    def to_json(self) -> dict[str, Any]:
        """All eight stored fields, for export (evidence pack, `crmctl log --json`)."""
        return {
            "seq": self.seq,
            "ts": iso(self.ts),
            "operator": self.operator,
            "host": self.host,
            "kind": self.kind,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of recomputing the whole chain.

    `first_bad_seq` and `reason` name the first problem found ("entry 17: hash mismatch (content
    altered)"); verification stops there because everything after it links to a broken entry.
    `head_seq`/`head_hash` are the last entry that verified good: record them outside the state
    file (evidence manifest) and pass them back as `anchor` later to detect truncation.
    """

    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


# --------------------------------------------------------------------------------------------
# verification


_TEXT_COLUMNS = ("ts", "operator", "host", "kind", "payload", "prev_hash", "hash")


class ChainVerifier:
    """Streams journal rows (as produced by VERIFY_SQL) and stops at the first broken entry.

    Shared by the async `Store.verify` and the sync `verify_file`, so both say the same thing
    about the same file. For each entry, in this order: seq continuity (a gap is a deleted
    entry), every column present and valid UTF-8, prev_hash equal to the previous entry's stored
    hash, payload in canonical JSON form, and the recomputed hash equal to the stored one.
    `anchor` is an optional (seq, hash) recorded earlier outside the file (see `finish`).
    """

    def __init__(self, anchor: tuple[int, str] | None = None) -> None:
        self.anchor = anchor
        self.count = 0
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._anchor_hash: str | None = None
        self._bad_seq: int | None = None
        self._reason = ""
        # A hash mismatch is held for one row: if the next entry links to the recomputed hash,
        # it was the stored hash column that was edited, not the content.
        self._pending: tuple[int, str] | None = None

    @property
    def failed(self) -> bool:
        return self._bad_seq is not None

    def feed(self, rows: Iterable[Sequence[Any]]) -> bool:
        """Consumes rows in seq order; returns False once a problem has been found."""
        for row in rows:
            if self.failed:
                break
            self._row(row)
        return not self.failed

    def finish(self) -> VerifyReport:
        """Ends the stream and reports.

        With an anchor, a journal that ends before the anchored seq has lost its newest entries
        (truncation, invisible to the chain alone), and a different hash at the anchored seq
        means the journal was rewritten from that point or before.
        """
        self._resolve_pending(None)
        if not self.failed and self.anchor is not None:
            self._check_anchor(*self.anchor)
        if self.failed:
            return VerifyReport(
                False, self.count, self._bad_seq, self._reason, self._last_seq, self._last_hash
            )
        if self.count == 0:
            reason = "journal is empty"
        else:
            reason = f"{self.count} entries verified; chain intact up to entry {self._last_seq}"
        if self.anchor is not None:
            reason += f"; anchor entry {self.anchor[0]} matches"
        return VerifyReport(True, self.count, None, reason, self._last_seq, self._last_hash)

    # ----------------------------------------------------------------------------------------

    def _fail(self, seq: int, reason: str) -> None:
        self._bad_seq = seq
        self._reason = reason

    def _resolve_pending(self, next_link: str | None) -> None:
        if self._pending is None:
            return
        seq, recomputed = self._pending
        self._pending = None
        if next_link is None:
            self._fail(seq, f"entry {seq}: hash mismatch (content or stored hash altered)")
        elif next_link == recomputed:
            self._fail(
                seq,
                f"entry {seq}: stored hash altered (entry {seq + 1} still links to the hash of"
                " the stored content)",
            )
        else:
            self._fail(seq, f"entry {seq}: hash mismatch (content altered)")

    def _row(self, row: Sequence[Any]) -> None:
        seq = row[0]
        if self._pending is not None:
            link: str | None = ""
            if seq == self._pending[0] + 1 and isinstance(row[6], bytes):
                try:
                    link = row[6].decode("utf-8")
                except UnicodeDecodeError:
                    pass
            self._resolve_pending(link)
            return
        expected = self._last_seq + 1
        if not isinstance(seq, int) or seq < expected:
            self._fail(expected, f"entry {seq!r}: unexpected seq (expected {expected})")
            return
        if seq > expected:
            if seq == expected + 1:
                self._fail(expected, f"entry {expected} missing (deleted)")
            else:
                self._fail(expected, f"entries {expected}..{seq - 1} missing (deleted)")
            return
        values: dict[str, str] = {}
        for name, raw in zip(_TEXT_COLUMNS, row[1:8], strict=True):
            if raw is None:
                self._fail(seq, f"entry {seq}: {name} is NULL (content altered)")
                return
            try:
                values[name] = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                self._fail(seq, f"entry {seq}: {name} is not valid UTF-8 (content altered)")
                return
        if values["prev_hash"] != self._last_hash:
            if seq == 1:
                self._fail(seq, "entry 1: prev_hash is not the genesis hash (64 zeros)")
            else:
                self._fail(seq, f"entry {seq}: prev_hash does not match entry {seq - 1}")
            return
        try:
            payload = json.loads(values["payload"])
        except ValueError:
            self._fail(seq, f"entry {seq}: payload is not valid JSON (content altered)")
            return
        if not isinstance(payload, dict):
            self._fail(seq, f"entry {seq}: payload is not a JSON object (content altered)")
            return
        try:
            stored_form = json.dumps(
                payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
            canonical = canonical_entry(
                seq, values["ts"], values["operator"], values["host"], values["kind"], payload
            )
        except ValueError:  # NaN / Infinity smuggled in as bare tokens
            self._fail(seq, f"entry {seq}: payload is not canonical JSON (content altered)")
            return
        if stored_form != values["payload"]:
            # Same JSON value, different bytes (1e5 -> 1E5, added blanks): still an edit.
            self._fail(seq, f"entry {seq}: payload is not in canonical form (content altered)")
            return
        recomputed = entry_hash(values["prev_hash"], canonical)
        if recomputed != values["hash"]:
            self._pending = (seq, recomputed)
            return
        self.count += 1
        self._last_seq = seq
        self._last_hash = values["hash"]
        if self.anchor is not None and seq == self.anchor[0]:
            self._anchor_hash = values["hash"]

    def _check_anchor(self, seq: int, expected_hash: str) -> None:
        if seq > self._last_seq:
            first = self._last_seq + 1
            missing = f"entry {seq}" if first == seq else f"entries {first}..{seq}"
            self._fail(
                first,
                f"{missing} missing (truncated): the anchor records entry {seq} but the journal"
                f" ends at {self._last_seq}",
            )
        elif seq >= 1 and self._anchor_hash != expected_hash:
            self._fail(
                seq,
                f"entry {seq}: hash differs from the anchor (journal rewritten at or before"
                f" entry {seq})",
            )


def readonly_uri(path: Path, *, immutable: bool) -> str:
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """Opens a state file strictly read-only with the standard library.

    `mode=ro` respects other processes' locks and the -wal file (right for a live file); on a
    read-only copy in a read-only folder SQLite cannot create the -shm file it needs for a WAL
    database and fails, so we fall back to `immutable=1`, which is safe exactly there: nobody
    can be writing to a file in a folder nobody may write to.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no state file at {p}")
    last: Exception | None = None
    for immutable in (False, True):
        conn = sqlite3.connect(readonly_uri(p, immutable=immutable), uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            last = exc
    assert last is not None
    raise last


def verify_file(path: str | Path, *, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Verifies a state file's journal with plain sqlite3, never writing to it.

    Used by `crmctl verify` and the evidence pack; works on any schema version (the journal
    table has not changed since v1) and on read-only copies. `anchor` is an optional (seq, hash)
    recorded earlier (e.g. in an evidence manifest): it turns truncation of the newest entries,
    which the chain alone cannot see, into a failure.
    """
    conn = open_readonly(path)
    try:
        has_journal = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='journal'"
        ).fetchone()
        if not has_journal:
            return VerifyReport(
                False, 0, None, f"{path}: no journal table (not a crmctl state file)"
            )
        verifier = ChainVerifier(anchor)
        after = 0
        while True:
            rows = conn.execute(VERIFY_SQL, (after, VERIFY_CHUNK)).fetchall()
            if not verifier.feed(rows) or len(rows) < VERIFY_CHUNK:
                break
            after = rows[-1][0]
        return verifier.finish()
    finally:
        conn.close()
