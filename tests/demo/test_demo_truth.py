"""The ground truth agrees with the databases, checked with SQL independent of the generator.

Each test restates one definition from crmctl/demo/truth.py as a query against the written
files (dataverse.db with source.db attached as `src`), at scale 0.05 and at scale 1.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import timedelta

import pytest

from crmctl.demo.schema import BY_NAME, ENTITIES, INDUSTRY_CODES, STATECODES, STEPNAMES
from crmctl.model import parse_iso

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _keys(conn: sqlite3.Connection, sql: str, *params: object) -> tuple[str, ...]:
    return tuple(sorted(r[0] for r in conn.execute(sql, params)))


@pytest.fixture(scope="module")
def conns(any_world):
    conn = any_world.connect()
    yield any_world.truth, conn
    conn.close()


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_counts(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    assert et.source_count == conn.execute(f"SELECT COUNT(*) FROM src.{entity.source_table}").fetchone()[0]
    assert et.target_count == conn.execute(f"SELECT COUNT(*) FROM e_{entity.name}").fetchone()[0]
    assert et.source_count - et.missing + et.extra == et.target_count


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_missing_extra_unkeyed(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    s, k = entity.source_table, entity.source_key
    t, pid = f"e_{entity.name}", entity.target.primary_id
    assert et.missing_in_target == _keys(
        conn, f"SELECT s.{k} FROM src.{s} s WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE t.new_legacyid = s.{k})")
    assert et.extra_in_target == _keys(
        conn, f"SELECT t.new_legacyid FROM {t} t WHERE t.new_legacyid IS NOT NULL "
              f"AND NOT EXISTS (SELECT 1 FROM src.{s} s WHERE s.{k} = t.new_legacyid)")
    assert et.unkeyed_in_target == _keys(conn, f"SELECT {pid} FROM {t} WHERE new_legacyid IS NULL")
    assert et.missing > 0
    assert list(et.missing_in_target) == sorted(et.missing_in_target)


@pytest.mark.parametrize("entity", [e for e in ENTITIES if e.unique], ids=lambda e: e.name)
def test_duplicates(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    for col in entity.unique:
        scol = entity.source_column(col)
        src_rows = conn.execute(
            f"SELECT {scol}, group_concat({entity.source_key}) FROM src.{entity.source_table} "
            f"WHERE {scol} IS NOT NULL GROUP BY {scol} HAVING COUNT(*) > 1 ORDER BY {scol}").fetchall()
        assert [(g.value, g.keys) for g in et.duplicates["source"][col]] == [
            (v, tuple(sorted(keys.split(",")))) for v, keys in src_rows]
        # The emulator's columns are NOCASE, like Dataverse: grouping there is case-insensitive,
        # and the truth (exact grouping) must agree with it.
        tgt_rows = conn.execute(
            f"SELECT {col}, group_concat(coalesce(new_legacyid, {entity.target.primary_id})) FROM e_{entity.name} "
            f"WHERE {col} IS NOT NULL GROUP BY {col} HAVING COUNT(*) > 1").fetchall()
        assert sorted((v.lower(), tuple(sorted(keys.split(",")))) for v, keys in tgt_rows) == sorted(
            (g.value.lower(), g.keys) for g in et.duplicates["target"][col])
        assert et.duplicates["source"][col], "source duplicates are planted"
        assert len(et.duplicates["target"][col]) >= len(et.duplicates["source"][col])


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_nulls(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    for col in entity.required:
        scol = entity.source_column(col)
        assert et.nulls["source"][col] == _keys(
            conn, f"SELECT {entity.source_key} FROM src.{entity.source_table} WHERE trim(coalesce({scol}, '')) = ''")
        assert et.nulls["target"][col] == _keys(
            conn, f"SELECT coalesce(new_legacyid, {entity.target.primary_id}) FROM e_{entity.name} "
                  f"WHERE trim(coalesce({col}, '')) = ''")


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_orphans(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    for lk in entity.lookups:
        parent = BY_NAME[lk.parent]
        base = (f"FROM src.{entity.source_table} s JOIN e_{entity.name} t ON s.{entity.source_key} = t.new_legacyid "
                f"LEFT JOIN e_{parent.name} p ON p.{parent.target.primary_id} = t.{lk.web_name} ")
        lost = _keys(conn, f"SELECT s.{entity.source_key} {base} WHERE s.{lk.source} IS NOT NULL AND t.{lk.web_name} IS NULL")
        wrong = conn.execute(
            f"SELECT s.{entity.source_key}, s.{lk.source}, p.new_legacyid {base} "
            f"WHERE t.{lk.web_name} IS NOT NULL AND s.{lk.source} IS NOT p.new_legacyid "
            f"ORDER BY s.{entity.source_key}").fetchall()
        got = et.orphans[lk.web_name]
        assert got.lost == lost
        assert [(w.key, w.expected, w.actual) for w in got.wrong] == [tuple(r) for r in wrong]


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_freeze_and_delta(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    s, k = entity.source_table, entity.source_key
    assert et.post_freeze_writes == _keys(conn, f"SELECT {k} FROM src.{s} WHERE updated_at > ?", truth.freeze_at)
    assert et.new_since_watermark == _keys(conn, f"SELECT {k} FROM src.{s} WHERE created_at > ?", truth.watermark)
    join = f"FROM src.{s} s JOIN e_{entity.name} t ON s.{k} = t.new_legacyid WHERE s.updated_at > ?"
    assert et.delta_behind == _keys(conn, f"SELECT s.{k} {join} AND t.modifiedon < s.updated_at", truth.watermark)
    assert et.delta_applied == _keys(conn, f"SELECT s.{k} {join} AND t.modifiedon >= s.updated_at", truth.watermark)
    assert set(et.post_freeze_writes) <= set(et.delta_behind), "nothing written after the freeze reached Dynamics"
    assert len(et.delta_behind) > len(et.post_freeze_writes), "the delta also missed pre-freeze changes"
    assert conn.execute(f"SELECT MAX(updated_at) FROM src.{s}").fetchone()[0] < truth.now


_EXPECT_SQL = {
    # How Dynamics should hold each compared source column, restated in SQL.
    ("account", "industry"): "CASE s.industry " + " ".join(
        f"WHEN '{label}' THEN {code}" for label, code in INDUSTRY_CODES.items()) + " END",
    ("opportunity", "stage"): "CASE s.stage " + " ".join(
        f"WHEN '{a}' THEN '{b}'" for a, b in STEPNAMES.items()) + " END",
    ("opportunity", "status"): "CASE s.status " + " ".join(
        f"WHEN '{a}' THEN {b}" for a, b in STATECODES.items()) + " END",
    ("opportunity", "close_date"): "s.close_date || 'T00:00:00Z'",
}


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_field_mismatches(conns, entity):
    truth, conn = conns
    et = truth.entity(entity.name)
    recorded = defaultdict(set)
    for m in et.field_mismatches:
        recorded[m.source_field].add(m.key)
    for fmap in entity.fields:
        expect = _EXPECT_SQL.get((entity.name, fmap.source), f"s.{fmap.source}")
        if fmap.kind == "number":
            differs = f"round({expect}, 2) IS NOT round(t.{fmap.target}, 2)"
        else:
            differs = f"({expect}) IS NOT t.{fmap.target} COLLATE BINARY"
        found = _keys(conn, f"SELECT s.{entity.source_key} FROM src.{entity.source_table} s "
                            f"JOIN e_{entity.name} t ON s.{entity.source_key} = t.new_legacyid WHERE {differs}")
        assert tuple(sorted(recorded[fmap.source])) == found, fmap.source
    kinds = et.mismatch_kinds()
    planted = {"account": {"whitespace", "case", "rounding"}, "contact": {"whitespace", "case"},
               "opportunity": {"rounding"}}[entity.name]
    assert planted <= set(kinds)


def test_field_mismatch_values_are_the_stored_ones(conns):
    truth, conn = conns
    for entity in ENTITIES:
        for m in truth.entity(entity.name).field_mismatches[:50]:
            src = conn.execute(f"SELECT {m.source_field} FROM src.{entity.source_table} WHERE {entity.source_key}=?",
                               (m.key,)).fetchone()[0]
            tgt = conn.execute(f"SELECT {m.target_field} FROM e_{entity.name} WHERE new_legacyid=?",
                               (m.key,)).fetchone()[0]
            assert (src, tgt) == (m.source, m.target)


def test_created_by_day_and_snapshots(conns):
    truth, conn = conns
    snapshots = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT logical_name, count, taken_at FROM _count_snapshots")}
    for entity in ENTITIES:
        et = truth.entity(entity.name)
        days = dict(conn.execute(f"SELECT substr(createdon, 1, 10), COUNT(*) FROM e_{entity.name} GROUP BY 1"))
        assert et.created_by_day == days
        count, taken_at = snapshots[entity.name]
        assert (count, taken_at) == (et.count_snapshot.count, et.count_snapshot.taken_at)
        assert count != et.target_count, "the snapshot is stale"
        assert parse_iso(taken_at) == truth.now_dt - timedelta(hours=20)


def test_system_jobs(conns):
    truth, conn = conns
    rows = conn.execute(
        "SELECT name, SUM(statuscode = 30), SUM(statuscode = 31), SUM(statecode IN (0, 1)), SUM(retrycount), "
        "COUNT(*) FROM e_asyncoperation GROUP BY name").fetchall()
    assert {r[0] for r in rows} == set(truth.system_jobs)
    for name, ok, failed, waiting, retries, total in rows:
        summary = truth.system_jobs[name]
        assert (summary.succeeded, summary.failed, summary.waiting, summary.retries, summary.total) == (
            ok, failed, waiting, retries, total)
    erp = conn.execute(
        "SELECT SUM(statuscode = 30), SUM(statuscode = 31), SUM(statecode IN (0, 1)), SUM(retrycount > 0) "
        "FROM e_asyncoperation WHERE name LIKE 'ERP Sync%'").fetchone()
    assert erp == (40, 12, 3, truth.integrations["erp-sync"].with_retries)
    assert truth.integrations["erp-sync"].error_rate > 0.02
    assert truth.integrations["marketing-sync"].failed == 0
    failed = conn.execute(
        "SELECT errorcode, message, friendlymessage FROM e_asyncoperation WHERE statuscode = 31").fetchall()
    assert failed and all(code and message and friendly for code, message, friendly in failed)


def test_plugin_traces(conns):
    truth, conn = conns
    since = (truth.now_dt - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = conn.execute(
        "SELECT COUNT(*) FROM e_plugintracelog WHERE exceptiondetails IS NOT NULL AND createdon >= ?",
        (since,)).fetchone()[0]
    assert recent == truth.plugin_traces.exceptions_24h > 0
    total = conn.execute("SELECT COUNT(*) FROM e_plugintracelog WHERE exceptiondetails IS NOT NULL").fetchone()[0]
    assert total == truth.plugin_traces.exceptions > recent


def test_timeline(conns):
    truth, _ = conns
    assert (truth.now, truth.freeze_at, truth.watermark) == (
        "2026-11-28T21:30:00Z", "2026-11-28T18:00:00Z", "2026-11-28T17:45:00Z")
