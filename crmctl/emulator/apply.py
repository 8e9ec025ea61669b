"""OData `$apply` subset: filter(...), groupby((a,b)[,aggregate(...)]) and aggregate(...)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crmctl.emulator.errors import CODE_SYNTAX, ApiError, syntax, unknown_property
from crmctl.emulator.odata_filter import SqlExpr, compile_filter
from crmctl.emulator.storage import Attribute, EntityDef

_STEP_RE = re.compile(r"^\s*(filter|groupby|aggregate)\s*\((.*)\)\s*$", re.DOTALL)
_COUNT_RE = re.compile(r"^\s*\$count\s+as\s+([A-Za-z_]\w*)\s*$")
_WITH_RE = re.compile(r"^\s*([A-Za-z_][\w/]*)\s+with\s+([a-z]+)\s+as\s+([A-Za-z_]\w*)\s*$")
_METHODS = {"sum": "SUM", "min": "MIN", "max": "MAX", "average": "AVG", "avg": "AVG"}


@dataclass(frozen=True)
class Aggregation:
    """One aggregate output: `$count as n` (attr None) or `x with sum as total`."""

    method: str  # COUNT SUM MIN MAX AVG
    attr: Attribute | None
    alias: str


@dataclass(frozen=True)
class ApplyPlan:
    """A parsed `$apply`: the input filter, the grouping keys and the aggregates."""

    where: SqlExpr | None
    groupby: tuple[Attribute, ...]
    aggregates: tuple[Aggregation, ...]


def split_top_level(text: str, sep: str) -> list[str]:
    """Splits on `sep` outside parentheses and quoted literals ('' is an escaped quote)."""
    parts: list[str] = []
    depth = 0
    in_quote = False
    start = 0
    for i, ch in enumerate(text):
        if ch == "'":
            in_quote = not in_quote
        elif in_quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _attr(entity: EntityDef, name: str, type_name: str) -> Attribute:
    if "/" in name:
        raise ApiError(
            400,
            CODE_SYNTAX,
            f"Grouping or aggregating on the related property path '{name}' is not supported "
            "by the crmctl emulator.",
        )
    attr = entity.attribute(name)
    if attr is None:
        raise unknown_property(name, type_name)
    return attr


def _aggregates(text: str, entity: EntityDef, type_name: str) -> list[Aggregation]:
    out: list[Aggregation] = []
    for item in split_top_level(text, ","):
        m = _COUNT_RE.match(item)
        if m:
            out.append(Aggregation("COUNT", None, m.group(1)))
            continue
        m = _WITH_RE.match(item)
        if not m:
            raise syntax(f"Syntax error in aggregate expression '{item.strip()}'.")
        method = _METHODS.get(m.group(2))
        if method is None:
            raise ApiError(
                400,
                CODE_SYNTAX,
                f"The aggregation method '{m.group(2)}' is not supported.",
            )
        attr = _attr(entity, m.group(1), type_name)
        if method in ("SUM", "AVG") and attr.type not in ("int", "decimal"):
            raise ApiError(
                400,
                CODE_SYNTAX,
                f"The aggregation method '{m.group(2)}' cannot be applied to the "
                f"{attr.type} property '{attr.column}'.",
            )
        out.append(Aggregation(method, attr, m.group(3)))
    aliases = [a.alias for a in out]
    if len(set(aliases)) != len(aliases):
        raise syntax(f"Duplicate aggregate alias in '{text}'.")
    return out


def parse_apply(text: str, entity: EntityDef) -> ApplyPlan:
    """Parses `$apply`; any number of filter() steps, then at most one groupby or aggregate."""
    type_name = f"Microsoft.Dynamics.CRM.{entity.logical_name}"
    where: SqlExpr | None = None
    groupby: list[Attribute] = []
    aggregates: list[Aggregation] = []
    terminal = False
    for step in split_top_level(text, "/"):
        m = _STEP_RE.match(step)
        if not m:
            raise syntax(
                f"Syntax error in $apply: '{step.strip()}' is not a supported transformation."
            )
        if terminal:
            raise syntax("Only filter() may come before groupby() or aggregate() in $apply.")
        name, inner = m.group(1), m.group(2)
        if name == "filter":
            expr = compile_filter(inner, entity)
            where = expr if where is None else where.and_(expr)
            continue
        terminal = True
        if name == "aggregate":
            aggregates = _aggregates(inner, entity, type_name)
            continue
        parts = split_top_level(inner, ",")
        keys = parts[0].strip()
        if not (keys.startswith("(") and keys.endswith(")")):
            raise syntax(f"Syntax error in groupby: expected '(properties)' in '{inner}'.")
        for key in keys[1:-1].split(","):
            attr = _attr(entity, key.strip(), type_name)
            if attr.type == "datetime":
                raise ApiError(
                    400,
                    CODE_SYNTAX,
                    f"Grouping by the date and time property '{attr.column}' is not supported.",
                )
            groupby.append(attr)
        rest = ",".join(parts[1:]).strip()
        if rest:
            rm = _STEP_RE.match(rest)
            if not rm or rm.group(1) != "aggregate":
                raise syntax(f"Syntax error in groupby: expected aggregate(...) in '{rest}'.")
            aggregates = _aggregates(rm.group(2), entity, type_name)
    return ApplyPlan(where=where, groupby=tuple(groupby), aggregates=tuple(aggregates))
