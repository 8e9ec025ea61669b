"""The rollback decision matrix (evidence in, GO / HOLD / ROLLBACK out) and recorded decisions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from crmctl.decision import Outcome, build_matrix, build_rollback_view, evaluate_criterion
from crmctl.model import Status
from crmctl.runbook import KINDS, Refused, ResultRef, StepState, fold, runbook_of
from crmctl.views import Snapshot, Verdict, build_overview
from tests.runbook.world import (
    ALICE,
    BOB,
    CHECKS,
    CRITERIA,
    MIN,
    PONR,
    START,
    Rig,
    all_ok,
    build_config,
    count_result,
    demo_like,
    error_result,
    whoami_result,
)
from tests.runbook.test_state_machine import refused, state

ACCOUNTS = CRITERIA[0]
SLOW = CRITERIA[2]
CHECK = {c.id: c for c in CHECKS}


def judge(criterion, result, now=START):
    return evaluate_criterion(criterion, CHECK[criterion.check], result, now)


def test_each_criterion_goes_holds_or_rolls_back_on_its_values() -> None:
    go = judge(ACCOUNTS, count_result("account.count", 20_000, 20_000, at=START))
    assert go.outcome is Outcome.GO and go.reason == "no rollback or hold condition holds"
    assert dict(go.live) == {"difference_pct": "0", "status": "OK"}
    hold = judge(ACCOUNTS, count_result("account.count", 20_000, 19_966, at=START))
    assert hold.outcome is Outcome.HOLD and hold.reason == "hold_if difference_pct > 0 is true"
    assert hold.value_text == "difference_pct 0.17"
    back = judge(ACCOUNTS, count_result("account.count", 20_000, 19_000, at=START))
    assert back.outcome is Outcome.ROLLBACK and back.reason == "rollback_if difference_pct > 0.5 is true"
    assert back.expression == "ROLLBACK if difference_pct > 0.5 · HOLD if difference_pct > 0"
    # status is a value too: a WARN from the check holds through hold_if.
    warn = judge(SLOW, whoami_result(700, at=START))
    assert warn.outcome is Outcome.HOLD and warn.status is Status.WARN


def test_no_evidence_is_never_go() -> None:
    missing = judge(ACCOUNTS, None)
    assert missing.outcome is Outcome.HOLD and missing.reason == "no result from account.count yet: no evidence"
    assert missing.evidence is None and missing.age_text == "never"
    error = judge(ACCOUNTS, error_result("account.count", at=START))
    assert error.outcome is Outcome.HOLD and error.reason.startswith("account.count could not run (ERROR): Dataverse")
    # A stale result is HOLD even when its (old) figures would say GO.
    stale = judge(ACCOUNTS, count_result("account.count", 20_000, 20_000, at=START - 3 * MIN))
    assert stale.outcome is Outcome.HOLD and stale.status is Status.STALE
    assert stale.reason == "evidence is STALE: last result 3 min ago (account.count runs every 1 min)"
    # ...and even when they would say ROLLBACK: stale evidence decides nothing either way.
    old_loss = judge(ACCOUNTS, count_result("account.count", 20_000, 10_000, at=START - 3 * MIN))
    assert old_loss.outcome is Outcome.HOLD


def test_an_expression_that_cannot_be_evaluated_holds_with_the_reason() -> None:
    wrong_name = replace(ACCOUNTS, rollback_if="missing > 0", hold_if=None)
    row = judge(wrong_name, count_result("account.count", 20_000, 20_000, at=START))
    assert row.outcome is Outcome.HOLD
    assert row.reason.startswith("rollback_if cannot be evaluated: 'missing' is not among the values of the result")
    assert ("missing", "missing") in row.live
    unreadable = replace(ACCOUNTS, rollback_if="missing >")
    row = judge(unreadable, count_result("account.count", 20_000, 20_000, at=START))
    assert row.outcome is Outcome.HOLD and row.reason.startswith("rollback_if cannot be read: expected a value")


def test_overall_is_the_worst_criterion_with_evidence(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    ok = {r.check_id: ResultRef(r, seq=i + 1, hash=f"h{i}") for i, r in enumerate(all_ok(START))}
    matrix = build_matrix(config, ok, START)
    assert matrix.overall is Outcome.GO and matrix.reason == "All 3 criteria GO on fresh evidence."
    assert matrix.rows[0].evidence == {"check": "account.count", "reported": "OK",
                                       "finished": "2026-11-28T18:00:00.000000Z", "seq": 1, "hash": "h0"}
    night = {r.check_id: r for r in demo_like(START)}
    matrix = build_matrix(config, night, START)
    assert matrix.overall is Outcome.HOLD
    assert matrix.reason == "2 of 3 criteria hold: data-loss-accounts, data-loss-contacts."
    night["contact.count"] = count_result("contact.count", 62_000, 60_000, at=START)
    matrix = build_matrix(config, night, START)
    assert matrix.overall is Outcome.ROLLBACK and matrix.reason == "1 of 3 criteria says ROLLBACK: data-loss-contacts."
    assert matrix.to_json()["criteria"][1]["outcome"] == "ROLLBACK"
    empty = build_matrix(build_config(tmp_path, rollback_criteria=()), night, START)
    assert empty.overall is Outcome.HOLD and "No rollback criteria" in empty.reason


def test_the_overview_recommendation_comes_from_the_matrix(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    snapshot = Snapshot(results={r.check_id: r for r in demo_like(START)}, loaded=True)
    view = build_overview(config, snapshot, START)
    assert view.recommendation.verdict is Verdict.HOLD and not view.recommendation.provisional
    assert view.recommendation.label == "HOLD"
    assert view.recommendation.reason == "Rollback matrix: 2 of 3 criteria hold: data-loss-accounts, data-loss-contacts."
    assert view.forecast == "22:00 UTC, 1 h 00 min before no return" and view.forecast_warning == ""
    late = build_overview(config, snapshot, START + 80 * MIN)  # nothing started 1 h 20 min in: still planned from now
    assert late.forecast == "23:20 UTC, 20 min AFTER no return"
    assert late.forecast_warning == "FORECAST FINISH 23:20 UTC IS 20 MIN PAST THE POINT OF NO RETURN (23:00 UTC)"
    # Without criteria the old status-only recommendation stays, and says it is provisional.
    bare = build_overview(build_config(tmp_path, rollback_criteria=()), snapshot, START)
    assert bare.recommendation.provisional and bare.recommendation.verdict is Verdict.ROLLBACK


# --------------------------------------------------------------------------------------------
# recording decisions


async def test_an_authority_records_a_decision_with_rationale_and_the_matrix(rig: Rig) -> None:
    await rig.results(demo_like(START))
    entry = await rig.room().decide("hold", authority="business owner", rationale="Fix forward: 37 accounts re-sent")
    assert entry.kind == "decision.recorded"
    payload = entry.payload
    assert payload["authority"] == "Business Owner" and payload["decision"] == "hold"
    assert payload["run"] == "rehearsal-1" and payload["point_of_no_return"] == "2026-11-28T23:00:00Z"
    assert payload["matrix"]["overall"] == "HOLD"
    evidence = payload["matrix"]["criteria"][0]["evidence"]
    result_entry = (await rig.store.entries(after_seq=evidence["seq"] - 1, limit=1))[0]
    assert result_entry.hash == evidence["hash"] and result_entry.payload["check_id"] == "account.count"
    decided = (await state(rig)).current.latest_decision
    assert decided is not None and decided.who == "alice@ssh:10.0.0.5" and decided.recommendation == "HOLD"


async def test_decisions_are_refused_without_authority_rationale_or_before_a_second_person(rig: Rig) -> None:
    room = rig.room()
    await refused(rig, room.decide("go", authority=None, rationale="x"),
                  "needs a named authority: one of Cutover Lead, Business Owner")
    await refused(rig, room.decide("go", authority="Mallory", rationale="x"),
                  "'Mallory' is not an authority for a go / hold / rollback decision")
    await refused(rig, room.decide("go", authority="Cutover Lead", rationale="  "), "a decision needs a rationale")
    await refused(rig, room.decide("maybe", authority="Cutover Lead", rationale="x"), "'maybe' is not a decision")
    await refused(rig, room.decide("go", authority="Cutover Lead", rationale="x", approve=True),
                  "nothing to approve: no decision is waiting for approval in run 'rehearsal-1'")


async def test_after_the_point_of_no_return_a_decision_needs_an_override(rig: Rig) -> None:
    rig.at(PONR + 20 * MIN)
    room = rig.room()
    await refused(rig, room.decide("rollback", authority="Cutover Lead", rationale="ERP down"),
                  "the point of no return (23:00 UTC) passed 20 min ago",
                  "a decision now needs an override with a reason")
    entry = await room.decide("rollback", authority="Cutover Lead", rationale="ERP down",
                              override_reason="ERP cannot post orders; business accepts the longer outage")
    assert entry.payload["override"] == "ERP cannot post orders; business accepts the longer outage"


async def test_two_person_rule_propose_then_approve_by_another_authority_and_person(rig: Rig) -> None:
    room = rig.room(ALICE)
    proposal = await room.decide("rollback", authority="Cutover Lead", rationale="ERP down 40 min", propose=True)
    assert proposal.kind == "decision.proposed"
    await refused(rig, room.decide("rollback", authority="Business Owner", rationale="agreed", approve=True),
                  "two-person rule: alice proposed this decision; a different person must approve it")
    bob = rig.room(BOB)
    await refused(rig, bob.decide("rollback", authority="cutover lead", rationale="agreed", approve=True),
                  "two-person rule: Cutover Lead proposed this decision; a different authority must approve it")
    await refused(rig, bob.decide("go", authority="Business Owner", rationale="agreed", approve=True),
                  "the proposal waiting for approval is ROLLBACK (by Cutover Lead, alice@ssh:10.0.0.5), not GO")
    entry = await bob.decide("rollback", authority="Business Owner", rationale="agreed: orders cannot post",
                             approve=True)
    assert entry.kind == "decision.recorded"
    assert entry.payload["approves"] == proposal.seq and entry.payload["proposer"] == "Cutover Lead"
    run = (await state(rig)).current
    assert run.pending_proposal is None and run.rollback is not None and run.rollback_at == START
    await refused(rig, bob.decide("rollback", authority="Business Owner", rationale="again", approve=True),
                  "rollback was already decided at 18:00:00 UTC by Business Owner (bob@ssh:10.0.0.7)")


async def test_the_config_two_person_rule_turns_a_decision_into_a_proposal(tmp_path: Path) -> None:
    from crmctl.clock import FrozenClock
    from crmctl.decision import plan_decision, two_person_rule

    class TwoPerson:  # a config whose rollback section asks for two people (rollback.two_person: true)
        def __init__(self, config):
            self.__dict__.update(config.__dict__)
            self.rollback = type("R", (), {**config.rollback.__dict__, "two_person": True})()

    config = TwoPerson(build_config(tmp_path))
    assert two_person_rule(config)
    matrix = build_matrix(config, {}, START)
    kind, _ = plan_decision(fold([]), config, "hold", authority="Cutover Lead", rationale="x", operator="alice",
                            now=FrozenClock(START).now(), matrix=matrix)
    assert kind == "decision.proposed"


async def test_a_rollback_decision_starts_the_rollback_runbook_and_its_sla(rig: Rig) -> None:
    await rig.results(demo_like(START))
    room = rig.room()
    await room.step_action("start", "freeze")
    rig.at(START + 30 * MIN)
    await room.step_action("done", "freeze")
    await room.decide("rollback", authority="Cutover Lead", rationale="Delta source unreachable")
    rig.at(START + 50 * MIN)
    await room.step_action("start", "rb-stop")
    entries = await rig.store.entries(kinds=KINDS)
    view = build_rollback_view(rig.config, entries, {r.check_id: r for r in demo_like(rig.clock.now())}, rig.clock.now())
    assert view.sla_text == "in 1 h 40 min"  # 2 h from the decision at 18:30
    assert view.rollback_text.startswith("ROLLBACK decided 18:30:00 UTC by Cutover Lead (alice@ssh:10.0.0.5);"
                                         " rollback runbook 0/3 done · forecast finish 20:05 UTC")
    assert view.decisions[0].startswith("18:30:00 UTC  RECORDED ROLLBACK by Cutover Lead")
    run = fold(entries, runbook_of(rig.config)).current
    assert run.state_of("rb-stop") is StepState.IN_PROGRESS
    # The SLA is forecast too: a rollback runbook running long warns loudly.
    rig.at(START + 170 * MIN)
    late = build_rollback_view(rig.config, entries, {}, rig.clock.now())
    assert late.sla_text == "passed 20 min ago"
    assert late.rollback_warning.startswith("FORECAST FINISH 21:50 UTC IS 1 H 20 MIN PAST THE ROLLBACK SLA (20:30 UTC)")


async def test_decision_state_changes_between_check_and_commit_are_refused(rig: Rig) -> None:
    from crmctl.decision import DecisionService

    room = rig.room(ALICE)
    await room.decide("rollback", authority="Cutover Lead", rationale="x", propose=True)
    service = DecisionService(rig.config, rig.store, rig.clock, BOB)
    real = service.matrix

    async def matrix_then_race():
        m = await real()
        await rig.room(BOB).decide("hold", authority="Business Owner", rationale="not yet")  # the proposal lapses
        return m

    service.matrix = matrix_then_race  # type: ignore[method-assign]
    with pytest.raises(Refused, match="nothing to approve"):
        await service.decide("rollback", authority="Business Owner", rationale="agree", approve=True)
    assert [e.kind for e in await rig.store.entries(kinds=KINDS)] == ["decision.proposed", "decision.recorded"]
