"""Starts odatapy (tests/sources/odata_world_server.py) serving a demo world's whole source.db on 127.0.0.1.

The data checks then read the very rows the SQLite source holds, over OData, and must reach the
same figures.
"""

from __future__ import annotations

from pathlib import Path

from tests.peers.odata_peer import OdataPeer, launch, require_odatapy

SERVER = Path(__file__).resolve().parent / "odata_world_server.py"


def start_world_service(
    folder: Path,
    database: Path,
    *,
    page_size: int | None = 500,
    apply: bool = True,
    bearer: str | None = None,
    timeout: float = 120.0,
) -> OdataPeer:
    """Starts the service over `database` and waits (generously: the machine may be loaded) until it listens."""
    require_odatapy()
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / "ready.json"
    config = {
        "readyFile": str(ready),
        "database": str(database),
        "pageSize": page_size,
        "apply": apply,
        "bearer": bearer,
        "requestLog": str(folder / "requests.log"),
    }
    return launch(SERVER, folder, config, timeout)
