"""Every runbook transition through the real ControlRoom and Store, legal and illegal.

Each refusal is checked for its message and for the journal not having moved: a refused action
writes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

import pytest

from crmctl.control import ReadOnlyError
from crmctl.runbook import KINDS, Refused, StepState, fold, runbook_of
from crmctl.store import Store
from crmctl.views import RUNBOOK_KINDS
from tests.runbook.world import ALICE, BOB, MIN, START, Rig, all_ok, count_result, demo_like, error_result


async def state(rig: Rig):
    return fold(await rig.store.entries(kinds=KINDS), runbook_of(rig.config))


async def refused(rig: Rig, coro, *fragments: str) -> str:
    """Asserts `coro` is refused with every fragment in its message and that nothing was written."""
    before = await rig.last()
    with pytest.raises(Refused) as info:
        await coro
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert await rig.last() == before, "a refused action wrote to the journal"
    return message


async def to_in_progress(rig: Rig, *steps: str) -> None:
    room = rig.room()
    for step in steps:
        await room.step_action("start", step)
        await room.step_action("done", step)


def test_views_mirror_the_runbook_kinds() -> None:
    assert set(RUNBOOK_KINDS) == set(KINDS)


async def test_the_happy_path_journals_every_transition_with_who_and_when(rig: Rig) -> None:
    room = rig.room()
    await rig.results(all_ok(START))
    entry = await room.step_action("start", "freeze")
    assert entry.kind == "runbook.step.started"
    assert entry.payload == {"run": "rehearsal-1", "step": "freeze", "runbook": "cutover"}
    rig.at(START + 12 * MIN)
    done = await room.step_action("done", "freeze")
    assert done.kind == "runbook.step.done" and done.payload["gate"] == []
    # The check values at completion are kept for run comparison.
    assert done.payload["outcomes"]["account.count"]["values"]["difference"] == 0
    record = (await state(rig)).current.steps["freeze"]
    assert record.state is StepState.DONE
    assert record.started_by == "alice@ssh:10.0.0.5" and record.ended_at == START + 12 * MIN
    assert record.duration == 12 * MIN
    assert [e.state for e in record.events] == [StepState.IN_PROGRESS, StepState.DONE]


async def test_fail_then_retry_block_then_resume_and_skip_with_reason(rig: Rig) -> None:
    room = rig.room()
    await to_in_progress(rig, "freeze")
    await room.step_action("start", "delta")
    rig.at(START + 10 * MIN)
    await room.step_action("fail", "delta", reason="ORA-01555 snapshot too old")
    await room.step_action("start", "delta")  # retry
    await room.step_action("block", "delta", reason="waiting for the DBA")
    await room.step_action("start", "delta")  # resume
    await room.step_action("done", "delta")
    record = (await state(rig)).current.steps["delta"]
    assert record.state is StepState.DONE and record.attempts == 3
    assert record.started_at == START  # the first start: drift counts the whole time
    # A pending step may be skipped (with a reason) and then counts as finished for what follows.
    await room.step_action("block", "reconcile", reason="reconcile job host down")
    await room.step_action("skip", "reconcile", reason="validated offline by Data Engineering")
    await room.step_action("start", "integrations")
    assert (await state(rig)).current.state_of("integrations") is StepState.IN_PROGRESS


async def test_done_before_its_dependencies_and_before_starting_is_refused(rig: Rig) -> None:
    room = rig.room()
    await refused(rig, room.step_action("done", "reconcile"),
                  "step 'reconcile' cannot be completed: it has not been started", "waits for 'delta' (pending)")
    await refused(rig, room.step_action("start", "delta"), "step 'delta' cannot start before 'freeze' (pending)")
    await room.step_action("start", "freeze")
    await refused(rig, room.step_action("start", "delta"), "'freeze' (in progress)")
    await refused(rig, room.step_action("fail", "delta"), "step 'delta' cannot be marked failed: it has not been started")


async def test_a_second_completion_names_who_completed_it_and_when(rig: Rig) -> None:
    await to_in_progress(rig, "freeze")
    rig.at(START + 5 * MIN)
    message = await refused(rig, rig.room(BOB).step_action("done", "freeze"))
    assert message == "step 'freeze' was already completed by alice@ssh:10.0.0.5 at 18:00:00 UTC"
    await refused(rig, rig.room(BOB).step_action("start", "freeze"), "already completed by alice@ssh:10.0.0.5")
    await rig.room().step_action("start", "delta")
    await refused(rig, rig.room(BOB).step_action("start", "delta"),
                  "step 'delta' is already in progress: started by alice@ssh:10.0.0.5 at 18:05:00 UTC")
    await refused(rig, rig.room(BOB).step_action("skip", "delta", reason="x"), "already in progress")


async def test_reasons_are_required_to_skip_and_block(rig: Rig) -> None:
    room = rig.room()
    await refused(rig, room.step_action("skip", "freeze"), "cannot be skipped without a reason")
    await refused(rig, room.step_action("skip", "freeze", reason="   "), "without a reason")
    await refused(rig, room.step_action("block", "freeze"), "cannot be marked blocked without a reason")


async def test_unknown_steps_and_actions_are_refused(rig: Rig) -> None:
    room = rig.room()
    await refused(rig, room.step_action("start", "delat"), "no step 'delat' in the runbook (did you mean 'delta'?)")
    await refused(rig, room.step_action("finish", "delta"), "unknown action 'finish'")


@pytest.mark.parametrize(
    ("results", "why"),
    [
        ([], "account.count is PENDING: no result yet"),
        (lambda at: [count_result("account.count", 20_000, 19_990, at=at)], "account.count is WARN"),
        (lambda at: [count_result("account.count", 20_000, 19_966, at=at)], "account.count is BREACH"),
        (lambda at: [error_result("account.count", at=at)], "account.count is ERROR: Dataverse throttled"),
        (lambda at: [count_result("account.count", 20_000, 20_000, at=at - 3 * MIN)],
         "account.count is STALE: last result 3 min ago (runs every 1 min)"),
    ],
    ids=["missing", "warn", "breach", "error", "stale"],
)
async def test_a_gate_opens_only_on_ok(rig: Rig, results, why: str) -> None:
    await to_in_progress(rig, "freeze", "delta")
    room = rig.room()
    await room.step_action("start", "reconcile")
    rig.at(START + 2 * 60 * MIN)
    now = rig.clock.now()
    others = [r for r in all_ok(now) if r.check_id != "account.count"]
    await rig.results(others + (results(now) if callable(results) else results))
    await refused(rig, room.step_action("done", "reconcile"),
                  "step 'reconcile' cannot be completed: its gate is not OK", why,
                  "only an override with a reason and a named authority")
    # Once every gate check is OK and fresh, it opens, and the evidence is journalled.
    await rig.results(all_ok(now))
    entry = await room.step_action("done", "reconcile")
    gate = {g["check"]: g for g in entry.payload["gate"]}
    assert set(gate) == {"account.count", "contact.count", "opportunity.count"}
    assert all(g["status"] == "OK" and g["ok"] for g in gate.values())
    evidence = (await rig.store.entries(after_seq=gate["account.count"]["seq"] - 1, limit=1))[0]
    assert evidence.kind == "check.result" and evidence.hash == gate["account.count"]["hash"]
    assert "override" not in entry.payload


async def test_a_gate_override_needs_a_reason_and_a_named_authority_and_is_marked(rig: Rig) -> None:
    await to_in_progress(rig, "freeze", "delta")
    room = rig.room()
    await room.step_action("start", "reconcile")
    await rig.results(demo_like(START))
    await refused(rig, room.step_action("done", "reconcile", override_authority="Cutover Lead"),
                  "overriding the gate of 'reconcile' needs a reason")
    await refused(rig, room.step_action("done", "reconcile", override_authority="Mallory", reason="trust me"),
                  "'Mallory' is not an authority for overriding the gate of 'reconcile'",
                  "the config names Cutover Lead, Business Owner")
    await refused(rig, room.step_action("done", "reconcile", override_authority=" ", reason="x"),
                  "needs a named authority: one of Cutover Lead, Business Owner")
    entry = await room.step_action("done", "reconcile", override_authority="cutover  lead",
                                   reason="37 accounts are known defects (INC-12)")
    assert entry.payload["override"] == {
        "authority": "Cutover Lead",
        "reason": "37 accounts are known defects (INC-12)",
        "not_ok": ["account.count BREACH", "contact.count BREACH", "opportunity.count WARN"],
    }
    assert [g["ok"] for g in entry.payload["gate"]] == [False, False, False]
    record = (await state(rig)).current.steps["reconcile"]
    assert record.override is not None and record.override["authority"] == "Cutover Lead"


async def test_read_only_sessions_cannot_act(rig: Rig) -> None:
    observer = rig.room(read_only=True)
    for call in (observer.step_action("start", "freeze"), observer.start_run("rehearsal-2"),
                 observer.decide("hold", authority="Cutover Lead", rationale="x")):
        with pytest.raises(ReadOnlyError):
            await call
    assert await rig.last() == 0


async def test_the_rollback_runbook_starts_only_with_a_rollback_decision(rig: Rig) -> None:
    room = rig.room()
    await refused(rig, room.step_action("start", "rb-stop"),
                  "step 'rb-stop' is in the rollback runbook, which starts only with a recorded ROLLBACK decision")
    await to_in_progress(rig, "freeze")
    await room.decide("rollback", authority="Business Owner", rationale="ERP cannot post orders")
    await room.step_action("start", "rb-stop")
    await refused(rig, room.step_action("start", "delta"), "the cutover runbook is closed: rollback was decided at",
                  "by Business Owner (alice@ssh:10.0.0.5)")


async def test_named_runs(rig: Rig) -> None:
    room = rig.room()
    await room.step_action("start", "freeze")
    await refused(rig, room.start_run("rehearsal-2"), "step 'freeze' of run 'rehearsal-1' is still in progress")
    await room.step_action("done", "freeze")
    await refused(rig, room.start_run("Rehearsal 2"), "'Rehearsal 2' is not a run name",
                  "a short lower-case name such as rehearsal-2 or production")
    await refused(rig, room.start_run("rehearsal-1"), "run 'rehearsal-1' already exists (started 18:00:00 UTC")
    entry = await room.start_run("rehearsal-2")
    assert entry.kind == "run.started" and entry.payload == {"run": "rehearsal-2"}
    # The new run starts from scratch; the old one keeps its history.
    await room.step_action("start", "freeze")
    s = await state(rig)
    assert s.current_name == "rehearsal-2" and s.current.state_of("freeze") is StepState.IN_PROGRESS
    assert s.run("rehearsal-1").state_of("freeze") is StepState.DONE
    assert s.run("rehearsal-1").explicit is False and s.run("rehearsal-2").explicit is True
    with pytest.raises(KeyError, match="known runs: rehearsal-1, rehearsal-2"):
        s.run("production")


async def test_two_sessions_cannot_both_complete_a_step(rig: Rig) -> None:
    """Two stores on one file (two processes' worth of connections) race to complete one step."""
    await to_in_progress(rig, "freeze")
    await rig.room().step_action("start", "delta")
    other = await Store.open(rig.store.path, clock=rig.clock)
    try:
        bob = Rig(rig.config, other, rig.clock).room(BOB)
        outcomes = await asyncio.gather(
            rig.room(ALICE).step_action("done", "delta"), bob.step_action("done", "delta"), return_exceptions=True
        )
    finally:
        await other.close()
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    refusals = [o for o in outcomes if isinstance(o, Refused)]
    assert len(done) == 1 and len(refusals) == 1, outcomes
    assert "step 'delta' was already completed by" in str(refusals[0])
    entries = await rig.store.entries(kinds=["runbook.step.done"])
    assert [e.payload["step"] for e in entries].count("delta") == 1


async def test_a_refusal_inside_the_transaction_wins_over_a_stale_precheck(rig: Rig) -> None:
    """The pre-check passes, then another session completes the step before our commit."""
    from crmctl.runbook import RunbookService

    await to_in_progress(rig, "freeze")
    await rig.room().step_action("start", "delta")
    service = RunbookService(rig.config, rig.store, rig.clock, BOB)
    real_state = service.state

    async def state_then_race():
        s = await real_state()
        await rig.room(ALICE).step_action("done", "delta")  # lands between check and commit
        return s

    service.state = state_then_race  # type: ignore[method-assign]
    with pytest.raises(Refused, match="already completed by alice@ssh:10.0.0.5"):
        await service.act("done", "delta")
    entries = await rig.store.entries(kinds=["runbook.step.done"])
    assert [e.payload["step"] for e in entries] == ["freeze", "delta"]


async def test_fold_ignores_foreign_kinds_and_survives_odd_payloads(rig: Rig) -> None:
    entries = [
        Entry(1, "check.result", {}),
        Entry(2, "runbook.step.started", {"step": "freeze"}),
        Entry(3, "runbook.step.done", {"step": "freeze", "gate": "not a list", "override": 3}),
        Entry(4, "runbook.step.started", {}),
        Entry(5, "decision.recorded", {"decision": "hold", "matrix": "x"}),
    ]
    s = fold(entries)
    record = s.current.steps["freeze"]
    assert record.state is StepState.DONE and record.override is None and record.started_at is None
    assert s.current.latest_decision is not None and s.current.latest_decision.decision == "hold"


@dataclass(frozen=True)
class Entry:
    """Shaped like a JournalEntry, as far as the fold cares (no ts, operator or host)."""

    seq: int
    kind: str
    payload: Mapping[str, Any]


async def test_evidence_is_found_however_far_back_the_newest_result_is(rig: Rig) -> None:
    """The newest result of a check that stopped reporting long ago is still found, with its seq
    and hash, past hundreds of newer results of other checks; a check that never ran is absent."""
    from crmctl.runbook import latest_result_refs

    await rig.results(all_ok(START))
    whoami = (await rig.store.entries())[-1]
    assert whoami.payload["check_id"] == "dynamics.whoami"
    counts = [r for r in all_ok(START) if r.kind == "row_count"]
    # 1,200 newer results of the other checks (one transaction: this is about reading).
    await rig.store.append_many([("check.result", r.to_json()) for r in counts * 400], actor=ALICE)
    refs = await latest_result_refs(rig.store, ["dynamics.whoami", "account.count", "never.ran"])
    assert (refs["dynamics.whoami"].seq, refs["dynamics.whoami"].hash) == (whoami.seq, whoami.hash)
    assert refs["account.count"].seq == await rig.last() - 2
    assert "never.ran" not in refs
