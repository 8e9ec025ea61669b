"""The cutover runbook as a state machine folded from the journal, and the actions that move it.

Why a fold: the journal is the single source of truth (DESIGN.md §3). A step is "done" because
an entry says so, never because a process remembers it; so every session, the CLI and the
evidence pack compute exactly the same state from the same entries, and a state can never be
"fixed" without leaving a trace. Every action is validated twice: once before writing, to give
the operator a clear message cheaply, and again inside the write transaction
(`Store.append_checked`), so two operators in two processes cannot both complete one step.

Journal kinds (every payload carries ``run`` and, for steps, ``step`` and ``runbook``):

* ``run.started`` — a named execution begins (``rehearsal-2``, ``production``).
* ``runbook.step.started|done|failed|skipped|blocked`` — one transition of one step. A ``done``
  payload carries the gate evidence (each gate check's status, result seq and hash), an
  ``override`` (authority, reason, the checks that were not OK) when the gate was overridden,
  and ``outcomes``: the numeric values of every check at that moment (for run comparison).
* ``decision.proposed`` / ``decision.recorded`` — see `crmctl.decision`. A recorded ``rollback``
  decision is the start of the rollback runbook and of its SLA clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from crmctl.model import CheckResult, Status, utc
from crmctl.views import effective_status, format_age, format_span, is_stale, shorten

__all__ = [
    "ACTION_KINDS",
    "Action",
    "DECISION_PROPOSED",
    "DECISION_RECORDED",
    "DEFAULT_RUN",
    "GateCheck",
    "KINDS",
    "RESULT_KIND",
    "RUN_STARTED",
    "Refused",
    "ResultRef",
    "RunState",
    "RunbookService",
    "RunbookState",
    "StepRecord",
    "StepState",
    "append_checked",
    "authorities",
    "evaluate_gate",
    "fold",
    "latest_result_refs",
    "match_authority",
    "outcomes_of",
    "plan_run_start",
    "plan_step_action",
    "runbook_of",
]

RESULT_KIND = "check.result"
RUN_STARTED = "run.started"
STEP_STARTED = "runbook.step.started"
STEP_DONE = "runbook.step.done"
STEP_FAILED = "runbook.step.failed"
STEP_SKIPPED = "runbook.step.skipped"
STEP_BLOCKED = "runbook.step.blocked"
DECISION_PROPOSED = "decision.proposed"
DECISION_RECORDED = "decision.recorded"

KINDS: tuple[str, ...] = (
    RUN_STARTED,
    STEP_STARTED,
    STEP_DONE,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_BLOCKED,
    DECISION_PROPOSED,
    DECISION_RECORDED,
)
"""Every journal kind the runbook fold reads (`crmctl.views.RUNBOOK_KINDS` mirrors it)."""

DEFAULT_RUN = "rehearsal-1"
"""The run steps belong to before any `run.started`: rehearsing is what a fresh state file is
for. Production is never implicit: it starts only with an explicit `crmctl runs start production`."""

RUN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
RUN_NAME_EXPECT = "a short lower-case name such as rehearsal-2 or production"


class Refused(Exception):
    """An action the rules do not allow. The message says why; nothing was written."""


class StepState(StrEnum):
    """Where one step stands in one run."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN PROGRESS"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    BLOCKED = "BLOCKED"

    @property
    def glyph(self) -> str:
        """A distinct shape per state, so the checklist reads without colour."""
        return _GLYPHS[self]

    @property
    def label(self) -> str:
        """Glyph and word, e.g. "✔ DONE"."""
        return f"{self.glyph} {self.value}"

    @property
    def finished(self) -> bool:
        """DONE or SKIPPED: the step no longer holds anything up."""
        return self in (StepState.DONE, StepState.SKIPPED)


_GLYPHS = {
    StepState.PENDING: "○",
    StepState.IN_PROGRESS: "▶",
    StepState.DONE: "✔",
    StepState.FAILED: "✖",
    StepState.SKIPPED: "↷",
    StepState.BLOCKED: "■",
}


