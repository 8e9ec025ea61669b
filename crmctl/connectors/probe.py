"""An HTTP prober for integration health endpoints: status, latency and body, never an unredacted URL.

Why it is its own connector and not the Dataverse client: a health endpoint belongs to another
system (the ERP, the marketing platform), so it must not share Dynamics' request budget or
receive its bearer token. It gets a small concurrency limit of its own so that a probe check
cannot hammer a struggling integration, and it never follows redirects (a redirect could carry
an API key in the query string to another host). Probe URLs may hold `${env:NAME}` secrets;
every URL and error sentence leaving this module goes through the caller's `redact` and
`scrub`, and the query log records the URL as written in the config, not as substituted.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from urllib.parse import urlsplit

import aiohttp

from crmctl.clock import Clock, SystemClock
from crmctl.connectors.errors import scrub
from crmctl.connectors.querylog import QueryLog, redact_url

DEFAULT_CONCURRENCY = 2
"""Probes in flight at once per prober: enough to finish N samples quickly, gentle on the endpoint."""
MAX_BODY = 64 * 1024
"""Bytes of the body read to look for `expect_body`; a health page is small, a runaway one is cut."""


@dataclass(frozen=True)
class ProbeSample:
    """One GET of a health endpoint.

    A sample either has a status (the endpoint answered) or an `error` (it did not: refused,
    reset, timed out, DNS). Only answered samples carry a latency.
    """

    status: int | None
    latency_ms: float | None
    """Request start to the end of the (capped) body read; None when no answer came."""
    body_ok: bool | None = None
    """Whether the body contained the expected text; None when nothing was expected or no answer."""
    error: str | None = None
    """Why no answer came, redacted; None when the endpoint answered."""
    location: str | None = None
    """A redirect's target (redacted), which is reported but never followed."""

    @property
    def answered(self) -> bool:
        return self.status is not None


class HttpProber:
    """GETs health endpoints with a concurrency cap of its own.

    Args:
        concurrency: At most this many probes in flight at once (per prober).
        redact: Applied to every URL and message before it is stored or shown; pass
            `Config.redact` so that values substituted from `${env:NAME}` never appear.
        session: An aiohttp session to use (not closed by `close()`); one is made otherwise.
        clock: Wall clock for the start times in the query log.
        max_body: Bytes of body read at most.
    """

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        redact: Callable[[str], str] | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._sem = asyncio.Semaphore(concurrency)
        self._redact = redact or (lambda text: text)
        self._session = session
        self._owns_session = session is None
        self._clock = clock or SystemClock()
        self._max_body = max_body

    async def __aenter__(self) -> HttpProber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the session if this prober made it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        if self._owns_session:
            self._session = None

    def shown(self, url: str) -> str:
        """`url` as it may be printed or journalled: substituted values and secret parameters hidden."""
        return redact_url(self._redact(url))

    async def sample(
        self,
        url: str,
        *,
        timeout: float,
        expect_body: str | None = None,
        log: QueryLog | None = None,
        deadline: float | None = None,
    ) -> ProbeSample:
        """One GET of `url` within `timeout` seconds (and before `deadline`, in `time.monotonic()`
        time, if given). Never raises for network or HTTP failures."""
        shown = self.shown(url)
        async with self._sem:
            if deadline is not None:  # taken after the wait for a slot, which may have been long
                timeout = min(timeout, deadline - time.monotonic())
            started = self._clock.now()
            t0 = time.perf_counter()
            if timeout <= 0:
                error = "no time was left before the check's deadline"
                self._record(log, shown, None, 0.0, 0, error, started)
                return ProbeSample(None, None, error=error)
            try:
                session = self._ensure_session()
                async with session.get(
                    url,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    allow_redirects=False,
                    headers={"Accept": "*/*", "User-Agent": "crmctl-probe"},
                ) as resp:
                    # The body is read (capped) in every case: a latency that stops at the headers
                    # would flatter an endpoint that streams its health page slowly.
                    body = await resp.content.read(self._max_body)
                    latency = (time.perf_counter() - t0) * 1000.0
                    status = resp.status
                    location = resp.headers.get("Location")
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                duration = (time.perf_counter() - t0) * 1000.0
                error = self._describe(exc, shown, timeout)
                self._record(log, shown, None, duration, 0, error, started)
                return ProbeSample(None, None, error=error)
        body_ok = None
        if expect_body is not None:
            body_ok = expect_body in body.decode("utf-8", errors="replace")
        self._record(log, shown, status, latency, len(body), None, started)
        return ProbeSample(
            status,
            latency,
            body_ok=body_ok,
            location=self.shown(location) if location else None,
        )

    # -- internals --------------------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the aiohttp session handed to HttpProber is closed")
            # trust_env: integration endpoints are often reached through the corporate proxy.
            self._session = aiohttp.ClientSession(trust_env=True)
        return self._session

    def _describe(self, exc: BaseException, shown: str, timeout: float) -> str:
        """One redacted phrase for a probe that got no answer."""
        host = urlsplit(shown).hostname or "the endpoint"
        if isinstance(exc, TimeoutError):
            text = f"{host} did not answer within {timeout:g} s"
        elif isinstance(exc, aiohttp.ClientConnectorDNSError):
            text = f"the name {host} could not be resolved"
        elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
            text = f"the TLS certificate of {host} is not trusted"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            text = f"cannot connect to {host} (connection refused or unreachable)"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            text = f"{host} closed the connection without answering"
        elif isinstance(exc, aiohttp.ClientPayloadError):
            text = f"the answer from {host} was cut off"
        elif isinstance(exc, aiohttp.ClientOSError) and (
            getattr(exc, "errno", None) == errno.ECONNRESET or "reset" in str(exc).lower()
        ):
            text = f"{host} reset the connection"
        elif isinstance(exc, ValueError):
            text = f"the probe URL {shown} is not usable"
        else:
            text = f"the request to {host} failed ({type(exc).__name__})"
        return scrub(self._redact(text))

    @staticmethod
    def _record(
        log: QueryLog | None, shown: str, status: int | None, duration_ms: float, size: int,
        error: str | None, started: datetime,
    ) -> None:
        if log is not None:
            log.record("GET", shown, status, duration_ms, bytes=size, error=error, started=started)
