"""The registry of check kinds: the one place that maps a config `kind:` to its implementation."""

from __future__ import annotations

from typing import Mapping

from crmctl.checking import CheckKind
from crmctl.config import CheckKindSpec
from checks.row_count import RowCount
from checks.whoami import WhoAmI

REGISTRY: Mapping[str, type[CheckKind]] = {kind.kind: kind for kind in (RowCount, WhoAmI)}
"""Every check kind crmctl can run, by name."""


def check_kinds() -> dict[str, CheckKindSpec]:
    """The specs the config loader validates `checks:` entries against."""
    return {name: kind.spec for name, kind in REGISTRY.items()}
