"""Plan, actuals, drift, critical path and forecast, on linear runbooks and on parallel branches."""

from __future__ import annotations

from datetime import datetime, timedelta

from crmctl.config.sections import RunbookStep
from crmctl.runbook import StepRecord, StepState
from crmctl.timing import build_timeline, countdown_to, format_drift, topological_order
from tests.runbook.world import MIN, PONR, START

H = 60 * MIN


def step(id: str, minutes: int | None, *after: str, phase: str = "p") -> RunbookStep:
    return RunbookStep(id, id.title(), planned=None if minutes is None else minutes * MIN, after=after, phase=phase)


def done(id: str, start: datetime, end: datetime) -> StepRecord:
    return StepRecord(id, "cutover", StepState.DONE, started_at=start, ended_at=end)


def running(id: str, start: datetime) -> StepRecord:
    return StepRecord(id, "cutover", StepState.IN_PROGRESS, started_at=start)


# a -> (b 30 min | c 60 min) -> d 15 min: two parallel branches joining again.
DIAMOND = (step("a", 15), step("b", 30, "a"), step("c", 60, "a"), step("d", 15, "b", "c"))


def test_plan_of_a_run_not_started_is_anchored_now_and_follows_the_longest_branch() -> None:
    line = build_timeline(DIAMOND, {}, now=START, start=None)
    assert not line.started
    assert line.planned_finish == START + 90 * MIN  # 15 + max(30, 60) + 15
    assert line.forecast_finish == line.planned_finish and line.drift == timedelta(0)
    assert line.critical_path == ("a", "c", "d")
    b, c = line.step("b"), line.step("c")
    assert b.planned_start == START + 15 * MIN and b.forecast_finish == START + 45 * MIN
    assert b.slack == 30 * MIN and not b.critical
    assert c.slack == timedelta(0) and c.critical
    assert line.step("d").forecast_start == START + 75 * MIN
    assert not any(s.late for s in line.steps)


def test_the_critical_path_moves_when_the_short_branch_runs_late() -> None:
    records = {
        "a": done("a", START, START + 15 * MIN),
        "b": running("b", START + 15 * MIN),
        "c": done("c", START + 15 * MIN, START + 70 * MIN),  # 5 min under plan
    }
    now = START + 100 * MIN  # b has run 85 min of its planned 30
    line = build_timeline(DIAMOND, records, now=now, start=START)
    b = line.step("b")
    assert b.state is StepState.IN_PROGRESS and b.actual == 85 * MIN
    assert b.drift == 55 * MIN and b.late == "over plan"
    assert b.forecast_finish == now  # running past its plan: it ends no earlier than now
    assert line.step("c").drift == -5 * MIN and line.step("c").late == ""
    assert line.critical_path == ("a", "b", "d")
    assert line.step("d").forecast_start == now and line.forecast_finish == now + 15 * MIN
    assert line.drift == line.forecast_finish - line.planned_finish == 25 * MIN


def test_equal_branches_are_both_critical() -> None:
    steps = (step("a", 10), step("b", 20, "a"), step("c", 20, "a"), step("d", 10, "b", "c"))
    line = build_timeline(steps, {}, now=START, start=START)
    assert {s.step_id for s in line.steps if s.critical} == {"a", "b", "c", "d"}
    assert line.critical_path == ("a", "b", "d")  # ties go to the step listed first


def test_late_start_and_finished_late_markers() -> None:
    steps = (step("a", 15), step("b", 30, "a"))
    records = {"a": done("a", START, START + 25 * MIN)}
    line = build_timeline(steps, records, now=START + 40 * MIN, start=START)
    assert line.step("a").late == "finished late" and line.step("a").drift == 10 * MIN
    assert line.step("b").late == "late start"  # planned to start at 18:15, still pending at 18:40
    assert line.step("b").forecast_start == START + 40 * MIN
    assert line.forecast_finish == START + 70 * MIN and line.drift == 25 * MIN


