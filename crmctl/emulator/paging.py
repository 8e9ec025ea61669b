"""Keyset paging: Dataverse-shaped `$skiptoken` cookies and the SQL that resumes after one."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote as urlquote
from urllib.parse import unquote

from crmctl.emulator.errors import CODE_SYNTAX, ApiError
from crmctl.emulator.odata_filter import SqlExpr
from crmctl.emulator.storage import Attribute, quote

MAX_PAGE_SIZE = 5000
"""Dataverse's default and maximum page size for standard tables (dataverse.md §3)."""

_HEX_RE = re.compile(r"%[0-9A-F]{2}")


@dataclass(frozen=True)
class OrderKey:
    """One `$orderby` key; the primary key is always appended last so ordering is total."""

    attr: Attribute
    descending: bool = False

    @property
    def column(self) -> str:
        return self.attr.column


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: the last row's order-key values and its page number."""

    page: int
    last: tuple[Any, ...]
    first: tuple[Any, ...]


def _lower_hex(text: str) -> str:
    return _HEX_RE.sub(lambda m: m.group().lower(), text)


def _cookie_value(attr: Attribute, value: Any) -> str:
    if attr.type in ("guid", "lookup"):
        return "{" + str(value).upper() + "}"
    if attr.type == "bool":
        return "1" if value else "0"
    return str(value)


def _from_cookie(attr: Attribute, text: str) -> Any:
    if attr.type in ("guid", "lookup"):
        return text.strip("{}").lower()
    if attr.type in ("int", "bool"):
        return int(text)
    if attr.type == "decimal":
        return float(text)
    return text


def encode_skiptoken(
    keys: list[OrderKey], page: int, last: tuple[Any, ...], first: tuple[Any, ...]
) -> str:
    """Builds the URL-encoded `$skiptoken` value the way Dataverse does.

    `<cookie pagenumber="N" pagingcookie="<inner, URL-encoded>" istracking="False" />`, itself
    URL-encoded in the link, so the inner cookie ends up double-encoded (dataverse.md §3).
    """
    inner = ET.Element("cookie", {"page": str(page)})
    for key, lv, fv in zip(keys, last, first):
        attrs: dict[str, str] = {}
        if lv is None:
            attrs["lastnull"] = "1"
        else:
            attrs["last"] = _cookie_value(key.attr, lv)
        if fv is None:
            attrs["firstnull"] = "1"
        else:
            attrs["first"] = _cookie_value(key.attr, fv)
        ET.SubElement(inner, key.column, attrs)
    inner_xml = ET.tostring(inner, encoding="unicode", short_empty_elements=True)
    paging = _lower_hex(urlquote(inner_xml, safe=""))
    outer = f'<cookie pagenumber="{page + 1}" pagingcookie="{paging}" istracking="False" />'
    return urlquote(outer, safe="=/")


def _bad_token() -> ApiError:
    return ApiError(400, CODE_SYNTAX, "The $skiptoken value is not a valid paging cookie.")


def decode_skiptoken(token: str, keys: list[OrderKey]) -> Cursor:
    """Reads a `$skiptoken` (already URL-decoded once by the query parser) for `keys`.

    The keys must be the ones the cookie was made for: changing the query while following a
    nextLink is refused, as Dataverse asks clients never to edit the link.
    """
    try:
        outer = ET.fromstring(token)
        page = int(outer.get("pagenumber", "0"))
        inner = ET.fromstring(unquote(outer.get("pagingcookie", "")))
    except (ET.ParseError, ValueError):
        raise _bad_token() from None
    children = list(inner)
    if [c.tag for c in children] != [k.column for k in keys] or page < 2:
        raise _bad_token()
    last: list[Any] = []
    first: list[Any] = []
    try:
        for key, child in zip(keys, children):
            lv = child.get("last", "")
            last.append(None if child.get("lastnull") else _from_cookie(key.attr, lv))
            first.append(
                None if child.get("firstnull") else _from_cookie(key.attr, child.get("first", ""))
            )
    except ValueError:
        raise _bad_token() from None
    return Cursor(page=page, last=tuple(last), first=tuple(first))


def after(keys: list[OrderKey], last: tuple[Any, ...]) -> SqlExpr:
    """The predicate "row sorts strictly after `last`" under `keys`, NULL-aware.

    SQLite sorts NULL first ascending and last descending; the predicate follows that order so
    the next page resumes exactly where the previous one stopped, via the index when the order
    is the primary key (the common, fast case).
    """
    disjuncts: list[str] = []
    params: list[Any] = []
    prefix_sql: list[str] = []
    prefix_params: list[Any] = []
    for key, value in zip(keys, last):
        col = quote(key.column)
        if value is None:
            beyond = None if key.descending else f"{col} IS NOT NULL"
            beyond_params: list[Any] = []
            equal, equal_params = f"{col} IS NULL", []
        else:
            if key.descending:
                beyond, beyond_params = f"({col} < ? OR {col} IS NULL)", [value]
            else:
                beyond, beyond_params = f"{col} > ?", [value]
            equal, equal_params = f"{col} = ?", [value]
        if beyond is not None:
            disjuncts.append(" AND ".join([*prefix_sql, beyond]))
            params.extend(prefix_params + beyond_params)
        prefix_sql.append(equal)
        prefix_params.extend(equal_params)
    if not disjuncts:
        return SqlExpr("0")
    return SqlExpr(" OR ".join(f"({d})" for d in disjuncts), tuple(params))


def order_sql(keys: list[OrderKey]) -> str:
    """`ORDER BY` text for `keys`."""
    return ", ".join(f"{quote(k.column)}{' DESC' if k.descending else ''}" for k in keys)
