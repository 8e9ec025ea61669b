"""The crmctl control room: the Textual App that hosts every screen.

The app never does I/O itself. It calls the core (`crmctl.control.ControlRoom`) from workers, and
it learns of every new result, its own or another session's, only through the store's change
feed: the journal is the single source of truth, so what one operator sees is what all see.
In `crmctl tui`/`demo` the check engine runs on a thread of its own (`crmctl.runtime.EngineThread`):
this app's event loop only reads the journal and draws, so keys are answered while checks run.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import Worker, WorkerState

from crmctl.timetravel import as_of_banner
from crmctl.views import RUNBOOK_KINDS, Snapshot, status_label
from screens.commands import ControlRoomCommands
from screens.messages import ChecksFinished, HistoryLoaded, SnapshotUpdated
from screens.overview import OverviewScreen

if TYPE_CHECKING:
    from crmctl.checking import CheckProgress
    from crmctl.control import ControlRoom
    from crmctl.store import Store

CALM_THEME = Theme(
    name="crmctl-calm",
    primary="#7AA2C0",
    secondary="#8CA9A1",
    accent="#B9A3D3",
    warning="#E2BE76",
    error="#E27D83",
    success="#93C18A",
    foreground="#D3DAE1",
    background="#11161C",
    surface="#161D25",
    panel="#1E2833",
    dark=True,
)
"""A dark, low-glare theme for long nights in a war room: muted blues, alarms still loud."""

SCREENS: tuple[tuple[str, str, str, str], ...] = (
    ("1", "overview", "Overview", "Phase, countdowns, red items, recommendation"),
    ("2", "checks", "Checks", "Every check, its value, threshold and age"),
    ("3", "runbook", "Runbook", "The checklist of the current run: steps, timing, drift, gates"),
    ("4", "rollback", "Rollback", "The decision matrix, point of no return, rollback SLA, decisions"),
    ("5", "integrations", "Integrations", "One pane per integration: failures, retries, backlog, latency"),
    ("6", "incidents", "Incidents", "The incident register: severity, owner, escalation countdowns, timeline"),
    ("7", "hypercare", "Hypercare", "Go-live baseline, Day 1/7/30 checkpoints, drift over time"),
    ("8", "evidence", "Evidence", "Sign-offs, lessons learned, and the audit evidence pack"),
)
"""(key, mode, title, what it shows) of every screen built so far. Keys 3-8 are kept for runbook,
rollback, integrations, incidents, hypercare and evidence; the bindings and the palette are made
from this table, so a new screen is one line here plus its entry in `CrmctlApp.MODES`."""


class LazyScreen:
    """A screen class named by module, imported when its mode is first shown (or warmed up).

    Why: the first screen is the Overview; importing the seven other screens (and the core
    modules behind them: runbook rules, decisions, hypercare, evidence) before it was drawn
    cost about a fifth of the CPU crmctl spent until its first screen (`bench/tui.py`,
    docs/benchmarks.md). Textual calls a mode's callable to build its screen.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def load(self) -> type[Screen[Any]]:
        """The screen class (importing its module the first time)."""
        return getattr(importlib.import_module(self.module), self.name)  # type: ignore[no-any-return]

    def __call__(self) -> Screen[Any]:
        return self.load()()

    def __repr__(self) -> str:
        return f"LazyScreen({self.module}.{self.name})"


class Modes(dict):  # type: ignore[type-arg]
    """`CrmctlApp.MODES`: Textual copies the callables; reading an entry gives the screen class."""

    def __getitem__(self, mode: str) -> Any:
        value = super().__getitem__(mode)
        return value.load() if isinstance(value, LazyScreen) else value


LATER_MODULES = (
    "screens.checks", "screens.detail", "screens.entity", "screens.runbook", "screens.rollback",
    "screens.integrations", "screens.incidents", "screens.hypercare", "screens.evidence",
    "screens.help", "screens.timetravel",
)
"""What the first screen does without; imported on a thread once it is drawn (`_warm_up`)."""


SCREEN_KEYS = Binding.Group("Screens")
"""Screen keys share one footer entry ("1 2 Screens"), so 80 columns still show every action."""


