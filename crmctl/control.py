"""The control room facade: the one object the screens talk to, so that they never do I/O themselves."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, AsyncIterator, Callable, Sequence

from crmctl.clock import Clock, SystemClock
from crmctl.config import Config
from crmctl.identity import Actor
from crmctl.model import CheckResult
from crmctl.store import JournalEntry, Store
from crmctl.views import RUNBOOK_KINDS, Snapshot, format_span

if TYPE_CHECKING:
    # Imported where used: the control room's first screen needs neither the engine nor the
    # connectors the runtime pulls in, and every module spared shortens its start.
    from crmctl.checking import CheckProgress
    from crmctl.engine import Engine
    from crmctl.runtime import EngineThread


class ReadOnlyError(RuntimeError):
    """Raised when an observer session tries to act."""


class ControlRoom:
    """Config, journal and engine of one cutover, as seen by one operator.

    The store is the single source of truth: the screens render what `store.watch()` delivers,
    including the results this room's own engine writes, so every session sees the same thing.

    The engine is either an `Engine` on the caller's loop (headless `crmctl check`, tests of the
    core) or an `EngineThread` running it on a loop of its own (`crmctl tui`/`demo`, so checks
    never hold up the screen). Both offer `run_once`, `run_forever`, `cancel` and `running`,
    and both deliver progress to `_on_progress` on the room's own loop, so `progress` is only
    ever changed there.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: Engine | EngineThread | None,
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
        self.progress: dict[str, CheckProgress] = {}
        """The checks running in this session now, with how far each has got (in memory only)."""
        self.progress_version = 0
        """Moves on with every progress report, so a poller redraws only when something moved."""
        if engine is not None:
            engine.progress_listener = self._on_progress

    # ---------------------------------------------------------------- long work: progress, cancel

    def _on_progress(self, progress: CheckProgress) -> None:
        held = self.progress.get(progress.check_id)
        if progress.done:
            # Two runs of one check may overlap (scheduler and `R`): only the run that ended goes.
            if held is not None and held.started == progress.started:
                del self.progress[progress.check_id]
        else:
            self.progress[progress.check_id] = progress
        self.progress_version += 1

    def cancel(self, check_id: str) -> bool:
        """Cancels this session's run(s) of `check_id`; the ERROR result names the operator.

        Returns False when the check is not running in this session. Raises ReadOnlyError in an
        observer session.
        """
        engine = self._engine()
        held = self.progress.get(check_id)
        after = ""
        if held is not None:
            after = f" after {format_span(self.clock.now() - held.started_at)}"
        reason = f"Run cancelled by {self.actor.operator}{after}; no figure is trusted."
        return engine.cancel(check_id, reason)

    # ---------------------------------------------------------------- journal projections

    async def snapshot(self, until: datetime | None = None) -> Snapshot:
        """What the screens show, read from the journal: now, or as it stood at `until`.

        Live (`until` None): `last_seq` is read first and the change feed is then started after
        it, so nothing committed meanwhile is missed (an entry read twice is harmless, since
        `Snapshot.apply_entries` keeps whichever result finished last). As of `until`: the
        newest result per check stamped at or before it, and the runbook entries up to it.
        """
        store = self.store
        last_seq = await store.last_seq() if until is None else await self.seq_at(until)
        results = await store.latest_results(until=until)
        runbook = await store.entries(kinds=RUNBOOK_KINDS, until=until)
        return Snapshot(
            results=dict(results),
            runbook=tuple(e for e in runbook if e.seq <= last_seq),
            last_seq=last_seq,
            loaded=True,
            as_of=until,
        )

    async def seq_at(self, moment: datetime) -> int:
        """The seq of the newest entry stamped at or before `moment` (0 if none).

        A binary search on seq (the journal stamps entries under its write lock, so `ts` follows
        `seq`): a handful of primary-key reads, however long the journal.
        """
        store = self.store
        low, high = 0, await store.last_seq()
        while low < high:
            mid = (low + high + 1) // 2
            entry = (await store.entries(after_seq=mid - 1, limit=1))[0]
            if entry.ts <= moment:
                low = mid
            else:
                high = mid - 1
        return low

    async def entry_at(self, seq: int) -> JournalEntry | None:
        """The journal entry with sequence number `seq`, or None."""
        if seq < 1:
            return None
        found = await self.store.entries(after_seq=seq - 1, limit=1)
        return found[0] if found and found[0].seq == seq else None

    async def recent_entries(self, limit: int = 300) -> list[JournalEntry]:
        """The newest `limit` journal entries, oldest first (the time-travel list's raw material)."""
        last = await self.store.last_seq()
        return await self.store.entries(after_seq=max(0, last - limit))

    async def run_checks(self, only: Sequence[str] | None = None) -> list[CheckResult]:
        """Runs the checks once (all, or those named); each result is journalled as it lands."""
        return await self._engine().run_once(only)

    async def run_scheduler(self) -> None:
        """Runs every check at its cadence until cancelled."""
        await self._engine().run_forever()

    # ---------------------------------------------------------------- runbook, runs, decisions
    # Each raises crmctl.runbook.Refused (a clear sentence, nothing written) when the rules say
    # no, and ReadOnlyError in an observer session. Each returns only after the journal commit.

    async def step_action(
        self, action: str, step_id: str, *, reason: str | None = None, override_authority: str | None = None
    ) -> JournalEntry:
        """Starts, completes, fails, skips or blocks a runbook step in the current run."""
        from crmctl.runbook import RunbookService

        self._may_act()
        service = RunbookService(self.config, self.store, self.clock, self.actor)
        return await service.act(action, step_id, reason=reason, override_authority=override_authority)

    async def start_run(self, name: str) -> JournalEntry:
        """Starts a new named run (rehearsal-2, production); step actions then go to it."""
        from crmctl.runbook import RunbookService

        self._may_act()
        return await RunbookService(self.config, self.store, self.clock, self.actor).start_run(name)

    async def decide(
        self, decision: str, *, authority: str | None, rationale: str | None, approve: bool = False,
        propose: bool = False, override_reason: str | None = None,
    ) -> JournalEntry:
        """Records (or proposes, or approves) a go / hold / rollback decision with the matrix as evidence."""
        from crmctl.decision import DecisionService

        self._may_act()
        service = DecisionService(self.config, self.store, self.clock, self.actor)
        return await service.decide(decision, authority=authority, rationale=rationale, approve=approve,
                                    propose=propose, override_reason=override_reason)

    async def runbook_state(self):  # noqa: ANN201 - crmctl.runbook.RunbookState (imported lazily)
        """Every run and step as the journal tells it now."""
        from crmctl.runbook import RunbookService

        return await RunbookService(self.config, self.store, self.clock, self.actor).state()

    # ---------------------------------------------------------------- incidents, notifications, hypercare
    # Actions raise crmctl.incidents.IncidentRefused (a clear sentence, nothing written) when the
    # rules say no, and ReadOnlyError in an observer session; each returns after the commit.

    @property
    def notifier(self):  # noqa: ANN201 - crmctl.notify.Notifier (imported lazily)
        """This session's notifier: incidents raised or moved here are announced by it."""
        notifier = getattr(self, "_notifier", None)
        if notifier is None:
            from crmctl.notify import Notifier, channels_from_config

            notifier = Notifier(self.store, actor=self.actor, channels=channels_from_config(self.config))
            self._notifier = notifier
        return notifier

    def incident_desk(self):  # noqa: ANN201 - crmctl.incidents.IncidentDesk
        """The incident desk of this operator (announcing through `notifier`)."""
        from crmctl.incidents import IncidentDesk

        return IncidentDesk(self.config, self.store, actor=self.actor, clock=self.clock, sink=self.notifier)

    async def incident_entries(self, after_seq: int = 0, *, until: datetime | None = None) -> list[JournalEntry]:
        """Incident transitions and notification outcomes after `after_seq` (up to `until` in a
        historical view): the Incidents screen's feed."""
        from crmctl.incidents import INCIDENT_KINDS
        from crmctl.notify import NOTIFY_KINDS

        return await self.store.entries(after_seq, kinds=INCIDENT_KINDS + NOTIFY_KINDS, until=until)

    async def raise_incident(self, title: str, **details: object):  # noqa: ANN201 - Incident
        """Opens an incident by hand (severity, check, step, owner, note as keywords)."""
        self._may_act_on_incidents()
        return await self.incident_desk().raise_incident(title, **details)  # type: ignore[arg-type]

    async def raise_incident_from_check(self, check_id: str, *, severity: str | None = None):  # noqa: ANN201
        """The Checks screen's `i`: an incident from a BREACH/ERROR check, its result as evidence."""
        self._may_act_on_incidents()
        return await self.incident_desk().raise_from_check(check_id, severity=severity)

    async def raise_incident_from_criterion(self, criterion_id: str, *, severity: str | None = None):  # noqa: ANN201
        """An incident from a rollback criterion (its check's newest result as evidence)."""
        self._may_act_on_incidents()
        return await self.incident_desk().raise_from_criterion(criterion_id, severity=severity)

    async def incident_action(
        self, action: str, number: int, *, note: str | None = None, owner: str | None = None,
        severity: str | None = None,
    ):  # noqa: ANN201 - Incident
        """ack | mitigate | resolve | close | note on incident `number`."""
        self._may_act_on_incidents()
        desk = self.incident_desk()
        if action == "ack":
            return await desk.acknowledge(number, owner=owner, severity=severity, note=note)
        if action == "mitigate":
            return await desk.mitigate(number, note=note)
        if action == "resolve":
            return await desk.resolve(number, note or "")
        if action == "close":
            return await desk.close(number, note=note)
        if action == "note":
            return await desk.note(number, note or "", severity=severity, owner=owner)
        raise ValueError(f"unknown incident action {action!r}")

    async def tick_escalations(self):  # noqa: ANN201 - list[Incident]
        """Fires every escalation timer that has run out now (idempotent across sessions)."""
        from crmctl.incidents import Escalator

        self._may_act_on_incidents()
        return await Escalator(self.incident_desk()).tick(self.clock.now())

    async def run_incident_services(self, *, poll_interval: float = 0.25, escalation_interval: float = 5.0) -> None:
        """Until cancelled: auto-raise rules and recovery notes on the change feed, escalation
        timers, notification delivery, and the go-live baseline frozen at sign-off. An observer
        session writes nothing, so it runs none of them."""
        if self.read_only:
            return
        from crmctl.autoraise import run_incident_services
        from crmctl.hypercare import freeze_on_signoff

        async def on_signoff(batch: list[JournalEntry]) -> None:
            for entry in batch:
                await freeze_on_signoff(self.config, self.store, entry, actor=self.actor)

        await run_incident_services(
            self.incident_desk(), notifier=self.notifier, poll_interval=poll_interval,
            escalation_interval=escalation_interval, followers=[on_signoff],
        )

    async def hypercare_entries(self, after_seq: int = 0, *, until: datetime | None = None) -> list[JournalEntry]:
        """Baseline and daily status entries after `after_seq` (up to `until` in a historical
        view): the Hypercare screen's feed."""
        from crmctl.hypercare import HYPERCARE_KINDS

        return await self.store.entries(after_seq, kinds=HYPERCARE_KINDS, until=until)

    async def freeze_baseline(self, *, reason: str = "manual", replace: bool = False):  # noqa: ANN201 - Baseline
        """Freezes the go-live baseline from the newest results (refused if one exists, unless replacing)."""
        from crmctl.hypercare import freeze_baseline

        self._may_act_on_incidents()
        return await freeze_baseline(self.config, self.store, actor=self.actor, reason=reason, replace=replace)

    async def run_hypercare(self):  # noqa: ANN201 - HypercareRun
        """Re-runs the check pack and journals today's `hypercare.status` against the baseline."""
        from crmctl.hypercare import run_hypercare

        self._engine()
        return await run_hypercare(self.config, self.store, self.run_checks, actor=self.actor, clock=self.clock)

    # ---------------------------------------------------------------- sign-off, lessons, evidence pack
    # Sign-offs and lessons raise crmctl.signoff.SignoffError (a clear sentence, nothing written)
    # and ReadOnlyError in an observer session; each returns after the commit.

    def scrubber(self):  # noqa: ANN201 - crmctl.scrubber.Scrubber (imported lazily)
        """Keeps this cutover's secrets (and the live bearer token) out of text it journals or exports."""
        from crmctl.scrubber import Scrubber

        token = getattr(self.emulator, "token", None)
        return Scrubber.for_config(self.config, extra=[token] if isinstance(token, str) else [])

    async def record_signoff(self, role: str, statement: str, *, name: str | None = None, title: str | None = None):  # noqa: ANN201
        """Journals a business or technical sign-off (quoting the journal head it signs)."""
        from crmctl.signoff import record_signoff

        self._may_sign()
        return await record_signoff(self.store, self.actor, role=role, statement=statement, name=name, title=title,
                                    scrubber=self.scrubber())

    async def record_lesson(self, text: str, *, category: str = "improve", action: str | None = None,
                            owner: str | None = None):  # noqa: ANN201 - crmctl.signoff.Lesson
        """Journals a lessons-learned entry."""
        from crmctl.signoff import record_lesson

        self._may_sign()
        return await record_lesson(self.store, self.actor, text=text, category=category, action=action, owner=owner,
                                   scrubber=self.scrubber())

    async def closure_state(self, until: datetime | None = None):  # noqa: ANN201 - crmctl.signoff.ClosureState
        """Sign-offs, lessons and earlier evidence exports, as the journal holds them (at `until`)."""
        from crmctl.signoff import closure_state

        return await closure_state(self.store, until)

    async def export_evidence(self, out_dir=None, *, screenshots=None):  # noqa: ANN001, ANN201 - ExportResult
        """Writes the evidence pack (default: `evidence/<time>` beside the state file).

        `screenshots` renders the key screens (the app passes `screens.screenshots.render_screens`);
        an observer session may export, but only an operator's export is journalled.
        """
        from crmctl.evidence import default_out_dir, export

        token = getattr(self.emulator, "token", None)
        return await export(
            self.config, self.store, out_dir or default_out_dir(self.config, self.clock.now()), screenshots,
            clock=self.clock, actor=self.actor, extra_secrets=[token] if isinstance(token, str) else [],
            record=not self.read_only,
        )

    async def verify_evidence(self, path):  # noqa: ANN001, ANN201 - crmctl.evidence.PackReport
        """Re-checks a pack's hashes and journal chain (in a thread: it reads every byte)."""
        import asyncio

        from crmctl.evidence import verify

        return await asyncio.to_thread(verify, path)

    def _may_sign(self) -> None:
        if self.read_only:
            raise ReadOnlyError("This session is read-only: sign-offs and lessons are recorded in the operators' sessions.")

    def _may_act_on_incidents(self) -> None:
        if self.read_only:
            raise ReadOnlyError("This session is read-only: incidents and baselines are handled in the operators' sessions.")

    def _may_act(self) -> None:
        if self.read_only:
            raise ReadOnlyError("This session is read-only: runbook steps and decisions are taken in the operators' sessions.")

    def _engine(self) -> Engine | EngineThread:
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
        engine_thread: bool = False,
    ) -> AsyncIterator[ControlRoom]:
        """Opens the store and, unless read-only, the connectors and engine; closes all on exit.

        `engine_thread` runs the engine, its connectors and the embedded emulator on a thread of
        their own (`EngineThread`), as the control room does; headless callers leave it off.
        """
        from crmctl.runtime import EngineThread, config_clock, open_runtime

        clock = clock or config_clock(config)
        async with AsyncExitStack() as stack:
            store = await Store.open(config.state, clock=clock)
            stack.push_async_callback(store.close)
            engine: Engine | EngineThread | None = None
            emulator = None
            if not read_only and engine_thread:
                engine = EngineThread(
                    config, registry, actor=actor, clock=clock, device_code_callback=device_code_callback
                )
                await engine.start()
                stack.push_async_callback(engine.close)
                emulator = engine.emulator
            elif not read_only:
                from crmctl.engine import Engine

                runtime = await stack.enter_async_context(
                    open_runtime(config, device_code_callback=device_code_callback)
                )
                engine = Engine(config, registry, store, runtime.targets, actor=actor, clock=clock)
                emulator = runtime.emulator
            yield cls(config, store, engine, actor=actor, clock=clock, read_only=read_only, emulator=emulator)
