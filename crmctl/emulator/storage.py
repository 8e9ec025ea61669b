"""The emulator's SQLite store: entity definitions, one table per entity, and count snapshots."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Mapping

ATTRIBUTE_TYPES = frozenset({"guid", "string", "int", "decimal", "datetime", "bool", "lookup"})
"""The column types the emulator knows; enough for counts, keys, lookups and watermarks."""

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_ISO_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

VERSION_COLUMN = "__version"
"""Hidden per-row version: served as `@odata.etag` W/"n"; bumped when drift modifies a row."""

_SQL_TYPE = {
    "guid": "TEXT COLLATE NOCASE",
    "string": "TEXT COLLATE NOCASE",
    "int": "INTEGER",
    "decimal": "REAL",
    "datetime": "TEXT",
    "bool": "INTEGER",
    "lookup": "TEXT COLLATE NOCASE",
}
# Strings compare case-insensitively because Dataverse (SQL Server, CI collation) does, so
# `name eq 'contoso'` finds 'Contoso' and orderings match what the real service returns.


@dataclass(frozen=True)
class Attribute:
    """One column of an emulated table.

    A lookup's `name` is its logical name (`primarycontactid`); the Web API only knows it as
    `_primarycontactid_value`, which is what it is stored and served under.
    """

    name: str
    type: str
    target: str | None = None

    @property
    def column(self) -> str:
        """The Web API property name, which is also the SQLite column name."""
        return f"_{self.name}_value" if self.type == "lookup" else self.name


@dataclass(frozen=True)
class EntityDef:
    """One Dataverse table as the emulator serves it."""

    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None
    attributes: tuple[Attribute, ...]

    @property
    def table(self) -> str:
        """The SQLite table holding this entity's rows."""
        return f"e_{self.logical_name}"

    def attribute(self, web_name: str) -> Attribute | None:
        """Finds an attribute by its Web API property name (case sensitive, like Dataverse)."""
        for attr in self.attributes:
            if attr.column == web_name:
                return attr
        return None

    def columns(self) -> list[str]:
        """Web API property names in definition order."""
        return [a.column for a in self.attributes]

    def to_json(self) -> dict[str, Any]:
        return {
            "logical_name": self.logical_name,
            "entity_set": self.entity_set,
            "primary_id": self.primary_id,
            "primary_name": self.primary_name,
            "attributes": [[a.name, a.type, a.target] for a in self.attributes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntityDef:
        return cls(
            logical_name=data["logical_name"],
            entity_set=data["entity_set"],
            primary_id=data["primary_id"],
            primary_name=data.get("primary_name"),
            attributes=tuple(Attribute(n, t, tg) for n, t, tg in data["attributes"]),
        )


def _validate(entity: EntityDef) -> None:
    """Refuses definitions the server could not serve, with a message naming the fault."""
    where = f"entity {entity.logical_name!r}"
    for name in (entity.logical_name, entity.entity_set, entity.primary_id):
        if not _NAME_RE.match(name):
            raise ValueError(f"{where}: {name!r} is not a valid name (lower case, digits, _)")
    seen: set[str] = set()
    for attr in entity.attributes:
        if attr.type not in ATTRIBUTE_TYPES:
            raise ValueError(
                f"{where}: attribute {attr.name!r} has unknown type {attr.type!r}; "
                f"expected one of {sorted(ATTRIBUTE_TYPES)}"
            )
        if not _NAME_RE.match(attr.name):
            raise ValueError(f"{where}: attribute name {attr.name!r} is not valid")
        if attr.column in seen:
            raise ValueError(f"{where}: attribute {attr.column!r} is defined twice")
        seen.add(attr.column)
    pk = entity.attribute(entity.primary_id)
    if pk is None or pk.type != "guid":
        raise ValueError(f"{where}: primary id {entity.primary_id!r} must be a guid attribute")
    if entity.primary_name is not None and entity.attribute(entity.primary_name) is None:
        raise ValueError(f"{where}: primary name {entity.primary_name!r} is not an attribute")


def format_datetime(value: datetime) -> str:
    """Formats a datetime the way Dataverse returns it: UTC, second precision, trailing Z."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise_datetime(value: Any) -> str | None:
    """Accepts aware/naive datetimes, dates and ISO strings; returns the stored text form."""
    if value is None:
        return None
    if isinstance(value, str):
        if _ISO_Z_RE.match(value):
            return value
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        return format_datetime(datetime.fromisoformat(text))
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    raise TypeError(f"expected a datetime or ISO string, got {type(value).__name__}")


def _guid(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    text = str(value).strip().strip("{}").lower()
    if len(text) != 36:
        text = str(uuid.UUID(text))
    return text


def _bool(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _decimal(value: Any) -> float | None:
    return None if value is None else float(value)


def _string(value: Any) -> str | None:
    return None if value is None else str(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "guid": _guid,
    "lookup": _guid,
    "string": _string,
    "int": _int,
    "decimal": _decimal,
    "datetime": normalise_datetime,
    "bool": _bool,
}


def _asyncoperation() -> EntityDef:
    a = Attribute
    return EntityDef(
        logical_name="asyncoperation",
        entity_set="asyncoperations",
        primary_id="asyncoperationid",
        primary_name="name",
        attributes=(
            a("asyncoperationid", "guid"),
            a("name", "string"),
            a("operationtype", "int"),
            a("messagename", "string"),
            a("primaryentitytype", "string"),
            a("regardingobjectid", "lookup"),
            a("owningextensionid", "lookup", "sdkmessageprocessingstep"),
            a("workflowactivationid", "lookup", "workflow"),
            a("statecode", "int"),
            a("statuscode", "int"),
            a("errorcode", "int"),
            a("message", "string"),
            a("friendlymessage", "string"),
            a("retrycount", "int"),
            a("depth", "int"),
            a("executiontimespan", "decimal"),
            a("createdon", "datetime"),
            a("startedon", "datetime"),
            a("completedon", "datetime"),
            a("modifiedon", "datetime"),
            a("postponeuntil", "datetime"),
            a("iswaitingforevent", "bool"),
            a("workflowstagename", "string"),
            a("correlationid", "guid"),
            a("requestid", "guid"),
            a("dependencytoken", "string"),
            a("sequence", "int"),
            a("recurrencepattern", "string"),
        ),
    )


def _plugintracelog() -> EntityDef:
    a = Attribute
    return EntityDef(
        logical_name="plugintracelog",
        entity_set="plugintracelogs",
        primary_id="plugintracelogid",
        primary_name="typename",
        attributes=(
            a("plugintracelogid", "guid"),
            a("typename", "string"),
            a("messagename", "string"),
            a("primaryentity", "string"),
            a("mode", "int"),
            a("operationtype", "int"),
            a("depth", "int"),
            a("exceptiondetails", "string"),
            a("messageblock", "string"),
            a("performanceexecutionduration", "int"),
            a("performanceexecutionstarttime", "datetime"),
            a("performanceconstructorduration", "int"),
            a("correlationid", "guid"),
            a("requestid", "guid"),
            a("pluginstepid", "guid"),
            a("persistencekey", "guid"),
            a("issystemcreated", "bool"),
            a("createdon", "datetime"),
        ),
    )


BUILTIN_ENTITIES: tuple[EntityDef, ...] = (_asyncoperation(), _plugintracelog())
"""System tables every environment has and crmctl's integration checks read (dataverse.md §8)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _entities (
    logical_name TEXT PRIMARY KEY,
    entity_set   TEXT NOT NULL UNIQUE,
    definition   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _count_snapshots (
    logical_name TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    taken_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def quote(name: str) -> str:
    """Quotes an SQL identifier; names are validated first, so this is belt and braces."""
    return '"' + name.replace('"', '""') + '"'


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Opens the emulator database with the pragmas every user of it wants."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False, timeout=30
        )
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    # Reads through the OS page cache, shared by every connection, instead of each worker
    # thread's connection copying the same pages into a cache of its own: a sweep's emulator
    # CPU fell by about a fifth (bench/sweep.py).
    conn.execute("PRAGMA mmap_size=1073741824")
    return conn


def load_entities(conn: sqlite3.Connection) -> list[EntityDef]:
    """Reads every entity definition stored in the file."""
    rows = conn.execute("SELECT definition FROM _entities ORDER BY logical_name").fetchall()
    return [EntityDef.from_json(json.loads(r[0])) for r in rows]


def load_snapshots(conn: sqlite3.Connection) -> dict[str, tuple[int, str]]:
    """Reads the stale RetrieveTotalRecordCount snapshots: logical name -> (count, taken_at)."""
    rows = conn.execute("SELECT logical_name, count, taken_at FROM _count_snapshots").fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def next_versions(conn: sqlite3.Connection, n: int) -> int:
    """Reserves `n` row versions and returns the first; callers hold the write transaction."""
    row = conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()
    first = int(row[0]) + 1 if row else 1
    conn.execute(
        "INSERT INTO _meta(key, value) VALUES('version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (str(first + n - 1),),
    )
    return first


class EmulatorData:
    """Writes the emulator's SQLite file: used by generators, tests and the drift injector.

    Plain sqlite3 (not aiosqlite) because it is driven from synchronous generator code and
    bulk inserts are fastest in one `executemany` transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.path)
        with self._conn:
            self._conn.executescript(_SCHEMA)
        self._defs: dict[str, EntityDef] = {e.logical_name: e for e in load_entities(self._conn)}
        for builtin in BUILTIN_ENTITIES:
            if builtin.logical_name not in self._defs:
                self.define_entity(builtin)

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for callers that need ad-hoc SQL (tests, drift)."""
        return self._conn

    def define_entity(self, entity: EntityDef) -> None:
        """Creates (or extends with new attributes) the table for `entity`.

        Redefining an existing entity may add attributes but not change existing ones, so a
        generator can widen the built-in asyncoperation table without losing rows.
        """
        _validate(entity)
        old = self._defs.get(entity.logical_name)
        table = quote(entity.table)
        with self._conn:
            if old is None:
                clash = self._conn.execute(
                    "SELECT logical_name FROM _entities WHERE entity_set=?", (entity.entity_set,)
                ).fetchone()
                if clash:
                    raise ValueError(
                        f"entity set {entity.entity_set!r} is already used by {clash[0]!r}"
                    )
                cols = [f"{quote(entity.primary_id)} TEXT COLLATE NOCASE PRIMARY KEY NOT NULL"]
                cols += [
                    f"{quote(a.column)} {_SQL_TYPE[a.type]}"
                    for a in entity.attributes
                    if a.column != entity.primary_id
                ]
                cols.append(f"{quote(VERSION_COLUMN)} INTEGER NOT NULL DEFAULT 0")
                self._conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})")
                merged = entity
            else:
                if old.entity_set != entity.entity_set or old.primary_id != entity.primary_id:
                    raise ValueError(
                        f"entity {entity.logical_name!r} is already defined with entity set "
                        f"{old.entity_set!r} and primary id {old.primary_id!r}"
                    )
                added = []
                for attr in entity.attributes:
                    prev = old.attribute(attr.column)
                    if prev is None:
                        self._conn.execute(
                            f"ALTER TABLE {table} ADD COLUMN {quote(attr.column)} "
                            f"{_SQL_TYPE[attr.type]}"
                        )
                        added.append(attr)
                    elif prev.type != attr.type:
                        raise ValueError(
                            f"entity {entity.logical_name!r}: attribute {attr.name!r} is already "
                            f"{prev.type}, cannot redefine it as {attr.type}"
                        )
                merged = EntityDef(
                    logical_name=old.logical_name,
                    entity_set=old.entity_set,
                    primary_id=old.primary_id,
                    primary_name=entity.primary_name or old.primary_name,
                    attributes=old.attributes + tuple(added),
                )
            for attr in merged.attributes:
                if attr.type == "lookup":
                    index = quote(f"ix_{entity.logical_name}_{attr.column}")
                    self._conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({quote(attr.column)})"
                    )
            self._conn.execute(
                "INSERT INTO _entities(logical_name, entity_set, definition) VALUES(?,?,?) "
                "ON CONFLICT(logical_name) DO UPDATE SET definition=excluded.definition",
                (merged.logical_name, merged.entity_set, json.dumps(merged.to_json())),
            )
        self._defs[merged.logical_name] = merged

    def entity(self, logical_name: str) -> EntityDef:
        """The definition of one entity, or KeyError naming the known ones."""
        try:
            return self._defs[logical_name]
        except KeyError:
            raise KeyError(
                f"entity {logical_name!r} is not defined; known: {sorted(self._defs)}"
            ) from None

    def entities(self) -> list[EntityDef]:
        """Every defined entity, built-ins included, sorted by logical name."""
        return [self._defs[k] for k in sorted(self._defs)]

    def insert_rows(self, logical_name: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Bulk-inserts rows in one transaction and returns how many were written.

        Keys are attribute names; a lookup may be given as `primarycontactid` or
        `_primarycontactid_value`. A missing primary id gets a fresh uuid4.
        """
        entity = self.entity(logical_name)
        attrs = list(entity.attributes)
        cols = [a.column for a in attrs]
        converters = [_CONVERT[a.type] for a in attrs]
        aliases: dict[str, int] = {}
        for i, a in enumerate(attrs):
            aliases[a.column] = i
            aliases[a.name] = i
        pk_index = cols.index(entity.primary_id)
        n_cols = len(cols)
        counter = itertools.count()

        def tuples(first_version: int) -> Iterator[tuple[Any, ...]]:
            for row in rows:
                values: list[Any] = [None] * (n_cols + 1)
                for key, value in row.items():
                    idx = aliases.get(key)
                    if idx is None:
                        raise ValueError(
                            f"{logical_name}: unknown attribute {key!r}; known: {cols}"
                        )
                    try:
                        values[idx] = converters[idx](value)
                    except (TypeError, ValueError) as exc:
                        raise ValueError(
                            f"{logical_name}.{key}: cannot store {value!r} as "
                            f"{attrs[idx].type}: {exc}"
                        ) from None
                if values[pk_index] is None:
                    values[pk_index] = str(uuid.uuid4())
                values[n_cols] = first_version + next(counter)
                yield tuple(values)

        placeholders = ", ".join("?" * (n_cols + 1))
        col_sql = ", ".join(quote(c) for c in [*cols, VERSION_COLUMN])
        sql = f"INSERT INTO {quote(entity.table)} ({col_sql}) VALUES ({placeholders})"
        with self._conn:
            # Versions are reserved after the insert, once the row count is known.
            base_row = self._conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()
            first = int(base_row[0]) + 1 if base_row else 1
            self._conn.executemany(sql, tuples(first))
            written = next(counter)
            if written:
                self._conn.execute(
                    "INSERT INTO _meta(key, value) VALUES('version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(first + written - 1),),
                )
        return written

    def set_count_snapshot(self, logical_name: str, count: int, taken_at: datetime) -> None:
        """Records what RetrieveTotalRecordCount answers: a deliberately stale figure."""
        self.entity(logical_name)
        with self._conn:
            self._conn.execute(
                "INSERT INTO _count_snapshots(logical_name, count, taken_at) VALUES(?,?,?) "
                "ON CONFLICT(logical_name) DO UPDATE SET count=excluded.count, "
                "taken_at=excluded.taken_at",
                (logical_name, int(count), format_datetime(taken_at)),
            )

    def count(self, logical_name: str) -> int:
        """The true row count of one entity (what the stale snapshot is compared against)."""
        entity = self.entity(logical_name)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM {quote(entity.table)}").fetchone()[0])

    def close(self) -> None:
        """Closes the connection; safe to call twice."""
        try:
            self._conn.close()
        except sqlite3.ProgrammingError:
            pass

    def __enter__(self) -> EmulatorData:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "ATTRIBUTE_TYPES",
    "Attribute",
    "BUILTIN_ENTITIES",
    "EntityDef",
    "EmulatorData",
    "format_datetime",
    "normalise_datetime",
]
