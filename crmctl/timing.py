"""Planned versus actual: drift, late markers, the critical path, the forecast finish, countdowns.

Why this exists: the most common cutover failure is not a missing step but drift nobody sees
accumulating. So every view of the runbook carries two schedules over the `after` DAG:

* the *plan*: every step at its planned duration, from the moment the run began;
* the *forecast*: what is finished at its actual times, what is running at
  max(now, start + planned), and everything not started from max(now, its dependencies'
  forecast finish) at its planned duration.

The critical path is the chain of steps that fixes the forecast finish (a backward pass gives
each unfinished step its slack; zero slack is critical). When the forecast finish crosses the
point of no return the timeline carries a loud warning; once a rollback is decided, its own
runbook is forecast against the rollback SLA.

Pure functions of (steps, step records, times): no I/O, no clock reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from crmctl.model import utc
from crmctl.runbook import StepRecord, StepState, evaluate_gate, fold, runbook_of
from crmctl.views import format_span, format_time, phase_from_runbook

__all__ = [
    "Countdown",
    "PhaseTiming",
    "RunbookView",
    "StepRow",
    "StepTiming",
    "Timeline",
    "build_runbook_view",
    "build_timeline",
    "countdown_to",
    "format_drift",
    "topological_order",
]

ZERO = timedelta(0)
NO_PHASE = "—"


@dataclass(frozen=True)
class StepTiming:
    """One step's plan, actuals, drift and forecast."""

    step_id: str
    phase: str
    state: StepState
    planned: timedelta | None
    """Planned duration (None when the config gives none: counted as zero, flagged "unplanned")."""
    planned_start: datetime
    planned_finish: datetime
    actual_start: datetime | None
    actual_end: datetime | None
    actual: timedelta | None
    """Duration when DONE; time elapsed so far while IN PROGRESS (and for a blocked or failed
    step that was started); None otherwise."""
    drift: timedelta | None
    """actual - planned: for DONE steps, and for running steps once they are over their plan."""
    forecast_start: datetime
    forecast_finish: datetime
    slack: timedelta | None
    """How much this unfinished step can slip without moving the forecast finish."""
    critical: bool
    late: str
    """"" or why the step is late: "over plan", "late start", "finished late"."""

    @property
    def is_late(self) -> bool:
        return bool(self.late)


@dataclass(frozen=True)
class PhaseTiming:
    """Planned versus actual for one phase (the steps sharing a `phase:`)."""

    phase: str
    steps: tuple[str, ...]
    planned: timedelta
    actual: timedelta
    """Sum of the durations of its DONE steps."""
    done: int
    drift: timedelta | None
    """Sum of its steps' drift so far (None while no step has any)."""
    start: datetime | None
    end: datetime | None
    """When its last step finished, if all have."""
    forecast_finish: datetime


@dataclass(frozen=True)
class Countdown:
    """Time to a deadline, or how long ago it passed."""

    label: str
    at: datetime | None
    remaining: timedelta | None
    text: str
    passed: bool = False


@dataclass(frozen=True)
class Timeline:
    """One run of one runbook against the clock."""

    steps: tuple[StepTiming, ...]
    phases: tuple[PhaseTiming, ...]
    now: datetime
    start: datetime
    """The run's start (or now, when it has not begun): the plan's origin."""
    started: bool
    planned_finish: datetime
    forecast_finish: datetime
    drift: timedelta
    """Cumulative drift: forecast finish minus planned finish."""
    critical_path: tuple[str, ...]
    deadline: datetime | None
    """The point of no return (cutover) or the SLA deadline (rollback)."""
    deadline_label: str
    finished: bool

    @property
    def margin(self) -> timedelta | None:
        """deadline - forecast finish (negative when the forecast crosses it)."""
        return None if self.deadline is None else self.deadline - self.forecast_finish

    @property
    def crosses_deadline(self) -> bool:
        return self.deadline is not None and not self.finished and self.forecast_finish > self.deadline

    @property
    def warning(self) -> str:
        """The loud line for the screens, or ""."""
        if not self.crosses_deadline or self.deadline is None:
            return ""
        late = format_span(self.forecast_finish - self.deadline, seconds=False)
        return (f"FORECAST FINISH {format_time(self.forecast_finish, self.now, seconds=False)} IS {late.upper()}"
                f" PAST THE {self.deadline_label.upper()} ({format_time(self.deadline, self.now, seconds=False)})")

    def step(self, step_id: str) -> StepTiming:
        return next(s for s in self.steps if s.step_id == step_id)


