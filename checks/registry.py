"""The registry of check kinds: the one place that maps a config `kind:` to its implementation."""

from __future__ import annotations

from typing import Mapping

from crmctl.checking import CheckKind
from crmctl.config import CheckKindSpec
from checks.freeze import Delta, WriteFreeze
from checks.integration import SystemJobs
from checks.integrity import Duplicates, Nulls
from checks.kpi import KpiParity
from checks.latency import ApiLatency
from checks.orphans import Orphans
from checks.plugin_traces import PluginTraces
from checks.probe import HttpProbe
from checks.reconcile import Reconcile
from checks.row_count import RowCount
from checks.whoami import WhoAmI

REGISTRY: Mapping[str, type[CheckKind]] = {kind.kind: kind for kind in (
    RowCount, WhoAmI, SystemJobs, HttpProbe, PluginTraces, ApiLatency,
    Reconcile, Duplicates, Nulls, Orphans, WriteFreeze, Delta, KpiParity,
)}
"""Every check kind crmctl can run, by name."""


def check_kinds() -> dict[str, CheckKindSpec]:
    """The specs the config loader validates `checks:` entries against."""
    return {name: kind.spec for name, kind in REGISTRY.items()}
