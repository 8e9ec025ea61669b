"""Demo-world fixtures: one full-size world per session, small worlds for everything else.

Generating the full world costs a few seconds, so it is built once; tests that only need
the shape of the data use scale 0.05 (about 5,300 source rows).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from crmctl.demo_world import GroundTruth, generate

SMALL = 0.05


@dataclass(frozen=True)
class World:
    path: Path
    truth: GroundTruth
    seconds: float

    @property
    def source(self) -> Path:
        return self.path / "source.db"

    @property
    def dataverse(self) -> Path:
        return self.path / "dataverse.db"

    def connect(self) -> sqlite3.Connection:
        """dataverse.db opened read-only with source.db attached as `src`."""
        conn = sqlite3.connect(f"file:{self.dataverse}?mode=ro", uri=True)
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{self.source}?mode=ro",))
        return conn


def _build(folder: Path, **kwargs: object) -> World:
    started = time.perf_counter()
    truth = generate(folder, **kwargs)  # type: ignore[arg-type]
    return World(folder, truth, time.perf_counter() - started)


@pytest.fixture(scope="session")
def full_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The default world (seed 20261128, scale 1.0), generated once per session."""
    return _build(tmp_path_factory.mktemp("demo_full"))


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return _build(tmp_path_factory.mktemp("demo_small"), scale=SMALL)


@pytest.fixture(scope="session", params=["small", "full"])
def any_world(request: pytest.FixtureRequest) -> World:
    """Both worlds, so truth-vs-data tests cover the tiny scale and the real one."""
    return request.getfixturevalue(f"{request.param}_world")


def db_fingerprint(path: Path) -> dict[str, str]:
    """SHA-256 of every table's rows in primary-key order: equal iff the data is equal."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        out = {}
        for table in tables:
            digest = hashlib.sha256()
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
            out[table] = digest.hexdigest()
        return out
    finally:
        conn.close()


@pytest.fixture(scope="session")
def fingerprint():
    """`db_fingerprint` as a fixture (test modules do not import conftest)."""
    return db_fingerprint
