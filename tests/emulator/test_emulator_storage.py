"""EmulatorData: schema, bulk insert conversions, built-in tables, snapshots, validation."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef

ACC = EntityDef(
    "account",
    "accounts",
    "accountid",
    "name",
    (
        Attribute("accountid", "guid"),
        Attribute("name", "string"),
        Attribute("primarycontactid", "lookup", "contact"),
        Attribute("createdon", "datetime"),
        Attribute("active", "bool"),
    ),
)


def test_builtins_are_always_defined_with_documented_columns(tmp_path: Path) -> None:
    with EmulatorData(tmp_path / "d.db") as data:
        names = {e.logical_name: e for e in data.entities()}
        assert {"asyncoperation", "plugintracelog"} <= set(names)
        job = names["asyncoperation"]
        assert job.entity_set == "asyncoperations" and job.primary_id == "asyncoperationid"
        cols = set(job.columns())
        assert {
            "statuscode",
            "operationtype",
            "errorcode",
            "message",
            "friendlymessage",
            "_regardingobjectid_value",
            "_owningextensionid_value",
            "completedon",
        } <= cols
        trace = names["plugintracelog"]
        assert trace.primary_name == "typename"
        assert {"exceptiondetails", "messageblock", "performanceexecutionduration"} <= set(
            trace.columns()
        )


def test_insert_converts_lookups_datetimes_guids_and_bools(tmp_path: Path) -> None:
    with EmulatorData(tmp_path / "d.db") as data:
        data.define_entity(ACC)
        n = data.insert_rows(
            "account",
            [
                {
                    "accountid": "{6F9619FF-8B86-D011-B42D-00C04FC964FF}",
                    "name": "A",
                    "primarycontactid": "11111111-1111-4111-8111-111111111111",
                    "createdon": datetime(
                        2024, 5, 1, 12, 0, 0, 999, tzinfo=timezone(timedelta(hours=2))
                    ),
                    "active": True,
                },
                {
                    "name": "B",
                    "_primarycontactid_value": None,
                    "createdon": "2024-05-02T10:00:00+00:00",
                },
            ],
        )
        assert n == 2
        rows = data.connection.execute(
            "SELECT accountid, name, _primarycontactid_value, createdon, active FROM e_account ORDER BY name"
        ).fetchall()
        assert rows[0] == (
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "A",
            "11111111-1111-4111-8111-111111111111",
            "2024-05-01T10:00:00Z",
            1,
        )
        assert rows[1][2] is None and rows[1][3] == "2024-05-02T10:00:00Z"
        assert len(rows[1][0]) == 36  # a missing primary key gets a fresh guid
        assert data.count("account") == 2


def test_indexes_on_primary_key_and_lookups(tmp_path: Path) -> None:
    with EmulatorData(tmp_path / "d.db") as data:
        data.define_entity(ACC)
        plan = data.connection.execute(
            "EXPLAIN QUERY PLAN SELECT accountid FROM e_account WHERE accountid > ? ORDER BY accountid",
            ("a",),
        ).fetchall()
        assert any("INDEX" in str(r) for r in plan)
        idx = [r[1] for r in data.connection.execute("PRAGMA index_list('e_account')")]
        assert any("_primarycontactid_value" in name for name in idx)


def test_unknown_attribute_and_bad_values_are_refused_clearly(tmp_path: Path) -> None:
    with EmulatorData(tmp_path / "d.db") as data:
        data.define_entity(ACC)
        with pytest.raises(ValueError, match="unknown attribute 'nmae'"):
            data.insert_rows("account", [{"nmae": "x"}])
        with pytest.raises(ValueError, match="account.createdon"):
            data.insert_rows("account", [{"createdon": "yesterday"}])
        with pytest.raises(KeyError, match="not defined"):
            data.insert_rows("nope", [])


def test_entity_definitions_are_validated(tmp_path: Path) -> None:
    with EmulatorData(tmp_path / "d.db") as data:
        with pytest.raises(ValueError, match="primary id"):
            data.define_entity(EntityDef("x", "xs", "xid", None, (Attribute("name", "string"),)))
        with pytest.raises(ValueError, match="unknown type"):
            data.define_entity(
                EntityDef(
                    "x", "xs", "xid", None, (Attribute("xid", "guid"), Attribute("n", "money"))
                )
            )
        with pytest.raises(ValueError, match="already used"):
            data.define_entity(
                EntityDef("y", "asyncoperations", "yid", None, (Attribute("yid", "guid"),))
            )


def test_redefining_adds_columns_and_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with EmulatorData(path) as data:
        data.define_entity(ACC)
        data.insert_rows("account", [{"name": "kept"}])
    wider = EntityDef(
        "account",
        "accounts",
        "accountid",
        "name",
        ACC.attributes + (Attribute("revenue", "decimal"),),
    )
    with EmulatorData(path) as data:
        data.define_entity(wider)
        assert "revenue" in data.entity("account").columns()
        assert data.count("account") == 1
        with pytest.raises(ValueError, match="cannot redefine"):
            data.define_entity(
                EntityDef(
                    "account",
                    "accounts",
                    "accountid",
                    "name",
                    (Attribute("accountid", "guid"), Attribute("name", "int")),
                )
            )


def test_count_snapshot_is_stored_and_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with EmulatorData(path) as data:
        data.define_entity(ACC)
        data.set_count_snapshot("account", 99, datetime(2024, 1, 1, tzinfo=timezone.utc))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count, taken_at FROM _count_snapshots").fetchone() == (
        99,
        "2024-01-01T00:00:00Z",
    )
    conn.close()
