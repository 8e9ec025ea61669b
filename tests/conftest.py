"""Shared fixtures: a private copy of the demo cutover, seeded once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "data" / "demo" / "crmctl.yaml"

pytest_plugins = ["tests.reliability.suite_audit"]
"""Read-only audit of every emulator request and the canary-secret scan, at session end."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leaves the long `big` runs out of `make test` unless CRMCTL_BIG=1 (`make test-big`).

    They are deselected, not skipped: under CI a skip counts as a failure, and these runs are
    not missing anything — they are the long versions of tests that always run at a smaller size.
    """
    if os.environ.get("CRMCTL_BIG") == "1":
        return
    keep = [item for item in items if item.get_closest_marker("big") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def require_tool(name: str) -> str:
    """Returns the path of a system tool, skipping locally (failing under CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of the demo config and its generated world (state starts empty)."""
    from crmctl.demo_world import ensure_world

    folder = tmp_path_factory.mktemp("demo")
    shutil.copy(DEMO_CONFIG, folder / "crmctl.yaml")
    ensure_world(folder / "world")
    return folder


@pytest.fixture
def demo_config(demo_dir: Path, tmp_path: Path) -> Path:
    """The demo config with a fresh state file per test (the seeded world is shared, read-only)."""
    text = (demo_dir / "crmctl.yaml").read_text()
    text = text.replace("sqlite:///world/", f"sqlite:///{demo_dir}/world/")
    text = text.replace("data: world/", f"data: {demo_dir}/world/")
    path = tmp_path / "crmctl.yaml"
    path.write_text(text)
    return path
