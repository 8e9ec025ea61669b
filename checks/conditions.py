"""A config's SQL-style source filter (`source_where: "status = 'open'"`) read as source conditions.

Why: a `source_where` written for the SQL source must keep working when the source is an OData
service, which cannot run SQL. The common case is a conjunction of plain comparisons
(``status = 'open' AND estimated_value > 0``, ``closed_at IS NULL``, ``stage IN ('A', 'B')``):
that is parsed into `Condition`s, which every source kind renders in its own language with the
values bound. Anything else (functions, OR, sub-queries) is not guessed at: `parse_where` returns
None and the caller either hands the text to a SQL source as it is or reports that the OData
source cannot run it.
"""

from __future__ import annotations

import re
from typing import Any

from crmctl.connectors.sql import Condition

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op><>|!=|<=|>=|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>"[A-Za-z_][A-Za-z0-9_$]*"|[A-Za-z_][A-Za-z0-9_$]*)
    )""",
    re.VERBOSE,
)
_OPS = {"=": "eq", "<>": "ne", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


def _tokens(text: str) -> list[tuple[str, str]] | None:
    found: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return None
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        pos = match.end()
    return found


def _literal(kind: str, value: str) -> Any:
    if kind == "string":
        return value[1:-1].replace("''", "'")
    if kind == "number":
        if re.fullmatch(r"-?\d+", value):
            return int(value)
        return float(value)
    raise ValueError(value)


def _name(kind: str, value: str) -> str | None:
    if kind != "word":
        return None
    if value.upper() in ("AND", "OR", "NOT", "NULL", "IS", "IN"):
        return None
    return value.strip('"')


def parse_where(text: str) -> list[Condition] | None:
    """The conditions of ``a = 1 AND b IS NULL AND c IN ('x', 'y')``, or None for anything else."""
    tokens = _tokens(text)
    if not tokens:
        return None
    out: list[Condition] = []
    i = 0
    try:
        while True:
            column = _name(*tokens[i])
            if column is None:
                return None
            kind, value = tokens[i + 1]
            if kind == "op":
                lit_kind, lit = tokens[i + 2]
                if lit_kind not in ("string", "number"):
                    return None
                out.append(Condition(column, _OPS[value], _literal(lit_kind, lit)))
                i += 3
            elif kind == "word" and value.upper() == "IS":
                if tokens[i + 2][1].upper() == "NOT" and tokens[i + 3][1].upper() == "NULL":
                    out.append(Condition(column, "not_null"))
                    i += 4
                elif tokens[i + 2][1].upper() == "NULL":
                    out.append(Condition(column, "is_null"))
                    i += 3
                else:
                    return None
            elif kind == "word" and value.upper() == "IN":
                if tokens[i + 2] != ("punct", "("):
                    return None
                values: list[Any] = []
                j = i + 3
                while True:
                    lit_kind, lit = tokens[j]
                    if lit_kind not in ("string", "number"):
                        return None
                    values.append(_literal(lit_kind, lit))
                    if tokens[j + 1] == ("punct", ","):
                        j += 2
                        continue
                    if tokens[j + 1] == ("punct", ")"):
                        break
                    return None
                out.append(Condition(column, "in", values))
                i = j + 2
            else:
                return None
            if i == len(tokens):
                return out
            if tokens[i][0] != "word" or tokens[i][1].upper() != "AND":
                return None
            i += 1
    except (IndexError, ValueError):
        return None
