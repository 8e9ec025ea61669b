"""Named runs of the runbook (rehearsal-1, rehearsal-2, production) and the comparison of two.

Rehearsals exist to measure drift before it happens for real. Each run keeps, in the journal,
the times of every step and the numeric check values at each step's completion (`outcomes` in
the `runbook.step.done` payload), so any two runs can be compared per step and per phase:
duration deltas, drift against the plan, and data-outcome deltas (counts, differences, latency).
Pure functions over the folded `RunbookState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from crmctl.runbook import RunbookState, RunState, StepState
from crmctl.timing import ZERO, build_timeline, format_drift
from crmctl.views import format_number, format_span, format_time

__all__ = [
    "Comparison",
    "OutcomeDelta",
    "PhaseDelta",
    "RunSummary",
    "StepDelta",
    "compare_runs",
    "format_comparison",
    "format_runs",
    "gates_of",
    "list_runs",
]


@dataclass(frozen=True)
class RunSummary:
    """One line of `crmctl runs list`."""

    name: str
    current: bool
    explicit: bool
    started_at: datetime | None
    started_by: str
    done: int
    total: int
    status: str
    """"not started", "in progress", "finished", "rolled back"."""
    finished_at: datetime | None
    drift: timedelta | None
    decision: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "current": self.current,
            "explicit": self.explicit,
            "started_at": _iso(self.started_at),
            "started_by": self.started_by,
            "done": self.done,
            "total": self.total,
            "status": self.status,
            "finished_at": _iso(self.finished_at),
            "drift_s": _seconds(self.drift),
            "decision": self.decision,
        }


def _iso(ts: datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds(), 3)


def list_runs(config: Any, state: RunbookState, now: datetime) -> list[RunSummary]:
    """Every run, oldest first (the current one flagged)."""
    steps = tuple(getattr(config, "runbook", ()))
    ponr = getattr(getattr(config, "rollback", None), "point_of_no_return", None)
    out = []
    for run in state.runs.values():
        if not run.explicit and not run.steps and not run.decisions and not run.proposals:
            continue
        timeline = build_timeline(steps, run.steps, now=now, start=run.anchor, deadline=ponr)
        done = sum(1 for s in steps if run.state_of(s.id).finished)
        if run.rollback is not None:
            status = "rolled back"
        elif steps and done == len(steps):
            status = "finished"
        elif run.steps:
            status = "in progress"
        else:
            status = "not started"
        decision = run.latest_decision
        out.append(RunSummary(
            name=run.name,
            current=run.name == state.current_name,
            explicit=run.explicit,
            started_at=run.anchor,
            started_by=run.started_by or (_first_by(run)),
            done=done,
            total=len(steps),
            status=status,
            finished_at=timeline.forecast_finish if status == "finished" else None,
            drift=timeline.drift if run.steps else None,
            decision=f"{decision.decision.upper()} by {decision.authority}" if decision else "",
        ))
    return out


def _first_by(run: RunState) -> str:
    events = sorted((e for r in run.steps.values() for e in r.events), key=lambda e: e.seq)
    return events[0].who if events else ""


@dataclass(frozen=True)
class StepDelta:
    """One step in two runs."""

    step_id: str
    phase: str
    planned: timedelta | None
    a_state: StepState
    b_state: StepState
    a_duration: timedelta | None
    b_duration: timedelta | None
    a_drift: timedelta | None
    b_drift: timedelta | None

    @property
    def delta(self) -> timedelta | None:
        """b - a, when both ran to completion."""
        if self.a_duration is None or self.b_duration is None:
            return None
        return self.b_duration - self.a_duration

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step_id,
            "phase": self.phase,
            "planned_s": _seconds(self.planned),
            "a": {"state": self.a_state.value, "duration_s": _seconds(self.a_duration), "drift_s": _seconds(self.a_drift)},
            "b": {"state": self.b_state.value, "duration_s": _seconds(self.b_duration), "drift_s": _seconds(self.b_drift)},
            "delta_s": _seconds(self.delta),
        }


@dataclass(frozen=True)
class PhaseDelta:
    """One phase in two runs: wall time from its first start to its last finish, and drift."""

    phase: str
    planned: timedelta
    a_duration: timedelta | None
    b_duration: timedelta | None
    a_drift: timedelta | None
    b_drift: timedelta | None

    @property
    def delta(self) -> timedelta | None:
        if self.a_duration is None or self.b_duration is None:
            return None
        return self.b_duration - self.a_duration

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "planned_s": _seconds(self.planned),
            "a": {"duration_s": _seconds(self.a_duration), "drift_s": _seconds(self.a_drift)},
            "b": {"duration_s": _seconds(self.b_duration), "drift_s": _seconds(self.b_drift)},
            "delta_s": _seconds(self.delta),
        }


@dataclass(frozen=True)
class OutcomeDelta:
    """One measured value of one check at one step's completion, in two runs."""

    step_id: str
    check_id: str
    value: str
    a: Any
    b: Any

    @property
    def delta(self) -> float | None:
        if isinstance(self.a, (int, float)) and isinstance(self.b, (int, float)):
            return self.b - self.a
        return None

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step_id, "check": self.check_id, "value": self.value, "a": self.a, "b": self.b,
                "delta": self.delta}


