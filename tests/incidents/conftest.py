"""Fixtures of the incident tests: a real store on a temporary file, a frozen clock, a desk."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from crmctl.clock import FrozenClock
from crmctl.config import Config
from crmctl.incidents import IncidentDesk, IncidentEvent
from crmctl.store import Store
from tests.incidents.world import ALICE, T0, build_config


class Collector:
    """An event sink that remembers what the desk would have announced."""

    def __init__(self) -> None:
        self.events: list[IncidentEvent] = []

    def submit(self, event: IncidentEvent) -> None:
        self.events.append(event)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return build_config(tmp_path)


@pytest.fixture
async def store(config: Config, clock: FrozenClock) -> AsyncIterator[Store]:
    s = await Store.open(config.state, clock=clock)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def sink() -> Collector:
    return Collector()


@pytest.fixture
def desk(config: Config, store: Store, clock: FrozenClock, sink: Collector) -> IncidentDesk:
    return IncidentDesk(config, store, actor=ALICE, clock=clock, sink=sink)
