"""The crmctl control room: the Textual App that hosts every screen.

The app never does I/O itself. It calls the core (`crmctl.control.ControlRoom`) from workers, and
it learns of every new result, its own or another session's, only through the store's change
feed: the journal is the single source of truth, so what one operator sees is what all see.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Sequence

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.theme import Theme
from textual.worker import Worker, WorkerState

from crmctl.views import RUNBOOK_KINDS, Snapshot, status_label
from screens.checks import ChecksScreen
from screens.commands import ControlRoomCommands
from screens.detail import CheckDetailScreen
from screens.help import HelpScreen, gather_keys
from screens.messages import ChecksFinished, SnapshotUpdated
from screens.overview import OverviewScreen

if TYPE_CHECKING:
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
)
"""(key, mode, title, what it shows) of every screen built so far. Keys 3-8 are kept for runbook,
rollback, integrations, incidents, hypercare and evidence; the bindings and the palette are made
from this table, so a new screen is one line here plus its entry in `CrmctlApp.MODES`."""


SCREEN_KEYS = Binding.Group("Screens")
"""Screen keys share one footer entry ("1 2 Screens"), so 80 columns still show every action."""


async def load_snapshot(store: Store) -> Snapshot:
    """Reads what the screens need from the journal, once, at start-up.

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
    MODES: ClassVar[dict[str, type]] = {"overview": OverviewScreen, "checks": ChecksScreen}  # type: ignore[assignment]
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

    def __init__(
        self,
        room: ControlRoom,
        *,
        auto_run: bool = True,
        poll_interval: float = 0.25,
        clock_tick: float = 1.0,
    ) -> None:
        """Builds the app around an open control room; the caller closes the room after the app exits.

        Args:
            room: The cutover's config, store, clock, actor and engine.
            auto_run: Start the check scheduler on mount (not in read-only sessions).
            poll_interval: Seconds between change-feed polls of the journal.
            clock_tick: Seconds between clock (and age) updates; tests pass a large value so
                that `pilot.pause()` finds the app idle.
        """
        super().__init__()
        self.room = room
        self.auto_run = auto_run
        self.poll_interval = poll_interval
        self.clock_tick = clock_tick
        # Registered here, not on mount, so the very first frame is already in the calm theme.
        self.register_theme(CALM_THEME)
        self.theme = CALM_THEME.name
        self.now = room.clock.now()

    # ----------------------------------------------------------------------------------------
    # lifecycle

    def on_mount(self) -> None:
        self.set_interval(self.clock_tick, self.tick, name="clock")
        self._follow_journal()
        if self.auto_run and not self.room.read_only:
            self._run_scheduler()

    def tick(self) -> None:
        """Reads the clock; every age, countdown and STALE verdict on screen follows from it."""
        self.now = self.room.clock.now()

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
                    snapshot = await load_snapshot(store)
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

    @work(exclusive=True, group="scheduler", exit_on_error=False, description="Running checks at their cadence")
    async def _run_scheduler(self) -> None:
        """Runs every check at its cadence for as long as the app is open."""
        await self.room.run_scheduler()

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
        self.snapshot = message.snapshot

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
        """Greys out actions a read-only session may not take (shown, but disabled)."""
        if action == "run_checks" and self.room.read_only:
            return None
        return True

    def action_run_checks(self) -> None:
        """Runs every check once, now."""
        self.run_checks()

    def action_help(self) -> None:
        """Lists the keys of the current screen and the app."""
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(gather_keys(self.screen)))

    async def action_show_check(self, check_id: str) -> None:
        """Opens the detail of one check (from the command palette), over the checks screen.

        The mode switch is awaited first, so the detail lands on the checks screen's stack and
        escape returns there.
        """
        if self.current_mode != "checks":
            await self.switch_mode("checks")
        await self.push_screen(CheckDetailScreen(check_id))

    async def action_quit(self) -> None:
        """Stops the scheduler and the feed first, so nothing touches the room once it closes."""
        self.workers.cancel_all()
        self.exit()