@dataclass(frozen=True)
class Comparison:
    """Run `a` against run `b`: per step, per phase, and data outcomes (b - a throughout)."""

    a: str
    b: str
    steps: tuple[StepDelta, ...]
    phases: tuple[PhaseDelta, ...]
    outcomes: tuple[OutcomeDelta, ...]
    a_total: timedelta | None
    b_total: timedelta | None
    a_drift: timedelta | None
    """Sum of the drift of run a's completed steps (None when none was completed)."""
    b_drift: timedelta | None

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "total": {"a_s": _seconds(self.a_total), "b_s": _seconds(self.b_total),
                      "delta_s": _seconds(self.b_total - self.a_total) if self.a_total and self.b_total else None,
                      "a_drift_s": _seconds(self.a_drift), "b_drift_s": _seconds(self.b_drift)},
            "steps": [s.to_json() for s in self.steps],
            "phases": [p.to_json() for p in self.phases],
            "outcomes": [o.to_json() for o in self.outcomes],
        }


def compare_runs(config: Any, state: RunbookState, a: str, b: str, now: datetime) -> Comparison:
    """Compares runs `a` and `b` (KeyError naming the known runs when one does not exist)."""
    run_a, run_b = state.run(a), state.run(b)
    steps = tuple(getattr(config, "runbook", ()))
    line_a = build_timeline(steps, run_a.steps, now=now, start=run_a.anchor)
    line_b = build_timeline(steps, run_b.steps, now=now, start=run_b.anchor)
    step_deltas = []
    outcome_deltas: list[OutcomeDelta] = []
    for step in steps:
        ta, tb = line_a.step(step.id), line_b.step(step.id)
        step_deltas.append(StepDelta(
            step_id=step.id,
            phase=ta.phase,
            planned=step.planned,
            a_state=ta.state,
            b_state=tb.state,
            a_duration=ta.actual if ta.state is StepState.DONE else None,
            b_duration=tb.actual if tb.state is StepState.DONE else None,
            a_drift=ta.drift if ta.state is StepState.DONE else None,
            b_drift=tb.drift if tb.state is StepState.DONE else None,
        ))
        ra, rb = run_a.steps.get(step.id), run_b.steps.get(step.id)
        if ra is not None and rb is not None and ra.outcomes and rb.outcomes:
            outcome_deltas.extend(_outcome_deltas(step.id, ra.outcomes, rb.outcomes))
    phase_deltas = []
    for pa, pb in zip(line_a.phases, line_b.phases):
        phase_deltas.append(PhaseDelta(
            phase=pa.phase,
            planned=pa.planned,
            a_duration=(pa.end - pa.start) if pa.end and pa.start else None,
            b_duration=(pb.end - pb.start) if pb.end and pb.start else None,
            a_drift=pa.drift,
            b_drift=pb.drift,
        ))
    return Comparison(
        a=a,
        b=b,
        steps=tuple(step_deltas),
        phases=tuple(phase_deltas),
        outcomes=tuple(outcome_deltas),
        a_total=(line_a.forecast_finish - line_a.start) if line_a.finished else None,
        b_total=(line_b.forecast_finish - line_b.start) if line_b.finished else None,
        a_drift=_total([s.a_drift for s in step_deltas]),
        b_drift=_total([s.b_drift for s in step_deltas]),
    )


def _total(drifts: Sequence[timedelta | None]) -> timedelta | None:
    known = [d for d in drifts if d is not None]
    return sum(known, ZERO) if known else None