class Action(StrEnum):
    """What an operator can do to a step."""

    START = "start"
    DONE = "done"
    FAIL = "fail"
    SKIP = "skip"
    BLOCK = "block"


ACTION_KINDS: Mapping[Action, str] = {
    Action.START: STEP_STARTED,
    Action.DONE: STEP_DONE,
    Action.FAIL: STEP_FAILED,
    Action.SKIP: STEP_SKIPPED,
    Action.BLOCK: STEP_BLOCKED,
}
_KIND_STATES = {
    STEP_STARTED: StepState.IN_PROGRESS,
    STEP_DONE: StepState.DONE,
    STEP_FAILED: StepState.FAILED,
    STEP_SKIPPED: StepState.SKIPPED,
    STEP_BLOCKED: StepState.BLOCKED,
}
_ALLOWED_FROM: Mapping[Action, frozenset[StepState]] = {
    Action.START: frozenset({StepState.PENDING, StepState.FAILED, StepState.BLOCKED}),
    Action.DONE: frozenset({StepState.IN_PROGRESS}),
    Action.FAIL: frozenset({StepState.IN_PROGRESS}),
    Action.SKIP: frozenset({StepState.PENDING, StepState.BLOCKED, StepState.FAILED}),
    Action.BLOCK: frozenset({StepState.PENDING, StepState.IN_PROGRESS}),
}
"""Legal transitions. DONE and SKIPPED are final: the journal is append-only, and a step that was
completed by mistake is explained by an incident, not undone."""
_NEEDS_REASON = frozenset({Action.SKIP, Action.BLOCK})

# --------------------------------------------------------------------------------------------
# what the fold reads


class EntryLike(Protocol):
    """The parts of a `crmctl.store.JournalEntry` the fold reads."""

    seq: int
    kind: str
    payload: Mapping[str, Any]


def _who(entry: Any) -> str:
    operator = getattr(entry, "operator", "") or "?"
    host = getattr(entry, "host", "")
    return f"{operator}@{host}" if host else operator


def _ts(entry: Any) -> datetime | None:
    ts = getattr(entry, "ts", None)
    return utc(ts) if isinstance(ts, datetime) else None


def _hhmmss(ts: datetime | None) -> str:
    return utc(ts).strftime("%H:%M:%S UTC") if ts is not None else "an unknown time"


# --------------------------------------------------------------------------------------------
# state


@dataclass(frozen=True)
class StepEvent:
    """One journalled transition of a step: who moved it where, when, and why."""

    seq: int
    ts: datetime | None
    who: str
    state: StepState
    reason: str = ""


@dataclass
class StepRecord:
    """One step in one run, as the journal tells it."""

    step_id: str
    runbook: str
    """``cutover`` or ``rollback``."""
    state: StepState = StepState.PENDING
    started_at: datetime | None = None
    """The first start in this run (retries and resumes keep it: drift counts the whole time)."""
    started_by: str = ""
    ended_at: datetime | None = None
    """When it was done or skipped."""
    ended_by: str = ""
    reason: str = ""
    """The reason given with the latest transition (skip, block, fail)."""
    override: Mapping[str, Any] | None = None
    gate: tuple[Mapping[str, Any], ...] = ()
    outcomes: Mapping[str, Any] = field(default_factory=dict)
    attempts: int = 0
    events: list[StepEvent] = field(default_factory=list)

    @property
    def last(self) -> StepEvent | None:
        return self.events[-1] if self.events else None

    @property
    def duration(self) -> timedelta | None:
        """How long it took, for DONE steps that were started."""
        if self.state is StepState.DONE and self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None


@dataclass(frozen=True)
class Proposal:
    """A decision proposed by one authority, waiting for a second one (two-person rule)."""

    seq: int
    ts: datetime | None
    who: str
    operator: str
    decision: str
    authority: str
    rationale: str


