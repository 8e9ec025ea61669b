"""The check engine: runs checks concurrently within each target's limits and journals every result."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Mapping, Sequence

from crmctl.checking import CheckContext, CheckKind, ProgressListener
from crmctl.clock import Clock, SystemClock
from crmctl.config import CheckConfig, Config
from crmctl.connectors.errors import ConnectorError
from crmctl.connectors.limits import request_owner
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
        self.progress_listener: ProgressListener | None = None
        """Receives every running check's progress (start, pages, end); the room sets it."""
        self._running: dict[str, set[asyncio.Task[CheckResult]]] = {}
        self._cancelled: dict[asyncio.Task[CheckResult], str] = {}

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

    def running(self) -> list[str]:
        """Ids of the checks with a run in flight in this engine."""
        return [check_id for check_id, tasks in self._running.items() if tasks]

    def cancel(self, check_id: str, reason: str) -> bool:
        """Cancels every run in flight of `check_id`; each is journalled as ERROR with `reason`.

        Returns False when the check is not running here (it may be running in another
        session, which only that session can cancel).
        """
        tasks = [t for t in self._running.get(check_id, ()) if not t.done()]
        for task in tasks:
            self._cancelled[task] = reason
            task.cancel()
        return bool(tasks)

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
        ctx.progress = self.progress_listener
        ctx.actor = self._actor
        ctx.report_progress(rows=0)
        # The run is its own task so that `cancel` can stop exactly this check, not the caller.
        # It is created with the check's id as `request_owner` (tasks copy the context when
        # created, so every task the check starts inherits it): the target's limiter then admits
        # checks fairly, and a check that asks one request after another is not starved.
        owner = request_owner.set(check.id)
        try:
            task = asyncio.ensure_future(kind().run(ctx))
        finally:
            request_owner.reset(owner)
        self._running.setdefault(check.id, set()).add(task)
        try:
            return await asyncio.wait_for(task, timeout=budget)
        except asyncio.CancelledError:
            reason = self._cancelled.get(task)
            current = asyncio.current_task()
            if reason is None or (current is not None and current.cancelling()):
                raise  # the caller is being cancelled (quit): no result to journal
            return ctx.error(reason)
        except (TimeoutError, asyncio.TimeoutError):
            return ctx.error(f"Did not finish within its {budget:.0f} s deadline; no figure is trusted.")
        except ConnectorError as exc:
            return ctx.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken check must become ERROR, never a crash
            log.exception("check %s failed", check.id)
            return ctx.error(f"Internal error in {check.kind} check: {type(exc).__name__}: {exc}"[:500])
        finally:
            self._running[check.id].discard(task)
            self._cancelled.pop(task, None)
            ctx.end_progress()
            release = getattr(self._targets.source, "release", None)
            if release is not None and not self._running[check.id]:
                # A cancelled or failed run may leave a source cursor (and a read lock on the
                # legacy database) open in a suspended stream: it ends with the run.
                await release(check.id)

    def _deadline(self) -> timedelta:
        limits = getattr(self._config.target, "limits", None)
        return getattr(limits, "deadline", None) or DEFAULT_DEADLINE


def worst(results: Iterable[CheckResult]) -> Status:
    """The worst status among results (OK when there are none)."""
    return max((r.status for r in results), key=lambda s: s.severity, default=Status.OK)