def _outcome_deltas(step_id: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[OutcomeDelta]:
    out = []
    for check_id in sorted(set(a) & set(b)):
        va, vb = a[check_id], b[check_id]
        if not isinstance(va, Mapping) or not isinstance(vb, Mapping):
            continue
        if va.get("status") != vb.get("status"):
            out.append(OutcomeDelta(step_id, check_id, "status", va.get("status"), vb.get("status")))
        values_a, values_b = va.get("values") or {}, vb.get("values") or {}
        for key in sorted(set(values_a) | set(values_b)):
            out.append(OutcomeDelta(step_id, check_id, key, values_a.get(key), values_b.get(key)))
    return out


# --------------------------------------------------------------------------------------------
# plain text for the CLI (cron mail and 80 columns: no colour, no box drawing)


def _d(delta: timedelta | None) -> str:
    return "—" if delta is None else format_span(delta, seconds=False)


def _signed(delta: timedelta | None) -> str:
    if delta is None:
        return "—"
    if delta == ZERO:
        return "0"
    return ("+" if delta > ZERO else "-") + format_span(delta, seconds=False)


def format_runs(runs: Sequence[RunSummary], now: datetime) -> str:
    """`crmctl runs list` as a table."""
    if not runs:
        return "No runs yet: the first step starts rehearsal-1 (or: crmctl runs start NAME)."
    lines = [f"  {'RUN':<16} {'STATUS':<12} {'STEPS':>5}  {'STARTED':<20} {'DRIFT':>10}  DECISION"]
    for r in runs:
        started = format_time(r.started_at, now, seconds=False) if r.started_at else "—"
        lines.append(f"{'*' if r.current else ' '} {r.name:<16} {r.status:<12} {r.done:>2}/{r.total:<2}  {started:<20}"
                     f" {format_drift(r.drift):>10}  {r.decision or '—'}")
    lines.append("")
    lines.append("* the current run (step actions go to it)")
    return "\n".join(lines)


def format_comparison(c: Comparison, gates: Mapping[str, Sequence[str]] | None = None) -> str:
    """`crmctl runs compare A B` as a table (deltas are B - A).

    The data-outcome table shows what each step's gate checks measured at its completion (what
    the gate saw) when `gates` (step id -> gate check ids) is given; the JSON has every value.
    """
    w = 11
    lines = [f"Runs compared: A = {c.a}, B = {c.b} (deltas are B - A)", ""]
    lines.append(f"{'STEP':<16} {'PHASE':<12} {'PLANNED':>{w}} {'A':>{w}} {'B':>{w}} {'DELTA':>{w}} {'DRIFT A':>{w}}"
                 f" {'DRIFT B':>{w}}")
    for s in c.steps:
        lines.append(f"{s.step_id:<16.16} {s.phase:<12.12} {_d(s.planned):>{w}} {_d(s.a_duration):>{w}}"
                     f" {_d(s.b_duration):>{w}} {_signed(s.delta):>{w}} {format_drift(s.a_drift):>{w}}"
                     f" {format_drift(s.b_drift):>{w}}")
    lines.append("")
    lines.append(f"{'PHASE':<29} {'PLANNED':>{w}} {'A':>{w}} {'B':>{w}} {'DELTA':>{w}} {'DRIFT A':>{w}} {'DRIFT B':>{w}}")
    for p in c.phases:
        lines.append(f"{p.phase:<29.29} {_d(p.planned):>{w}} {_d(p.a_duration):>{w}} {_d(p.b_duration):>{w}}"
                     f" {_signed(p.delta):>{w}} {format_drift(p.a_drift):>{w}} {format_drift(p.b_drift):>{w}}")
    total_delta = c.b_total - c.a_total if c.a_total is not None and c.b_total is not None else None
    lines.append(f"{'TOTAL':<29} {'':>{w}} {_d(c.a_total):>{w}} {_d(c.b_total):>{w}} {_signed(total_delta):>{w}}"
                 f" {format_drift(c.a_drift):>{w}} {format_drift(c.b_drift):>{w}}")
    lines.append("")
    if not c.outcomes:
        lines.append("Data outcomes: no step was completed in both runs with check values recorded.")
        return "\n".join(lines)
    shown = [o for o in c.outcomes if gates is None or o.check_id in gates.get(o.step_id, ())]
    changed = [o for o in shown if o.a != o.b]
    scope = "of the gate checks " if gates is not None else ""
    lines.append(f"Data outcomes {scope}at step completion ({len(changed)} changed, {len(shown) - len(changed)}"
                 f" unchanged; --format json has all {len(c.outcomes)} values of every check):")
    if changed:
        lines.append(f"{'STEP':<14} {'CHECK':<22} {'VALUE':<16} {'A':>12} {'B':>12} {'DELTA':>12}")
        for o in changed:
            delta = "—" if o.delta is None else ("+" if o.delta > 0 else "") + format_number(o.delta)
            lines.append(f"{o.step_id:<14.14} {o.check_id:<22.22} {o.value:<16.16} {format_number(o.a):>12}"
                         f" {format_number(o.b):>12} {delta:>12}")
    return "\n".join(lines)


def gates_of(config: Any) -> dict[str, tuple[str, ...]]:
    """step id -> its gate check ids (for `format_comparison`)."""
    return {s.id: tuple(s.gate) for s in getattr(config, "runbook", ())}
