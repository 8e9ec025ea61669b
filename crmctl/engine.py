"""The check engine: runs checks concurrently within each target's limits and journals every result."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Mapping, Sequence

from crmctl.checking import CheckContext, CheckKind
from crmctl.clock import Clock, SystemClock
from crmctl.config import CheckConfig, Config
from crmctl.connectors.errors import ConnectorError
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.store import Store

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = timedelta(minutes=10)


@dataclass(frozen=True)
class Targets:
    """The shared, rate-limited connectors every check of one cutover uses."""

    dynamics: object
    """A `DataverseClient` (typed loosely so tests may hand in any object with its methods)."""
    source: object
    """A `SourceConnector`."""


class Engine:
    """Runs checks and writes each result to the journal as soon as it lands.

    Concurrency is bounded where it matters, at each target's limiter (shared by every check),
    so the engine itself simply starts every selected check at once. A check never raises out
    of the engine: whatever goes wrong becomes an ERROR result with the reason.
    """

    def __init__(
        self,
        config: Config,
        registry: Mapping[str, type[CheckKind]],
        store: Store,
        targets: Targets,
        *,
        actor: Actor,
        clock: Clock | None = None,
        on_result: Callable[[CheckResult], None] | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._store = store
        self._targets = targets
        self._actor = actor
        self._clock = clock or SystemClock()
        self._on_result = on_result

    def select(self, only: Iterable[str] | None = None) -> list[CheckConfig]:
        """The configured checks, or just those named in `only` (unknown names raise KeyError)."""
        if not only:
            return list(self._config.checks)
        return [self._config.check(check_id) for check_id in only]

    async def run_once(self, only: Sequence[str] | None = None) -> list[CheckResult]:
        """Runs the selected checks once, concurrently; returns the results in config order."""
        checks = self.select(only)
        return list(await asyncio.gather(*(self.run_check(check) for check in checks)))

    async def run_check(self, check: CheckConfig) -> CheckResult:
        """Runs one check under its deadline and journals the result before returning it."""
        result = await self._execute(check)
        await self._store.append_result(result, actor=self._actor)
        if self._on_result is not None:
            self._on_result(result)
        return result

    async def run_forever(self) -> None:
        """Runs every check at its cadence until cancelled; a slow check never delays another."""
        await asyncio.gather(*(self._cadence(check) for check in self._config.checks))

    async def _cadence(self, check: CheckConfig) -> None:
        every = max(check.every.total_seconds(), 1.0)
        while True:
            began = time.monotonic()
            await self.run_check(check)
            await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))

    async def _execute(self, check: CheckConfig) -> CheckResult:
        budget = (check.timeout or self._deadline()).total_seconds()
        ctx = CheckContext(
            config=self._config,
            check=check,
            dynamics=self._targets.dynamics,  # type: ignore[arg-type]
            source=self._targets.source,  # type: ignore[arg-type]
            clock=self._clock,
            started=self._clock.now(),
            deadline=time.monotonic() + budget,
        )
        kind = self._registry.get(check.kind)
        if kind is None:
            return ctx.error(f"No check kind named {check.kind!r} is installed.")
        try:
            return await asyncio.wait_for(kind().run(ctx), timeout=budget)
        except (TimeoutError, asyncio.TimeoutError):
            return ctx.error(f"Did not finish within its {budget:.0f} s deadline; no figure is trusted.")
        except ConnectorError as exc:
            return ctx.error(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken check must become ERROR, never a crash
            log.exception("check %s failed", check.id)
            return ctx.error(f"Internal error in {check.kind} check: {type(exc).__name__}: {exc}"[:500])

    def _deadline(self) -> timedelta:
        limits = getattr(self._config.target, "limits", None)
        return getattr(limits, "deadline", None) or DEFAULT_DEADLINE


def worst(results: Iterable[CheckResult]) -> Status:
    """The worst status among results (OK when there are none)."""
    return max((r.status for r in results), key=lambda s: s.severity, default=Status.OK)
