"""One legacy CRM's accounts, served by a real OData v4 server (odatapy) and held in a SQLite file.

The two hold the same rows, so every query intent can be asked of both source kinds and must
get the same answer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.peers.odata_peer import OdataPeer, start_odata_peer

SERVER_PAGE_SIZE = 7
"""The server's own page cap: it serves at most this many rows per page, whatever is asked."""
USER, PASSWORD = "svc_crm", "Legacy-Pa55word!x"
BEARER = "legacy-crm-bearer-token-0123456789abcdef"
CITIES = ["Oslo", "Zürich", None, "Rome", "O'Fallon"]


def make_accounts(n: int = 23) -> list[dict[str, Any]]:
    """`n` accounts with string keys, inserted out of key order, some NULL cities and revenues."""
    rows = []
    for i in range(n):
        j = (i * 7) % n  # a permutation: the server must sort, not replay insertion order
        rows.append({
            "AccountId": f"A{j + 1:03}",
            "Name": f"Account {j + 1}" if j % 6 else f"O'Brien & Sons {j + 1}",
            "City": CITIES[j % len(CITIES)],
            "Revenue": None if j % 4 == 3 else (j + 1) * 1000,
            "ModifiedOn": f"2026-11-{(j % 28) + 1:02}T10:00:00Z",
        })
    return rows


ACCOUNTS = make_accounts()


@pytest.fixture(scope="session")
def odata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OdataPeer]:
    """The service, requiring Basic (user + password) or Bearer credentials, as a real CRM API would."""
    peer = start_odata_peer(tmp_path_factory.mktemp("odata"), ACCOUNTS, page_size=SERVER_PAGE_SIZE,
                            basic=f"{USER}:{PASSWORD}", bearer=BEARER)
    try:
        yield peer
    finally:
        peer.stop()


def with_credentials(root: str, user: str = USER, password: str = PASSWORD) -> str:
    """The service URL with user-info, as `source.url` would read after ${env:…} substitution."""
    scheme, rest = root.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


@pytest.fixture(scope="session")
def sqlite_twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same accounts in SQLite (ISO datetimes compare as text, in the same order)."""
    path = tmp_path_factory.mktemp("sql") / "source.db"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "Accounts" (AccountId TEXT PRIMARY KEY, Name TEXT, City TEXT, '
                   "Revenue INTEGER, ModifiedOn TEXT)")
        db.executemany("INSERT INTO Accounts VALUES (:AccountId, :Name, :City, :Revenue, :ModifiedOn)", ACCOUNTS)
    return path
