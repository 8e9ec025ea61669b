"""From red to incident without anyone remembering: auto-raise rules, recovery notes, and the loop.

Why it is built this way:

* Fed by the store's change feed, not by one engine's callback: a result journalled by any
  process (another session, cron's `crmctl hypercare run`, `crmctl check`) is judged, and the
  evidence recorded is the journal entry itself (seq and hash), which a callback cannot give.
* Several sessions may run the same rules on the same feed. Raising is de-duplicated inside the
  write (one active incident per check), and recovery/relapse notes carry the result's seq and
  are refused a second time, so each happens exactly once whoever gets there first.
* Recovery is a timeline note, never a resolution: a check turning OK is evidence for the
  person who owns the incident, not a decision taken for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Sequence

from crmctl.incidents import (
    AUTO_RECOVERED,
    AUTO_RELAPSED,
    INCIDENT_KINDS,
    NOTE,
    Escalator,
    Incident,
    IncidentDesk,
    IncidentRefused,
    Register,
    ResultRef,
    latest_result_refs,
    matches,
)
from crmctl.journal import JournalEntry
from crmctl.model import CheckResult, Status

log = logging.getLogger(__name__)

RED = frozenset({Status.BREACH, Status.ERROR})
Follower = Callable[[list[JournalEntry]], Awaitable[None]]
RECOVERED = frozenset({Status.OK, Status.WARN})


@dataclass(frozen=True)
class AutoAction:
    """What the auto-raiser did about one result."""

    what: str
    """``raised``, ``recovered`` or ``relapsed``."""
    incident: Incident
    result_seq: int


class AutoRaiser:
    """Applies `incidents.auto` rules to check results and notes recoveries on open incidents."""

    def __init__(self, desk: IncidentDesk, rules: Sequence[Any] | None = None) -> None:
        self.desk = desk
        self.rules = tuple(desk.config.incidents.auto if rules is None else rules)
        self.register = Register()

    def rule_for(self, check_id: str) -> Any | None:
        """The first rule whose `check` pattern matches, or None."""
        return next((r for r in self.rules if matches(r.check, check_id)), None)

    async def start(self) -> int:
        """Loads the register and judges every check's newest result once (catching up after a
        restart, or after a rule was added); returns the seq the change feed should follow from."""
        store = self.desk.store
        last = await store.last_seq()
        self.register.apply_all(e for e in await store.entries(kinds=INCIDENT_KINDS) if e.seq <= last)
        refs = await latest_result_refs(store, [c.id for c in getattr(self.desk.config, "checks", ())])
        for ref in sorted(refs.values(), key=lambda r: r.seq):
            await self._judge(ref)
        return last

    async def feed(self, entries: Iterable[JournalEntry]) -> list[AutoAction]:
        """Folds incident entries and judges each check result, in journal order."""
        actions: list[AutoAction] = []
        for entry in entries:
            if entry.kind in INCIDENT_KINDS:
                self.register.apply(entry)
            elif entry.kind == "check.result":
                action = await self._judge(ResultRef(CheckResult.from_json(entry.payload), entry.seq, entry.hash))
                if action is not None:
                    actions.append(action)
        return actions

    async def follow(self, interval: float = 0.25, followers: Sequence[Follower] = ()) -> None:
        """Runs until cancelled: start, then judge every batch the change feed delivers (and
        hand it to each of `followers`, so one feed serves every background duty)."""
        after = await self.start()
        async for batch in self.desk.store.watch(interval=interval, after_seq=after):
            await self.feed(batch)
            for follower in followers:
                await follower(batch)

    async def _judge(self, ref: ResultRef) -> AutoAction | None:
        result = ref.result
        active = self.register.active_for_check(result.check_id)
        try:
            if result.status in RECOVERED:
                if active is not None and not active.check_recovered and _raised_on_red(active):
                    return await self._note(active, ref, AUTO_RECOVERED)
                return None
            if result.status not in RED:
                return None
            if active is not None:
                if active.check_recovered:
                    return await self._note(active, ref, AUTO_RELAPSED)
                return None
            rule = self.rule_for(result.check_id)
            if rule is None or result.status.value not in rule.when:
                return None
            if rule.after > 1 and not await self._red_streak(result.check_id, rule):
                return None
            incident = await self.desk.raise_from_result(
                ref, severity=rule.severity, source="auto", title=rule.title or None,
                note=f"Raised automatically by rule {rule.check!r}",
            )
        except IncidentRefused as exc:
            log.debug("auto-raiser: %s", exc)  # another session got there first
            return None
        self._adopt(incident)
        return AutoAction("raised", incident, ref.seq)

    async def _note(self, incident: Incident, ref: ResultRef, auto: str) -> AutoAction:
        result = ref.result
        if auto == AUTO_RECOVERED:
            text = f"Check {result.check_id} recovered: {result.status.value} — {result.explanation}"
        else:
            text = f"Check {result.check_id} is {result.status.value} again — {result.explanation}"
        payload = {"incident": incident.number, "note": text, "auto": auto, "result_seq": ref.seq,
                   "result_hash": ref.hash}
        updated = await self.desk.write(NOTE, payload)
        self._adopt(updated)
        return AutoAction(auto, updated, ref.seq)

    def _adopt(self, incident: Incident) -> None:
        """Takes the desk's freshly folded incident (its write is not in our feed yet)."""
        self.register.put(incident)

    async def _red_streak(self, check_id: str, rule: Any) -> bool:
        history = await self.desk.store.results_history(check_id, limit=rule.after)
        return len(history) >= rule.after and all(r.status.value in rule.when for r in history)


def _raised_on_red(incident: Incident) -> bool:
    """Only incidents raised from a red result get recovery notes (a hand-raised incident that
    merely mentions a green check has nothing to recover from)."""
    return str(incident.evidence.get("status", "")) in {s.value for s in RED}


async def run_incident_services(
    desk: IncidentDesk,
    *,
    notifier: Any | None = None,
    poll_interval: float = 0.25,
    escalation_interval: float = 5.0,
    followers: Sequence[Follower] = (),
) -> None:
    """Everything a session does for incidents in the background, until cancelled: follow the
    journal with the auto-raiser, tick the escalation timers, deliver notifications.

    Each part is restarted after a failure (a locked state file for a moment must not silence
    escalations for the rest of the night), with a pause so a persistent fault cannot spin.
    """
    escalator = Escalator(desk)

    async def auto_raise() -> None:
        await AutoRaiser(desk).follow(poll_interval, followers)

    async def ticking() -> None:
        while True:
            await escalator.tick()
            await asyncio.sleep(escalation_interval)

    parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [("auto-raise", auto_raise), ("escalation", ticking)]
    if notifier is not None:
        parts.append(("notify", notifier.run))
    tasks = [asyncio.create_task(_resilient(name, factory)) for name, factory in parts]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


RESTART_PAUSE = 2.0
"""Seconds before a failed background part is started again."""


async def _resilient(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Runs `factory()` again and again after failures, until cancelled."""
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged, then restarted: escalations must go on
            log.exception("incident service %s failed; restarting in %.0f s", name, RESTART_PAUSE)
            await asyncio.sleep(RESTART_PAUSE)


__all__ = ["AutoAction", "AutoRaiser", "RECOVERED", "RED", "run_incident_services"]