def topological_order(steps: Sequence[Any]) -> list[Any]:
    """Steps ordered so that each comes after everything it waits for (config order otherwise).

    The loader refuses cycles; a cycle that got here anyway is broken in config order rather
    than looping.
    """
    ids = {s.id for s in steps}
    remaining = list(steps)
    done: set[str] = set()
    order: list[Any] = []
    while remaining:
        ready = [s for s in remaining if all(d in done or d not in ids for d in s.after)]
        if not ready:
            ready = [remaining[0]]
        for s in ready:
            order.append(s)
            done.add(s.id)
            remaining.remove(s)
    return order


def build_timeline(
    steps: Sequence[Any],
    records: Mapping[str, StepRecord],
    *,
    now: datetime,
    start: datetime | None,
    deadline: datetime | None = None,
    deadline_label: str = "point of no return",
) -> Timeline:
    """The plan, the actuals and the forecast of one runbook in one run.

    Args:
        steps: the runbook's configured steps (`RunbookStep`s).
        records: the run's step records by id (`RunState.steps`); missing means PENDING.
        now: the current time (from the room's clock).
        start: when the run began (None: not yet; the plan then starts now).
        deadline: the point of no return, or the rollback SLA deadline.
    """
    now = utc(now)
    origin = utc(start) if start is not None else now
    order = topological_order(steps)
    by_id = {s.id: s for s in order}
    planned = {s.id: (s.planned or ZERO) for s in order}
    plan_start: dict[str, datetime] = {}
    plan_finish: dict[str, datetime] = {}
    fc_start: dict[str, datetime] = {}
    fc_finish: dict[str, datetime] = {}

    for s in order:
        deps = [d for d in s.after if d in plan_finish]  # in order; a (refused) cycle is cut
        plan_start[s.id] = max([origin, *(plan_finish[d] for d in deps)])
        plan_finish[s.id] = plan_start[s.id] + planned[s.id]
        record = records.get(s.id)
        state = record.state if record else StepState.PENDING
        started = record.started_at if record else None
        ended = record.ended_at if record else None
        if state.finished and ended is not None:
            fc_start[s.id] = started or ended
            fc_finish[s.id] = ended
        elif state is StepState.IN_PROGRESS and started is not None:
            fc_start[s.id] = started
            fc_finish[s.id] = max(now, started + planned[s.id])
        else:
            fc_start[s.id] = max([now, *(fc_finish[d] for d in deps)])
            remaining = planned[s.id]
            if state is StepState.BLOCKED and started is not None:
                remaining = max(ZERO, planned[s.id] - (now - started))
            fc_finish[s.id] = fc_start[s.id] + remaining

    finish = max(fc_finish.values(), default=now if start is None else origin)
    planned_end = max(plan_finish.values(), default=origin)
    slack = _slack(order, fc_start, fc_finish, records, finish)
    path = _critical_path(order, fc_finish, by_id)
    on_path = set(path)

    timings = []
    for s in steps:
        record = records.get(s.id)
        state = record.state if record else StepState.PENDING
        timings.append(_step_timing(s, record, state, now, planned[s.id], plan_start[s.id], plan_finish[s.id],
                                    fc_start[s.id], fc_finish[s.id], slack.get(s.id),
                                    s.id in on_path or slack.get(s.id) == ZERO, started=start is not None))
    all_finished = bool(steps) and all(t.state.finished for t in timings)
    return Timeline(
        steps=tuple(timings),
        phases=tuple(_phases(timings)),
        now=now,
        start=origin,
        started=start is not None,
        planned_finish=planned_end,
        forecast_finish=finish,
        drift=finish - planned_end,
        critical_path=tuple(path),
        deadline=utc(deadline) if deadline is not None else None,
        deadline_label=deadline_label,
        finished=all_finished,
    )