async def load_snapshot(store: Store) -> Snapshot:
    """Reads what the screens need from the journal, once, at start-up.

    Kept for callers outside the app; the app itself reads through `ControlRoom.snapshot`,
    which can also read the journal as of a past moment.

    `last_seq` is read first and the change feed is then started after it, so nothing
    committed meanwhile is missed; an entry read twice (here and from the feed) is harmless,
    since `Snapshot.apply_entries` keeps whichever result finished last.
    """
    last_seq = await store.last_seq()
    results = await store.latest_results()
    runbook = await store.entries(kinds=RUNBOOK_KINDS)
    return Snapshot(
        results=dict(results),
        runbook=tuple(e for e in runbook if e.seq <= last_seq),
        last_seq=last_seq,
        loaded=True,
    )


class CrmctlApp(App[None]):
    """The control room: overview and checks now, runbook to evidence in later issues."""

    TITLE = "crmctl"
    CSS_PATH = ["app.tcss"]
    MODES: ClassVar[dict[str, Any]] = Modes(  # type: ignore[assignment]
        overview=OverviewScreen,
        checks=LazyScreen("screens.checks", "ChecksScreen"),
        runbook=LazyScreen("screens.runbook", "RunbookScreen"),
        rollback=LazyScreen("screens.rollback", "RollbackScreen"),
        integrations=LazyScreen("screens.integrations", "IntegrationsScreen"),
        incidents=LazyScreen("screens.incidents", "IncidentsScreen"),
        hypercare=LazyScreen("screens.hypercare", "HypercareScreen"),
        evidence=LazyScreen("screens.evidence", "EvidenceScreen"),
    )
    """The Overview is imported with the app; every other screen when first shown."""
    DEFAULT_MODE = "overview"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    """Below 120 columns panels stack; from 120 (160x48, 200x50 wall screens) they sit side by side."""
    COMMANDS = App.COMMANDS | {ControlRoomCommands}
    """The command palette (ctrl+p) lists every screen, action and check besides Textual's own."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(key, f"switch_mode('{mode}')", title, id=f"screen.{mode}", tooltip=f"{title}: {about}", group=SCREEN_KEYS)
            for key, mode, title, about in SCREENS
        ),
        Binding("r", "run_checks", "Run all", id="checks.run-all", tooltip="Run every check once, now"),
        Binding(
            "t", "time_travel", "History", id="app.time-travel",
            tooltip="View every screen as of a past moment of the journal (t again: back to live)",
        ),
        Binding("escape", "back_to_live", "Live", id="app.live", tooltip="Leave the historical view"),
        Binding("question_mark", "help", "Help", key_display="?", id="app.help", tooltip="List every key"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Leave crmctl (checks stop)"),
    ]
    """App-wide keys; each screen adds its own. Ids let a keymap remap them later."""

    snapshot: var[Snapshot] = var(Snapshot(), init=False)
    """Everything known of the journal; screens watch it and re-project."""
    now: var[datetime] = var(datetime.min, init=False)
    """The current time from the room's clock, moved on every `clock_tick` seconds."""
    running: var[int] = var(0, init=False)
    """How many check runs started from this session are in flight (drives "running checks…")."""
    as_of: var[datetime | None] = var(None, init=False)
    """None when live; else the past moment every screen shows (time travel, key t)."""
    wall: var[datetime] = var(datetime.min, init=False)
    """The room's clock, always live (the header's clock); `now` stops at `as_of` in history."""
    progress: var[Mapping[str, CheckProgress]] = var(dict, init=False)
    """The checks running in this session, with rows, pages and estimate (polled from the room)."""

    def __init__(
        self,
        room: ControlRoom,
        *,
        auto_run: bool = True,
        poll_interval: float = 0.1,
        clock_tick: float = 1.0,
        progress_interval: float = 0.5,
    ) -> None:
        """Builds the app around an open control room; the caller closes the room after the app exits.

        Args:
            room: The cutover's config, store, clock, actor and engine.
            auto_run: Start the check scheduler once the first screen is drawn (not in read-only
                sessions).
            poll_interval: Seconds between change-feed polls of the journal. A poll is one
                `PRAGMA data_version` (no table read), so 0.1 s costs next to nothing and leaves
                most of the 1 s cross-session budget to a loaded machine's scheduler.
            clock_tick: Seconds between clock (and age) updates; tests pass a large value so
                that `pilot.pause()` finds the app idle.
            progress_interval: Seconds between looks at the progress of running checks (memory
                only, cheap; redraws only when a check reported).
        """
        super().__init__()
        self.room = room
        self.auto_run = auto_run
        self.poll_interval = poll_interval
        self.clock_tick = clock_tick
        self.progress_interval = progress_interval
        self._live: Snapshot = Snapshot()
        """The newest live snapshot, kept current by the feed even while `as_of` shows the past."""
        self._progress_seen = -1
        self._started = False
        """True once the first journal read is shown and the background work has been started."""
        self._travel_to: datetime | None = None
        """The moment a history load is under way for; a later request makes older loads void."""
        self._first_read: asyncio.Future[Snapshot] | None = None
        """The first journal read, started at construction when a loop is running (the CLI's):
        its SQL runs on the store's thread while Textual starts up, instead of after it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop (the app is built before `run()`): read on mount
            loop = None
        if loop is not None:
            self._first_read = loop.create_task(room.snapshot())
        # Registered here, not on mount, so the very first frame is already in the calm theme.
        self.register_theme(CALM_THEME)
        self.theme = CALM_THEME.name
        self.now = room.clock.now()
        self.wall = self.now
        self._news_at = float("-inf")
        """Monotonic time the journal's news last moved the clock (see `_clock_timer`)."""

    # ----------------------------------------------------------------------------------------
    # lifecycle

    def on_mount(self) -> None:
        self._clock = self.set_interval(self.clock_tick, self._clock_timer, name="clock")
        self.set_interval(self.progress_interval, self.poll_progress, name="progress")
        self._follow_journal()
        self.set_timer(5.0, self._after_first_screen, name="start-anyway")

    def _clock_timer(self) -> None:
        """The clock timer fills the journal's silences: while news keeps coming (each one moves
        the clock with it), a tick that lands just before the next batch would only cost a
        second redraw of every table for the same second. Ages then lag by at most one more
        tick once the journal goes quiet."""
        if time.monotonic() - self._news_at < 1.5 * self.clock_tick:
            return
        self.tick()

    def tick(self) -> None:
        """Reads the clock; every age, countdown and STALE verdict on screen follows from it.

        In a historical view `now` stays at the chosen moment (ages and STALE verdicts as they
        were then); only the header's wall clock moves on.
        """
        self.wall = self.room.clock.now()
        if self.as_of is None:
            self.now = self.wall

    def poll_progress(self) -> None:
        """Picks up the progress of this session's running checks, when any has moved."""
        version = self.room.progress_version
        if version != self._progress_seen:
            self._progress_seen = version
            self.progress = dict(self.room.progress)

    # ----------------------------------------------------------------------------------------
    # workers

    @work(exclusive=True, group="journal", exit_on_error=False, description="Following the journal")
    async def _follow_journal(self) -> None:
        """Keeps `snapshot` current from the store's change feed, from any process.

        A feed error (a locked or briefly unreadable state file) must not freeze the wall
        screen: it is reported, and the feed resumes after the last entry it had.
        """
        store = self.room.store
        snapshot = self.snapshot
        while True:
            try:
                if not snapshot.loaded:
                    first, self._first_read = self._first_read, None
                    snapshot = await (first if first is not None else self.room.snapshot())
                    self.post_message(SnapshotUpdated(snapshot))
                async for batch in store.watch(interval=self.poll_interval, after_seq=snapshot.last_seq):
                    snapshot = snapshot.apply_entries(batch)
                    self.post_message(SnapshotUpdated(snapshot))
                return  # the store was closed: the feed has ended
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any feed failure: say so, then resume
                self.notify(f"Journal feed interrupted ({exc}); resuming.", title="Journal", severity="warning")
                await asyncio.sleep(max(1.0, 4 * self.poll_interval))

    def _after_first_screen(self) -> None:
        """Starts what the first screen does not need, once it is drawn: the check scheduler and
        the incident services (in `crmctl demo` the first round of checks and the emulator
        serving them would otherwise compete with the first paint), then the other screens'
        imports. Also called by a timer a few seconds after mount, so a journal that cannot be
        read yet does not keep the checks from running; whichever comes first starts them."""
        if self._started:
            return
        self._started = True
        if self.auto_run and not self.room.read_only:
            self._run_scheduler()
            self._run_incident_services()
        self.set_timer(0.5, self._warm_up, name="warm-up")

    def _warm_up(self) -> None:
        """Imports the other screens on a thread, after the first screen is up, so the first
        visit to each is quick. An import only defines classes: it touches no widget and no
        state of the app (and Python's import locks make a key that needs one of them wait)."""
        self.run_worker(partial(_import_all, LATER_MODULES), thread=True, group="warm-up", exit_on_error=False,
                        description="Loading the other screens")

    @work(exclusive=True, group="scheduler", exit_on_error=False, description="Running checks at their cadence")
    async def _run_scheduler(self) -> None:
        """Runs every check at its cadence for as long as the app is open."""
        await self.room.run_scheduler()

    @work(exclusive=True, group="incident-services", exit_on_error=False, description="Incident rules, timers, notifications")
    async def _run_incident_services(self) -> None:
        """Auto-raise rules, escalation timers and Teams/webhook delivery, in the background;
        a failed delivery pops a toast on whatever screen is showing (it is journalled too)."""

        def delivered(outcome: object) -> None:
            if not getattr(outcome, "ok", True):
                self.notify(f"{getattr(outcome, 'channel', '?')}: INC-{getattr(outcome, 'incident', '?')} "
                            f"{getattr(outcome, 'event', '')} not delivered ({getattr(outcome, 'reason', '')})",
                            title="Notification failed", severity="error", timeout=10)

        self.room.notifier.on_outcome = delivered
        await self.room.run_incident_services(poll_interval=self.poll_interval)

    @work(group="run-checks", exit_on_error=False, description="Running checks now")
    async def _run_checks(self, only: tuple[str, ...] | None) -> None:
        self.running += 1
        try:
            results = await self.room.run_checks(list(only) if only else None)
        finally:
            self.running -= 1
        self.post_message(ChecksFinished(results=results, only=only))

    def run_checks(self, only: Sequence[str] | None = None) -> Worker[None] | None:
        """Runs all checks (or those in `only`) once, now; None when this session may not.

        Not exclusive: re-running one check while a full run is going must not cancel the full
        run. Results show up through the journal feed, like every other session's.
        """
        if self.room.read_only:
            self.notify("This session is read-only: checks run in the operators' sessions.", severity="warning")
            return None
        return self._run_checks(tuple(only) if only else None)

    # ----------------------------------------------------------------------------------------
    # message handlers

    @on(SnapshotUpdated)
    def _apply_snapshot(self, message: SnapshotUpdated) -> None:
        """Shows news from the journal, with the clock read at the same moment.

        Moving the clock here (and restarting its timer) means a busy journal costs one redraw
        per batch rather than one per batch plus one per clock tick; when the journal is quiet
        the timer ticks as usual.
        """
        self._live = message.snapshot
        if not self._started:
            self.call_after_refresh(self._after_first_screen)
        if self.as_of is None:
            with self.batch_update():
                self.tick()
                self.snapshot = message.snapshot
            self._news_at = time.monotonic()
            self._clock.reset()

    @on(HistoryLoaded)
    def _show_history(self, message: HistoryLoaded) -> None:
        """Switches every screen to the past moment at once: snapshot, `now` and banner together."""
        if message.snapshot.as_of != self._travel_to:
            return  # a newer request (or "back to live") overtook this load
        with self.batch_update():
            self.as_of = message.snapshot.as_of
            self.now = message.snapshot.as_of or self.wall
            self.snapshot = message.snapshot
        self.refresh_bindings()

    @on(ChecksFinished)
    def _report_run(self, message: ChecksFinished) -> None:
        if message.only and len(message.results) == 1:
            result = message.results[0]
            self.notify(f"{result.check_id}: {status_label(result.status)}", title="Check ran", timeout=4)
        else:
            bad = sum(1 for r in message.results if not r.status.is_green)
            self.notify(f"{len(message.results)} checks ran, {bad} not OK.", title="Checks ran", timeout=4)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that failed says why, instead of crashing the control room."""
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{error}", title=event.worker.description or event.worker.name, severity="error", timeout=10)

    # ----------------------------------------------------------------------------------------
    # actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Greys out actions this session may not take now (shown, but disabled).

        Read-only sessions take no actions; neither does a historical view, where the screen
        shows the past and an action would be acknowledged against a present nobody sees.
        "Live" (escape) is only a key while a historical view is shown.
        """
        if action == "back_to_live":
            return self.as_of is not None
        if action == "run_checks" and (self.room.read_only or self.as_of is not None):
            return None
        return True

    # ----------------------------------------------------------------------------------------
    # time travel

    def action_time_travel(self) -> None:
        """Opens the "as of" dialog, or, in a historical view, returns to live."""
        if self.as_of is not None or self._travel_to is not None:
            self.action_back_to_live()
            return
        from screens.timetravel import TimeTravelScreen

        if isinstance(self.screen, TimeTravelScreen):
            return
        self.push_screen(TimeTravelScreen(), callback=self.travel_to)

    def travel_to(self, moment: datetime | None) -> None:
        """Shows every screen as the journal stood at `moment` (None: stay where we are)."""
        if moment is None:
            return
        self._travel_to = moment
        self._load_history(moment)

    @work(exclusive=True, group="history", exit_on_error=False, description="Reading the journal as of a past moment")
    async def _load_history(self, moment: datetime) -> None:
        snapshot = await self.room.snapshot(until=moment)
        self.post_message(HistoryLoaded(snapshot))

    def action_back_to_live(self) -> None:
        """Leaves the historical view: the newest journal state and the running clock again."""
        if self.as_of is None and self._travel_to is None:
            return
        self._travel_to = None
        self.workers.cancel_group(self, "history")
        with self.batch_update():
            self.as_of = None
            self.now = self.wall = self.room.clock.now()
            self.snapshot = self._live
        self.refresh_bindings()

    @property
    def as_of_text(self) -> str:
        """ "AS OF 02:14:00 UTC — historical view, live updates paused", or "" when live."""
        return as_of_banner(self.as_of, self.wall) if self.as_of is not None else ""

    def action_run_checks(self) -> None:
        """Runs every check once, now."""
        self.run_checks()

    def action_help(self) -> None:
        """Lists the keys of the current screen and the app."""
        from screens.help import HelpScreen, gather_keys

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(gather_keys(self.screen)))

    async def action_show_entity(self, entity: str) -> None:
        """Opens the drill-down of one entity (from the command palette), over the checks screen."""
        from screens.entity import EntityScreen

        if self.current_mode != "checks":
            await self.switch_mode("checks")
        await self.push_screen(EntityScreen(entity))

    def cancel_check(self, check_id: str) -> bool:
        """Cancels this session's run of `check_id`; False (and says why) when it cannot."""
        if self.room.read_only:
            self.notify("This session is read-only: it runs no checks to cancel.", severity="warning")
            return False
        if not self.room.cancel(check_id):
            self.notify(
                f"{check_id} is not running in this session (a run in another session can only be"
                " cancelled there).",
                severity="warning",
            )
            return False
        self.notify(f"Cancelling {check_id}; its ERROR result will name you.", title="Cancel", timeout=4)
        return True

    async def action_show_check(self, check_id: str) -> None:
        """Opens the detail of one check (from the command palette), over the checks screen.

        The mode switch is awaited first, so the detail lands on the checks screen's stack and
        escape returns there.
        """
        from screens.detail import CheckDetailScreen

        if self.current_mode != "checks":
            await self.switch_mode("checks")
        await self.push_screen(CheckDetailScreen(check_id))

    async def action_quit(self) -> None:
        """Stops the scheduler and the feed first, so nothing touches the room once it closes."""
        self.workers.cancel_all()
        self.exit()


def _import_all(modules: Sequence[str]) -> None:
    """Imports `modules` (run on a worker thread by `CrmctlApp._warm_up`)."""
    for module in modules:
        importlib.import_module(module)