@dataclass(frozen=True)
class DecisionRecord:
    """A recorded go / hold / rollback decision."""

    seq: int
    ts: datetime | None
    who: str
    operator: str
    decision: str
    authority: str
    rationale: str
    approves: int | None = None
    """The seq of the proposal this record approves (two-person rule)."""
    proposer: str = ""
    """The proposing authority, when approved."""
    override: str = ""
    """The reason given for deciding after the point of no return."""
    recommendation: str = ""
    """What the matrix recommended when the decision was taken."""


@dataclass
class RunState:
    """One named execution of the runbook."""

    name: str
    started_at: datetime | None = None
    started_by: str = ""
    explicit: bool = False
    """False for the implicit first run (steps journalled before any `run.started`)."""
    steps: dict[str, StepRecord] = field(default_factory=dict)
    proposals: list[Proposal] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    last_seq: int = 0

    def step(self, step_id: str, runbook: str = "cutover") -> StepRecord:
        """The record of `step_id` (a fresh PENDING one if the journal has none)."""
        record = self.steps.get(step_id)
        if record is None:
            record = self.steps[step_id] = StepRecord(step_id, runbook)
        return record

    def state_of(self, step_id: str) -> StepState:
        record = self.steps.get(step_id)
        return record.state if record else StepState.PENDING

    @property
    def rollback(self) -> DecisionRecord | None:
        """The recorded rollback decision (the start of the rollback runbook), if any."""
        return next((d for d in self.decisions if d.decision == "rollback"), None)

    @property
    def rollback_at(self) -> datetime | None:
        decision = self.rollback
        return decision.ts if decision else None

    @property
    def latest_decision(self) -> DecisionRecord | None:
        return self.decisions[-1] if self.decisions else None

    @property
    def pending_proposal(self) -> Proposal | None:
        """The newest proposal not yet followed by any recorded decision."""
        if not self.proposals:
            return None
        newest = self.proposals[-1]
        if self.decisions and self.decisions[-1].seq > newest.seq:
            return None
        return newest

    @property
    def first_activity(self) -> datetime | None:
        times = [r.started_at or r.ended_at for r in self.steps.values() if (r.started_at or r.ended_at)]
        return min(times, default=None)

    @property
    def anchor(self) -> datetime | None:
        """When the run began: its `run.started`, else its first step activity."""
        return self.started_at or self.first_activity


@dataclass
class RunbookState:
    """Every run the journal knows of, and which one is current."""

    runs: dict[str, RunState] = field(default_factory=dict)
    current_name: str = DEFAULT_RUN

    @property
    def current(self) -> RunState:
        run = self.runs.get(self.current_name)
        if run is None:
            run = self.runs[self.current_name] = RunState(self.current_name)
        return run

    def run(self, name: str) -> RunState:
        """The run called `name`; raises KeyError with the known names otherwise."""
        run = self.runs.get(name)
        if run is None:
            known = ", ".join(self.runs) or "none yet"
            raise KeyError(f"no run named {name!r} (known runs: {known})")
        return run


