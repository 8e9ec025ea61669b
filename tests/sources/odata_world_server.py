"""A real OData v4 service (odatapy, from PyPI) serving every table of a legacy CRM's SQLite file.

Usage: python odata_world_server.py CONFIG.json
  CONFIG: {"readyFile": path, "database": path to source.db, "pageSize": int|null,
           "apply": bool (false: answer $apply with 501, as a service without the aggregation
           extension does), "bearer": "token"|null, "requestLog": path}

Each table becomes an entity set of the same name, keyed by its primary key. Column types come
from the table: INTEGER -> Edm.Int64, REAL -> Edm.Double, TEXT -> Edm.String, except TEXT columns
whose every value is an ISO instant with a zone (the demo's created_at / updated_at), which are
served as Edm.DateTimeOffset, as a CRM's Web API types them. Served with odatapy's reference
in-memory processor and server-driven paging; every request line is logged so the tests can
see what was asked; exits when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from odatapy.data import Entity, ValueType
from odatapy.edm.csdl import (
    CsdlAbstractEdmProvider,
    CsdlEntityContainer,
    CsdlEntitySet,
    CsdlEntityType,
    CsdlProperty,
    CsdlPropertyRef,
    CsdlSchema,
)
from odatapy.server import OData
from odatapy.server.adapters import ODataWSGIApp
from odatapy.server.inmemory import InMemoryDataStore, InMemoryProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "peers" / "odata"))
from server import serve  # noqa: E402 - the peer's serving loop, shared (this runs as a script)

NAMESPACE = "LegacyCrm"
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class Table:
    """One table's shape: name, key column and (column, Edm type, nullable) in table order."""

    def __init__(self, name: str, key: str, columns: list[tuple[str, str, bool]]) -> None:
        self.name, self.key, self.columns = name, key, columns


def read_tables(db: sqlite3.Connection) -> list[Table]:
    tables = []
    names = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    for name in names:
        info = db.execute(f'PRAGMA table_info("{name}")').fetchall()
        key = next((r[1] for r in info if r[5] == 1), None)
        if key is None:
            continue
        columns = []
        for _, column, declared, notnull, _, pk in info:
            declared = (declared or "").upper()
            if "INT" in declared:
                edm = "Edm.Int64"
            elif "REAL" in declared or "FLOA" in declared or "DOUB" in declared:
                edm = "Edm.Double"
            else:
                values = [r[0] for r in db.execute(f'SELECT "{column}" FROM "{name}" WHERE "{column}" IS NOT NULL')]
                typed = bool(values) and all(isinstance(v, str) and _INSTANT.match(v) for v in values)
                edm = "Edm.DateTimeOffset" if typed else "Edm.String"
            columns.append((column, edm, not (notnull or pk)))
        tables.append(Table(name, key, columns))
    return tables


def entity_type_name(table: Table) -> str:
    return "T_" + table.name


class Provider(CsdlAbstractEdmProvider):
    def __init__(self, tables: list[Table]) -> None:
        self.tables = tables

    def get_schemas(self) -> list[CsdlSchema]:
        types = [
            CsdlEntityType(
                name=entity_type_name(t),
                key=[CsdlPropertyRef(name=t.key)],
                properties=[CsdlProperty(name=c, type=e, nullable=n) for c, e, n in t.columns],
            )
            for t in self.tables
        ]
        container = CsdlEntityContainer(
            name="Container",
            entity_sets=[CsdlEntitySet(name=t.name, type=f"{NAMESPACE}.{entity_type_name(t)}") for t in self.tables],
        )
        return [CsdlSchema(namespace=NAMESPACE, entity_types=types, entity_container=container)]


def to_entity(table: Table, row: sqlite3.Row) -> Entity:
    entity = Entity()
    for column, edm, _ in table.columns:
        value = row[column]
        if value is not None and edm == "Edm.DateTimeOffset":
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif value is not None and edm == "Edm.Double":
            value = float(value)
        entity.set_property(column, value, ValueType.PRIMITIVE, edm)
    return entity


class Gate:
    """Logs each request line; refuses requests without the bearer token (when one is set) and,
    for a service configured without the aggregation extension, every `$apply`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], config: dict[str, Any]) -> None:
        self.app = app
        self.bearer = config.get("bearer")
        self.apply = bool(config.get("apply", True))
        self.log = Path(config["requestLog"])
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING") or ""
        line = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}{'?' + query if query else ''}\n"
        with self.lock, self.log.open("a", encoding="utf-8") as fh:
            fh.write(line)
        if self.bearer and environ.get("HTTP_AUTHORIZATION", "") != f"Bearer {self.bearer}":
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'{"error":{"code":"401","message":"Authentication required."}}']
        if not self.apply and ("$apply" in query or "%24apply" in query):
            start_response("501 Not Implemented", [("Content-Type", "application/json")])
            return [b'{"error":{"code":"501","message":"The query option $apply is not supported."}}']
        return self.app(environ, start_response)


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    db = sqlite3.connect(config["database"])
    db.row_factory = sqlite3.Row
    tables = read_tables(db)
    odata = OData.new_instance()
    handler = odata.create_handler(odata.create_service_metadata(Provider(tables)))
    store = InMemoryDataStore()
    for table in tables:
        rows = db.execute(f'SELECT * FROM "{table.name}"').fetchall()
        store.set_entities(table.name, [to_entity(table, r) for r in rows])
    db.close()
    handler.register(InMemoryProcessor(store, page_size=config.get("pageSize")))
    serve(Gate(ODataWSGIApp(handler, mount_path="/odata"), config), Path(config["readyFile"]))


if __name__ == "__main__":
    main(sys.argv[1])
