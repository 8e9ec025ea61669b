"""How hard the reliability tests push: a short version in `make test`, the full one in
`make reliability` (CRMCTL_RELIABILITY=full). Counts, not timings, change between the two."""

from __future__ import annotations

import os

FULL = os.environ.get("CRMCTL_RELIABILITY") == "full"


def scaled(small: int, full: int) -> int:
    """`full` under `make reliability`, `small` in the everyday suite."""
    return full if FULL else small
