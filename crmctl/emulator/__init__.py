"""The rehearsal Dataverse Web API emulator: SQLite storage, aiohttp server, fault scenarios."""

from __future__ import annotations

from crmctl.emulator.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef
from crmctl.emulator.throttle import ThrottleLimits

__all__ = [
    "Attribute",
    "Emulator",
    "EmulatorData",
    "EntityDef",
    "RequestRecord",
    "Scenario",
    "ScenarioError",
    "ThrottleLimits",
    "load_scenario",
    "parse_scenario",
    "serve_forever",
]


def __getattr__(name: str) -> object:
    """Loads the aiohttp server only when asked, so data generators import storage cheaply."""
    if name in ("Emulator", "RequestRecord", "serve_forever"):
        from crmctl.emulator import server

        return getattr(server, name)
    raise AttributeError(name)
