"""http_probe against a real aiohttp server started in the test: healthy, slow, 500, wrong body,
redirect, hang, connection refused; secrets in the probe URL never leave redacted form."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web

from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import Config, load_config
from crmctl.connectors.probe import HttpProber
from crmctl.connectors.querylog import QueryLog
from crmctl.engine import Engine, Targets
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store

ACTOR = Actor("tester", "test-host")
NOW = datetime(2026, 11, 28, 21, 30, tzinfo=timezone.utc)
SECRET = "pr0be-k3y-VERY-s3cret"


@dataclass
class HealthServer:
    """A real HTTP server with one route per behaviour; it records what it was sent."""

    port: int = 0
    methods: list[str] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    state = HealthServer()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.methods.append(request.method)
        route = request.match_info["route"]
        state.hits[route] = state.hits.get(route, 0) + 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if route == "health":
                return web.json_response({"status": "ok", "db": "up"})
            if route == "slow":
                await asyncio.sleep(0.3)
                return web.json_response({"status": "ok"})
            if route == "broken":
                return web.json_response({"status": "down"}, status=500)
            if route == "maintenance":
                return web.Response(text="<html>Planned maintenance</html>", content_type="text/html")
            if route == "moved":
                raise web.HTTPFound(f"/target?api_key={SECRET}")
            if route == "hang":
                await asyncio.sleep(5)
                return web.Response(text="too late")
            return web.Response(status=404)
        finally:
            state.in_flight -= 1

    app = web.Application()
    app.router.add_route("*", "/{route}", handle)
    app.router.add_route("*", "/k/{key}/{route}", handle)
    # No access log: the server side is not crmctl, and it would print the key it was sent.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state
    finally:
        await runner.cleanup()


def _free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, url: str, *, expect_body: str | None = '"status": "ok"', p95_ms: float = 1000,
            samples: int = 5, extra: str = "", timeout: str = "2s", more: str = "") -> Config:
    body = f", expect_body: '{expect_body}'" if expect_body is not None else ""
    (tmp_path / "crmctl.yaml").write_text(
        "project: probe test\n"
        "source: {kind: sql, url: 'sqlite:///nothing.db'}\n"
        "target: {kind: emulator}\n"
        "integrations:\n"
        f"  - {{id: erp, probe: {{url: '{url}'{body}, timeout: {timeout}}}, slo: {{p95_ms: {p95_ms}}}}}\n"
        "  - {id: jobs-only, jobs: {name_like: 'X%'}}\n"
        "checks:\n"
        f"  - {{id: erp.probe, kind: http_probe, integration: erp, samples: {samples}{extra}}}\n"
        "  - {id: jobs.probe, kind: http_probe, integration: jobs-only}\n"
        f"{more}"
    )
    return load_config(tmp_path / "crmctl.yaml", env={"PROBE_KEY": SECRET}, check_kinds=check_kinds())


async def _run(config: Config, check_id: str = "erp.probe") -> CheckResult:
    store = await Store.open(config.state)
    try:
        engine = Engine(config, REGISTRY, store, Targets(None, None), actor=ACTOR, clock=FrozenClock(NOW))
        return (await engine.run_once([check_id]))[0]
    finally:
        await store.close()


async def test_healthy_endpoint_is_ok_with_percentiles(server: HealthServer, tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, server.url("/health")))
    assert result.status is Status.OK, result.explanation
    values = result.values
    assert values["samples"] == values["answered"] == 5 and values["statuses"] == {"200": 5}
    assert 0 < values["p50_ms"] <= values["p95_ms"] <= values["max_ms"]
    assert values["method"] == "nearest-rank" and result.threshold == {"breach": 1000}
    assert server.hits["health"] == 5 and set(server.methods) == {"GET"}
    assert [q.target for q in result.queries] == ["erp"] * 5 and result.requests == 5


async def test_slow_endpoint_breaches_the_p95_slo(server: HealthServer, tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, server.url("/slow"), p95_ms=200, samples=3))
    assert result.status is Status.BREACH, result.explanation
    assert result.values["p95_ms"] >= 300 and result.values["p50_ms"] >= 300
    assert "p95" in result.explanation and "200 ms" in result.explanation


async def test_a_500_is_a_breach(server: HealthServer, tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, server.url("/broken")))
    assert result.status is Status.BREACH
    assert result.values["status_mismatches"] == 5 and result.values["statuses"] == {"500": 5}
    assert "answered 500 instead of 200" in result.explanation


async def test_a_wrong_body_is_a_breach(server: HealthServer, tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, server.url("/maintenance")))
    assert result.status is Status.BREACH
    assert result.values["body_mismatches"] == 5 and "without" in result.explanation


async def test_connection_refused_is_error(tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, f"http://127.0.0.1:{_free_port()}/health"))
    assert result.status is Status.ERROR
    assert result.values["unreachable"] == 5 and result.values["p95_ms"] is None
    assert "cannot connect" in result.explanation and "no answer" in result.explanation


async def test_a_hanging_endpoint_times_out_as_error(server: HealthServer, tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, server.url("/hang"), samples=2, timeout="300ms"))
    assert result.status is Status.ERROR
    assert "did not answer within 0.3 s" in result.explanation


async def test_redirects_are_reported_not_followed(server: HealthServer, tmp_path: Path) -> None:
    result = await _run(_config(tmp_path, server.url("/moved")))
    assert result.status is Status.BREACH
    assert "answered 302" in result.explanation and "not followed" in result.explanation
    assert "target" not in server.hits
    assert SECRET not in json.dumps(result.to_json())  # the Location's api_key is redacted


async def test_secrets_in_the_probe_url_never_appear(
    server: HealthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.url("/k/${env:PROBE_KEY}/health?api_key=${env:PROBE_KEY}")
    ok = await _run(_config(tmp_path, url))
    assert ok.status is Status.OK and server.hits["health"] == 5  # the real key reached the server
    refused = await _run(_config(tmp_path, f"http://127.0.0.1:{_free_port()}/k/${{env:PROBE_KEY}}/health"))
    assert refused.status is Status.ERROR
    for result in (ok, refused):
        assert SECRET not in json.dumps(result.to_json())
        assert "${env:PROBE_KEY}" in result.values["url"]
    assert SECRET not in caplog.text
    assert SECRET.encode() not in (tmp_path / ".crmctl" / "state.db").read_bytes()


async def test_the_prober_keeps_to_its_own_concurrency_limit(server: HealthServer) -> None:
    log = QueryLog("erp")
    async with HttpProber(concurrency=2) as prober:
        samples = await asyncio.gather(*(prober.sample(server.url("/slow"), timeout=5, log=log) for _ in range(6)))
    assert all(s.status == 200 for s in samples)
    assert server.max_in_flight == 2 and log.requests == 6


async def test_unknown_integration_is_a_config_error_and_one_without_a_probe_is_error(
    server: HealthServer, tmp_path: Path
) -> None:
    from crmctl.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, server.url("/health"), more="  - {id: nothing.probe, kind: http_probe, integration: erps}\n")
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'crmctl.yaml'}:10:56: checks[2].integration: unknown integration 'erps' (did you mean 'erp'?); "
        "expected the id of an integration defined under integrations:"
    ]
    no_probe = await _run(_config(tmp_path, server.url("/health")), "jobs.probe")
    assert no_probe.status is Status.ERROR
    assert "has no probe" in no_probe.explanation


def test_probe_params_are_validated_by_the_spec(tmp_path: Path) -> None:
    from crmctl.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, "http://127.0.0.1:1/health", extra=", samples_n: 3")
    assert "samples_n" in str(caught.value.problems[0])