def _slack(order: Sequence[Any], fc_start: Mapping[str, datetime], fc_finish: Mapping[str, datetime],
           records: Mapping[str, StepRecord], finish: datetime) -> dict[str, timedelta]:
    """Backward pass over unfinished steps: latest finish minus forecast finish."""
    successors: dict[str, list[str]] = {s.id: [] for s in order}
    for s in order:
        for d in s.after:
            if d in successors:
                successors[d].append(s.id)
    latest_start: dict[str, datetime] = {}
    out: dict[str, timedelta] = {}
    for s in reversed(order):
        record = records.get(s.id)
        finished = record is not None and record.state.finished
        latest_finish = min((latest_start[n] for n in successors[s.id] if n in latest_start), default=finish)
        duration = fc_finish[s.id] - fc_start[s.id]
        latest_start[s.id] = latest_finish - duration if not finished else fc_start[s.id]
        if not finished:
            out[s.id] = max(ZERO, latest_finish - fc_finish[s.id])
    return out


def _critical_path(order: Sequence[Any], fc_finish: Mapping[str, datetime], by_id: Mapping[str, Any]) -> list[str]:
    """The chain that fixes the forecast finish: from the last-finishing step back, always
    through the dependency that finishes last (the one its start waits for). Ties go to the
    step listed first in the config."""
    if not order:
        return []
    position = {s.id: i for i, s in enumerate(order)}
    current = max(order, key=lambda s: (fc_finish[s.id], -position[s.id]))
    path = [current.id]
    while True:
        deps = [d for d in current.after if d in by_id and d not in path]
        if not deps:
            break
        current = by_id[max(deps, key=lambda d: (fc_finish[d], -position[d]))]
        path.append(current.id)
    return list(reversed(path))


def _step_timing(step: Any, record: StepRecord | None, state: StepState, now: datetime, planned: timedelta,
                 plan_start: datetime, plan_finish: datetime, fc_start: datetime, fc_finish: datetime,
                 slack: timedelta | None, critical: bool, *, started: bool) -> StepTiming:
    actual_start = record.started_at if record else None
    actual_end = record.ended_at if record else None
    actual: timedelta | None = None
    drift: timedelta | None = None
    late = ""
    if state is StepState.DONE and actual_start is not None and actual_end is not None:
        actual = actual_end - actual_start
        if step.planned is not None:
            drift = actual - planned
            if drift > ZERO:
                late = "finished late"
    elif actual_start is not None and state in (StepState.IN_PROGRESS, StepState.BLOCKED, StepState.FAILED):
        actual = now - actual_start
        if step.planned is not None and actual > planned and state is not StepState.FAILED:
            drift = actual - planned
            late = "over plan"
    elif state is StepState.PENDING and started and now > plan_start and step.planned is not None:
        late = "late start"
    return StepTiming(
        step_id=step.id,
        phase=step.phase or NO_PHASE,
        state=state,
        planned=step.planned,
        planned_start=plan_start,
        planned_finish=plan_finish,
        actual_start=actual_start,
        actual_end=actual_end,
        actual=actual,
        drift=drift,
        forecast_start=fc_start,
        forecast_finish=fc_finish,
        slack=slack,
        critical=critical,
        late=late,
    )


def _phases(timings: Sequence[StepTiming]) -> list[PhaseTiming]:
    groups: dict[str, list[StepTiming]] = {}
    for t in timings:
        groups.setdefault(t.phase, []).append(t)
    out = []
    for phase, items in groups.items():
        starts = [t.actual_start or t.actual_end for t in items if (t.actual_start or t.actual_end)]
        ends = [t.actual_end for t in items if t.actual_end is not None]
        all_done = all(t.state.finished for t in items)
        out.append(PhaseTiming(
            phase=phase,
            steps=tuple(t.step_id for t in items),
            planned=sum((t.planned or ZERO for t in items), ZERO),
            actual=sum((t.actual for t in items if t.state is StepState.DONE and t.actual is not None), ZERO),
            done=sum(1 for t in items if t.state.finished),
            drift=sum((t.drift for t in items if t.drift is not None), ZERO)
            if any(t.drift is not None for t in items) else None,
            start=min(starts, default=None),
            end=max(ends, default=None) if all_done else None,
            forecast_finish=max(t.forecast_finish for t in items),
        ))
    return out


