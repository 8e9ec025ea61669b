"""An integration health endpoint that suffers the same scenario faults as the emulator.

Why: `http_probe` reads an integration's own endpoint, never Dynamics, so a fault injected only
into the emulator would leave it untouched and prove nothing about it. This server draws its
faults from the emulator's own `FaultInjector` (same scenario file, same deterministic choices)
and applies them the way the emulator does: outage and reset and hang first, then throttle,
latency, error, torn body. It has no notion of a token, so token expiry cannot reach it: the
matrix then expects the probe's honest, untouched verdict.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from crmctl.emulator.scenario import FaultInjector, Scenario
from crmctl.emulator.server import abort_with_rst

HEALTHY = {"status": "ok", "db": "up"}
"""The body of a healthy answer; the probe's `expect_body` is "ok"."""


@dataclass
class FaultyHealthServer:
    """A real aiohttp server on 127.0.0.1 whose single route answers the probe."""

    port: int = 0
    injector: FaultInjector | None = None
    started: float = field(default_factory=time.monotonic)
    faults: list[str] = field(default_factory=list)
    """Every fault label applied, in order (what the matrix counts as injected)."""
    requests: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def set_scenario(self, scenario: Scenario | None) -> None:
        """Switches faults; times in the scenario count from now, as `Emulator.set_scenario` does."""
        self.injector = FaultInjector(scenario) if scenario is not None else None
        self.started = time.monotonic()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.injector is None:
            return web.json_response(HEALTHY)
        d = self.injector.decide(request.method, request.path_qs, time.monotonic() - self.started)
        labels = d.labels()
        self.faults.extend(label for label in labels if label != "latency")
        if d.outage_status is not None:
            return _error(d.outage_status, "The service is temporarily unavailable.")
        if d.reset:
            _abort(request)
        if d.hang_s is not None:
            await asyncio.sleep(d.hang_s)
            _abort(request)
        if d.throttle is not None:
            seconds = max(1, round(d.throttle.retry_after_s or 1))
            return _error(429, "Too many requests.", {"Retry-After": str(seconds)})
        if d.latency_s:
            await asyncio.sleep(d.latency_s)
        if d.error is not None:
            return _error(d.error.status, d.error.message or f"Injected HTTP {d.error.status}.")
        body = json.dumps(HEALTHY).encode()
        if d.malformed:
            body = body[: max(1, len(body) // 2)]  # '{"status": "' : the probe's "ok" is cut off
        return web.Response(body=body, content_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": "", "message": message}}
    return web.json_response(body, status=status, headers=headers)


class _Dropped(web.HTTPException):
    """Raised after the transport was aborted: no response is ever written."""


def _abort(request: web.Request) -> None:
    """A TCP RST, as the emulator's reset fault sends."""
    abort_with_rst(request)
    raise _Dropped()


class DeadPort:
    """A bound loopback port nobody listens on: every connection to it is refused (total outage).

    Binding without `listen()` keeps the port reserved, so no other process can start answering
    on it during the test and turn the outage into something else.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()
