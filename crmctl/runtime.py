"""Opens the live parts a cutover config names: the Dynamics client, the source, and the embedded emulator;
and `EngineThread`, which runs them and the check engine off the UI's event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
from contextlib import AsyncExitStack, asynccontextmanager, closing
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from crmctl.clock import Clock, OffsetClock, SystemClock
from crmctl.config import Config
from crmctl.connectors.auth import MsalTokenProvider, TokenProvider, derive_authority_and_scope
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.sql import SourceConnector, open_source
from crmctl.engine import Engine, Targets
from crmctl.identity import Actor
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


class EngineThread:
    """The check engine and the embedded emulator on their own thread, with their own event loop.

    Why: the control room must answer keys while checks run. When the engine (and, in `crmctl
    demo`, the emulator serving it) shared the UI's event loop, every stretch of synchronous work
    in a check, a connector or a request handler (parsing a 5,000-row page, building key sets,
    encoding a response) froze the screen; under load the demo stalled ~10 s. Here that work runs
    on a dedicated loop in a thread, with its own store connection; results still reach every
    screen the one way they reach other sessions' screens: journal -> change feed -> snapshot.

    Why a thread rather than a child process: the engine shares the config, the registry's
    classes, the clock and the result objects with the room, and progress and cancellation are
    plain calls; a process would need a protocol to serialise all of that, a way to report a
    crash, and an orphan-proof shutdown. The GIL still interleaves the two threads, but it hands
    over every few milliseconds (`sys.getswitchinterval()`), which is what keeps keys answered.

    Every hand-over between the threads is thread-safe: calls into the engine go through
    `asyncio.run_coroutine_threadsafe` / `call_soon_threadsafe` on the engine's loop, and
    progress comes back through `call_soon_threadsafe` on the caller's loop, so
    `progress_listener` only ever runs on the loop that opened this object (the UI's): nothing
    the UI owns is touched from this thread.
    """

    def __init__(
        self,
        config: Config,
        registry: Mapping[str, type],
        *,
        actor: Actor,
        clock: Clock,
        device_code_callback: Callable[[dict], None] | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._actor = actor
        self._clock = clock
        self._device_code_callback = device_code_callback
        self.progress_listener: Callable[[object], None] | None = None
        """Receives every progress report, on the caller's loop (the room sets it)."""
        self.emulator: object | None = None
        """The embedded emulator (running on the engine's loop), once started; else None."""
        self._caller: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Engine | None = None
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        """Set by `close`, also when it comes before the engine's loop is up (start cancelled)."""
        self._lock = threading.Lock()
        self._running: dict[str, set[float]] = {}
        """check id -> monotonic starts of its runs in flight (written by the engine's thread)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Starts the thread and waits (without blocking the caller's loop) until the store,
        connectors and emulator are open; raises what opening them raised."""
        self._caller = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="crmctl-engine", daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(self._ready)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stops the engine: runs in flight are cancelled (nothing journalled for them), the
        emulator, connectors and store are closed, the loop ends and the thread is joined."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._closing.set()  # first: `_main` looks at it before it waits on `_stop`
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                loop.call_soon_threadsafe(stop.set)
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self._ended)
        await asyncio.to_thread(thread.join)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the thread
            if not self._ready.done():
                self._ready.set_exception(exc)
            if not self._ended.done():
                self._ended.set_exception(exc)
        finally:
            if not self._ready.done():
                self._ready.set_exception(RuntimeError("the engine thread ended before it was ready"))
            if not self._ended.done():
                self._ended.set_result(None)

    async def _main(self) -> None:
        from crmctl.store import Store

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with AsyncExitStack() as stack:
            store = await Store.open(self._config.state, clock=self._clock)
            stack.push_async_callback(store.close)
            runtime = await stack.enter_async_context(
                open_runtime(self._config, device_code_callback=self._device_code_callback)
            )
            engine = Engine(self._config, self._registry, store, runtime.targets, actor=self._actor, clock=self._clock)
            engine.progress_listener = self._relay
            self._engine = engine
            self.emulator = runtime.emulator
            self._ready.set_result(None)
            if not self._closing.is_set():
                await self._stop.wait()
            # Runs in flight end before their connectors close: cancelled, so nothing is journalled.
            mine = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not mine]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the engine's work

    async def run_once(self, only: Sequence[str] | None = None) -> list:
        """`Engine.run_once` on the engine's loop; cancelling the caller cancels the run there."""
        return await self._call(lambda engine: engine.run_once(only))

    async def run_forever(self) -> None:
        """`Engine.run_forever` on the engine's loop, until the caller is cancelled."""
        await self._call(lambda engine: engine.run_forever())

    def running(self) -> list[str]:
        """Ids of the checks with a run in flight (as last reported by the engine's thread)."""
        with self._lock:
            return [check_id for check_id, runs in self._running.items() if runs]

    def cancel(self, check_id: str, reason: str) -> bool:
        """Asks the engine to cancel every run in flight of `check_id` (journalled as ERROR with
        `reason`); False when none is running. A run that ends on its own in the instant between
        this call and the engine's loop acting on it keeps its own result, which is the truth."""
        if check_id not in self.running():
            return False
        engine, loop = self._engine, self._loop
        if engine is None or loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(engine.cancel, check_id, reason)
        except RuntimeError:  # the loop is closing (quit)
            return False
        return True

    async def _call(self, work: Callable[[Engine], Any]) -> Any:
        engine, loop = self._engine, self._loop
        if engine is None or loop is None or loop.is_closed() or self._thread is None:
            raise RuntimeError("the check engine is not running (it was closed, or failed to start)")
        coro = work(engine)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()
            raise RuntimeError("the check engine is not running (it is shutting down)") from None
        return await asyncio.wrap_future(future)

    def _relay(self, progress: Any) -> None:
        """On the engine's loop: notes which checks run, and hands the report to the caller's loop."""
        with self._lock:
            runs = self._running.setdefault(progress.check_id, set())
            if progress.done:
                runs.discard(progress.started)
            else:
                runs.add(progress.started)
        listener, caller = self.progress_listener, self._caller
        if listener is not None and caller is not None and not caller.is_closed():
            with contextlib.suppress(RuntimeError):  # the caller's loop closed (quit)
                caller.call_soon_threadsafe(listener, progress)
