"""A thin reverse proxy in front of the real OData server that makes it behave like other real servers.

odatapy is well behaved: absolute nextLinks, no empty pages, `Prefer: odata.maxpagesize`
honoured. Servers met in the field are not, so this proxy (a fault injector: the data, paging
and query evaluation stay odatapy's) rewrites what passes through:

- ``relative=name|root|query``: nextLinks become ``Accounts?…``, ``/odata/Accounts?…`` or ``?…``;
- ``trailing_empty``: the last page gets a nextLink to one more page with ``"value": []``;
- ``strip_prefer``: the Prefer header is dropped, so the server uses its own page size;
- ``foreign_host``: nextLinks name another host (a proxy that forgot to rewrite them);
- ``repeat_first``: the second page's nextLink points back to the first page;
- ``cap_count``: `$count` is capped as Dynamics CRM does, with its limit-exceeded annotation;
- ``not_json`` / ``no_value``: the second page is HTML / lacks the ``value`` list;
- ``fail_first``: the first request is answered 503 with ``Retry-After: 0``;
- ``throttle=SECONDS``: a throttle storm: every request is answered 429 with ``Retry-After:
  SECONDS`` and an OData error body, however long the client keeps asking;
- ``unauthorised``: every request is answered 401 with ``WWW-Authenticate: Bearer`` and an OData
  error body, whatever credentials came with it (a password changed or an account locked).

Every request the client sent is kept in `seen` (path, Prefer, whether credentials came, when it
arrived on the monotonic clock, and the status it was answered with), for the tests to inspect:
with ``throttle`` the arrival times show whether the client came back before Retry-After expired.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp import web

EMPTY_PAGE = "$skiptoken=crmctl-trailing-empty"


@dataclass
class Seen:
    path_qs: str
    prefer: str | None
    authorization: bool
    at: float = field(default_factory=time.monotonic)
    """When the request arrived (`time.monotonic`, the clock asyncio sleeps on)."""
    status: int | None = None
    """What the proxy itself answered (429 / 401 / 503), or None when the upstream answered."""


@dataclass
class ODataFaultProxy:
    upstream: str
    """The real service root, e.g. http://127.0.0.1:PORT/odata/."""
    relative: str | None = None
    trailing_empty: bool = False
    strip_prefer: bool = False
    foreign_host: bool = False
    repeat_first: bool = False
    cap_count: int | None = None
    not_json: bool = False
    no_value: bool = False
    fail_first: bool = False
    throttle: float | None = None
    unauthorised: bool = False
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    url: str = ""

    async def __aenter__(self) -> ODataFaultProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._origin = f"http://127.0.0.1:{port}"
        self.url = self._origin + urlsplit(self.upstream).path
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.raw_path, request.headers.get("Prefer"), "Authorization" in request.headers)
        self.seen.append(seen)
        if self.throttle is not None:
            seen.status = 429
            return web.json_response(
                {"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit; retry later."}},
                status=429, headers={"Retry-After": f"{self.throttle:g}"})
        if self.unauthorised:
            seen.status = 401
            return web.json_response(
                {"error": {"code": "0x80040220", "message": "The user is not authenticated."}},
                status=401, headers={"WWW-Authenticate": "Bearer"})
        if self.fail_first and len(self.seen) == 1:
            seen.status = 503
            return web.json_response({"error": {"code": "", "message": "warming up"}}, status=503,
                                     headers={"Retry-After": "0"})
        if EMPTY_PAGE in request.raw_path:
            return web.json_response({"@odata.context": self.url + "$metadata#Accounts", "value": []})
        page_no = sum(1 for s in self.seen if "$count" not in s.path_qs)
        if (self.not_json or self.no_value) and page_no == 2:
            if self.not_json:
                return web.Response(text="<html>Service Unavailable</html>", content_type="text/html")
            return web.json_response({"@odata.context": "x", "rows": []})
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "authorization", "prefer",
                                                                            "odata-version", "odata-maxversion")}
        if self.strip_prefer:
            headers.pop("Prefer", None)
        upstream = urlsplit(self.upstream)
        target = f"{upstream.scheme}://{upstream.netloc}{request.raw_path}"
        assert self._session is not None
        async with self._session.request(request.method, yarl.URL(target, encoded=True),
                                         headers=headers) as resp:
            body = await resp.read()
            status, content_type = resp.status, resp.headers.get("Content-Type", "")
        if "json" not in content_type:
            return web.Response(body=body, status=status, content_type=content_type.split(";")[0] or None)
        data = json.loads(body)
        if isinstance(data, dict):
            data = self._rewrite(data, request.raw_path)
        return web.json_response(data, status=status)

    def _rewrite(self, data: dict[str, Any], raw_path: str) -> dict[str, Any]:
        upstream = urlsplit(self.upstream)
        upstream_origin = f"{upstream.scheme}://{upstream.netloc}"
        link = data.get("@odata.nextLink")
        if isinstance(link, str):
            link = link.replace(upstream_origin, self._origin, 1)  # what any reverse proxy does
        if self.cap_count is not None and isinstance(data.get("@odata.count"), int):
            if data["@odata.count"] > self.cap_count:
                data["@odata.count"] = self.cap_count
                data["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = True
        if self.trailing_empty and link is None and "$count" not in raw_path:
            link = f"{self.url}Accounts?{EMPTY_PAGE}"
        if link is not None and self.repeat_first and "$skiptoken" in raw_path:
            first = next(s.path_qs for s in self.seen if "$count" not in s.path_qs)
            link = self._origin + first
        if link is not None and self.foreign_host:
            link = link.replace(self._origin, "http://backend.internal:8080", 1)
        if link is not None and self.relative is not None:
            parts = urlsplit(link)
            if self.relative == "root":
                link = f"{parts.path}?{parts.query}"
            elif self.relative == "name":
                link = f"{parts.path.rsplit('/', 1)[-1]}?{parts.query}"
            elif self.relative == "query":
                link = f"?{parts.query}"
        if link is not None:
            data.pop("@odata.nextLink", None)
            data["@odata.nextLink"] = link
        return data
