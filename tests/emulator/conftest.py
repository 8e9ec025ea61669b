"""Fixtures for emulator tests: a private copy of a small world file and a running emulator."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from crmctl.emulator.server import Emulator
from tests.emulator.emu_helpers import World, build_world, headers


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world") / "dataverse.db")


@pytest.fixture
def world(world_template: World, tmp_path: Path) -> World:
    """A private copy of the world file, so tests that drift data cannot disturb others."""
    dest = tmp_path / "dataverse.db"
    shutil.copy(world_template.path, dest)
    return World(
        dest,
        world_template.accounts,
        world_template.contacts,
        world_template.jobs,
        world_template.traces,
    )


@pytest.fixture
async def emu(world: World) -> AsyncIterator[Emulator]:
    async with Emulator(world.path) as emulator:
        yield emulator


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=headers(emu)) as session:
        yield session
