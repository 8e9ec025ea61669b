"""Fixtures for the runbook tests: a real Store on a temporary file and a frozen clock."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from crmctl.clock import FrozenClock
from crmctl.store import Store
from tests.runbook.world import START, Rig, build_config


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FrozenClock(START)
    config = build_config(tmp_path)
    store = await Store.open(config.state, clock=clock)
    try:
        yield Rig(config, store, clock)
    finally:
        await store.close()