def test_forecast_crossing_the_point_of_no_return_is_loud() -> None:
    steps = (step("a", 120), step("b", 120, "a"))
    now = START + 60 * MIN  # 19:00; a started 18:00 runs until 20:00, b until 22:00
    line = build_timeline(steps, {"a": running("a", START)}, now=now, start=START, deadline=PONR)
    assert not line.crosses_deadline and line.warning == "" and line.margin == 60 * MIN
    later = datetime(2026, 11, 28, 21, 30, tzinfo=START.tzinfo)  # a still running at 21:30: b ends 23:30
    line = build_timeline(steps, {"a": running("a", START)}, now=later, start=START, deadline=PONR)
    assert line.crosses_deadline and line.margin == -30 * MIN
    assert line.warning == "FORECAST FINISH 23:30 UTC IS 30 MIN PAST THE POINT OF NO RETURN (23:00 UTC)"
    line = build_timeline(steps, {"a": running("a", START)}, now=PONR + 3 * H, start=START, deadline=PONR)
    assert line.warning == "FORECAST FINISH 04:00 UTC IS 5 H 00 MIN PAST THE POINT OF NO RETURN (2026-11-28 23:00 UTC)"
    # A finished run never warns, whatever the clock says.
    finished = {"a": done("a", START, START + H), "b": done("b", START + H, PONR + H)}
    line = build_timeline(steps, finished, now=PONR + 2 * H, start=START, deadline=PONR)
    assert line.finished and line.warning == ""


def test_blocked_failed_and_skipped_steps_in_the_forecast() -> None:
    steps = (step("a", 60), step("b", 30, "a"), step("c", 10, "b"))
    now = START + 40 * MIN
    blocked = StepRecord("a", "cutover", StepState.BLOCKED, started_at=START)
    line = build_timeline(steps, {"a": blocked}, now=now, start=START)
    assert line.step("a").forecast_finish == now + 20 * MIN  # the rest of its plan, from now
    failed = StepRecord("a", "cutover", StepState.FAILED, started_at=START)
    line = build_timeline(steps, {"a": failed}, now=now, start=START)
    assert line.step("a").forecast_finish == now + 60 * MIN  # a retry takes the whole plan again
    assert line.step("a").drift is None
    skipped = StepRecord("a", "cutover", StepState.SKIPPED, ended_at=START + 5 * MIN)
    line = build_timeline(steps, {"a": skipped}, now=now, start=START)
    assert line.step("a").forecast_finish == START + 5 * MIN and line.step("b").forecast_start == now


def test_phases_sum_plan_actuals_and_drift() -> None:
    steps = (step("a", 15, phase="cutover"), step("b", 45, "a", phase="cutover"), step("c", 60, "b", phase="validation"))
    records = {"a": done("a", START, START + 20 * MIN), "b": done("b", START + 20 * MIN, START + 60 * MIN)}
    line = build_timeline(steps, records, now=START + 70 * MIN, start=START)
    cutover, validation = line.phases
    assert cutover.phase == "cutover" and cutover.planned == 60 * MIN and cutover.actual == 60 * MIN
    assert cutover.drift == timedelta(0) and cutover.done == 2  # +5 then -5
    assert cutover.start == START and cutover.end == START + 60 * MIN
    assert validation.drift is None and validation.end is None and validation.done == 0


def test_unplanned_steps_count_as_zero_and_cycles_do_not_hang() -> None:
    steps = (step("a", None), step("b", 30, "a"))
    line = build_timeline(steps, {}, now=START, start=START)
    assert line.forecast_finish == START + 30 * MIN and line.step("a").drift is None
    looped = (step("x", 5, "y"), step("y", 5, "x"))
    assert [s.id for s in topological_order(looped)] == ["x", "y"]
    assert build_timeline(looped, {}, now=START, start=START).forecast_finish == START + 10 * MIN


def test_countdowns_and_drift_text() -> None:
    assert countdown_to("PONR", PONR, START).text == "in 5 h 00 min"
    assert countdown_to("PONR", PONR, PONR + 20 * MIN).passed
    assert countdown_to("PONR", None, START).text == "not set"
    assert format_drift(None) == "—" and format_drift(timedelta(seconds=10)) == "on plan"
    assert format_drift(12 * MIN) == "+12 min" and format_drift(-65 * MIN) == "-1 h 05 min"
