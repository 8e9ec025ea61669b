"""Every incident transition and refusal, on a real store, with a frozen clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crmctl.clock import FrozenClock
from crmctl.incidents import (
    ACKNOWLEDGED,
    CLOSED,
    INCIDENT_KINDS,
    MITIGATING,
    NOTE,
    RAISED,
    RESOLVED,
    IncidentDesk,
    IncidentRefused,
    Register,
    Severity,
    State,
    UnknownIncident,
    summary_line,
)
from crmctl.store import Store
from tests.incidents.conftest import Collector
from tests.incidents.world import BOB, T0


async def test_the_whole_lifecycle_is_journalled_in_order(desk: IncidentDesk, store: Store, clock: FrozenClock,
                                                          sink: Collector) -> None:
    incident = await desk.raise_incident("ERP sync failing", severity="sev2", check="erp-sync.jobs", step="reconcile",
                                         note="orders stuck since 20:50")
    assert incident.id == f"INC-{incident.number}"
    assert (incident.state, incident.severity, incident.raised_by) == (State.OPEN, Severity.SEV2, "alice")
    assert (incident.check, incident.step, incident.owner) == ("erp-sync.jobs", "reconcile", None)

    clock.advance(timedelta(minutes=3))
    incident = await desk.acknowledge(incident.number, owner="bob")
    assert (incident.state, incident.owner, incident.acknowledged_at) == (State.ACKNOWLEDGED, "bob", T0 + timedelta(minutes=3))
    incident = await desk.mitigate(incident.number, note="restarted the ERP connector")
    assert incident.state is State.MITIGATING
    incident = await desk.note(incident.number, "backlog draining, 120 left")
    assert incident.state is State.MITIGATING
    clock.advance(timedelta(minutes=20))
    incident = await desk.resolve(incident.number, "connector credentials rotated")
    assert (incident.state, incident.resolution) == (State.RESOLVED, "connector credentials rotated")
    assert incident.resolved_at == T0 + timedelta(minutes=23)
    incident = await desk.close(incident.number, note="post-mortem filed")
    assert incident.state is State.CLOSED and not incident.active

    kinds = [e.kind for e in await store.entries(kinds=INCIDENT_KINDS)]
    assert kinds == [RAISED, ACKNOWLEDGED, MITIGATING, NOTE, RESOLVED, CLOSED]
    # The timeline is the journal: one item per entry, each with its seq and chain hash.
    entries = await store.entries(kinds=INCIDENT_KINDS)
    assert [(t.seq, t.hash) for t in incident.timeline] == [(e.seq, e.hash) for e in entries]
    assert incident.timeline[0].text == "Raised SEV2: ERP sync failing — orders stuck since 20:50"
    assert incident.timeline[1].text == "Acknowledged; owner bob"
    assert incident.timeline[3].text == "backlog draining, 120 left"
    # Re-folding the journal gives exactly the incident the desk returned.
    assert Register.from_entries(entries).get(incident.number) == incident
    # Announced: raised, acknowledged, resolved (not mitigating, notes or closing).
    assert [e.kind for e in sink.events] == [RAISED, ACKNOWLEDGED, RESOLVED]
    assert "INC-" in summary_line(incident) and "CLOSED" not in summary_line(incident)


@pytest.mark.parametrize(
    ("setup", "action", "refusal"),
    [
        ([], "mitigate", "Acknowledge INC-1 first"),
        ([], "resolve", "Acknowledge INC-1 before resolving it"),
        ([], "close", "Resolve INC-1 before closing it"),
        (["ack"], "ack", "INC-1 is already acknowledged (acknowledged by alice at 2026-11-28T21:00:00"),
        (["ack"], "close", "Resolve INC-1 before closing it"),
        (["ack", "mitigate"], "mitigate", "it is mitigating"),
        (["ack", "mitigate", "resolve"], "ack", "INC-1 is already resolved"),
        (["ack", "mitigate", "resolve"], "resolve", "it is resolved"),
        (["ack", "resolve", "close"], "note", "Cannot add a note to INC-1: it is closed."),
        (["ack", "resolve", "close"], "close", "it is closed"),
    ],
)
async def test_illegal_transitions_are_refused_and_write_nothing(
    desk: IncidentDesk, store: Store, setup: list[str], action: str, refusal: str
) -> None:
    incident = await desk.raise_incident("Accounts missing", severity="sev1")
    assert incident.number == 1
    steps = {
        "ack": lambda: desk.acknowledge(1),
        "mitigate": lambda: desk.mitigate(1),
        "resolve": lambda: desk.resolve(1, "fixed"),
        "close": lambda: desk.close(1),
        "note": lambda: desk.note(1, "more"),
    }
    for step in setup:
        await steps[step]()
    before = await store.last_seq()
    with pytest.raises(IncidentRefused) as refused:
        await steps[action]()
    assert refusal in str(refused.value)
    assert await store.last_seq() == before


async def test_resolve_needs_a_note_and_unknown_numbers_are_named(desk: IncidentDesk) -> None:
    await desk.raise_incident("x", severity="sev4")
    await desk.acknowledge(1)
    with pytest.raises(IncidentRefused, match="resolution note is required"):
        await desk.resolve(1, "  ")
    with pytest.raises(UnknownIncident, match="There is no incident INC-99"):
        await desk.acknowledge(99)
    with pytest.raises(IncidentRefused, match="needs a title"):
        await desk.raise_incident("   ")


async def test_severity_unknown_by_default_and_retriage_is_on_the_timeline(desk: IncidentDesk) -> None:
    incident = await desk.raise_incident("Something is off with contacts")
    assert incident.severity is Severity.UNKNOWN
    incident = await desk.acknowledge(incident.number, severity="sev3")
    assert incident.severity is Severity.SEV3
    assert incident.timeline[-1].text == "Acknowledged; owner alice (severity UNKNOWN → SEV3)"
    incident = await desk.note(incident.number, "worse than thought", severity="2")
    assert incident.severity is Severity.SEV2
    assert incident.timeline[-1].text == "worse than thought (severity SEV3 → SEV2)"
    with pytest.raises(ValueError, match="expected sev1, sev2, sev3, sev4 or unknown"):
        await desk.note(incident.number, "x", severity="critical")


def test_severity_parsing_and_timer_keys() -> None:
    assert [Severity.parse(t) for t in ("sev1", "SEV2", "3", "unknown", "?", None, "")] == [
        Severity.SEV1, Severity.SEV2, Severity.SEV3, Severity.UNKNOWN, Severity.UNKNOWN, Severity.UNKNOWN,
        Severity.UNKNOWN,
    ]
    assert Severity.UNKNOWN.config_key == "sev1"  # when unsure, default to the higher
    assert Severity.SEV4.config_key == "sev4"
    assert sorted(Severity, key=lambda s: s.rank) == [Severity.SEV1, Severity.UNKNOWN, Severity.SEV2, Severity.SEV3,
                                                       Severity.SEV4]


async def test_two_operators_cannot_both_acknowledge(config, store: Store, clock: FrozenClock) -> None:
    """Two stores on one file are two SQLite connections: the refusal is decided in the write."""
    import asyncio

    other = await Store.open(config.state, clock=clock)
    try:
        alice = IncidentDesk(config, store, actor=store_actor("alice"), clock=clock)
        bob = IncidentDesk(config, other, actor=BOB, clock=clock)
        incident = await alice.raise_incident("Dynamics unreachable", severity="sev1")
        outcomes = await asyncio.gather(
            alice.acknowledge(incident.number), bob.acknowledge(incident.number), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, IncidentRefused)]
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(won) == 1 and len(refused) == 1
        assert "is already acknowledged (acknowledged by" in str(refused[0])
        acks = await store.entries(kinds=[ACKNOWLEDGED])
        assert len(acks) == 1 and acks[0].operator == won[0].owner
    finally:
        await other.close()


def store_actor(name: str):  # noqa: ANN201
    from crmctl.identity import Actor

    return Actor(name, "jump01")


async def test_operator_text_is_scrubbed_before_it_is_journalled(desk: IncidentDesk, store: Store) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    incident = await desk.raise_incident(f"Auth failing, token {token}\x1b[2J")
    await desk.note(incident.number, "password=hunter2hunter2 was pasted by mistake")
    raw = "".join(str(e.payload) for e in await store.entries())
    assert token not in raw and "hunter2hunter2" not in raw and "\x1b" not in raw
