"""Data drift during a rehearsal: rows deleted, inserted and modified on a schedule, repeatably."""

from __future__ import annotations

import random
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmctl.emulator.scenario import Fault
from crmctl.emulator.storage import (
    VERSION_COLUMN,
    EntityDef,
    format_datetime,
    next_versions,
    normalise_datetime,
    quote,
)

_TIMESTAMP_COLUMNS = ("modifiedon",)
_CREATED_COLUMNS = ("createdon", "overriddencreatedon")


@dataclass(frozen=True)
class DriftEvent:
    """One application of a drift fault: which keys were deleted, inserted and modified."""

    at: datetime
    entity: str
    fault_index: int
    round: int
    deleted: tuple[str, ...] = ()
    inserted: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": format_datetime(self.at),
            "entity": self.entity,
            "fault": self.fault_index,
            "round": self.round,
            "deleted": list(self.deleted),
            "inserted": list(self.inserted),
            "modified": list(self.modified),
        }


def _pick(conn: sqlite3.Connection, entity: EntityDef, rng: random.Random, n: int) -> list[str]:
    """Picks up to `n` distinct existing keys via random rowid probes (no full scans)."""
    table = quote(entity.table)
    lo, hi = conn.execute(f"SELECT MIN(rowid), MAX(rowid) FROM {table}").fetchone()
    if lo is None:
        return []
    total = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    want = min(n, total)
    chosen: list[str] = []
    seen: set[str] = set()
    pk = quote(entity.primary_id)
    attempts = 0
    while len(chosen) < want and attempts < want * 20:
        attempts += 1
        probe = rng.randint(lo, hi)
        row = conn.execute(
            f"SELECT {pk} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1", (probe,)
        ).fetchone()
        if row and row[0] not in seen:
            seen.add(row[0])
            chosen.append(row[0])
    return chosen


def _convert(entity: EntityDef, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        attr = entity.attribute(key) or next((a for a in entity.attributes if a.name == key), None)
        if attr is None:
            raise ValueError(f"drift values: {entity.logical_name} has no attribute {key!r}")
        if attr.type == "datetime":
            value = normalise_datetime(value)
        elif attr.type == "bool":
            value = None if value is None else int(bool(value))
        out[attr.column] = value
    return out


def apply_drift(
    conn: sqlite3.Connection,
    entity: EntityDef,
    fault: Fault,
    seed: int,
    round_no: int,
    now: datetime,
) -> DriftEvent:
    """Applies one round of `fault` inside the caller's transaction and reports what changed.

    The random choices depend only on (seed, fault index, round), so a rehearsal replayed with
    the same scenario drifts the same rows.
    """
    rng = random.Random(f"{seed}:{fault.index}:drift:{round_no}")
    table = quote(entity.table)
    pk = quote(entity.primary_id)
    stamp = format_datetime(now)
    deleted = _pick(conn, entity, rng, fault.delete)
    if deleted:
        conn.executemany(f"DELETE FROM {table} WHERE {pk} = ?", [(k,) for k in deleted])
    modified = _pick(conn, entity, rng, fault.modify)
    if modified:
        first = next_versions(conn, len(modified))
        sets = [f"{quote(VERSION_COLUMN)} = ?"]
        params_tail: list[Any] = []
        for col in _TIMESTAMP_COLUMNS:
            if entity.attribute(col) is not None:
                sets.append(f"{quote(col)} = ?")
                params_tail.append(stamp)
        name = entity.attribute(entity.primary_name) if entity.primary_name else None
        if name is not None and name.type == "string":
            sets.append(f"{quote(name.column)} = COALESCE({quote(name.column)}, '') || ' *'")
        sql = f"UPDATE {table} SET {', '.join(sets)} WHERE {pk} = ?"
        conn.executemany(sql, [(first + i, *params_tail, key) for i, key in enumerate(modified)])
    inserted: list[str] = []
    if fault.insert:
        extra = _convert(entity, dict(fault.values))
        cols = [a.column for a in entity.attributes]
        first = next_versions(conn, fault.insert)
        rows = []
        for i in range(fault.insert):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            inserted.append(key)
            row: dict[str, Any] = {entity.primary_id: key}
            for col in (*_TIMESTAMP_COLUMNS, *_CREATED_COLUMNS):
                if entity.attribute(col) is not None:
                    row[col] = stamp
            if entity.primary_name and entity.attribute(entity.primary_name) is not None:
                row[entity.primary_name] = f"Drift {round_no}.{i + 1}"
            row.update(extra)
            row[entity.primary_id] = key
            rows.append((*[row.get(c) for c in cols], first + i))
        col_sql = ", ".join(quote(c) for c in [*cols, VERSION_COLUMN])
        marks = ", ".join("?" * (len(cols) + 1))
        conn.executemany(f"INSERT INTO {table} ({col_sql}) VALUES ({marks})", rows)
    return DriftEvent(
        at=now,
        entity=entity.logical_name,
        fault_index=fault.index,
        round=round_no,
        deleted=tuple(deleted),
        inserted=tuple(inserted),
        modified=tuple(modified),
    )
