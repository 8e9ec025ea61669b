"""Fixtures for the config tests: each test writes its YAML into a temp folder it runs in.

Loading ``crmctl.yaml`` by its relative name keeps the FILE part of every problem line short
and exact, so the tests can compare whole lines.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from crmctl.config import CheckKindSpec, Config, ConfigError, load_config

FIXTURES = Path(__file__).parent / "fixtures"
FULL = FIXTURES / "full.yaml"

ENV: Mapping[str, str] = {
    "CRMCTL_SECRET": "s3cr3t-client-value",
    "TEAMS_WEBHOOK": "https://contoso.webhook.office.com/webhookb2/hook-value",
}
"""The environment every test loads with (never the real one: tests must not depend on it)."""

BASE = """\
project: Test cutover
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator}
"""
"""A minimal valid config, three lines long; tests append sections from line 4 on."""


def kinds() -> dict[str, CheckKindSpec]:
    """Check kinds like the registry's, covering every parameter type the loader converts."""
    from datetime import datetime, timedelta

    from crmctl.config import Secret

    return {
        "row_count": CheckKindSpec(needs_entity=True, params={"hint": bool}, description="counts"),
        "whoami": CheckKindSpec(description="who am I"),
        "nulls": CheckKindSpec(needs_entity=True, params={"columns": list, "sample": int, "ratio": float}),
        "write_freeze": CheckKindSpec(params={"window": timedelta, "since": datetime}),
        "http": CheckKindSpec(params={"api_key": Secret, "headers": dict, "limit": (int, type(None))}),
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write(workdir: Path) -> Callable[[str], Path]:
    """Writes (dedented) YAML to crmctl.yaml in the working folder; returns the relative path."""

    def write(text: str, name: str = "crmctl.yaml") -> Path:
        (workdir / name).write_text(textwrap.dedent(text))
        return Path(name)

    return write


@pytest.fixture
def load(write: Callable[[str], Path]) -> Callable[..., Config]:
    def load(text: str, *, env: Mapping[str, str] = ENV, check_kinds: Any = None) -> Config:
        return load_config(write(text), env=env, check_kinds=check_kinds)

    return load


@pytest.fixture
def problems(write: Callable[[str], Path]) -> Callable[..., list[str]]:
    """Loads `text`, expecting failure; returns the problem lines."""

    def problems(text: str, *, env: Mapping[str, str] = ENV, check_kinds: Any = None) -> list[str]:
        with pytest.raises(ConfigError) as info:
            load_config(write(text), env=env, check_kinds=check_kinds)
        return [str(p) for p in info.value.problems]

    return problems


@pytest.fixture
def env() -> Mapping[str, str]:
    return ENV


@pytest.fixture
def base() -> str:
    return BASE


@pytest.fixture
def full() -> Path:
    return FULL


@pytest.fixture
def check_kinds() -> dict[str, CheckKindSpec]:
    return kinds()
