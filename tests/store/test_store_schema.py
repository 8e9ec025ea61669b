"""Store: schema versions and migrations, append-only triggers, file permissions."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from crmctl.journal import GENESIS_HASH, canonical_entry, canonical_payload, entry_hash
from crmctl.store import SCHEMA_VERSION, Store, StoreError, verify_file

# The v1 schema exactly as crmctl 0.1 shipped it: frozen here on purpose, so that a later edit
# to MIGRATIONS[0] that would break old files is caught by this test.
V1_SCHEMA = """
CREATE TABLE journal (
    seq       INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    operator  TEXT NOT NULL,
    host      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    payload   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused'); END;
CREATE TRIGGER journal_append_in_order BEFORE INSERT ON journal
WHEN NEW.seq IS NOT (SELECT IFNULL(MAX(seq), 0) + 1 FROM journal)
  OR NEW.prev_hash IS NOT IFNULL((SELECT hash FROM journal ORDER BY seq DESC LIMIT 1),
                                 '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN SELECT RAISE(ABORT, 'journal append must continue the chain'); END;
PRAGMA user_version = 1;
"""


def write_v1_file(path: Path, entries: list[tuple[str, dict]], t0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    prev = GENESIS_HASH
    for seq, (kind, payload) in enumerate(entries, start=1):
        ts = (t0 + timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        digest = entry_hash(prev, canonical_entry(seq, ts, "old", "jump-1", kind, payload))
        conn.execute(
            "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, "old", "jump-1", kind, canonical_payload(payload), prev, digest),
        )
        prev = digest
    conn.commit()
    conn.close()


async def test_a_v1_file_is_migrated_in_place(state_path, actor, t0, make_result):
    results = [
        make_result("account.count", t0 + timedelta(minutes=m), n=m).to_json() for m in range(3)
    ] + [make_result("contact.nulls", t0, n=7).to_json()]
    write_v1_file(
        state_path,
        [
            ("check.result", results[0]),
            ("runbook.tick", {"step": "freeze"}),
            ("check.result", results[1]),
            ("check.result", results[3]),
            ("check.result", results[2]),
        ],
        t0,
    )
    assert verify_file(state_path).ok

    # Read-only opening never migrates, but still answers from the journal.
    ro = await Store.open(state_path, readonly=True)
    try:
        assert ro.schema_version == 1
        latest = await ro.latest_results()
        assert latest["account.count"].values == {"n": 2}
        assert [r.values["n"] for r in await ro.results_history("account.count")] == [0, 1, 2]
    finally:
        await ro.close()
    assert sqlite3.connect(state_path).execute("PRAGMA user_version").fetchone()[0] == 1

    store = await Store.open(state_path)
    try:
        assert store.schema_version == SCHEMA_VERSION == 2
        latest = await store.latest_results()  # from the backfilled projection
        assert {k: v.values for k, v in latest.items()} == {
            "account.count": {"n": 2},
            "contact.nulls": {"n": 7},
        }
        entry = await store.append_result(make_result("account.count", t0, n=3), actor=actor)
        assert entry.seq == 6 and (await store.latest_results())["account.count"].values == {"n": 3}
        assert (await store.verify()).ok
    finally:
        await store.close()
    conn = sqlite3.connect(state_path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"latest_result", "journal_kind", "journal_result_check"} <= names
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_a_failed_migration_changes_nothing(state_path, t0, monkeypatch):
    from crmctl import store as store_module

    write_v1_file(state_path, [("note", {"a": 1})], t0)
    broken = store_module.Migration(2, "broken", ("CREATE TABLE latest_result (x)", "NOT SQL"))
    monkeypatch.setattr(store_module, "MIGRATIONS", (store_module.MIGRATIONS[0], broken))
    with pytest.raises(StoreError):
        await Store.open(state_path)
    conn = sqlite3.connect(state_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "latest_result" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()


async def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.executescript(V1_SCHEMA + "PRAGMA user_version = 99;")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(newer)

    foreign = tmp_path / "source.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE accounts (id)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a crmctl state file"):
        await Store.open(foreign)
    assert {r[0] for r in sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master")} == {
        "accounts"
    }
    with pytest.raises(StoreError, match="not a crmctl state file"):
        await Store.open(foreign, readonly=True)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        await Store.open(garbage)


async def test_triggers_refuse_update_delete_and_out_of_order_insert(store, actor, state_path):
    first = await store.append("a", {"i": 1}, actor=actor)
    await store.append("a", {"i": 2}, actor=actor)
    conn = sqlite3.connect(state_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE journal SET operator = 'mallory' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM journal WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="continue the chain"):
        conn.execute(
            "INSERT INTO journal VALUES (5, 'ts', 'op', 'h', 'k', '{}', ?, 'x')", (first.hash,)
        )
    with pytest.raises(sqlite3.IntegrityError, match="continue the chain"):
        conn.execute(
            "INSERT INTO journal VALUES (3, 'ts', 'op', 'h', 'k', '{}', ?, 'x')", (first.hash,)
        )
    conn.rollback()
    conn.close()
    assert (await store.verify()).ok


async def test_state_file_folder_and_wal_files_are_private(tmp_path, actor):
    path = tmp_path / "new" / "nested" / "state.db"
    old_umask = os.umask(0o022)
    try:
        store = await Store.open(path)
        await store.append("a", {}, actor=actor)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        await store.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # An existing file keeps the mode an administrator gave it (e.g. shared with a group).
    path.chmod(0o660)
    store = await Store.open(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


async def test_snapshot_is_a_private_self_contained_copy(store, actor, tmp_path):
    await store.append_many([("a", {"i": i}) for i in range(5)], actor=actor)
    copy = await store.snapshot(tmp_path / "evidence" / "state-copy.db")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    report = verify_file(copy)
    assert report.ok and report.entries == 5
    assert sorted(os.listdir(copy.parent)) == ["state-copy.db"]  # no -wal / -shm left behind
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert json.loads(conn.execute("SELECT payload FROM journal WHERE seq = 5").fetchone()[0]) == {
        "i": 4
    }
    conn.close()
    with pytest.raises(FileExistsError):
        await store.snapshot(copy)
