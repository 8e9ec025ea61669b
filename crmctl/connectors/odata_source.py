"""The source side over OData v4: a legacy CRM that speaks REST, such as on-premises Dynamics CRM.

Why it exists: some source CRMs offer no database access, only their OData Web API. Checks ask
it the same query intents as a SQL source (`count`, `keys`, `records`, see `SourceQueries` in
`sql.py`); SQL text cannot be sent to an OData service, so `scalar`/`rows` raise a SourceError
that says so instead of guessing.

What real OData servers do, and how it is met:
- ``@odata.nextLink`` may be absolute or relative (``Accounts?$skiptoken=…``, ``/odata/…`` or
  ``?$skiptoken=…``); relative links are resolved against the URL of the page that carried them.
  A link to another origin is refused, so credentials never leave the service (a proxy that does
  not rewrite its backend's links shows up here, with a sentence saying so).
- The last page may be empty (``"value": []``) with or without a nextLink: paging simply goes on
  until no nextLink is left; a nextLink seen before is an error, not an endless loop.
- ``Prefer: odata.maxpagesize`` may be ignored: nothing assumes the page size; batches handed to
  callers are re-cut to at most `batch` rows.
- ``$count`` may be capped (Dynamics CRM stops at 5,000 and says so in an annotation) or
  missing: then the rows are counted page by page, so a count is always exact.
- A body that is not JSON or has no ``value`` list is an error, never "zero rows".

GET only, with the same read-only discipline as the Dataverse client. Credentials: a
`TokenProvider` (bearer, e.g. MSAL against the source's ADFS), or user and password in the URL
(``https://svc_crm:${env:CRM_PW}@crm.corp/odata``) sent as HTTP Basic over HTTPS (plain HTTP only
to a loopback address), or none.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
import uuid
from datetime import date, datetime
from decimal import Decimal
from math import isfinite
from typing import Any, AsyncIterator, Mapping, Sequence
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import aiohttp
import yarl

from crmctl.clock import Clock, SystemClock
from crmctl.connectors.auth import TokenProvider
from crmctl.connectors.dataverse import _describe_failure, _retry_after, encode_query
from crmctl.connectors.errors import SourceError, scrub, status_tag
from crmctl.connectors.querylog import QueryLog
from crmctl.connectors.sql import (
    Condition,
    SourceMeasure,
    SqlParams,
    combine_measure,
    fold_duplicates,
    fold_text,
    register_source,
)

MAX_PAGE_SIZE = 5000
TRANSIENT = frozenset({429, 502, 503, 504})
COUNT_CAPPED = "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"
"""Dynamics CRM's flag that `@odata.count` stopped at its 5,000 cap."""
COUNT_PREFER = (
    'odata.include-annotations="Microsoft.Dynamics.CRM.totalrecordcount,'
    'Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"'
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_OPS = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}


def odata_name(name: str) -> str:
    """An entity set or property name from the config, refused unless it is a plain OData identifier."""
    if not name or name[0].isdigit() or not set(name) <= _NAME_CHARS:
        raise SourceError(f"'{name}' is not a plain OData name (letters, digits, underscore).")
    return name


