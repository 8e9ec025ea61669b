"""From red to incident: the key path, config rules, de-duplication and recovery notes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from crmctl.autoraise import AutoRaiser
from crmctl.clock import FrozenClock
from crmctl.config import AutoRaiseRule
from crmctl.incidents import (
    INCIDENT_KINDS,
    NOTE,
    RAISED,
    DuplicateIncident,
    IncidentDesk,
    IncidentRefused,
    Register,
    Severity,
)
from crmctl.model import Status
from crmctl.store import Store
from tests.incidents.world import ALICE, BOB, BREACH_VALUES, OK_VALUES, build_config, result


async def test_i_on_a_breach_raises_with_the_result_as_evidence(desk: IncidentDesk, store: Store) -> None:
    entry = await store.append_result(result("account.count", Status.BREACH, BREACH_VALUES,
                                             explanation="Dynamics has 34 fewer accounts"), actor=ALICE)
    incident = await desk.raise_from_check("account.count")
    assert incident.check == "account.count" and incident.source == "check"
    assert incident.step == "reconcile"  # the first step the check gates
    assert incident.title == "account.count BREACH: Accounts reconcile"
    evidence = incident.evidence
    assert (evidence["result_seq"], evidence["result_hash"]) == (entry.seq, entry.hash)
    assert evidence["status"] == "BREACH" and evidence["explanation"] == "Dynamics has 34 fewer accounts"
    assert evidence["values"] == BREACH_VALUES
    # One open incident per check: the second press is refused and names the first.
    with pytest.raises(DuplicateIncident) as dup:
        await desk.raise_from_check("account.count")
    assert dup.value.existing.number == incident.number
    assert f"{incident.id} is already open for check account.count" in str(dup.value)
    # Once resolved, a new red result may raise a new incident.
    await desk.acknowledge(incident.number)
    await desk.resolve(incident.number, "delta re-run")
    again = await desk.raise_from_check("account.count")
    assert again.number != incident.number


async def test_i_refuses_green_and_result_less_checks(desk: IncidentDesk, store: Store) -> None:
    with pytest.raises(IncidentRefused, match="has no result yet"):
        await desk.raise_from_check("contact.count")
    await store.append_result(result("contact.count", Status.WARN, {"difference": -1}), actor=ALICE)
    with pytest.raises(IncidentRefused, match="contact.count is WARN: incidents are raised from BREACH or ERROR"):
        await desk.raise_from_check("contact.count")
    await store.append_result(result("contact.count", Status.ERROR, {}, explanation="throttled past budget"),
                              actor=ALICE)
    incident = await desk.raise_from_check("contact.count", severity="sev2")
    assert incident.severity is Severity.SEV2 and incident.evidence["status"] == "ERROR"


async def test_a_criterion_raises_from_its_check(desk: IncidentDesk, store: Store) -> None:
    await store.append_result(result("account.count", Status.BREACH, BREACH_VALUES), actor=ALICE)
    incident = await desk.raise_from_criterion("data-loss")
    assert (incident.criterion, incident.check, incident.source) == ("data-loss", "account.count", "criterion")
    assert incident.title == "Accounts missing (data-loss: BREACH)"
    with pytest.raises(IncidentRefused, match="no rollback criterion 'nope'"):
        await desk.raise_from_criterion("nope")


def _raiser(tmp_path: Path, store: Store, clock: FrozenClock, *rules: AutoRaiseRule, actor=ALICE) -> AutoRaiser:
    config = build_config(tmp_path, auto=rules)
    return AutoRaiser(IncidentDesk(config, store, actor=actor, clock=clock))


async def test_rules_raise_deduplicate_and_note_recovery_and_relapse(tmp_path: Path, store: Store,
                                                                     clock: FrozenClock) -> None:
    raiser = _raiser(tmp_path, store, clock, AutoRaiseRule("*.count", severity="sev2"))
    await raiser.start()
    red = await store.append_result(result("account.count", Status.BREACH, BREACH_VALUES), actor=ALICE)
    actions = await raiser.feed([red])
    assert [a.what for a in actions] == ["raised"]
    incident = actions[0].incident
    assert (incident.severity, incident.source, incident.evidence["result_seq"]) == (Severity.SEV2, "auto", red.seq)
    assert incident.timeline[0].text.endswith("— Raised automatically by rule '*.count'")

    clock.advance(timedelta(minutes=1))
    still_red = await store.append_result(result("account.count", Status.BREACH, BREACH_VALUES), actor=ALICE)
    assert await raiser.feed([still_red]) == []  # de-duplicated: one open incident per check

    clock.advance(timedelta(minutes=1))
    green = await store.append_result(result("account.count", Status.OK, OK_VALUES, explanation="20,000 on both sides"),
                                      actor=ALICE)
    actions = await raiser.feed([green])
    assert [a.what for a in actions] == ["recovered"]
    assert actions[0].incident.timeline[-1].text == "Check account.count recovered: OK — 20,000 on both sides"
    assert actions[0].incident.active  # a recovery is a note, never a resolution
    again_green = await store.append_result(result("account.count", Status.OK, OK_VALUES), actor=ALICE)
    assert await raiser.feed([again_green]) == []  # noted once

    red_again = await store.append_result(result("account.count", Status.BREACH, BREACH_VALUES), actor=ALICE)
    actions = await raiser.feed([red_again])
    assert [a.what for a in actions] == ["relapsed"]
    register = Register.from_entries(await store.entries(kinds=INCIDENT_KINDS))
    assert len(register) == 1  # still the one incident
    notes = await store.entries(kinds=[NOTE])
    assert [(n.payload["auto"], n.payload["result_seq"]) for n in notes] == [("recovered", green.seq),
                                                                            ("relapsed", red_again.seq)]


async def test_rules_match_status_and_need_a_streak(tmp_path: Path, store: Store, clock: FrozenClock) -> None:
    raiser = _raiser(
        tmp_path, store, clock,
        AutoRaiseRule("dynamics.whoami", when=("ERROR",), severity="sev1", after=2),
        AutoRaiseRule("contact.*", when=("BREACH",)),
    )
    await raiser.start()
    # contact.count: ERROR is not in its rule's `when`.
    assert await raiser.feed([await store.append_result(result("contact.count", Status.ERROR), actor=ALICE)]) == []
    # account.count: no rule at all.
    assert await raiser.feed([await store.append_result(result("account.count", Status.BREACH), actor=ALICE)]) == []
    # dynamics.whoami: one ERROR is a blip, the second in a row raises.
    first = await store.append_result(result("dynamics.whoami", Status.ERROR), actor=ALICE)
    assert await raiser.feed([first]) == []
    second = await store.append_result(result("dynamics.whoami", Status.ERROR), actor=ALICE)
    actions = await raiser.feed([second])
    assert [(a.what, a.incident.severity) for a in actions] == [("raised", Severity.SEV1)]
    assert raiser.rule_for("contact.count").when == ("BREACH",)


async def test_two_sessions_running_the_rules_raise_once_and_note_once(tmp_path: Path, store: Store,
                                                                       clock: FrozenClock) -> None:
    config = build_config(tmp_path, auto=(AutoRaiseRule("*"),))
    other = await Store.open(config.state, clock=clock)
    try:
        ours = AutoRaiser(IncidentDesk(config, store, actor=ALICE, clock=clock))
        theirs = AutoRaiser(IncidentDesk(config, other, actor=BOB, clock=clock))
        await ours.start()
        await theirs.start()
        red = await store.append_result(result("erp-sync.jobs", Status.BREACH, {"error_rate": 0.23}), actor=ALICE)
        done = await asyncio.gather(ours.feed([red]), theirs.feed([red]))
        assert sum(len(d) for d in done) == 1
        green = await store.append_result(result("erp-sync.jobs", Status.OK, {"error_rate": 0.0}), actor=ALICE)
        # Each session learns of the other's entries from the feed; here both judge at once.
        done = await asyncio.gather(ours.feed([green]), theirs.feed([green]))
        assert sum(len(d) for d in done) == 1
        kinds = [e.kind for e in await store.entries(kinds=INCIDENT_KINDS)]
        assert kinds == [RAISED, NOTE]
    finally:
        await other.close()


async def test_follow_judges_what_any_process_journals(tmp_path: Path, store: Store, clock: FrozenClock) -> None:
    """The real change feed: a result written through another connection raises within a poll."""
    config = build_config(tmp_path, auto=(AutoRaiseRule("account.count", severity="sev3"),))
    raiser = AutoRaiser(IncidentDesk(config, store, actor=ALICE, clock=clock))
    task = asyncio.create_task(raiser.follow(interval=0.02))
    writer = await Store.open(config.state, clock=clock)
    try:
        await asyncio.sleep(0.05)
        await writer.append_result(result("account.count", Status.BREACH, BREACH_VALUES), actor=BOB)
        for _ in range(200):
            if await store.entries(kinds=[RAISED]):
                break
            await asyncio.sleep(0.01)
        raised = await store.entries(kinds=[RAISED])
        assert len(raised) == 1 and raised[0].payload["severity"] == "SEV3"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()


async def test_start_catches_up_on_red_checks_without_an_incident(tmp_path: Path, store: Store,
                                                                  clock: FrozenClock) -> None:
    await store.append_result(result("account.count", Status.BREACH, BREACH_VALUES), actor=ALICE)
    await store.append_result(result("contact.count", Status.OK, OK_VALUES), actor=ALICE)
    raiser = _raiser(tmp_path, store, clock, AutoRaiseRule("*.count"))
    await raiser.start()
    raised = await store.entries(kinds=[RAISED])
    assert [e.payload["check"] for e in raised] == ["account.count"]
    await _raiser(tmp_path, store, clock, AutoRaiseRule("*.count")).start()  # a restart raises nothing new
    assert len(await store.entries(kinds=[RAISED])) == 1
