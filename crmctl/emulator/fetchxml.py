"""FetchXML subset through the Web API: aggregates (count, sum, ...) and simple retrievals."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from crmctl.emulator.errors import (
    CODE_FETCH_ATTRIBUTE,
    CODE_INVALID_ARGUMENT,
    ApiError,
)
from crmctl.emulator.odata_filter import SqlExpr
from crmctl.emulator.storage import Attribute, EntityDef, normalise_datetime, quote

_AGGREGATES = {"count", "countcolumn", "sum", "min", "max", "avg"}
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<=", "neq": "<>"}
_DOTNET = {
    "guid": "System.Guid",
    "lookup": "System.Guid",
    "string": "System.String",
    "int": "System.Int32",
    "decimal": "System.Decimal",
    "datetime": "System.DateTime",
    "bool": "System.Boolean",
}


@dataclass(frozen=True)
class FetchAggregate:
    """One aggregate attribute: `<attribute name= aggregate= alias= [distinct='true']/>`."""

    method: str
    attr: Attribute
    alias: str
    distinct: bool = False


@dataclass
class FetchPlan:
    """A parsed `<fetch>`; aggregate plans use `groupby`/`aggregates`, others `columns`."""

    entity_name: str
    aggregate: bool
    aggregate_limit: int | None = None
    where: SqlExpr | None = None
    groupby: list[tuple[Attribute, str]] = field(default_factory=list)
    aggregates: list[FetchAggregate] = field(default_factory=list)
    columns: list[Attribute] = field(default_factory=list)
    orders: list[tuple[Attribute, bool]] = field(default_factory=list)
    top: int | None = None
    count: int | None = None
    page: int = 1


def _invalid(message: str) -> ApiError:
    return ApiError(400, CODE_INVALID_ARGUMENT, message)


def _no_attribute(entity: str, name: str) -> ApiError:
    return ApiError(
        400,
        CODE_FETCH_ATTRIBUTE,
        f"'{entity}' entity doesn't contain attribute with Name = '{name}' and "
        "NameMapping = 'Logical'.",
    )


def parse_fetch_entity_name(xml: str) -> str:
    """Only the `<entity name>`: checked against the entity set before anything else."""
    root = _root(xml)
    ent = root.find("entity")
    if ent is None or not ent.get("name"):
        raise _invalid("The FetchXml must contain one <entity name='...'> element.")
    return ent.get("name", "")


def _root(xml: str) -> ET.Element:
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise _invalid("DTDs are not allowed in FetchXml.")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _invalid(f"The FetchXml is not well formed: {exc}.") from None
    if root.tag != "fetch":
        raise _invalid("The FetchXml root element must be <fetch>.")
    return root


def _int_attr(el: ET.Element, name: str) -> int | None:
    raw = el.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(f"The '{name}' attribute of <{el.tag}> must be an integer.") from None
    if value < 1:
        raise _invalid(f"The '{name}' attribute of <{el.tag}> must be positive.")
    return value


def _lookup(entity: EntityDef, name: str | None) -> Attribute:
    for attr in entity.attributes:
        if attr.name == name:
            return attr
    raise _no_attribute(entity.logical_name, name or "")


def _value(entity: EntityDef, attr: Attribute, raw: str) -> Any:
    try:
        if attr.type in ("int",):
            return int(raw)
        if attr.type == "decimal":
            return float(raw)
        if attr.type == "bool":
            low = raw.strip().lower()
            if low not in ("0", "1", "true", "false"):
                raise ValueError(raw)
            return 1 if low in ("1", "true") else 0
        if attr.type == "datetime":
            return normalise_datetime(raw)
        if attr.type in ("guid", "lookup"):
            return raw.strip().strip("{}").lower()
        return raw
    except ValueError:
        raise _invalid(
            f"Condition for attribute '{entity.logical_name}.{attr.name}': expected argument(s) "
            f"of type '{_DOTNET[attr.type]}' but received '{raw}'."
        ) from None


def _condition(entity: EntityDef, el: ET.Element) -> SqlExpr:
    attr = _lookup(entity, el.get("attribute"))
    op = el.get("operator", "")
    col = quote(attr.column)
    if op == "null":
        return SqlExpr(f"{col} IS NULL")
    if op == "not-null":
        return SqlExpr(f"{col} IS NOT NULL")
    values = [v.text or "" for v in el.findall("value")]
    if el.get("value") is not None:
        values.insert(0, el.get("value", ""))
    if op in ("in", "not-in"):
        if not values:
            raise _invalid(f"The '{op}' condition on '{attr.name}' needs <value> elements.")
        bound = tuple(_value(entity, attr, v) for v in values)
        neg = "NOT " if op == "not-in" else ""
        return SqlExpr(f"{col} {neg}IN ({', '.join('?' * len(bound))})", bound)
    if len(values) != 1:
        raise _invalid(f"The '{op}' condition on '{attr.name}' needs exactly one value.")
    raw = values[0]
    if op in ("like", "not-like", "begins-with", "ends-with", "not-begin-with", "not-end-with"):
        pattern = {
            "like": raw,
            "not-like": raw,
            "begins-with": f"{raw}%",
            "not-begin-with": f"{raw}%",
            "ends-with": f"%{raw}",
            "not-end-with": f"%{raw}",
        }[op]
        neg = "NOT " if op.startswith("not-") else ""
        return SqlExpr(f"{col} {neg}LIKE ?", (pattern,))
    if op not in _COMPARE:
        raise _invalid(f"The condition operator '{op}' is not supported by the crmctl emulator.")
    return SqlExpr(f"{col} {_COMPARE[op]} ?", (_value(entity, attr, raw),))


def _filter(entity: EntityDef, el: ET.Element) -> SqlExpr | None:
    kind = el.get("type", "and").lower()
    if kind not in ("and", "or"):
        raise _invalid(f"The filter type '{kind}' is not valid; expected 'and' or 'or'.")
    parts: list[SqlExpr] = []
    for child in el:
        if child.tag == "condition":
            parts.append(_condition(entity, child))
        elif child.tag == "filter":
            sub = _filter(entity, child)
            if sub is not None:
                parts.append(sub)
        else:
            raise _invalid(f"Unexpected element <{child.tag}> inside <filter>.")
    if not parts:
        return None
    joiner = " AND " if kind == "and" else " OR "
    sql = joiner.join(f"({p.sql})" for p in parts)
    params: tuple[Any, ...] = ()
    for p in parts:
        params += p.params
    return SqlExpr(sql, params)


def parse_fetch(xml: str, entity: EntityDef) -> FetchPlan:
    """Parses a `<fetch>` for `entity` into a plan; raises ApiError(400) on what it cannot run."""
    root = _root(xml)
    ent = root.find("entity")
    if ent is None:
        raise _invalid("The FetchXml must contain one <entity name='...'> element.")
    aggregate = root.get("aggregate", "false").lower() == "true"
    plan = FetchPlan(
        entity_name=ent.get("name", ""),
        aggregate=aggregate,
        aggregate_limit=_int_attr(root, "aggregatelimit"),
        top=_int_attr(root, "top"),
        count=_int_attr(root, "count"),
        page=_int_attr(root, "page") or 1,
    )
    where: SqlExpr | None = None
    for child in ent:
        if child.tag == "attribute":
            attr = _lookup(entity, child.get("name"))
            method = child.get("aggregate")
            alias = child.get("alias")
            if aggregate:
                if child.get("groupby", "false").lower() == "true":
                    plan.groupby.append((attr, alias or attr.column))
                elif method in _AGGREGATES:
                    if not alias:
                        raise _invalid(f"The aggregate attribute '{attr.name}' needs an alias.")
                    if method in ("sum", "avg") and attr.type not in ("int", "decimal"):
                        raise _invalid(
                            f"The aggregate '{method}' cannot be applied to '{attr.name}'."
                        )
                    distinct = child.get("distinct", "false").lower() == "true"
                    plan.aggregates.append(FetchAggregate(method, attr, alias, distinct))
                else:
                    raise _invalid(
                        f"In an aggregate query every attribute needs groupby='true' or an "
                        f"aggregate; '{attr.name}' has neither."
                    )
            else:
                if method:
                    raise _invalid("An aggregate attribute requires <fetch aggregate='true'>.")
                plan.columns.append(attr)
        elif child.tag == "all-attributes":
            plan.columns = list(entity.attributes)
        elif child.tag == "filter":
            sub = _filter(entity, child)
            if sub is not None:
                where = sub if where is None else where.and_(sub)
        elif child.tag == "order":
            attr = _lookup(entity, child.get("attribute"))
            plan.orders.append((attr, child.get("descending", "false").lower() == "true"))
        elif child.tag == "link-entity":
            raise _invalid("<link-entity> is not supported by the crmctl emulator.")
        else:
            raise _invalid(f"Unexpected element <{child.tag}> inside <entity>.")
    plan.where = where
    if aggregate and not plan.aggregates and not plan.groupby:
        raise _invalid("An aggregate query needs at least one aggregate attribute.")
    if plan.top is not None and plan.count is not None:
        raise _invalid("The 'top' attribute can't be specified with paging attribute 'count'.")
    return plan
