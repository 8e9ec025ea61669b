"""Escalation timers per severity, on a frozen clock: countdowns, firing once, stopping on ack."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from crmctl.clock import FrozenClock
from crmctl.incidents import ESCALATED, Escalator, IncidentDesk, Severity, escalation_text
from crmctl.store import Store
from tests.incidents.conftest import Collector
from tests.incidents.world import BOB, SEVERITIES, T0


@pytest.mark.parametrize(
    ("severity", "respond", "to"),
    [
        ("sev1", timedelta(minutes=15), "Cutover Lead"),
        ("sev2", timedelta(hours=1), "Migration Lead"),
        ("sev3", timedelta(hours=4), "CRM Ops"),
        ("sev4", timedelta(days=1), "Hypercare Desk"),
        ("unknown", timedelta(minutes=15), "Cutover Lead"),  # timed as SEV1: when unsure, the higher
    ],
)
async def test_each_severity_escalates_exactly_at_its_respond_time(
    desk: IncidentDesk, store: Store, clock: FrozenClock, sink: Collector, severity: str, respond: timedelta, to: str
) -> None:
    incident = await desk.raise_incident("Orders not syncing", severity=severity)
    escalator = Escalator(desk)
    assert incident.escalation_due(SEVERITIES) == T0 + respond
    assert escalation_text(incident, SEVERITIES, T0) == f"→ {to} in {_span(respond)}"

    clock.advance(respond - timedelta(seconds=1))
    assert await escalator.tick() == []
    assert escalation_text(incident, SEVERITIES, clock.now()) == f"→ {to} in 1 s"

    clock.advance(timedelta(seconds=1))
    fired = await escalator.tick()
    assert [i.number for i in fired] == [incident.number]
    escalated = fired[0]
    assert escalated.escalations[0].to == to and escalated.escalations[0].due == T0 + respond
    assert escalated.timeline[-1].text.startswith(f"Escalated to {to}: not acknowledged within")
    entries = await store.entries(kinds=[ESCALATED])
    assert len(entries) == 1 and entries[0].payload["escalate_to"] == to
    assert entries[0].ts == T0 + respond  # recorded when it fired
    assert sink.events[-1].kind == ESCALATED

    # Ticking again (any session, any time later) records nothing more.
    clock.advance(timedelta(hours=30))
    assert await escalator.tick() == []
    assert len(await store.entries(kinds=[ESCALATED])) == 1
    assert escalation_text(escalated, SEVERITIES, clock.now()).startswith(f"escalated to {to} ")


def _span(delta: timedelta) -> str:
    from crmctl.views import format_span

    return format_span(delta)


async def test_acknowledging_in_time_stops_the_timer(desk: IncidentDesk, store: Store, clock: FrozenClock) -> None:
    incident = await desk.raise_incident("Contacts missing", severity="sev1")
    clock.advance(timedelta(minutes=14))
    incident = await desk.acknowledge(incident.number)
    assert incident.escalation_due(SEVERITIES) is None
    assert escalation_text(incident, SEVERITIES, clock.now()) == "—"
    clock.advance(timedelta(hours=2))
    assert await Escalator(desk).tick() == []
    assert await store.entries(kinds=[ESCALATED]) == []


async def test_an_overdue_timer_says_so_until_it_is_recorded(desk: IncidentDesk, clock: FrozenClock) -> None:
    incident = await desk.raise_incident("Plug-in exceptions", severity="sev2")
    clock.advance(timedelta(hours=1, minutes=3))
    assert escalation_text(incident, SEVERITIES, clock.now()) == "OVERDUE 3 min → Migration Lead"


async def test_retriage_moves_the_deadline(desk: IncidentDesk, clock: FrozenClock) -> None:
    incident = await desk.raise_incident("Latency creeping up", severity="sev4")
    incident = await desk.note(incident.number, "customers are calling", severity="sev1")
    assert incident.severity is Severity.SEV1
    assert incident.escalation_due(SEVERITIES) == T0 + timedelta(minutes=15)
    clock.advance(timedelta(minutes=15))
    assert [i.number for i in await Escalator(desk).tick()] == [incident.number]


async def test_concurrent_ticks_in_two_sessions_record_one_escalation(
    config, store: Store, clock: FrozenClock
) -> None:
    other = await Store.open(config.state, clock=clock)
    try:
        mine = IncidentDesk(config, store, actor=BOB, clock=clock)
        theirs = IncidentDesk(config, other, actor=BOB, clock=clock)
        incident = await mine.raise_incident("Dynamics unreachable", severity="sev1")
        clock.advance(timedelta(minutes=16))
        results = await asyncio.gather(*(Escalator(d).tick() for d in (mine, theirs, mine, theirs)))
        assert sum(len(r) for r in results) == 1
        entries = await store.entries(kinds=[ESCALATED])
        assert [e.payload["incident"] for e in entries] == [incident.number]
    finally:
        await other.close()
