"""Opens the live parts a cutover config names: the Dynamics client, the source, and the embedded emulator."""

from __future__ import annotations

import sqlite3
from contextlib import AsyncExitStack, asynccontextmanager, closing
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from crmctl.clock import Clock, OffsetClock, SystemClock
from crmctl.config import Config
from crmctl.connectors.auth import MsalTokenProvider, TokenProvider, derive_authority_and_scope
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.sql import SourceConnector, open_source
from crmctl.engine import Targets
from crmctl.model import parse_iso

API_PATH = "api/data/v9.2/"


@dataclass
class Runtime:
    """The open connectors of one cutover, plus the embedded emulator when the target is one."""

    targets: Targets
    dynamics: DataverseClient
    source: SourceConnector
    limiter: TargetLimiter
    emulator: object | None = None
    """The in-process `Emulator` for `kind: emulator` targets, else None."""


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    device_code_callback: Callable[[dict], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Opens everything `config` needs and closes all of it on exit, whatever happens inside."""
    target = config.target
    limits = target.limits
    async with AsyncExitStack() as stack:
        emulator = None
        if target.kind == "emulator":
            emulator = await stack.enter_async_context(_embedded_emulator(config))
            tokens: TokenProvider = EmulatorTokenProvider(emulator)
            api_url = emulator.api_url
        else:
            tokens = _msal_provider(config, device_code_callback)
            api_url = target.url.rstrip("/") + "/" + API_PATH
        limiter = TargetLimiter(limits.concurrency, limits.requests_per_5min, 300.0)
        dynamics = DataverseClient(
            api_url,
            tokens,
            limiter,
            timeout=limits.timeout.total_seconds(),
            retries=limits.retries,
            page_size=limits.page_size,
        )
        stack.push_async_callback(dynamics.close)
        source = _open_source(config)
        stack.push_async_callback(source.close)
        yield Runtime(Targets(dynamics, source), dynamics, source, limiter, emulator)


def _open_source(config: Config) -> SourceConnector:
    """The source connector for `source.kind`: SQL by URL scheme, or an OData v4 service."""
    if config.source.kind == "odata":
        from crmctl.connectors.odata_source import OdataSource

        return OdataSource(config.source.url, timeout=config.target.limits.timeout.total_seconds())
    return open_source(config.source.url)


def config_clock(config: Config) -> Clock:
    """The clock a session of this cutover runs on: the wall clock, or the rehearsal clock.

    With `clock_start` set (rehearsals, the demo) time starts there and ticks in real time; a
    later session resumes after the journal's last entry, so timestamps keep the entries' order.
    """
    if config.clock_start is None:
        return SystemClock()
    return OffsetClock(max(config.clock_start, journal_end(Path(config.state))))


def journal_end(state: Path) -> datetime:
    """When the journal's last entry was written (the epoch when there is none or no file)."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    if not state.exists():
        return epoch
    try:
        with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT ts FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return epoch
    return parse_iso(row[0]) if row else epoch


class EmulatorTokenProvider:
    """Tokens of the embedded emulator: after a 401 a fresh one is issued, as MSAL would fetch one.

    This keeps the token-expiry rehearsal scenario meaningful in-process: the client must notice
    the 401, invalidate, and carry on with a new token rather than loop or give up.
    """

    def __init__(self, emulator: object) -> None:
        self._emulator = emulator
        self._token: str = emulator.token  # type: ignore[attr-defined]

    async def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        self._token = self._emulator.issue_token()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return "EmulatorTokenProvider(***)"


@asynccontextmanager
async def _embedded_emulator(config: Config) -> AsyncIterator[object]:
    """Starts the rehearsal emulator in-process on an ephemeral port, seeding the demo world first."""
    from crmctl.emulator.server import Emulator
    from crmctl.emulator.scenario import load_scenario

    target = config.target
    data = Path(target.data)
    if target.seed:
        from crmctl.demo_world import ensure_world

        ensure_world(data.parent)
    if not data.exists():
        raise FileNotFoundError(f"emulator data {data} does not exist (set target.seed: demo to generate it)")
    scenario = load_scenario(Path(target.scenario)) if target.scenario else None
    emulator = Emulator(data, scenario=scenario)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def _msal_provider(config: Config, callback: Callable[[dict], None] | None) -> MsalTokenProvider:
    """Builds the MSAL provider for a real org; the authority and scope follow the org URL."""
    target = config.target
    auth = target.auth
    authority, scope = derive_authority_and_scope(
        target.url, auth.method, auth.tenant_id, authority=auth.authority, scope=auth.scope
    )
    cache_path = Path(config.state).with_name("msal_cache.json")
    return MsalTokenProvider(
        auth.method,
        auth.tenant_id,
        auth.client_id,
        authority=authority,
        scope=scope,
        secret_value=auth.secret.reveal() if auth.secret else None,
        certificate=auth.certificate_credential() if hasattr(auth, "certificate_credential") else None,
        cache_path=cache_path,
        device_code_callback=callback,
    )
