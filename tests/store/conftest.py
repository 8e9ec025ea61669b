"""Fixtures shared by the store tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crmctl.clock import FrozenClock
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status
from crmctl.store import Store

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def actor() -> Actor:
    return Actor(operator="alice", host="ssh:10.1.2.3")


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
async def store(state_path: Path, clock: FrozenClock):
    s = await Store.open(state_path, clock=clock)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def t0() -> datetime:
    return T0


@pytest.fixture(name="make_result")
def make_result_fixture():
    """A factory for realistic CheckResults (fixture, so test modules need not import conftest)."""
    return make_result


def make_result(
    check_id: str,
    at: datetime,
    status: Status = Status.OK,
    **values: Any,
) -> CheckResult:
    return CheckResult(
        check_id=check_id,
        kind="row_count",
        status=status,
        started=at - timedelta(seconds=2),
        finished=at,
        explanation=f"{check_id} is {status.value}",
        values=values or {"n": 1},
        threshold={"warn": 0, "breach": 0.001},
        requests=2,
        queries=(
            QueryRecord(
                target="dynamics",
                method="GET",
                url="https://example/api/data/v9.2/accounts?$count=true",
                status=200,
                duration_ms=12.5,
            ),
        ),
    )
