"""Fixtures of the notifier tests: a live local receiver, a real store, an incident event."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from crmctl.clock import FrozenClock
from crmctl.config import Config
from crmctl.incidents import IncidentDesk
from crmctl.store import Store
from tests.incidents.conftest import Collector
from tests.incidents.world import T0, build_config
from tests.notify.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def env(receiver: Receiver) -> dict[str, str]:
    return {"TEAMS_WEBHOOK": receiver.url, "OPS_WEBHOOK": receiver.url.replace("/workflows/", "/generic/")}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return build_config(tmp_path, teams="TEAMS_WEBHOOK", webhook="OPS_WEBHOOK")


@pytest.fixture
async def store(config: Config, clock: FrozenClock) -> AsyncIterator[Store]:
    s = await Store.open(config.state, clock=clock)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def events(config: Config, store: Store, clock: FrozenClock):  # noqa: ANN201
    """A factory of real incident events: raised through a desk on the real store."""
    from tests.incidents.world import ALICE

    sink = Collector()
    desk = IncidentDesk(config, store, actor=ALICE, clock=clock, sink=sink)

    async def make(title: str = "ERP sync failing", **details: object):  # noqa: ANN202
        await desk.raise_incident(title, **details)  # type: ignore[arg-type]
        return sink.events[-1]

    return make