def fold(entries: Iterable[EntryLike], books: Mapping[str, str] | None = None) -> RunbookState:
    """The runbook state after `entries` (any order-preserving subset of the journal).

    `books` maps step ids to their runbook ("cutover"/"rollback", see `runbook_of`) for entries
    that do not say. Entries of other kinds are ignored; a step transition the rules would have refused (possible
    only if someone wrote to the journal without crmctl) is still applied, because the journal is
    what happened, but it never crashes the fold.
    """
    state = RunbookState()
    for entry in sorted(entries, key=lambda e: e.seq):
        kind = entry.kind
        payload = entry.payload if isinstance(entry.payload, Mapping) else {}
        if kind == RUN_STARTED:
            name = str(payload.get("run") or DEFAULT_RUN)
            run = state.runs.get(name) or RunState(name)
            run.started_at, run.started_by, run.explicit = _ts(entry), _who(entry), True
            run.last_seq = entry.seq
            state.runs[name] = run
            state.current_name = name
            continue
        if kind not in _KIND_STATES and kind not in (DECISION_PROPOSED, DECISION_RECORDED):
            continue
        name = str(payload.get("run") or state.current_name)
        run = state.runs.get(name)
        if run is None:
            run = state.runs[name] = RunState(name)
        run.last_seq = max(run.last_seq, entry.seq)
        if kind in _KIND_STATES:
            _apply_step(run, entry, payload, books or {})
        elif kind == DECISION_PROPOSED:
            run.proposals.append(Proposal(
                entry.seq, _ts(entry), _who(entry), getattr(entry, "operator", ""),
                str(payload.get("decision", "")), str(payload.get("authority", "")), str(payload.get("rationale", "")),
            ))
        else:
            run.decisions.append(DecisionRecord(
                entry.seq, _ts(entry), _who(entry), getattr(entry, "operator", ""),
                str(payload.get("decision", "")), str(payload.get("authority", "")), str(payload.get("rationale", "")),
                approves=payload.get("approves") if isinstance(payload.get("approves"), int) else None,
                proposer=str(payload.get("proposer") or ""),
                override=str(payload.get("override") or ""),
                recommendation=str((payload.get("matrix") or {}).get("overall", "")) if isinstance(payload.get("matrix"), Mapping) else "",
            ))
    return state


def _apply_step(run: RunState, entry: EntryLike, payload: Mapping[str, Any], books: Mapping[str, str]) -> None:
    step_id = str(payload.get("step") or payload.get("step_id") or "")
    if not step_id:
        return
    record = run.step(step_id, str(payload.get("runbook") or books.get(step_id, "cutover")))
    new = _KIND_STATES[entry.kind]
    ts, who = _ts(entry), _who(entry)
    reason = str(payload.get("reason") or "")
    record.events.append(StepEvent(entry.seq, ts, who, new, reason))
    record.state = new
    record.reason = reason
    if new is StepState.IN_PROGRESS:
        record.attempts += 1
        if record.started_at is None:
            record.started_at, record.started_by = ts, who
    elif new in (StepState.DONE, StepState.SKIPPED):
        record.ended_at, record.ended_by = ts, who
        if new is StepState.DONE:
            record.gate = tuple(g for g in payload.get("gate", ()) if isinstance(g, Mapping))
            override = payload.get("override")
            record.override = override if isinstance(override, Mapping) else None
            outcomes = payload.get("outcomes")
            record.outcomes = outcomes if isinstance(outcomes, Mapping) else {}


# --------------------------------------------------------------------------------------------
# gates


@dataclass(frozen=True)
class ResultRef:
    """A check result with the journal entry it came from: the evidence behind a verdict."""

    result: CheckResult
    seq: int | None = None
    hash: str | None = None

    @property
    def check_id(self) -> str:
        return self.result.check_id

    def evidence(self) -> dict[str, Any]:
        """What the journal records to point back at this result."""
        out: dict[str, Any] = {
            "check": self.result.check_id,
            "reported": self.result.status.value,
            "finished": self.result.finished.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if self.seq is not None:
            out["seq"] = self.seq
        if self.hash is not None:
            out["hash"] = self.hash
        return out


@dataclass(frozen=True)
class GateCheck:
    """One gate check of one step, judged at one moment."""

    check_id: str
    status: Status
    """The effective status (STALE applied)."""
    why: str
    ref: ResultRef | None = None

    @property
    def ok(self) -> bool:
        """Only OK opens a gate: never WARN, ERROR, STALE, PENDING or a missing result."""
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check_id, "status": self.status.value, "ok": self.ok}
        if self.ref is not None:
            out.update({k: v for k, v in self.ref.evidence().items() if k != "check"})
        if not self.ok:
            out["why"] = self.why
        return out


