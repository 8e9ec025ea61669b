"""A scriptable stand-in for the Dataverse Web API: a real aiohttp server on 127.0.0.1.

Tests queue exact answers per resource (429 with Retry-After, 503, a reset connection, broken
JSON, ...) and then assert on the server's own request log, which records the arrival time
(`time.monotonic()`, the same time base the client's limiter uses), the method and the raw
request target exactly as it arrived on the wire.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

API_PATH = "/api/data/v9.2/"


@dataclass
class Canned:
    """One scripted answer."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    """Drop the TCP connection (RST) instead of answering."""
    delay: float = 0.0
    """Seconds to wait before answering (to provoke client timeouts)."""


def odata_error(status: int, code: str, message: str, **headers: str) -> Canned:
    """An answer in Dataverse's error shape."""
    return Canned(status, {"error": {"code": code, "message": message}}, headers=dict(headers))


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    at: float
    """`time.monotonic()` when the request arrived."""
    method: str
    raw_path: str
    """Path and query exactly as sent (not decoded)."""
    headers: dict[str, str]

    @property
    def resource(self) -> str:
        return _resource(self.raw_path)


def _resource(raw_path: str) -> str:
    rest = raw_path[len(API_PATH):] if raw_path.startswith(API_PATH) else raw_path.lstrip("/")
    return rest.split("?")[0].split("(")[0].split("/")[0]


Handler = Callable[[web.Request], Canned]


class FakeDataverse:
    """Answers by resource ("accounts", "WhoAmI", ...) from a queue of `Canned` or a handler.

    A queue answers in order and then keeps repeating its last entry. Unscripted resources get
    Dataverse's 404. Every request, whatever its method, lands in `log`.
    """

    def __init__(self) -> None:
        self.log: list[Seen] = []
        self._queues: dict[str, deque[Canned]] = {}
        self._handlers: dict[str, Handler] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.origin + API_PATH

    def script(self, resource: str, *answers: Canned) -> None:
        self._queues[resource] = deque(answers)

    def handle(self, resource: str, handler: Handler) -> None:
        self._handlers[resource] = handler

    def seen(self, resource: str | None = None) -> list[Seen]:
        return [s for s in self.log if resource is None or s.resource == resource]

    async def start(self) -> FakeDataverse:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDataverse:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.log.append(Seen(time.monotonic(), request.method, request.raw_path, dict(request.headers)))
        resource = _resource(request.raw_path)
        if resource in self._handlers:
            canned = self._handlers[resource](request)
        elif resource in self._queues and self._queues[resource]:
            queue = self._queues[resource]
            canned = queue.popleft() if len(queue) > 1 else queue[0]
        else:
            canned = odata_error(404, "0x8006088a", f"Resource not found for the segment '{resource}'.")
        if canned.delay:
            await asyncio.sleep(canned.delay)
        if canned.reset:
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:  # SO_LINGER 0: close() sends RST, like a dropped load balancer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more is written for this request
        if canned.body is not None:
            body = canned.body
        elif canned.json is not None:
            body = json.dumps(canned.json).encode()
        else:
            body = b""
        headers = {"Content-Type": "application/json; odata.metadata=minimal", "OData-Version": "4.0"}
        headers.update(canned.headers)
        return web.Response(status=canned.status, body=body, headers=headers)
