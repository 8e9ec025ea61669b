"""verify(): any single changed byte, any deleted entry, and (with an anchor) truncation."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crmctl.clock import FrozenClock
from crmctl.identity import Actor
from crmctl.journal import ChainVerifier
from crmctl.store import Store, VerifyReport, verify_file

N = 10


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A journal of N varied entries, built once and copied per test."""
    path = tmp_path_factory.mktemp("template") / "state.db"

    async def build() -> None:
        clock = FrozenClock(datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc))
        async with await Store.open(path, clock=clock) as store:
            for i in range(1, N + 1):
                clock.advance(timedelta(seconds=37 * i))
                await store.append(
                    f"kind.{i % 3}",
                    {"i": i, "text": f"étape {i} ✓", "nested": {"list": [i, i * 1.5, None, True]}},
                    actor=Actor(operator=f"operator{i % 2}", host=f"ssh:10.0.0.{i}"),
                )

    asyncio.run(build())
    return path


@pytest.fixture
def db(template, tmp_path) -> Path:
    path = tmp_path / "state.db"
    shutil.copy(template, path)
    return path


def tamper(path: Path, sql: str, params: tuple = ()) -> None:
    """Edits the file as an attacker with write access would: triggers and indexes dropped."""
    conn = sqlite3.connect(path)
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('trigger', 'index') AND tbl_name = 'journal'"
        " AND sql IS NOT NULL"
    ).fetchall():
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        conn.execute(f"DROP {kind} {name}")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def flip(text: str, pos: int) -> str:
    """Changes exactly one character (one ASCII byte) of `text`."""
    pos = pos % len(text)
    ch = text[pos]
    new = chr(ord(ch) ^ 1) if ord(ch) < 128 else "x"
    return text[:pos] + new + text[pos + 1 :]


async def both(path: Path, **kw) -> VerifyReport:
    """verify_file and Store.verify must agree on every file."""
    sync = verify_file(path, **kw)
    async with await Store.open(path, readonly=True) as store:
        asynchronous = await store.verify(**kw)
    assert sync == asynchronous
    return sync


async def test_untouched_journal_verifies(db):
    report = await both(db)
    assert report.ok and report.entries == N and report.first_bad_seq is None
    assert report.head_seq == N and len(report.head_hash) == 64


@pytest.mark.parametrize("seq", [1, 4, N])
@pytest.mark.parametrize(
    "column,positions",
    [
        ("ts", (0, 12, -2)),
        ("operator", (0, -1)),
        ("host", (4, -1)),
        ("kind", (0, -1)),
        ("payload", (0, 2, 6, 20, -5, -1)),
        ("prev_hash", (0, 31, -1)),
        ("hash", (0, 31, -1)),
    ],
)
async def test_one_changed_byte_anywhere_is_detected(db, tmp_path, seq, column, positions):
    conn = sqlite3.connect(db)
    original = conn.execute(f"SELECT {column} FROM journal WHERE seq = ?", (seq,)).fetchone()[0]
    conn.close()
    for pos in positions:
        copy = tmp_path / f"t{pos}.db"
        shutil.copy(db, copy)
        tamper(copy, f"UPDATE journal SET {column} = ? WHERE seq = ?", (flip(original, pos), seq))
        report = await both(copy)
        assert not report.ok, (column, seq, pos)
        assert report.first_bad_seq == seq, report.reason
        assert report.reason.startswith(f"entry {seq}: "), report.reason
        assert report.entries == seq - 1
        if column == "hash" and seq < N:
            assert "stored hash altered" in report.reason
        elif column == "prev_hash":
            assert "prev_hash" in report.reason
        elif column != "hash":
            assert "altered" in report.reason or "genesis" in report.reason


async def test_reasons_are_specific(db, tmp_path):
    def case(name: str, sql: str, params: tuple = ()) -> Path:
        copy = tmp_path / name
        shutil.copy(db, copy)
        tamper(copy, sql, params)
        return copy

    r = await both(
        case(
            "payload.db",
            "UPDATE journal SET payload = replace(payload, 'étape', 'etape') WHERE seq = 5",
        )
    )
    assert r.reason == "entry 5: hash mismatch (content altered)"
    r = await both(
        case("form.db", "UPDATE journal SET payload = replace(payload, ':', ': ') WHERE seq = 5")
    )
    assert r.reason == "entry 5: payload is not in canonical form (content altered)"
    r = await both(case("json.db", "UPDATE journal SET payload = substr(payload, 2) WHERE seq = 5"))
    assert r.reason == "entry 5: payload is not valid JSON (content altered)"
    r = await both(
        case(
            "link.db",
            "UPDATE journal SET prev_hash = (SELECT hash FROM journal WHERE seq = 2) WHERE seq = 5",
        )
    )
    assert r.reason == "entry 5: prev_hash does not match entry 4"
    r = await both(
        case("utf8.db", "UPDATE journal SET operator = CAST(x'ff' AS TEXT) WHERE seq = 5")
    )
    assert r.reason == "entry 5: operator is not valid UTF-8 (content altered)"
    r = await both(case("last.db", f"UPDATE journal SET hash = upper(hash) WHERE seq = {N}"))
    assert r.reason == f"entry {N}: hash mismatch (content or stored hash altered)"
    assert r.head_seq == N - 1