def countdown_to(label: str, at: datetime | None, now: datetime) -> Countdown:
    """A countdown to `at` ("in 1 h 45 min" / "passed 20 min ago" / "not set")."""
    if at is None:
        return Countdown(label, None, None, "not set")
    remaining = utc(at) - utc(now)
    if remaining > ZERO:
        return Countdown(label, utc(at), remaining, f"in {format_span(remaining)}")
    return Countdown(label, utc(at), remaining, f"passed {format_span(remaining)} ago", passed=True)


def format_drift(drift: timedelta | None) -> str:
    """"+12 min", "-5 min", "on plan", or "—" when there is nothing to compare."""
    if drift is None:
        return "—"
    if abs(drift) < timedelta(seconds=30):
        return "on plan"
    sign = "+" if drift > ZERO else "-"
    return f"{sign}{format_span(drift, seconds=False)}"


# --------------------------------------------------------------------------------------------
# the checklist view: what the Runbook screen and `crmctl runbook` show


@dataclass(frozen=True)
class StepRow:
    """One line of the checklist."""

    step_id: str
    runbook: str
    """``cutover`` or ``rollback``."""
    state: StepState
    label: str
    """Glyph and word: "✔ DONE"."""
    title: str
    owner: str
    phase: str
    planned_text: str
    actual_text: str
    drift_text: str
    gate_text: str
    gate_ok: bool | None
    """None when the step has no gate."""
    late: str
    critical: bool
    detail: tuple[str, ...]
    """Lines for the selected-step panel: dependencies, gate checks, who did what."""

    @property
    def key(self) -> str:
        return self.step_id


@dataclass(frozen=True)
class RunbookView:
    """The whole runbook of the current run, at one moment."""

    run: str
    run_text: str
    """"since 18:00 UTC", "not started"."""
    phase: str
    rows: tuple[StepRow, ...]
    timeline: Timeline
    rollback_timeline: Timeline | None
    ponr: Countdown
    sla: Countdown | None
    forecast_text: str
    """"22:15 UTC, 45 min before no return", "finished 22:10 UTC", "none (no planned durations)"."""
    drift_text: str
    critical_text: str
    warning: str
    rollback_warning: str
    ready: tuple[str, ...]
    """Steps that may start now."""


