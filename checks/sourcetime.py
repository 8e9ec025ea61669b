"""Timestamps of a source column: compared in the database, in the column's own format.

Legacy CRMs store "last modified" as ISO text (with `T` or a space, with or without `Z` or
fractions), or as epoch seconds or milliseconds. To let the source filter with an index
(`updated_at > ?`), the instant is written in the same layout as the column's values, detected
from one sample; naive values are in the configured `timezone`. A layout crmctl cannot write
exactly (e.g. varying UTC offsets) is filtered in Python instead: slower, still exact. Every
returned value is parsed and checked again, so a stray row in another layout is never counted
on the wrong side of the instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from crmctl.checking import CheckContext
from crmctl.connectors.sql import Condition
from checks.keys import source_queries

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?P<sep>[T ])\d{2}:\d{2}(?P<sec>:\d{2})?(?P<frac>\.\d+)?(?P<tz>Z|[+-]\d{2}:?\d{2})?$"
)


@dataclass(frozen=True)
class After:
    """`column > instant` for one source column: source conditions, or a Python filter.

    With `in_python`, `conditions` only exclude nulls and every row must be checked again with
    `parse_time` (the callers always do).
    """

    conditions: tuple[Condition, ...]
    in_python: bool = False


def parse_time(value: Any, zone: Any = timezone.utc) -> datetime | None:
    """An aware UTC instant from a source or Dynamics value; None when it is not a timestamp."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) > 1e11 else value
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(timezone.utc)


async def after(ctx: CheckContext, table: str, modified: str, instant: datetime, zone: Any = timezone.utc) -> After:
    """The condition "`modified` is later than `instant`" in the column's own layout.

    A source with typed timestamps (OData's Edm.DateTimeOffset, `timestamps_typed`) compares
    instants itself: it gets the instant. Elsewhere the layout comes from one sample value.
    """
    queries = source_queries(ctx)
    sample: Any = None
    async for rows in queries.records(table, [modified], key=modified, where=[Condition(modified, "not_null")],
                                      log=ctx.source_log, limit=1):
        sample = rows[0][modified] if rows else None
    if getattr(queries, "timestamps_typed", False) and (sample is None or _typed_sample(sample)):
        return After((Condition(modified, "gt", instant.astimezone(timezone.utc)),))
    literal = _literal(sample, instant, zone)
    if literal is None:
        return After((Condition(modified, "not_null"),), in_python=True)
    return After((Condition(modified, "gt", literal),))


def _typed_sample(sample: Any) -> bool:
    """True for a value an OData service sends for a DateTimeOffset (ISO text with an offset)."""
    if isinstance(sample, datetime):
        return True
    match = _ISO.match(sample.strip()) if isinstance(sample, str) else None
    return bool(match and match.group("sep") == "T" and match.group("tz"))


def _literal(sample: Any, instant: datetime, zone: Any) -> Any:
    if sample is None:
        return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(sample, (int, float)) and not isinstance(sample, bool):
        seconds = instant.timestamp()
        return seconds * 1000 if abs(sample) > 1e11 else seconds
    if isinstance(sample, datetime):
        return instant if sample.tzinfo else instant.astimezone(zone).replace(tzinfo=None)
    if not isinstance(sample, str):
        return None
    match = _ISO.match(sample.strip())
    if match is None:
        return None
    tz = match.group("tz")
    if tz not in (None, "Z", "+00:00", "+0000"):
        return None  # offsets may vary row by row: text order is not time order
    moment = instant.astimezone(timezone.utc) if tz else instant.astimezone(zone)
    seconds = ":%S" if match.group("sec") else ""
    text = moment.strftime(f"%Y-%m-%d{match.group('sep')}%H:%M{seconds}")
    frac = match.group("frac")
    if frac:
        text += "." + f"{moment.microsecond:06d}"[: len(frac) - 1].ljust(len(frac) - 1, "0")
    return text + (tz or "")