def evaluate_gate(
    gate: Sequence[str], checks: Mapping[str, Any], results: Mapping[str, ResultRef | CheckResult], now: datetime
) -> tuple[GateCheck, ...]:
    """Judges each gate check at `now` with the STALE rule; the reason names what is wrong."""
    out = []
    for check_id in gate:
        spec = checks.get(check_id)
        held = results.get(check_id)
        ref = held if isinstance(held, ResultRef) else (ResultRef(held) if held is not None else None)
        result = ref.result if ref else None
        every = getattr(spec, "every", None)
        status = effective_status(result, every, now)
        if result is None:
            why = "PENDING: no result yet" if spec is not None else "PENDING: not a configured check"
        elif is_stale(result, every, now):
            why = (f"{status.value}: last result {format_age(result.finished, now)}"
                   f" (runs every {format_span(every)})" if every else f"{status.value}")
        elif status is Status.OK:
            why = "OK"
        elif status is Status.PENDING:
            why = "PENDING: no finished result yet"
        else:
            why = f"{status.value}: {shorten(result.explanation, 90)}" if result.explanation else status.value
        out.append(GateCheck(check_id, status, why, ref))
    return tuple(out)


def outcomes_of(results: Mapping[str, ResultRef | CheckResult]) -> dict[str, Any]:
    """The numeric values of every check (and its status): what the data looked like just then.

    Kept small on purpose (numbers only, no lists or text) because it is journalled with every
    completed step and compared between runs.
    """
    out: dict[str, Any] = {}
    for check_id in sorted(results):
        held = results[check_id]
        result = held.result if isinstance(held, ResultRef) else held
        values = {k: v for k, v in result.values.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out[check_id] = {"status": result.status.value, "values": values}
    return out


# --------------------------------------------------------------------------------------------
# planning an action (pure): the payload to journal, or Refused with the reason


def authorities(config: Any, *, for_override: bool = False) -> tuple[str, ...]:
    """The named authorities of the config (`rollback.authority`; an optional
    `rollback.override_authority` list takes over for gate overrides)."""
    rollback = getattr(config, "rollback", None)
    if rollback is None:
        return ()
    if for_override:
        special = getattr(rollback, "override_authority", None)
        if special:
            return tuple(special)
    return tuple(getattr(rollback, "authority", ()) or ())


def match_authority(name: str | None, allowed: Sequence[str], what: str) -> str:
    """The configured spelling of `name` (case and spacing forgiven), or Refused."""
    if not allowed:
        raise Refused(f"{what} needs a named authority, and the config names none (rollback.authority)")
    if not name or not name.strip():
        raise Refused(f"{what} needs a named authority: one of {', '.join(allowed)}")
    wanted = " ".join(name.split()).casefold()
    for candidate in allowed:
        if " ".join(candidate.split()).casefold() == wanted:
            return candidate
    raise Refused(f"{name.strip()!r} is not an authority for {what}; the config names {', '.join(allowed)}")


def _steps_by_id(config: Any) -> dict[str, tuple[Any, str]]:
    out: dict[str, tuple[Any, str]] = {s.id: (s, "cutover") for s in getattr(config, "runbook", ())}
    rollback = getattr(config, "rollback", None)
    for s in getattr(rollback, "runbook", ()) if rollback else ():
        out[s.id] = (s, "rollback")
    return out


def runbook_of(config: Any) -> dict[str, str]:
    """step id -> "cutover" or "rollback"."""
    return {k: v[1] for k, v in _steps_by_id(config).items()}


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _already(record: StepRecord, step_id: str) -> str:
    last = record.last
    if record.state is StepState.DONE:
        return f"step {step_id!r} was already completed by {record.ended_by} at {_hhmmss(record.ended_at)}"
    if record.state is StepState.SKIPPED:
        return (f"step {step_id!r} was already skipped by {record.ended_by} at {_hhmmss(record.ended_at)}"
                f" ({record.reason})")
    if record.state is StepState.IN_PROGRESS and last is not None:
        return f"step {step_id!r} is already in progress: started by {last.who} at {_hhmmss(last.ts)}"
    if record.state is StepState.BLOCKED and last is not None:
        return f"step {step_id!r} is blocked since {_hhmmss(last.ts)} by {last.who} ({record.reason})"
    if record.state is StepState.FAILED and last is not None:
        return f"step {step_id!r} failed at {_hhmmss(last.ts)} ({last.who})"
    return f"step {step_id!r} has not been started"


_HOW = {
    Action.START: "started",
    Action.DONE: "completed",
    Action.FAIL: "marked failed",
    Action.SKIP: "skipped",
    Action.BLOCK: "marked blocked",
}


def plan_step_action(
    state: RunbookState,
    config: Any,
    action: Action | str,
    step_id: str,
    *,
    now: datetime,
    results: Mapping[str, ResultRef | CheckResult],
    reason: str | None = None,
    override_authority: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The (kind, payload) that journals `action` on `step_id` in the current run, or Refused.

    Pure: the caller reads state and results, this decides. Refusals name the step, what stands
    in the way and what would be accepted.
    """
    try:
        action = Action(action)
    except ValueError:
        raise Refused(f"unknown action {action!r}; expected one of {', '.join(a.value for a in Action)}") from None
    steps = _steps_by_id(config)
    if step_id not in steps:
        raise Refused(f"no step {step_id!r} in the runbook{_did_you_mean(step_id, steps)}")
    step, book = steps[step_id]
    reason = " ".join((reason or "").split())
    if action in _NEEDS_REASON and not reason:
        raise Refused(f"step {step_id!r} cannot be {_HOW[action]} without a reason; give --reason TEXT")
    run = state.current
    record = run.steps.get(step_id) or StepRecord(step_id, book)
    if record.state not in _ALLOWED_FROM[action]:
        if record.state is StepState.PENDING and action in (Action.DONE, Action.FAIL):
            waiting = [d for d in step.after if not run.state_of(d).finished]
            also = ""
            if waiting:
                also = ", and it waits for " + ", ".join(f"{d!r} ({run.state_of(d).value.lower()})" for d in waiting)
            raise Refused(f"step {step_id!r} cannot be {_HOW[action]}: it has not been started{also}")
        raise Refused(_already(record, step_id))

    rollback = run.rollback
    if book == "rollback" and action is Action.START and rollback is None:
        raise Refused(f"step {step_id!r} is in the rollback runbook, which starts only with a recorded"
                      " ROLLBACK decision (crmctl decide rollback)")
    if book == "cutover" and rollback is not None and action in (Action.START, Action.DONE):
        raise Refused(f"the cutover runbook is closed: rollback was decided at {_hhmmss(rollback.ts)}"
                      f" by {rollback.authority} ({rollback.who})")

    if action is Action.START:
        waiting = [d for d in step.after if not run.state_of(d).finished]
        if waiting:
            shown = ", ".join(f"{d!r} ({run.state_of(d).value.lower()})" for d in waiting)
            raise Refused(f"step {step_id!r} cannot start before {shown}")

    payload: dict[str, Any] = {"run": run.name, "step": step_id, "runbook": book}
    if reason:
        payload["reason"] = reason
    if action is Action.DONE:
        checks = {c.id: c for c in getattr(config, "checks", ())}
        gate = evaluate_gate(step.gate, checks, results, now)
        payload["gate"] = [g.to_json() for g in gate]
        shut = [g for g in gate if not g.ok]
        if shut:
            detail = "; ".join(f"{g.check_id} is {g.why}" for g in shut)
            if override_authority is None:
                raise Refused(f"step {step_id!r} cannot be completed: its gate is not OK ({detail});"
                              " only an override with a reason and a named authority can complete it now")
            if not reason:
                raise Refused(f"overriding the gate of {step_id!r} needs a reason; give --reason TEXT")
            who = match_authority(override_authority, authorities(config, for_override=True),
                                  f"overriding the gate of {step_id!r}")
            payload["override"] = {"authority": who, "reason": reason,
                                   "not_ok": [f"{g.check_id} {g.status.value}" for g in shut]}
        payload["outcomes"] = outcomes_of(results)
    return ACTION_KINDS[action], payload


def plan_run_start(state: RunbookState, name: str) -> tuple[str, dict[str, Any]]:
    """The `run.started` entry for a new run called `name`, or Refused."""
    name = (name or "").strip()
    if not RUN_NAME.fullmatch(name):
        raise Refused(f"{name!r} is not a run name; expected {RUN_NAME_EXPECT}")
    if name in state.runs and (state.runs[name].explicit or state.runs[name].steps):
        run = state.runs[name]
        when = f" (started {_hhmmss(run.anchor)} by {run.started_by or 'the first step'})" if run.anchor else ""
        raise Refused(f"run {name!r} already exists{when}; pick a new name")
    busy = [r.step_id for r in state.current.steps.values() if r.state is StepState.IN_PROGRESS]
    if busy:
        raise Refused(f"step {busy[0]!r} of run {state.current_name!r} is still in progress;"
                      " complete, fail or block it before starting a new run")
    return RUN_STARTED, {"run": name}


# --------------------------------------------------------------------------------------------
# I/O: reading evidence and writing under the rules


async def append_checked(
    store: Any, kind: str, payload: Mapping[str, Any], *, actor: Any,
    kinds: Iterable[str], check: Callable[[list[Any]], None],
) -> Any:
    """`Store.append_checked`: `check` re-validates inside the write transaction, so concurrent
    processes serialise and the second of two conflicting actions is refused, writing nothing."""
    return await store.append_checked(kind, payload, actor=actor, kinds=tuple(kinds), check=check)


async def latest_result_refs(store: Any, check_ids: Iterable[str] = ()) -> dict[str, ResultRef]:
    """The newest result of each of `check_ids` that has one (every check's when empty), with
    the seq and hash of its journal entry: the evidence a verdict cites."""
    found = await store.latest_result_entries(check_ids)
    return {cid: ResultRef(result, seq, digest) for cid, (result, seq, digest) in found.items()}


class RunbookService:
    """Step and run actions of one operator, journalled under the rules (used by ControlRoom and the CLI)."""

    def __init__(self, config: Any, store: Any, clock: Any, actor: Any) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.actor = actor

    async def state(self) -> RunbookState:
        """The runbook state from the whole journal, now."""
        return fold(await self.store.entries(kinds=KINDS), runbook_of(self.config))

    async def act(
        self, action: Action | str, step_id: str, *, reason: str | None = None,
        override_authority: str | None = None,
    ) -> Any:
        """Journals one step transition, or raises Refused (and writes nothing)."""
        checks = [c.id for c in getattr(self.config, "checks", ())]
        results = await latest_result_refs(self.store, checks)
        state = await self.state()
        now = self.clock.now()
        kind, payload = plan_step_action(state, self.config, action, step_id, now=now, results=results,
                                         reason=reason, override_authority=override_authority)
        books = runbook_of(self.config)

        def still_legal(entries: list[Any]) -> None:
            fresh = fold(entries, books)
            if fresh.current_name != payload["run"]:
                raise Refused(f"the current run changed to {fresh.current_name!r} meanwhile; nothing was written")
            # Same rules on the state inside the transaction (the results already judged stay).
            plan_step_action(fresh, self.config, action, step_id, now=now, results=results,
                             reason=reason, override_authority=override_authority)

        return await append_checked(self.store, kind, payload, actor=self.actor, kinds=KINDS, check=still_legal)

    async def start_run(self, name: str) -> Any:
        """Journals `run.started` for a new run, or raises Refused."""
        kind, payload = plan_run_start(await self.state(), name)
        books = runbook_of(self.config)

        def still_legal(entries: list[Any]) -> None:
            plan_run_start(fold(entries, books), name)

        return await append_checked(self.store, kind, payload, actor=self.actor, kinds=KINDS, check=still_legal)
