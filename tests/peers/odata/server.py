"""A real OData v4 service (odatapy, from PyPI) serving a legacy CRM's Accounts, for crmctl's OData source tests.

Usage: python server.py CONFIG.json
  CONFIG: {"readyFile": path, "pageSize": int|null, "accounts": [{AccountId, Name, City, Revenue, ModifiedOn}],
           "basic": "user:password"|null, "bearer": "token"|null, "requestLog": path}
Serves http://127.0.0.1:PORT/odata/ (odatapy's reference in-memory processor with server-driven
paging of `pageSize` rows), writes {"port", "root"} to readyFile once listening, logs every
request line (method and URL) to requestLog so the tests can prove the source only ever GETs,
and exits when stdin closes or on SIGTERM.

The only code here that is not odatapy's is the authentication gate in front of it, because the
reference processor has none: on-premises CRM web APIs sit behind such a gate.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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

NAMESPACE = "LegacyCrm"
PROPERTIES = (
    ("AccountId", "Edm.String", False),
    ("Name", "Edm.String", True),
    ("City", "Edm.String", True),
    ("Revenue", "Edm.Int64", True),
    ("ModifiedOn", "Edm.DateTimeOffset", True),
)


class Provider(CsdlAbstractEdmProvider):
    """The service's model: one entity set, Accounts, keyed by AccountId (a legacy string key)."""

    def get_schemas(self) -> list[CsdlSchema]:
        account = CsdlEntityType(
            name="Account",
            key=[CsdlPropertyRef(name="AccountId")],
            properties=[CsdlProperty(name=n, type=t, nullable=nullable) for n, t, nullable in PROPERTIES],
        )
        container = CsdlEntityContainer(
            name="Container", entity_sets=[CsdlEntitySet(name="Accounts", type=f"{NAMESPACE}.Account")]
        )
        return [CsdlSchema(namespace=NAMESPACE, entity_types=[account], entity_container=container)]


def to_entity(row: dict[str, Any]) -> Entity:
    entity = Entity()
    for name, edm_type, _ in PROPERTIES:
        value = row.get(name)
        if value is not None and edm_type == "Edm.DateTimeOffset":
            value = datetime.fromisoformat(value)
        entity.set_property(name, value, ValueType.PRIMITIVE, edm_type)
    return entity


class Gate:
    """Refuses requests without the configured credential (Basic or Bearer) and logs each request line."""

    def __init__(self, app: Callable[..., Iterable[bytes]], config: dict[str, Any]) -> None:
        self.app = app
        accepted = set()
        if config.get("basic"):
            accepted.add("Basic " + base64.b64encode(config["basic"].encode()).decode())
        if config.get("bearer"):
            accepted.add("Bearer " + config["bearer"])
        self.accepted = accepted
        self.log = Path(config["requestLog"])
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING")
        line = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}{'?' + query if query else ''}\n"
        with self.lock, self.log.open("a", encoding="utf-8") as fh:
            fh.write(line)
        if self.accepted and environ.get("HTTP_AUTHORIZATION", "") not in self.accepted:
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("WWW-Authenticate", 'Basic realm="legacy-crm"')])
            return [b'{"error":{"code":"401","message":"Authentication required."}}']
        return self.app(environ, start_response)


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    odata = OData.new_instance()
    handler = odata.create_handler(odata.create_service_metadata(Provider()))
    store = InMemoryDataStore()
    store.set_entities("Accounts", [to_entity(row) for row in config["accounts"]])
    handler.register(InMemoryProcessor(store, page_size=config.get("pageSize")))
    serve(Gate(ODataWSGIApp(handler, mount_path="/odata"), config), Path(config["readyFile"]))


def serve(app: Callable[..., Iterable[bytes]], ready: Path) -> None:
    """Serves `app` on a free port of 127.0.0.1 until SIGTERM or the end of stdin (the test's
    process closing it); the service root is announced in the `ready` file, written atomically."""
    server = make_server("127.0.0.1", 0, app, server_class=ThreadingServer, handler_class=QuietHandler)
    port = server.server_address[1]
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port, "root": f"http://127.0.0.1:{port}/odata"}))
    tmp.replace(ready)

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=lambda: (sys.stdin.read(), stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