def odata_literal(value: Any) -> str:
    """A Python value as an OData URL literal (strings quoted with '' escaping; datetimes must be aware)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not isfinite(value):
            raise ValueError(f"{value!r} cannot be compared in an OData filter")
        return repr(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime in an OData filter needs a time zone (Edm.DateTimeOffset)")
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} as an OData literal")


def odata_filter(where: Sequence[Condition]) -> str | None:
    """The ``$filter`` expression for `where` (ANDed), or None when there is no condition."""
    parts: list[str] = []
    for cond in where:
        column = odata_name(cond.column)
        if cond.op == "is_null":
            parts.append(f"{column} eq null")
        elif cond.op == "not_null":
            parts.append(f"{column} ne null")
        elif cond.op == "blank":
            parts.append(f"({column} eq null or trim({column}) eq '')")
        elif cond.op == "not_blank":
            parts.append(f"{column} ne null and trim({column}) ne ''")
        elif cond.op == "in":
            # An `or` of equalities rather than 4.01's `in`: every v4.0 server understands it.
            parts.append("(" + " or ".join(f"{column} eq {odata_literal(v)}" for v in cond.value) + ")")
        else:
            parts.append(f"{column} {_OPS[cond.op]} {odata_literal(cond.value)}")
    return " and ".join(parts) if parts else None


APPLY_REFUSED = frozenset({400, 405, 501})
"""How a service without the aggregation extension answers ``$apply`` (then crmctl folds itself)."""


class ApplyRefused(SourceError):
    """An ``$apply`` query cannot be used: the service refused it (`refused`: it does not implement
    the aggregation extension, or not this part of it) or paged its answer inconsistently.
    Raised only for ``$apply`` requests, and caught by `aggregate`, which then folds the rows."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _number(value: Any) -> Any:
    """An aggregate figure as a number: some services send Edm.Decimal (and IEEE754-compatible
    Int64) as JSON strings."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()


class OdataSource:
    """A read-only OData v4 source.

    Args:
        url: The service root, e.g. ``https://crm.corp/Contoso/api/data/v8.2/``; the
            ``odata+https://`` form (for `open_source`) is accepted too. User and password in the
            URL become HTTP Basic credentials and are removed from `url`.
        tokens: Bearer tokens, asked for before every request (wins over URL credentials).
        timeout: Seconds per request.
        page_size: ``Prefer: odata.maxpagesize`` to ask for (the server may ignore it).
        retries: Retries of 429 / 502 / 503 / 504 and of network failures.
        backoff: First retry wait in seconds (doubled each time; a Retry-After wins).
        session: An aiohttp session to use (not closed by `close()`).
        clock: Wall clock for the start times in the query log.
    """

    timestamps_typed = True
    """Timestamps are Edm.DateTimeOffset: conditions compare instants, not text layouts."""

    def __init__(
        self,
        url: str,
        *,
        tokens: TokenProvider | None = None,
        timeout: float = 30.0,
        page_size: int = MAX_PAGE_SIZE,
        retries: int = 2,
        backoff: float = 0.5,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> None:
        if url.lower().startswith("odata+"):
            url = url[len("odata+"):]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError("The OData source URL must be an absolute http(s) URL of the service root.")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self._basic: str | None = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._basic = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        netloc = parts.netloc.rpartition("@")[2]
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.url = urlunsplit((parts.scheme, netloc, path, "", ""))
        """The service root without credentials: safe to show."""
        self._insecure = self._basic is not None and parts.scheme == "http" and not _is_loopback(parts.hostname)
        self.tokens = tokens
        self.timeout = timeout
        self.page_size = page_size
        self.retries = max(0, retries)
        self.backoff = backoff
        self._session = session
        self._owns_session = session is None
        self._clock = clock or SystemClock()
        self.apply_supported: bool | None = None
        """Whether the service answers ``$apply`` aggregates: None until first asked."""

    def __repr__(self) -> str:
        return f"OdataSource({self.url!r})"

    # -- query intents (SourceQueries) ----------------------------------------------------

    async def count(self, table: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None) -> int:
        """`$count=true` on a one-row page; counted page by page when the server caps or omits it."""
        params: list[tuple[str, Any]] = [("$count", "true")]
        condition = odata_filter(where)
        if condition:
            params.append(("$filter", condition))
        url = self._entity_set_url(table, params)
        what = f"the count of '{table}'"
        data = await self._get_page(url, ("odata.maxpagesize=1", COUNT_PREFER), log, what)
        counted = data.get("@odata.count", data.get("@count"))
        exact = isinstance(counted, int) and not isinstance(counted, bool) and counted >= 0
        if exact and data.get(COUNT_CAPPED) is not True:
            return int(counted)
        # No count, or a capped one: count every row (slow, but a capped figure is not a count).
        total = 0
        async for rows in self._pages(self._entity_set_url(table, params[1:]), log, what):
            total += len(rows)
        return total

    async def keys(
        self, table: str, key: str, where: Sequence[Condition] = (), *, log: QueryLog | None = None,
        batch: int = 5000, limit: int | None = None, offset: int = 0,
    ) -> AsyncIterator[list[Any]]:
        """The key values, ``$orderby`` the key, re-cut into batches of at most `batch`."""
        name = odata_name(key)
        async for rows in self._query(table, [name], name, where, log, batch, limit, offset):
            yield [row[name] for row in rows]

    async def records(
        self,
        table: str,
        columns: Sequence[str],
        *,
        key: str,
        where: Sequence[Condition] = (),
        log: QueryLog | None = None,
        batch: int = 5000,
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The rows with exactly `columns`, ``$orderby`` `key`, re-cut into batches of at most `batch`."""
        if not columns:
            raise ValueError("name at least one column")
        names = [odata_name(c) for c in columns]
        async for rows in self._query(table, names, odata_name(key), where, log, batch, limit, offset):
            yield [{n: row[n] for n in names} for row in rows]

    async def check_columns(self, table: str, columns: Sequence[str], *, log: QueryLog | None = None) -> None:
        """One ``$select`` of every column on a one-row page: the service itself says which name it
        does not know (the answer names it), and a missing entity set is a 404."""
        names = list(dict.fromkeys(odata_name(c) for c in columns))
        if not names:
            return
        url = self._entity_set_url(table, [("$select", ",".join(names)), ("$top", "1")])
        what = f"the columns {', '.join(names)} of '{table}'"
        data = await self._get_page(url, ("odata.maxpagesize=1",), log, what)
        for row in data["value"][:1]:
            missing = [n for n in names if n not in row]
            if missing:
                raise SourceError(f"The OData source's '{table}' has no column {', '.join(repr(m) for m in missing)}.")

    async def aggregate(
        self,
        table: str,
        measures: Sequence[SourceMeasure],
        group_by: Sequence[str] = (),
        where: Sequence[Condition] = (),
        *,
        log: QueryLog | None = None,
    ) -> list[dict[str, Any]]:
        """``$apply=filter(…)/groupby((…),aggregate(…))`` on the server; when the service does not
        offer ``$apply`` (400 / 405 / 501), the matching rows are streamed once and folded here.

        Either way the figures are exact; the fold costs one paged read of the columns involved,
        and its memory is one running figure per group.
        """
        if not measures:
            raise ValueError("name at least one measure")
        groups = [odata_name(g) for g in group_by]
        for m in measures:
            odata_name(m.name)
            if m.column:
                odata_name(m.column)
        if self.apply_supported is not False:
            try:
                rows = await self._apply(table, measures, groups, where, log)
                self.apply_supported = True
                return rows
            except ApplyRefused as exc:
                if exc.refused:  # the service said no: do not ask again
                    self.apply_supported = False
        return await self._fold(table, measures, groups, where, log)

    async def _apply(
        self, table: str, measures: Sequence[SourceMeasure], groups: list[str], where: Sequence[Condition],
        log: QueryLog | None,
    ) -> list[dict[str, Any]]:
        figures = ",".join("$count as " + m.name if m.agg == "count" else f"{m.column} with {m.agg} as {m.name}"
                           for m in measures)
        steps = []
        condition = odata_filter(where)
        if condition:
            steps.append(f"filter({condition})")
        steps.append(f"groupby(({','.join(groups)}),aggregate({figures}))" if groups else f"aggregate({figures})")
        url = self._entity_set_url(table, [("$apply", "/".join(steps))])
        what = f"the aggregate of '{table}'"
        found: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        async for rows in self._pages(url, log, what, apply=True):
            for row in rows:
                group = tuple(row.get(g) for g in groups)
                if group in seen:
                    # Aggregated rows have no key, and a service whose skiptoken names the last
                    # key of a page resumes at the wrong place: a group served twice means the
                    # pages cannot be trusted, so the figures are folded from the rows instead.
                    raise ApplyRefused(f"The OData source served a group of {what} twice while paging.")
                seen.add(group)
                found.append({**{g: row.get(g) for g in groups},
                              **{m.name: _number(row.get(m.name)) for m in measures}})
        if not groups and not found:
            found.append({m.name: 0 if m.agg == "count" else None for m in measures})
        for row in found:
            for m in measures:
                if m.agg == "count" and row[m.name] is None:
                    row[m.name] = 0
        return found

    async def _fold(
        self, table: str, measures: Sequence[SourceMeasure], groups: list[str], where: Sequence[Condition],
        log: QueryLog | None,
    ) -> list[dict[str, Any]]:
        columns = list(dict.fromkeys([*groups, *(str(m.column) for m in measures if m.column)]))
        if not columns:  # a bare count: the count intent is exact and cheap
            total = await self.count(table, where, log=log)
            return [{m.name: total for m in measures}]
        figures: dict[tuple[Any, ...], dict[str, Any]] = {}
        order = columns[0]
        async for rows in self._query(table, columns, order, where, log, MAX_PAGE_SIZE):
            for row in rows:
                group = tuple(row.get(g) for g in groups)
                held = figures.setdefault(group, {m.name: 0 if m.agg == "count" else None for m in measures})
                for m in measures:
                    value = 1 if m.agg == "count" else _number(row.get(str(m.column)))
                    held[m.name] = combine_measure(m.agg, held[m.name], value)
        if not groups and not figures:
            figures[()] = {m.name: 0 if m.agg == "count" else None for m in measures}
        return [{**dict(zip(groups, group)), **held} for group, held in figures.items()]

    async def duplicates(
        self, table: str, column: str, key: str, where: Sequence[Condition] = (), *,
        log: QueryLog | None = None, batch: int = 5000,
    ) -> AsyncIterator[list[tuple[str, Any, Any]]]:
        """Groups are counted by the service (``aggregate``, exact values), folded A-Z here to find
        the values that repeat case-insensitively, and only then are the rows with those values
        read (by value when they are few, else one scan). Memory: one count per distinct value."""
        name, key_name = odata_name(column), odata_name(key)
        present = [*where, Condition(name, "not_blank")]
        counts: dict[str, int] = {}
        exact: dict[str, list[Any]] = {}
        for row in await self.aggregate(table, [SourceMeasure("n", "count")], [name], present, log=log):
            value = row.get(name)
            if value is None:
                continue
            folded = fold_text(value if isinstance(value, str) else str(value))
            counts[folded] = counts.get(folded, 0) + int(row.get("n") or 0)
            exact.setdefault(folded, []).append(value)
        repeated = {f for f, n in counts.items() if n > 1}
        if not repeated:
            return
        values = [v for f in sorted(repeated) for v in exact[f]]
        pairs: list[tuple[Any, Any]] = []
        chunks = [values[i:i + 50] for i in range(0, len(values), 50)] if len(values) <= 2000 else [None]
        for chunk in chunks:
            conditions = present if chunk is None else [*present, Condition(name, "in", chunk)]
            async for rows in self.records(table, [key_name, name], key=key_name, where=conditions, log=log):
                pairs.extend((r[name], r[key_name]) for r in rows)
        found = fold_duplicates(pairs, repeated)
        for start in range(0, len(found), batch):
            yield found[start:start + batch]

    async def key_sample(self, table: str, key: str, size: int, *, log: QueryLog | None = None) -> list[Any] | None:
        """None: an OData service has no cheap way to pick keys spread over the table."""
        return None

    # -- SQL is not something an OData service understands --------------------------------

    async def scalar(self, sql: str, params: SqlParams = (), *, log: QueryLog | None = None) -> Any:
        raise SourceError(
            "The source is an OData service and cannot run SQL; this check must ask it through "
            "count/keys/records (see docs/connectors.md, 'Query intents')."
        )

    async def rows(
        self, sql: str, params: SqlParams = (), *, log: QueryLog | None = None, batch: int = 5000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        await self.scalar(sql, params, log=log)
        yield []  # pragma: no cover - unreachable; makes this an async generator like SqlSource.rows

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    # -- paging ---------------------------------------------------------------------------

    async def _query(
        self,
        table: str,
        select: list[str],
        key: str,
        where: Sequence[Condition],
        log: QueryLog | None,
        batch: int,
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if limit is not None and limit <= 0:
            return
        params: list[tuple[str, Any]] = [("$select", ",".join(dict.fromkeys(select)))]
        condition = odata_filter(where)
        if condition:
            params.append(("$filter", condition))
        params.append(("$orderby", key))
        if offset:
            params.append(("$skip", str(int(offset))))
        if limit is not None:
            params.append(("$top", str(int(limit))))
        what = f"the query on '{table}'"
        async for rows in self._pages(self._entity_set_url(table, params), log, what):
            for row in rows:
                missing = [n for n in select if n not in row]
                if missing:
                    raise SourceError(f"The OData source left out {', '.join(missing)} in {what}.")
            for start in range(0, len(rows), batch):
                yield rows[start:start + batch]

    async def _pages(
        self, url: str, log: QueryLog | None, what: str, *, apply: bool = False
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's rows (empty pages included), following nextLinks until none is left."""
        seen: set[str] = set()
        prefer = (f"odata.maxpagesize={self.page_size}",)
        while True:
            seen.add(url)
            data = await self._get_page(url, prefer, log, what, apply=apply)
            yield data["value"]
            link = data.get("@odata.nextLink", data.get("@nextLink"))
            if link is None:
                return
            try:
                url = self._next_url(url, link, seen, what)
            except SourceError as exc:
                if apply:  # some services page aggregated results wrongly: fold instead
                    raise ApplyRefused(str(exc)) from None
                raise

    def _next_url(self, current: str, link: Any, seen: set[str], what: str) -> str:
        if not isinstance(link, str) or not link.strip():
            raise SourceError(f"The OData source sent an unusable nextLink in {what}.")
        # Relative links are relative to the page that carried them; for a top-level entity set
        # that is the same resource the spec's context-URL rule names.
        absolute = urljoin(current, link.strip())
        if _origin(absolute) != _origin(self.url):
            raise SourceError(
                f"The OData source's nextLink in {what} points to {_origin(absolute)[1]}, not to "
                f"{_origin(self.url)[1]}; crmctl does not send credentials elsewhere (a proxy in front "
                "of the service may need to rewrite its links)."
            )
        if absolute in seen:
            raise SourceError(f"The OData source's nextLink in {what} repeats an earlier page.")
        return absolute

    def _entity_set_url(self, table: str, params: list[tuple[str, Any]]) -> str:
        return f"{self.url}{quote(odata_name(table), safe='')}?{encode_query(params)}"

    # -- the one place a request is sent ----------------------------------------------------

    async def _get_page(
        self, url: str, prefer: Sequence[str], log: QueryLog | None, what: str, *, apply: bool = False
    ) -> Mapping[str, Any]:
        status, body = await self._get(url, prefer, log, what, apply=apply)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise SourceError(f"The OData source answered {what} with something that is not JSON.") from None
        if not isinstance(data, dict) or not isinstance(data.get("value"), list) or not all(
            isinstance(r, dict) for r in data["value"]
        ):
            raise SourceError(f"The OData source's answer to {what} has no 'value' list of rows.")
        return data

    async def _get(
        self, url: str, prefer: Sequence[str], log: QueryLog | None, what: str, *, apply: bool = False
    ) -> tuple[int, bytes]:
        """GETs `url` with retries for transient failures and one token refresh after a 401."""
        if self._insecure:
            raise SourceError(
                "crmctl does not send the OData source's password over plain http; use an https URL."
            )
        deadline = log.deadline if log is not None else None
        attempt, refreshed = 0, False
        while True:
            headers = await self._headers(prefer)
            limit = self.timeout if deadline is None else min(self.timeout, deadline - time.monotonic())
            if limit <= 0:
                raise SourceError(f"The check's time ran out before {what} could be sent to the OData source.")
            started, t0 = self._clock.now(), time.perf_counter()
            try:
                async with self._ensure_session().get(
                    yarl.URL(url, encoded=True),  # a nextLink goes out exactly as received
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=limit),
                    allow_redirects=False,  # a redirect could carry the credentials elsewhere
                ) as resp:
                    status, body, answer_headers = resp.status, await resp.read(), resp.headers.copy()
            except (aiohttp.ClientError, TimeoutError) as exc:
                detail, retriable = _describe_failure(exc, url, limit)
                self._record(log, url, None, t0, started, 0, detail)
                if not retriable or attempt >= self.retries:
                    raise SourceError(f"Could not reach the OData source for {what}: {detail}.") from None
                await self._pause(attempt, None, deadline, detail, what)
                attempt += 1
                continue
            error = None if 200 <= status < 300 else _error_text(status, body)
            self._record(log, url, status, t0, started, len(body), error)
            if 200 <= status < 300:
                return status, body
            if status == 401 and self.tokens is not None and not refreshed:
                self.tokens.invalidate()
                refreshed = True
                continue
            if status in TRANSIENT and attempt < self.retries:
                await self._pause(attempt, _retry_after(answer_headers), deadline, error or str(status), what)
                attempt += 1
                continue
            if apply and status in APPLY_REFUSED:
                raise ApplyRefused(_sentence(status, body, what), refused=True)
            raise SourceError(_sentence(status, body, what))

    async def _headers(self, prefer: Sequence[str]) -> dict[str, str]:
        headers = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
        if prefer:
            headers["Prefer"] = ",".join(prefer)
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {await self.tokens.token()}"
        elif self._basic is not None:
            headers["Authorization"] = self._basic
        return headers

    async def _pause(
        self, attempt: int, retry_after: float | None, deadline: float | None, detail: str, what: str
    ) -> None:
        delay = retry_after if retry_after is not None else self.backoff * 2**attempt
        if deadline is not None and time.monotonic() + delay >= deadline:
            if retry_after is not None:  # say what the service asked for, not just that time ran out
                raise SourceError(f"The OData source asked crmctl to back off {retry_after:g} s before retrying "
                                  f"{what} ({detail}), which is past the check's deadline.")
            raise SourceError(f"The OData source failed {what} ({detail}) and the check's time ran out.")
        await asyncio.sleep(delay)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the aiohttp session handed to OdataSource is closed")
            session = aiohttp.ClientSession(trust_env=True)  # corporate proxies via HTTPS_PROXY
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False  # every request on the wire is ours and logged
            self._session = session
        return self._session

    @staticmethod
    def _record(
        log: QueryLog | None, url: str, status: int | None, t0: float, started: datetime, size: int, error: str | None
    ) -> None:
        if log is not None:
            log.record("GET", url, status, (time.perf_counter() - t0) * 1000.0, bytes=size, error=error,
                       started=started, target="source")


def _odata_error(body: bytes) -> tuple[str, str]:
    try:
        err = json.loads(body).get("error")
    except (UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return "", ""
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("code") or ""), str(err.get("message") or "")


def _error_text(status: int, body: bytes) -> str:
    code, _ = _odata_error(body)
    code = "" if code == str(status) else code  # some services repeat the status as the code
    return status_tag(status, code).strip(" ()")


def _sentence(status: int, body: bytes, what: str) -> str:
    code, message = _odata_error(body)
    code = "" if code == str(status) else code
    tag = status_tag(status, code)
    detail = scrub(message).rstrip(" .")
    if status in (401, 403):
        return f"The OData source refused crmctl's credentials for {what}{tag}."
    if status == 429:  # "rejected" would read as a refusal of the query itself
        return f"The OData source kept throttling {what}{tag}; crmctl backed off as asked until its retries ran out."
    if status == 404:
        found = f": {detail}" if detail else ""
        return f"The OData source has nothing at {what}{found}{tag}; names are case sensitive."
    if 300 <= status < 400:
        return f"The OData source redirected {what}{tag}; configure the final service URL."
    return f"The OData source rejected {what}{': ' + detail if detail else ''}{tag}."


def open_odata_source(url: str) -> OdataSource:
    """The `open_source` factory for ``odata+https://…`` URLs."""
    return OdataSource(url)


register_source("odata", open_odata_source)
