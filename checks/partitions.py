"""createdon partitions of a Dynamics entity: how `row_count` and `kpi_parity` stay under the
50,000-record aggregate limit. Both find the oldest and newest createdon, split the span into
whole-second ranges, and bisect a range that is still too large."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from crmctl.model import parse_iso

CREATED = "createdon"


async def created_bounds(dynamics: Any, entity_set: str, condition: str, log: Any) -> tuple[datetime, datetime] | None:
    """The oldest and newest createdon (whole seconds) among rows matching `condition` (which
    must include `createdon ne null`), or None when no row has a usable createdon."""
    ends = []
    for direction in ("asc", "desc"):
        body = await dynamics.get_json(
            entity_set,
            {"$select": CREATED, "$filter": condition, "$orderby": f"{CREATED} {direction}", "$top": "1"},
            log=log,
        )
        rows = body.get("value") or []
        if not rows or not rows[0].get(CREATED):
            return None
        ends.append(parse_iso(rows[0][CREATED]).replace(microsecond=0))
    return ends[0], ends[1]


def split(low: datetime, high: datetime, parts: int) -> list[tuple[datetime, datetime]]:
    """Splits [low, high) into `parts` whole-second ranges (fewer if the range is short)."""
    seconds = max(1, int((high - low).total_seconds()))
    parts = max(1, min(parts, seconds))
    edges = [low + timedelta(seconds=seconds * i // parts) for i in range(parts)] + [high]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def instant(ts: datetime) -> str:
    """An unquoted OData DateTimeOffset literal at second precision, as Dataverse stores them."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
