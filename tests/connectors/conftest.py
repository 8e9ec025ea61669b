"""Fixtures for the connector tests: a scriptable fake Dataverse and clients pointed at it."""

from __future__ import annotations

import random
from typing import AsyncIterator, Callable

import pytest

from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from tests.reliability.suite_audit import CANARY_TOKEN
from .fake_dataverse import FakeDataverse

TOKEN = CANARY_TOKEN
"""A JWT-shaped token, so the scrubbing of tokens in errors and logs is really exercised; a canary
the suite-wide scan (tests/reliability/suite_audit.py) looks for in every file the suite writes."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeDataverse]:
    async with FakeDataverse() as server:
        yield server


@pytest.fixture
async def make_client(fake: FakeDataverse) -> AsyncIterator[Callable[..., DataverseClient]]:
    """Builds clients against `fake` with fast, seeded backoff; closes them all afterwards."""
    made: list[DataverseClient] = []

    def build(**kwargs: object) -> DataverseClient:
        tokens = kwargs.pop("tokens", None) or StaticTokenProvider(TOKEN)
        limiter = kwargs.pop("limiter", None) or TargetLimiter(4, 1000, 300.0)
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("backoff_cap", 0.05)
        kwargs.setdefault("rng", random.Random(7))
        client = DataverseClient(fake.api_url, tokens, limiter, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()