def _span_text(delta: timedelta | None) -> str:
    """A duration for a narrow column: "45 min", "1 h", "1 h 05" (minutes are what a runbook plans in)."""
    if delta is None:
        return "—"
    minutes = int(abs(delta).total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h" if minutes == 0 else f"{hours} h {minutes:02d}"
    return f"{minutes} min"


def build_runbook_view(config: Any, entries: Sequence[Any], results: Mapping[str, Any], now: datetime) -> RunbookView:
    """Projects the journal's runbook entries and the newest results onto the checklist at `now`."""
    now = utc(now)
    state = fold(entries, runbook_of(config))
    run = state.current
    rollback = getattr(config, "rollback", None)
    ponr = getattr(rollback, "point_of_no_return", None) if rollback else None
    cutover_steps = tuple(getattr(config, "runbook", ()))
    back_steps = tuple(getattr(rollback, "runbook", ()) or ()) if rollback else ()
    timeline = build_timeline(cutover_steps, run.steps, now=now, start=run.anchor, deadline=ponr)
    back_timeline = None
    sla = None
    if run.rollback_at is not None and rollback is not None:
        deadline = run.rollback_at + rollback.sla
        back_timeline = build_timeline(back_steps, run.steps, now=now, start=run.rollback_at, deadline=deadline,
                                       deadline_label="rollback SLA")
        sla = countdown_to("Rollback SLA", deadline, now)
    checks = {c.id: c for c in getattr(config, "checks", ())}
    rows = []
    for steps, line in ((cutover_steps, timeline), (back_steps, back_timeline)):
        for step in steps:
            timing = line.step(step.id) if line is not None else None
            rows.append(_row(step, run, timing, checks, results, now, "rollback" if steps is back_steps else "cutover"))
    ready = tuple(
        s.id for s in cutover_steps + (back_steps if run.rollback_at else ())
        if run.state_of(s.id) in (StepState.PENDING, StepState.FAILED, StepState.BLOCKED)
        and all(run.state_of(d).finished for d in s.after)
        and not (run.rollback_at and s in cutover_steps)
    )
    if not any(s.planned for s in cutover_steps):
        forecast = "none (no planned durations)"
    elif timeline.finished:
        forecast = f"finished {format_time(timeline.forecast_finish, now, seconds=False)}"
    else:
        forecast = format_time(timeline.forecast_finish, now, seconds=False)
        margin = timeline.margin
        if margin is not None:
            forecast += (f", {format_span(margin, seconds=False)} before no return" if margin >= ZERO
                         else f", {format_span(margin, seconds=False)} AFTER no return")
    started = run.anchor
    run_text = f"since {format_time(started, now, seconds=False)}" if started else "not started"
    if not run.explicit and run.steps:
        run_text += " (implicit run)"
    return RunbookView(
        run=run.name,
        run_text=run_text,
        phase=phase_from_runbook(tuple(entries), cutover_steps + back_steps),
        rows=tuple(rows),
        timeline=timeline,
        rollback_timeline=back_timeline,
        ponr=countdown_to("Point of no return", ponr, now),
        sla=sla,
        forecast_text=forecast,
        drift_text=f"drift {format_drift(timeline.drift)}",
        critical_text=" → ".join(timeline.critical_path) or "—",
        warning=timeline.warning,
        rollback_warning=back_timeline.warning if back_timeline else "",
        ready=ready,
    )


def _row(step: Any, run: Any, timing: StepTiming | None, checks: Mapping[str, Any], results: Mapping[str, Any],
         now: datetime, book: str) -> StepRow:
    record: StepRecord | None = run.steps.get(step.id)
    state = record.state if record else StepState.PENDING
    if timing is not None and timing.actual is not None:
        actual = _span_text(timing.actual)
        if state is StepState.IN_PROGRESS:
            actual = f"▶ {actual}"
    else:
        actual = "—"
    drift = format_drift(timing.drift) if timing is not None else "—"
    if timing is not None and timing.late == "late start":
        drift = "late start"
    elif timing is not None and timing.late:
        drift += " ▲"  # the late marker: over plan (running) or finished late
    gate_ok: bool | None = None
    if record is not None and record.state is StepState.DONE and record.override:
        gate_text, gate_ok = f"⚑ overridden by {record.override.get('authority', '?')}", False
    elif record is not None and record.state is StepState.DONE and step.gate:
        gate_text, gate_ok = "✔ passed", True
    elif step.gate:
        gate = evaluate_gate(step.gate, checks, results, now)
        shut = [g for g in gate if not g.ok]
        gate_ok = not shut
        if shut:
            more = f" +{len(shut) - 1}" if len(shut) > 1 else ""
            gate_text = f"✖ {shut[0].check_id} {shut[0].status.value}{more}"
        else:
            gate_text = "✔ open"
    else:
        gate_text = "—"
    detail = [f"after: {', '.join(step.after)}" if step.after else "after: nothing (can start first)"]
    if step.gate:
        if record is not None and record.state is StepState.DONE and record.gate:
            for g in record.gate:
                detail.append(f"gate {g.get('check')}: {g.get('status')} at completion"
                              + (f" (result #{g['seq']})" if "seq" in g else ""))
            if record.override:
                detail.append(f"OVERRIDE by {record.override.get('authority')}: {record.override.get('reason')}")
        else:
            for g in evaluate_gate(step.gate, checks, results, now):
                detail.append(f"gate {g.check_id}: {g.why}")
    for event in (record.events if record else ()):
        when = format_time(event.ts, now) if event.ts else "?"
        detail.append(f"{when} {event.state.value.lower()} by {event.who}" + (f": {event.reason}" if event.reason else ""))
    return StepRow(
        step_id=step.id,
        runbook=book,
        state=state,
        label=state.label,
        title=step.title,
        owner=step.owner or "—",
        phase=step.phase or NO_PHASE,
        planned_text=_span_text(step.planned),
        actual_text=actual,
        drift_text=drift,
        gate_text=gate_text,
        gate_ok=gate_ok,
        late=timing.late if timing is not None else "",
        critical=bool(timing and timing.critical and not state.finished),
        detail=tuple(detail),
    )
