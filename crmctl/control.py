"""The control room facade: the one object the screens talk to, so that they never do I/O themselves."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import AsyncIterator, Callable, Sequence

from crmctl.clock import Clock, SystemClock
from crmctl.config import Config
from crmctl.engine import Engine
from crmctl.identity import Actor
from crmctl.model import CheckResult
from crmctl.store import Store


class ReadOnlyError(RuntimeError):
    """Raised when an observer session tries to act."""


class ControlRoom:
    """Config, journal and engine of one cutover, as seen by one operator.

    The store is the single source of truth: the screens render what `store.watch()` delivers,
    including the results this room's own engine writes, so every session sees the same thing.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: Engine | None,
        *,
        actor: Actor,
        clock: Clock | None = None,
        read_only: bool = False,
        emulator: object | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.actor = actor
        self.clock = clock or SystemClock()
        self.read_only = read_only
        self.emulator = emulator
        """The embedded rehearsal emulator (its request log proves what was sent), else None."""

    async def run_checks(self, only: Sequence[str] | None = None) -> list[CheckResult]:
        """Runs the checks once (all, or those named); each result is journalled as it lands."""
        return await self._engine().run_once(only)

    async def run_scheduler(self) -> None:
        """Runs every check at its cadence until cancelled."""
        await self._engine().run_forever()

    def _engine(self) -> Engine:
        if self.read_only:
            raise ReadOnlyError("This session is read-only; checks run in the operators' sessions.")
        if self.engine is None:
            raise ReadOnlyError("No check engine is attached to this session.")
        return self.engine

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: Config,
        registry: dict,
        *,
        actor: Actor,
        clock: Clock | None = None,
        read_only: bool = False,
        device_code_callback: Callable[[dict], None] | None = None,
    ) -> AsyncIterator[ControlRoom]:
        """Opens the store and, unless read-only, the connectors and engine; closes all on exit."""
        from crmctl.runtime import open_runtime

        clock = clock or SystemClock()
        async with AsyncExitStack() as stack:
            store = await Store.open(config.state, clock=clock)
            stack.push_async_callback(store.close)
            engine = None
            emulator = None
            if not read_only:
                runtime = await stack.enter_async_context(
                    open_runtime(config, device_code_callback=device_code_callback)
                )
                engine = Engine(config, registry, store, runtime.targets, actor=actor, clock=clock)
                emulator = runtime.emulator
            yield cls(config, store, engine, actor=actor, clock=clock, read_only=read_only, emulator=emulator)
