"""The query log behind every check result: each request a check made, with its URL redacted.

The log is evidence (the auditor sees exactly which queries produced a figure) and a cost meter
(a result carries the number of requests it spent). URLs are redacted on the way in, so nothing
that reads the log later has to think about secrets.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from crmctl.clock import Clock, SystemClock
from crmctl.model import QueryRecord, iso

REDACTED = "***"

_SENSITIVE_PARAM = re.compile(r"(?i)token|secret|sig|code|passw|pwd|key|auth|credential|assertion")
"""Query parameter names whose values are never stored (sas `sig`, OAuth `code`, `api_key`, ...)."""
_ODATA_PARAMS = frozenset({"fetchxml", "savedquery", "userquery"})
"""Dataverse parameters without a `$`/`@` prefix that are part of the query, never secrets."""


def _redact_pair(pair: str) -> str:
    name, sep, _value = pair.partition("=")
    decoded = unquote_plus(name)
    # `$skiptoken` contains "token" but is paging state the auditor needs; OData system options
    # (`$...`) and parameter aliases (`@p1`) are always kept verbatim.
    if decoded[:1] in ("$", "@") or decoded.lower() in _ODATA_PARAMS:
        return pair
    if sep and _SENSITIVE_PARAM.search(decoded):
        return f"{name}={REDACTED}"
    return pair


def redact_url(url: str) -> str:
    """Returns `url` without user-info, fragment, or the values of secret-looking query parameters.

    OData parameters are left byte-for-byte intact (including `$skiptoken`), so a redacted
    nextLink still shows exactly which page was read.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: keep nothing we cannot parse safely
        return REDACTED
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(_redact_pair(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class QueryLog:
    """Collects the `QueryRecord`s of one check run against one target.

    Args:
        target: The default target recorded ("dynamics", "source", an integration id).
        deadline: Monotonic time (`time.monotonic()`) by which the run must finish; connectors
            read it to refuse waits (Retry-After, budget) that would pass it.
        clock: The wall clock for record start times when a connector does not pass one.
    """

    def __init__(self, target: str, deadline: float | None = None, *, clock: Clock | None = None) -> None:
        self.target = target
        self.deadline = deadline
        self.records: list[QueryRecord] = []
        self._clock = clock or SystemClock()

    @property
    def requests(self) -> int:
        """How many requests were made (every attempt counts, retries included)."""
        return len(self.records)

    def record(
        self,
        method: str,
        url: str,
        status: int | None,
        duration_ms: float,
        *,
        bytes: int = 0,
        error: str | None = None,
        started: datetime | str | None = None,
        target: str | None = None,
    ) -> QueryRecord:
        """Appends one request, redacting its URL (SQL text is stored as given); returns the record."""
        if started is None:
            started = self._clock.now()
        rec = QueryRecord(
            target=target or self.target,
            method=method,
            url=url if method == "SQL" else redact_url(url),
            status=status,
            duration_ms=duration_ms,
            bytes=bytes,
            started=started if isinstance(started, str) else iso(started),
            error=error,
        )
        self.records.append(rec)
        return rec

    def __repr__(self) -> str:
        return f"QueryLog(target={self.target!r}, requests={self.requests}, deadline={self.deadline!r})"