@pytest.mark.parametrize(
    "deleted,reason",
    [
        ((5,), "entry 5 missing (deleted)"),
        ((5, 6, 7), "entries 5..7 missing (deleted)"),
        ((1,), "entry 1 missing (deleted)"),
        ((2,), "entry 2 missing (deleted)"),
    ],
)
async def test_deleted_entries_are_detected(db, deleted, reason):
    tamper(db, f"DELETE FROM journal WHERE seq IN ({','.join(map(str, deleted))})")
    report = await both(db)
    assert not report.ok
    assert report.first_bad_seq == deleted[0]
    assert report.reason == reason


async def test_truncation_needs_an_anchor(db):
    """Dropping the newest entries leaves a valid shorter chain: only an anchor recorded outside
    the file (the evidence manifest's head hash) can tell."""
    head = verify_file(db)
    anchor = (head.head_seq, head.head_hash)
    tamper(db, f"DELETE FROM journal WHERE seq >= {N - 1}")
    plain = await both(db)
    assert plain.ok and plain.entries == N - 2  # not detectable by the chain alone
    anchored = await both(db, anchor=anchor)
    assert not anchored.ok
    assert anchored.first_bad_seq == N - 1
    assert anchored.reason.startswith(f"entries {N - 1}..{N} missing (truncated)")


async def test_anchor_detects_a_rewritten_tail(db):
    head = verify_file(db)
    tamper(db, f"DELETE FROM journal WHERE seq = {N}")
    async with await Store.open(db) as store:  # re-append a different entry at seq N
        await store.append("forged", {}, actor=Actor("mallory", "x"))
    assert (await both(db)).ok
    report = await both(db, anchor=(head.head_seq, head.head_hash))
    assert not report.ok and report.first_bad_seq == N
    assert "differs from the anchor" in report.reason
    ok = await both(db, anchor=(3, _hash_at(db, 3)))
    assert ok.ok and "anchor entry 3 matches" in ok.reason


def _hash_at(path: Path, seq: int) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT hash FROM journal WHERE seq = ?", (seq,)).fetchone()[0]
    finally:
        conn.close()


async def test_a_flipped_byte_in_the_file_itself_is_detected(db):
    """Below SQLite: one byte of the database file changed with a hex editor."""
    data = bytearray(db.read_bytes())
    marker = "étape 7 ✓".encode()
    at = data.find(marker)
    assert at > 0 and data.find(marker, at + 1) == -1
    data[at + 1] ^= 0x01
    db.write_bytes(bytes(data))
    report = await both(db)
    assert not report.ok and report.first_bad_seq == 7


async def test_verify_file_on_a_read_only_copy_writes_nothing(db, tmp_path):
    folder = tmp_path / "evidence"
    folder.mkdir()
    copy = folder / "state.db"
    shutil.copy(db, copy)
    before = copy.read_bytes()
    copy.chmod(0o400)
    folder.chmod(0o500)
    try:
        report = verify_file(copy)
        assert report.ok and report.entries == N
        async with await Store.open(copy, readonly=True) as store:
            assert await store.last_seq() == N
    finally:
        folder.chmod(0o700)
        copy.chmod(0o600)
    assert copy.read_bytes() == before
    if os.geteuid() != 0:  # root ignores the folder's mode, and SQLite may add -shm there
        assert os.listdir(folder) == ["state.db"]


def test_verify_file_on_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        verify_file(tmp_path / "nope.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    report = verify_file(other)
    assert not report.ok and "no journal table" in report.reason


def test_chain_verifier_handles_chunk_boundaries():
    """A hash mismatch on the last row of one chunk is resolved with the first row of the next."""
    from crmctl.journal import GENESIS_HASH, canonical_entry, entry_hash

    rows, prev = [], GENESIS_HASH
    for seq in range(1, 5):
        digest = entry_hash(prev, canonical_entry(seq, "t", "o", "h", "k", {}))
        rows.append([seq, b"t", b"o", b"h", b"k", b"{}", prev.encode(), digest.encode()])
        prev = digest
    rows[1][7] = b"f" * 64  # stored hash of entry 2 altered; entry 3 still links to the real one
    nulled = ChainVerifier()
    nulled.feed([rows[0], [2, b"t", b"o", None, b"k", b"{}", rows[1][6], rows[1][7]]])
    assert nulled.finish().reason == "entry 2: host is NULL (content altered)"
    verifier = ChainVerifier()
    assert verifier.feed(rows[:2])
    assert not verifier.feed(rows[2:])
    report = verifier.finish()
    assert report.first_bad_seq == 2 and "stored hash altered" in report.reason
