"""Safe SQL identifiers for source queries built from configuration."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def quote_identifier(name: str) -> str:
    """Quotes a table or column name from the config, refusing anything that is not a plain name.

    Values always travel as bound parameters; names cannot, so they are checked and quoted here.
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return ".".join(f'"{part}"' for part in name.split("."))
