"""A small Dataverse for baseline tests: accounts to time, and system jobs with known durations."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from crmctl.config import Config
from crmctl.config.sections import (
    IntegrationConfig,
    IntegrationSlo,
    JobsConfig,
    SloConfig,
    SourceConfig,
    TargetConfig,
)
from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.emulator.scenario import parse_scenario
from crmctl.emulator.server import Emulator
from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef

ACCOUNT = EntityDef(
    "account", "accounts", "accountid", "name",
    (Attribute("accountid", "guid"), Attribute("name", "string"), Attribute("statecode", "int")),
)
ACCOUNT_QUERY = "accounts?$select=name&$top=10"


def latency(ms: float, jitter_ms: float, seed: int) -> Any:
    """A scenario adding `ms` ± `jitter_ms` (uniform) to every request, seeded."""
    return parse_scenario({"name": f"latency-{ms}", "seed": seed,
                           "faults": [{"kind": "latency", "ms": ms, "jitter_ms": jitter_ms}]})


@dataclass
class JobsWorld:
    """The system jobs planted, so tests compute every expectation independently."""

    now: datetime
    rows: list[dict[str, Any]] = field(default_factory=list)


def _z(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def plant_jobs(data: EmulatorData, now: datetime) -> JobsWorld:
    """Nightly Import: 8 runs of 60..480 s; ERP Sync: 16 succeeded (4 after a retry), 4 failed;
    one job older than the 24 h window, which no figure may include."""
    rng = random.Random(7)
    world = JobsWorld(now)

    def job(name: str, created: datetime, seconds: int | None, status: int, retries: int = 0,
            errorcode: int | None = None, message: str | None = None) -> None:
        row: dict[str, Any] = {
            "asyncoperationid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "name": name, "operationtype": 1, "createdon": _z(created), "retrycount": retries,
            "statuscode": status, "statecode": 3 if status in (30, 31, 32) else 0,
        }
        if seconds is not None:
            row["startedon"] = _z(created + timedelta(seconds=5))
            row["completedon"] = _z(created + timedelta(seconds=5 + seconds))
        if errorcode is not None:
            row["errorcode"] = errorcode
            row["friendlymessage"] = message
        world.rows.append(row)

    for i in range(8):
        job("Nightly Import", now - timedelta(hours=20 - i), 60 * (i + 1), 30)
    for i in range(16):
        job("ERP Sync - Upsert", now - timedelta(hours=12, minutes=30 * i), 2 + i % 3, 30, retries=1 if i % 4 == 0 else 0)
    for i in range(4):
        job("ERP Sync - Upsert", now - timedelta(hours=3, minutes=10 * i), 9, 31, retries=3,
            errorcode=-2147015902, message="Throttled by service protection limits.")
    job("ERP Sync - Upsert", now - timedelta(minutes=5), None, 0)  # waiting, not completed
    job("Nightly Import", now - timedelta(hours=30), 999, 30)  # outside the window
    data.insert_rows("asyncoperation", world.rows)
    return world


@dataclass
class Dataverse:
    emulator: Emulator
    client: DataverseClient
    limiter: TargetLimiter
    jobs: JobsWorld


@pytest.fixture
def data_path(tmp_path: Path) -> Path:
    return tmp_path / "dataverse.db"


@pytest.fixture
def jobs_world(data_path: Path) -> JobsWorld:
    with EmulatorData(data_path) as data:
        data.define_entity(ACCOUNT)
        data.insert_rows("account", [
            {"accountid": str(uuid.UUID(int=i + 1)), "name": f"Account {i}", "statecode": 0} for i in range(40)
        ])
        return plant_jobs(data, datetime.now(timezone.utc).replace(microsecond=0))


def make_config(tmp_path: Path, *, samples: int = 10, slos: tuple[SloConfig, ...] | None = None) -> Config:
    return Config(
        path=tmp_path / "crmctl.yaml",
        project="Baseline test",
        state=tmp_path / "state.db",
        source=SourceConfig(kind="sql", url=f"sqlite:///{tmp_path}/source.db"),
        target=TargetConfig(kind="emulator"),
        integrations=(IntegrationConfig("erp", jobs=JobsConfig("ERP Sync%"), slo=IntegrationSlo(p95_ms=8000, error_rate=0.5)),),
        slos=slos if slos is not None else (SloConfig("account-view", ACCOUNT_QUERY, p95_ms=500, samples=samples),),
    )


@pytest.fixture
async def dataverse(data_path: Path, jobs_world: JobsWorld) -> AsyncIterator[Dataverse]:
    async with Emulator(data_path) as emu:
        limiter = TargetLimiter(4, 5000, 300.0)
        client = DataverseClient(emu.api_url, StaticTokenProvider(emu.token), limiter, retries=2, backoff_base=0.01)
        try:
            yield Dataverse(emu, client, limiter, jobs_world)
        finally:
            await client.close()
