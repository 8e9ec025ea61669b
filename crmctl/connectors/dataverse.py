"""A read-only Dataverse Web API client that behaves well under the service protection limits.

What it guarantees, and why:
- GET only. crmctl checks a cutover; it must never be able to alter the system it is judging,
  so there is no method that sends anything else and the one request function refuses any other.
- Every request goes through the target's shared `TargetLimiter` (concurrency + 5-minute budget)
  and honours a 429's Retry-After for *all* callers, because Dataverse extends the penalty when a
  client keeps sending.
- Paging follows `@odata.nextLink` byte for byte with the same `odata.maxpagesize`, as Microsoft
  requires; `$skip` is not supported by Dataverse and never used.
- An answer that is not the JSON shape expected raises `MalformedResponse`: a broken page must
  never be read as "zero rows", which a reconciliation would report as data loss (or hide it).
"""

from __future__ import annotations

import asyncio
import errno
import json
import random
import uuid
from itertools import repeat
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import orjson
import yarl

from crmctl import __version__
from crmctl.clock import Clock, SystemClock
from crmctl.connectors.auth import TokenProvider
from crmctl.connectors.errors import (
    AGGREGATE_LIMIT_CODE,
    AggregateLimitExceeded,
    AuthError,
    DataverseError,
    DeadlineExceeded,
    MalformedResponse,
    NotFoundError,
    ThrottledError,
    TransportError,
    remember_secret,
    status_tag,
)
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.querylog import QueryLog

MAX_PAGE_SIZE = 5000
"""Dataverse's largest `odata.maxpagesize` (and its default)."""
COUNT_CAP = 5000
"""`$count=true` counts at most this many rows."""
MAX_GET_URL = 32768
"""Dataverse refuses longer GET URLs."""
TRANSIENT_STATUSES = frozenset({502, 503, 504})
ODATA_SAFE = "$'(),=:/@*!;"
"""Characters left literal in query values: OData reads `$filter=name eq 'a'` with `%20` spaces."""
COUNT_ANNOTATIONS = (
    'odata.include-annotations="Microsoft.Dynamics.CRM.totalrecordcount,'
    'Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"'
)

Params = Mapping[str, Any] | Iterable[tuple[str, Any]]


def encode_query(params: Params) -> str:
    """Encodes query parameters the way OData expects: `$` and `@` kept in names, spaces as %20.

    `aiohttp`'s own encoding would turn spaces into `+` (which OData reads as a plus sign in a
    literal) and escape `$`; hence the URL is built here and sent with `encoded=True`.
    """
    items = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{quote(str(k), safe='$@')}={quote(_param_text(v), safe=ODATA_SAFE)}" for k, v in items)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _origin_key(url: str) -> tuple[str, str]:
    """(scheme, host:port) with an `.api.` second label folded away.

    Dataverse documents both `org.crm.dynamics.com` and `org.api.crm.dynamics.com` for one
    organization, and a nextLink may come back under either.
    """
    parts = urlsplit(url)
    host = (parts.netloc.rpartition("@")[2]).lower()
    labels = host.split(".")
    if len(labels) > 2 and labels[1] == "api":
        host = ".".join(labels[:1] + labels[2:])
    return parts.scheme.lower(), host


USER_AGENT = f"crmctl/{__version__}"
"""What every request to Dynamics is sent with."""


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class _Sent:
    """What one attempt produced: an answer, or a transport failure (phrase, retriable)."""

    started: datetime
    duration_ms: float
    answer: _Answer | None = None
    failure: tuple[str, bool] = ("", False)
    received_at: float = 0.0
    resume_at: float | None = None
    """For a 429: the monotonic time the limiter holds every caller until."""


