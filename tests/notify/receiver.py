"""A real local webhook receiver (aiohttp on 127.0.0.1) that records requests and answers from a script."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.reliability.suite_audit import CANARY_WEBHOOK_SIG


@dataclass
class Received:
    at: float
    """time.monotonic() on arrival."""
    path: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Answer:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """Answers with `script` in order (then `default`), recording each request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.default = Answer()
        self.gate: asyncio.Event | None = None
        """When set, every answer waits until the test opens the gate (a webhook that hangs)."""
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # Shaped like a Workflows URL: the signature in the query is the secret part.
        self.url = f"http://127.0.0.1:{port}/workflows/abc123/triggers/manual/paths/invoke?api-version=1&sig={CANARY_WEBHOOK_SIG}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(time.monotonic(), request.path_qs, body, dict(request.headers)))
        answer = self.script.pop(0) if self.script else self.default
        if self.gate is not None:
            await self.gate.wait()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, headers=answer.headers, text="" if answer.status < 400 else "no")