class DataverseClient:
    """Reads Dataverse through its Web API (`…/api/data/v9.2/`), GET only.

    Args:
        api_url: The Web API root, e.g. ``https://contoso.crm.dynamics.com/api/data/v9.2/``.
        tokens: Asked for a bearer token before every request.
        limiter: The target's shared limiter (one per target, shared by every check).
        timeout: Seconds allowed per attempt (also bounded by the caller's deadline).
        retries: Retries after the first attempt for 429, 502/503/504 and transport failures.
        page_size: Default `odata.maxpagesize` (at most 5000).
        session: An aiohttp session to use (not closed by `close()`); one is made otherwise.
        clock: Wall clock for the start times in the query log.
        rng: Random source for the backoff jitter (seed it in tests).
        backoff_base: First backoff step in seconds; attempt n waits up to base * 2**n.
        backoff_cap: Longest backoff step.

    Each method takes ``log``: every attempt is recorded there (method, redacted URL, status,
    duration, bytes), and ``log.deadline`` bounds all waiting done on the caller's behalf.
    """

    def __init__(
        self,
        api_url: str,
        tokens: TokenProvider,
        limiter: TargetLimiter,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        page_size: int = MAX_PAGE_SIZE,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_url must be an absolute http(s) URL, got {api_url!r}")
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.tokens = tokens
        self.limiter = limiter
        self.timeout = timeout
        self.retries = max(0, retries)
        self.page_size = page_size
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._session = session
        self._owns_session = session is None
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._request_ids = random.Random()  # seeded once from the OS (see _send_once)
        self._entity_sets: dict[str, str] = {}

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the session if this client made it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    def __repr__(self) -> str:
        return f"DataverseClient({self.api_url!r})"

    # -- public queries -------------------------------------------------------------------

    async def get_json(
        self,
        path_or_url: str,
        params: Params | None = None,
        *,
        prefer: Sequence[str] = (),
        log: QueryLog | None = None,
    ) -> dict[str, Any]:
        """GETs a resource relative to the API root (or an absolute same-org URL) as a JSON object.

        Raises:
            DataverseError (or a subclass) for error answers, TransportError when no answer came,
            MalformedResponse when the body is not a JSON object.
        """
        url = self.url_for(path_or_url, params)
        return await self._get_object(url, prefer, log, _what(self.api_url, url))

    async def pages(
        self,
        entity_set: str,
        *,
        select: Sequence[str] | str,
        filter: str | None = None,
        orderby: Sequence[str] | str | None = None,
        page_size: int | None = None,
        log: QueryLog | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yields the rows of a query page by page, following `@odata.nextLink` verbatim.

        Order on the primary key (Dataverse's default and fastest) or another unique column:
        paging needs a deterministic order.
        """
        size = page_size or self.page_size
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if not select:
            raise ValueError("select at least one column: a query without $select reads every column")
        params: list[tuple[str, Any]] = [("$select", select)]
        if filter:
            params.append(("$filter", filter))
        if orderby:
            params.append(("$orderby", orderby))
        # The same maxpagesize must accompany every nextLink, as Microsoft requires.
        prefer = (f"odata.maxpagesize={size}",)
        url = self.url_for(entity_set, params)
        async for rows in self._follow(url, prefer, log, f"the query on '{entity_set}'"):
            yield rows

    async def aggregate(self, entity_set: str, apply: str, *, log: QueryLog | None = None) -> list[dict[str, Any]]:
        """Runs an OData `$apply` aggregate; more than 50,000 input rows raise AggregateLimitExceeded."""
        return await self._collect(entity_set, [("$apply", apply)], log, f"the aggregate on '{entity_set}'")

    async def fetch_aggregate(
        self, entity_set: str, fetchxml: str, *, log: QueryLog | None = None
    ) -> list[dict[str, Any]]:
        """Runs a FetchXML query (typically `aggregate='true'`) through `?fetchXml=`."""
        return await self._collect(entity_set, [("fetchXml", fetchxml)], log, f"the FetchXML query on '{entity_set}'")

    async def count_capped(
        self,
        entity_set: str,
        filter: str | None = None,
        *,
        select: str | None = None,
        log: QueryLog | None = None,
    ) -> tuple[int, bool]:
        """Counts rows with `$count=true`, which Dataverse caps at 5,000.

        Returns:
            (count, limit_exceeded). When limit_exceeded is True the count is only a lower
            bound; use an aggregate (up to 50,000) or paging for an exact figure.
        """
        params: list[tuple[str, Any]] = []
        if select:
            params.append(("$select", select))
        if filter:
            params.append(("$filter", filter))
        params.append(("$count", "true"))
        what = f"the count on '{entity_set}'"
        # One row per page: the count is returned "irrespective of the page size requested".
        data = await self._get_object(
            self.url_for(entity_set, params), ("odata.maxpagesize=1", COUNT_ANNOTATIONS), log, what
        )
        _value(data, what)
        count = data.get("@odata.count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise MalformedResponse(200, "", "the answer has no '@odata.count'", what=what)
        exceeded = data.get("@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded")
        if exceeded is None:
            # Without the annotation a count at the cap cannot be told from an exact 5,000.
            exceeded = count >= COUNT_CAP
        return count, bool(exceeded)

    async def whoami(self, *, log: QueryLog | None = None) -> dict[str, Any]:
        """The cheapest authenticated call: proves the token and the application user work."""
        data = await self.get_json("WhoAmI", log=log)
        if "UserId" not in data:
            raise MalformedResponse(200, "", "the answer has no 'UserId'", what="WhoAmI")
        return data

    async def entity_set_for(self, logical_name: str, *, log: QueryLog | None = None) -> str:
        """The entity set name of a table (e.g. opportunity -> opportunities), cached per client."""
        if logical_name in self._entity_sets:
            return self._entity_sets[logical_name]
        literal = logical_name.replace("'", "''")
        data = await self.get_json(
            "EntityDefinitions",
            [("$select", "LogicalName,EntitySetName"), ("$filter", f"LogicalName eq '{literal}'")],
            log=log,
        )
        rows = _value(data, "EntityDefinitions")
        if not rows or not isinstance(rows[0].get("EntitySetName"), str):
            raise NotFoundError(
                None, "", "", what="EntityDefinitions", sentence=f"Dynamics has no table named '{logical_name}'."
            )
        self._entity_sets[logical_name] = rows[0]["EntitySetName"]
        return self._entity_sets[logical_name]

    async def total_record_count(
        self, logical_names: Sequence[str], *, log: QueryLog | None = None
    ) -> dict[str, int]:
        """RetrieveTotalRecordCount: row counts from a snapshot up to 24 hours old.

        A hint for scale and progress, never evidence of completeness: deletes and loads since
        the snapshot are not reflected.
        """
        if not logical_names:
            return {}
        data = await self.get_json(
            "RetrieveTotalRecordCount(EntityNames=@p1)",
            [("@p1", json.dumps(list(logical_names), separators=(",", ":")))],
            log=log,
        )
        coll = data.get("EntityRecordCountCollection")
        keys = coll.get("Keys") if isinstance(coll, dict) else None
        values = coll.get("Values") if isinstance(coll, dict) else None
        if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
            raise MalformedResponse(
                200, "", "the answer has no matching Keys/Values", what="RetrieveTotalRecordCount"
            )
        try:
            return {str(k): int(v) for k, v in zip(keys, values)}
        except (TypeError, ValueError):
            raise MalformedResponse(
                200, "", "a count is not a number", what="RetrieveTotalRecordCount"
            ) from None

    def url_for(self, path_or_url: str, params: Params | None = None) -> str:
        """The exact URL a GET would use: relative paths are joined to the API root and encoded."""
        if path_or_url.startswith(("http://", "https://")):
            if _origin_key(path_or_url) != _origin_key(self.api_url):
                # The bearer token must never travel to another host.
                raise ValueError(f"{path_or_url.split('?')[0]!r} is not under {self.api_url!r}")
            base, query = path_or_url.partition("?")[::2]
            pairs: list[tuple[str, Any]] = []
            extra = query
        else:
            path, _, query = path_or_url.lstrip("/").partition("?")
            base = self.api_url + quote(unquote(path), safe="/$'(),=:@!*;")
            # Normalise a caller's query (raw or already encoded) by decoding, then re-encoding.
            pairs = []
            for pair in filter(None, query.split("&")):
                name, _, value = pair.partition("=")
                pairs.append((unquote(name), unquote(value)))
            extra = ""
        if params:
            pairs.extend(params.items() if isinstance(params, Mapping) else params)
        parts = [q for q in (extra, encode_query(pairs) if pairs else "") if q]
        return base + ("?" + "&".join(parts) if parts else "")

    # -- plumbing -------------------------------------------------------------------------

    async def _collect(
        self, entity_set: str, params: list[tuple[str, Any]], log: QueryLog | None, what: str
    ) -> list[dict[str, Any]]:
        """All rows of a (normally single-page) aggregate answer."""
        url = self.url_for(entity_set, params)
        return [row async for rows in self._follow(url, (), log, what) for row in rows]

    async def _follow(
        self, url: str, prefer: Sequence[str], log: QueryLog | None, what: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yields each page's rows, following `@odata.nextLink` exactly as given until it is absent."""
        seen: set[str] = set()
        while True:
            seen.add(url)
            data = await self._get_object(url, prefer, log, what)
            yield _value(data, what)
            next_link = data.get("@odata.nextLink")
            if next_link is None:
                return
            url = self._checked_next_link(next_link, seen, what)

    def _checked_next_link(self, next_link: Any, seen: set[str], what: str) -> str:
        if not isinstance(next_link, str) or not next_link.startswith(("http://", "https://")):
            raise MalformedResponse(200, "", "the '@odata.nextLink' is not an absolute URL", what=what)
        if _origin_key(next_link) != _origin_key(self.api_url):
            raise MalformedResponse(200, "", "the '@odata.nextLink' points to another host", what=what)
        if next_link in seen:
            raise MalformedResponse(200, "", "the '@odata.nextLink' repeats an earlier page", what=what)
        return next_link

    async def _get_object(
        self, url: str, prefer: Sequence[str], log: QueryLog | None, what: str
    ) -> dict[str, Any]:
        answer = await self._request("GET", url, prefer=prefer, log=log, what=what)
        try:
            data = _decode(answer.body)
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            kind = answer.headers.get("Content-Type", "no content type").split(";")[0]
            raise MalformedResponse(
                answer.status, "", f"the body is not JSON ({len(answer.body)} bytes of {kind})", what=what
            ) from None
        if not isinstance(data, dict):
            raise MalformedResponse(answer.status, "", "the body is not a JSON object", what=what)
        return data

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the aiohttp session handed to DataverseClient is closed")
            # trust_env: jump hosts usually reach Microsoft through the corporate HTTPS proxy.
            session = aiohttp.ClientSession(trust_env=True)
            if hasattr(session, "_retry_connection"):
                # aiohttp silently resends an idempotent request once after a reset; that request
                # would escape the budget and the query log, so retries stay ours alone.
                session._retry_connection = False
            self._session = session
        return self._session

    async def _token(self, deadline: float | None, what: str) -> str:
        if deadline is None:
            return await self.tokens.token()
        remaining = deadline - self.limiter.clock.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                return await self.tokens.token()
        except TimeoutError:
            raise DeadlineExceeded(
                f"The check's deadline passed while waiting for a sign-in token for {what}."
            ) from None

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt))."""
        return self._rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    async def _request(
        self,
        method: str,
        url: str,
        *,
        prefer: Sequence[str],
        log: QueryLog | None,
        what: str,
    ) -> _Answer:
        """The only place a request is sent. Retries, back-off and auth refresh live here."""
        if method != "GET":  # not an `assert`: it must hold under `python -O` too
            raise AssertionError(f"crmctl is read-only: refusing to send {method} to Dynamics")
        if len(url) > MAX_GET_URL:
            raise DataverseError(
                None,
                "",
                "",
                what=what,
                sentence=f"The request for {what} is {len(url):,} characters long, over Dynamics' "
                f"{MAX_GET_URL:,}-character limit for a GET.",
            )
        deadline = log.deadline if log is not None else None
        attempt = 0  # retries used so far (429, 5xx, transport)
        refreshed = False  # the one 401 retry with a fresh token
        while True:
            sent = await self._send_once(url, prefer, deadline, attempt, what)
            answer = sent.answer
            if answer is None:
                detail, retriable = sent.failure
                self._record(log, url, None, sent, 0, detail)
                error = TransportError(None, "", detail, what=what)
                if not retriable:
                    raise error
                if attempt >= self.retries:
                    raise TransportError(None, "", f"{detail} (gave up after {attempt + 1} attempts)", what=what)
                await self._sleep_before_retry(attempt, deadline, error)
                attempt += 1
                continue

            status = answer.status
            if 200 <= status < 300:
                self._record(log, url, status, sent, len(answer.body), None)
                return answer
            code, message = _odata_error(answer)
            tag = status_tag(status, code)
            request_id = answer.headers.get("x-ms-service-request-id") or answer.headers.get("REQ_ID")

            if status == 429:
                assert sent.resume_at is not None
                delay = sent.resume_at - sent.received_at
                self._record(log, url, status, sent, len(answer.body), f"throttled, retry after {delay:g} s")
                retry_after = _retry_after(answer.headers)
                if attempt >= self.retries:
                    raise ThrottledError(
                        status, code, message, what=what, request_id=request_id, retry_after=retry_after,
                        sentence=f"Dynamics kept throttling {what}{tag}; all {attempt + 1} attempts were refused.",
                    )
                if deadline is not None and sent.resume_at > deadline:
                    raise ThrottledError(
                        status, code, message, what=what, request_id=request_id, retry_after=retry_after,
                        sentence=f"Dynamics asked crmctl to wait {delay:.0f} s before retrying {what}{tag}, "
                        "which is past this check's deadline.",
                    )
                attempt += 1
                continue  # the limiter holds every caller, this one included, until the deferral ends

            self._record(log, url, status, sent, len(answer.body), tag.strip(" ()"))
            if status == 401:
                if not refreshed:
                    self.tokens.invalidate()
                    refreshed = True
                    continue
                raise AuthError(
                    status, code, message, what=what, request_id=request_id,
                    sentence=f"Dynamics refused the token{tag}, also after a fresh one was fetched.",
                )
            if status == 403:
                raise AuthError(status, code, message, what=what, request_id=request_id)
            if status in TRANSIENT_STATUSES:
                error = DataverseError(
                    status, code, message, what=what, request_id=request_id,
                    sentence=f"Dynamics was unavailable for {what}{tag} on {attempt + 1} "
                    f"attempt{'s' if attempt else ''}.",
                )
                if attempt >= self.retries:
                    raise error
                await self._sleep_before_retry(attempt, deadline, error, _retry_after(answer.headers))
                attempt += 1
                continue
            if code.lower() == AGGREGATE_LIMIT_CODE:
                raise AggregateLimitExceeded(status, code, message, what=what, request_id=request_id)
            if status == 404:
                raise NotFoundError(status, code, message, what=what, request_id=request_id)
            raise DataverseError(status, code, message, what=what, request_id=request_id)

    async def _send_once(
        self, url: str, prefer: Sequence[str], deadline: float | None, attempt: int, what: str
    ) -> _Sent:
        """One attempt: fresh token, one limiter slot, one GET. Never raises for HTTP statuses."""
        token = await self._token(deadline, what)
        remember_secret(token)  # scrubbed from every error, whatever its shape (connectors/errors.py)
        headers = {
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "If-None-Match": "null",
            "Authorization": f"Bearer {token}",
            # A correlation id, not a secret: drawn from a PRNG seeded once from the OS, because
            # uuid4() asks the kernel for randomness on every request (a syscall per page, which
            # cost up to ~0.7 ms on a loaded host).
            "x-ms-client-request-id": str(uuid.UUID(int=self._request_ids.getrandbits(128), version=4)),
            # Names crmctl in the server's logs: the test suite's read-only audit holds any
            # non-GET from this agent against crmctl itself (tests/reliability/suite_audit.py).
            "User-Agent": USER_AGENT,
        }
        if prefer:
            headers["Prefer"] = ",".join(prefer)
        session = self._ensure_session()
        clock = self.limiter.clock
        started = self._clock.now()
        async with self.limiter.slot(deadline):
            t0 = clock.monotonic()
            limit = self.timeout if deadline is None else min(self.timeout, deadline - t0)
            if limit <= 0:
                raise DeadlineExceeded(f"The check's deadline passed before {what} could be sent.")
            try:
                async with session.get(
                    yarl.URL(url, encoded=True),  # a nextLink must go out exactly as received
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=limit),
                    allow_redirects=False,  # a redirect could carry the token elsewhere
                ) as resp:
                    received = clock.monotonic()
                    resume_at = None
                    if resp.status == 429:
                        # Hold every caller at once, before any other request can start.
                        wait = _retry_after(resp.headers)
                        resume_at = received + (wait if wait is not None else self._exp(attempt))
                        self.limiter.defer_until(resume_at)
                    answer = _Answer(resp.status, resp.headers.copy(), await resp.read())
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _Sent(started, (clock.monotonic() - t0) * 1000.0, failure=_describe_failure(exc, url, limit))
            return _Sent(started, (clock.monotonic() - t0) * 1000.0, answer, received_at=received, resume_at=resume_at)

    def _exp(self, attempt: int) -> float:
        """Wait for a 429 without Retry-After: 2**attempt seconds (Microsoft's sample), capped."""
        return min(self.backoff_cap, 2.0**attempt)

    async def _sleep_before_retry(
        self, attempt: int, deadline: float | None, error: Exception, at_least: float | None = None
    ) -> None:
        delay = max(self._backoff(attempt), at_least or 0.0)
        clock = self.limiter.clock
        if deadline is not None and clock.monotonic() + delay >= deadline:
            raise error  # no time left for another attempt: report what actually went wrong
        await clock.sleep(delay)

    @staticmethod
    def _record(
        log: QueryLog | None, url: str, status: int | None, sent: _Sent, size: int, error: str | None
    ) -> None:
        if log is not None:
            log.record("GET", url, status, sent.duration_ms, bytes=size, error=error, started=sent.started)


def _what(api_url: str, url: str) -> str:
    """Names a request for error sentences: "the query on 'accounts'" or "WhoAmI"."""
    rest = url[len(api_url):] if url.startswith(api_url) else urlsplit(url).path.rsplit("/", 1)[-1]
    segment = unquote(rest.split("?")[0].split("/")[0].split("(")[0]) or "the service document"
    if segment[:1].isupper():  # functions and metadata: WhoAmI, EntityDefinitions, Retrieve…
        return segment
    return f"the query on '{segment}'"


def _decode(body: bytes) -> Any:
    """Parses a JSON body: orjson first (a 5,000-row page decodes ~4x faster, and decoding is
    most of the client's CPU in a key scan), the standard library when orjson refuses.

    orjson is stricter (no NaN/Infinity literals, integers within 64 bits); anything the
    standard parser accepts is still accepted, and what neither accepts raises ValueError.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _value(data: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    rows = data.get("value")
    if not isinstance(rows, list) or not all(map(isinstance, rows, repeat(dict))):
        raise MalformedResponse(200, "", "the answer has no 'value' list of rows", what=what)
    return rows


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _odata_error(answer: _Answer) -> tuple[str, str]:
    """(code, message) from an OData error body; falls back to WWW-Authenticate for 401s."""
    code, message = "", ""
    try:
        err = json.loads(answer.body).get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
    except (UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        pass
    if not code and answer.status == 401:
        # e.g. `Bearer error="invalid_token", error_description="The token is expired"`
        challenge = answer.headers.get("WWW-Authenticate", "")
        for part in challenge.replace("Bearer", "", 1).split(","):
            key, _, val = part.strip().partition("=")
            if key == "error":
                code = val.strip('"')
    return code, message


def _describe_failure(exc: BaseException, url: str, limit: float) -> tuple[str, bool]:
    """A short phrase for a transport failure, and whether retrying it can help."""
    host = urlsplit(url).hostname or "the server"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the TLS certificate of {host} is not trusted", False
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"the name {host} could not be resolved", True
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{host} closed the connection without answering", True
    if isinstance(exc, TimeoutError):
        return f"{host} did not answer within {limit:g} s", True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {host}", True
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer from {host} was cut off", True
    if isinstance(exc, aiohttp.ClientOSError):
        if getattr(exc, "errno", None) == errno.ECONNRESET or "reset" in str(exc).lower():
            return f"{host} reset the connection", True
        return f"network error talking to {host}", True
    if isinstance(exc, aiohttp.ClientConnectionError):
        return f"the connection to {host} failed", True
    return f"the request to {host} failed ({type(exc).__name__})", False
