"""The rollback decision: the criteria matrix evaluated live, and decisions recorded by authorities.

Why it is strict:

* A criterion is judged only on evidence. Its check's newest result must be there, must have run
  (not ERROR) and must be fresh (not STALE); otherwise the criterion says HOLD with that reason,
  never GO. A criterion whose expression cannot be evaluated (a value missing from the result,
  null, of the wrong type) also holds. The overall recommendation is the worst criterion.
* The matrix recommends; people decide. A decision is recorded only by an authority the config
  names (`rollback.authority`), with a rationale, and with the matrix as it stood (outcome and
  evidence of every criterion) in the same journal entry. With the two-person rule a proposal
  by one authority is approved by a different authority (and a different person).
* After the point of no return a decision needs an explicit override with a reason: the plan
  said the choice would be gone by then, and the record must show someone knew.
* A recorded ROLLBACK starts the rollback runbook and its SLA clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Mapping, Sequence

from crmctl.expressions import EvaluationError, ExpressionError, parse
from crmctl.model import CheckResult, Status, utc
from crmctl.runbook import (
    DECISION_PROPOSED,
    DECISION_RECORDED,
    KINDS,
    Refused,
    ResultRef,
    RunbookState,
    RunState,
    append_checked,
    fold,
    latest_result_refs,
    match_authority,
    runbook_of,
)
from crmctl.views import format_age, format_number, format_span, format_time, is_stale, shorten

__all__ = [
    "DECISIONS",
    "CriterionRow",
    "DecisionService",
    "Matrix",
    "Outcome",
    "RollbackView",
    "build_matrix",
    "build_rollback_view",
    "criteria_of",
    "decision_lines",
    "evaluate_criterion",
    "plan_decision",
    "two_person_rule",
    "verdict_of",
]

DECISIONS: tuple[str, ...] = ("go", "hold", "rollback")
"""What an authority can decide."""


class Outcome(StrEnum):
    """What one criterion, or the whole matrix, recommends."""

    GO = "GO"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"

    @property
    def severity(self) -> int:
        return {Outcome.GO: 0, Outcome.HOLD: 1, Outcome.ROLLBACK: 2}[self]

    @property
    def glyph(self) -> str:
        return {Outcome.GO: "✔", Outcome.HOLD: "▲", Outcome.ROLLBACK: "✖"}[self]

    @property
    def label(self) -> str:
        """Glyph and word: reads the same without colour."""
        return f"{self.glyph} {self.value}"


@dataclass(frozen=True)
class CriterionRow:
    """One row of the decision matrix at one moment."""

    criterion_id: str
    title: str
    check_id: str
    expression: str
    """As shown: "ROLLBACK if difference_pct > 0.5 · HOLD if difference_pct > 0"."""
    outcome: Outcome
    reason: str
    live: tuple[tuple[str, str], ...]
    """(name, value) of every value the expressions read, plus the check's status."""
    status: Status
    """The check's effective status (STALE applied)."""
    finished: datetime | None
    age_text: str
    evidence: Mapping[str, Any] | None
    """check, reported status, finished, seq and hash of the result judged (None: no result)."""

    @property
    def value_text(self) -> str:
        return " · ".join(f"{k} {v}" for k, v in self.live if k != "status") or "—"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.criterion_id,
            "check": self.check_id,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "status": self.status.value,
            "values": dict(self.live),
        }
        if self.evidence is not None:
            out["evidence"] = dict(self.evidence)
        return out


@dataclass(frozen=True)
class Matrix:
    """The whole matrix and its overall recommendation (the worst criterion)."""

    rows: tuple[CriterionRow, ...]
    overall: Outcome
    reason: str
    now: datetime

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall.value, "reason": self.reason, "criteria": [r.to_json() for r in self.rows]}


def _expression_text(criterion: Any) -> str:
    text = f"ROLLBACK if {criterion.rollback_if}"
    if getattr(criterion, "hold_if", None):
        text += f" · HOLD if {criterion.hold_if}"
    return text


def evaluate_criterion(criterion: Any, check: Any, held: ResultRef | CheckResult | None, now: datetime) -> CriterionRow:
    """Judges one criterion on its check's newest result at `now` (see the module notes)."""
    ref = held if isinstance(held, ResultRef) or held is None else ResultRef(held)
    result = ref.result if ref is not None else None
    every = getattr(check, "every", None)
    expressions = []
    problems = []
    for key in ("rollback_if", "hold_if"):
        text = getattr(criterion, key, None)
        if not text:
            expressions.append(None)
            continue
        try:
            expressions.append(parse(text))
        except ExpressionError as exc:
            expressions.append(None)
            problems.append(f"{key} cannot be read: {exc}")
    names = []
    for expr in expressions:
        for name in expr.names if expr else ():
            if name not in names:
                names.append(name)

    def row(outcome: Outcome, reason: str, status: Status) -> CriterionRow:
        live: list[tuple[str, str]] = []
        if result is not None:
            for name in names:
                live.append((name, _lookup_text(result.values, name)))
        live.append(("status", status.value))
        return CriterionRow(
            criterion_id=criterion.id,
            title=criterion.title,
            check_id=criterion.check,
            expression=_expression_text(criterion),
            outcome=outcome,
            reason=reason,
            live=tuple(live),
            status=status,
            finished=utc(result.finished) if result is not None else None,
            age_text=format_age(result.finished if result is not None else None, now),
            evidence=ref.evidence() if ref is not None else None,
        )

    if result is None or result.status is Status.PENDING:
        return row(Outcome.HOLD, f"no result from {criterion.check} yet: no evidence", Status.PENDING)
    if result.status is Status.ERROR:
        return row(Outcome.HOLD, f"{criterion.check} could not run (ERROR): {shorten(result.explanation, 80)}",
                   Status.ERROR)
    if is_stale(result, every, now):
        return row(Outcome.HOLD, f"evidence is STALE: last result {format_age(result.finished, now)}"
                   f" ({criterion.check} runs every {format_span(every)})", Status.STALE)
    status = result.status
    if problems:
        return row(Outcome.HOLD, problems[0], status)
    env = {**dict(result.values), "status": status.value}
    rollback_if, hold_if = expressions
    try:
        if rollback_if is not None and rollback_if.evaluate(env):
            return row(Outcome.ROLLBACK, f"rollback_if {criterion.rollback_if} is true", status)
    except EvaluationError as exc:
        return row(Outcome.HOLD, f"rollback_if cannot be evaluated: {exc}", status)
    try:
        if hold_if is not None and hold_if.evaluate(env):
            return row(Outcome.HOLD, f"hold_if {criterion.hold_if} is true", status)
    except EvaluationError as exc:
        return row(Outcome.HOLD, f"hold_if cannot be evaluated: {exc}", status)
    return row(Outcome.GO, "no rollback or hold condition holds", status)


def _lookup_text(values: Mapping[str, Any], name: str) -> str:
    current: Any = values
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return "missing"
        current = current[part]
    return format_number(current)


def build_matrix(config: Any, results: Mapping[str, ResultRef | CheckResult], now: datetime) -> Matrix:
    """Every configured criterion judged at `now`; the overall outcome is the worst of them."""
    rollback = getattr(config, "rollback", None)
    criteria = tuple(getattr(rollback, "criteria", ()) or ()) if rollback else ()
    checks = {c.id: c for c in getattr(config, "checks", ())}
    rows = tuple(evaluate_criterion(c, checks.get(c.check), results.get(c.check), now) for c in criteria)
    if not rows:
        return Matrix(rows, Outcome.HOLD, "No rollback criteria are configured: there is no evidence to decide on.",
                      utc(now))
    overall = max((r.outcome for r in rows), key=lambda o: o.severity)
    worst = [r for r in rows if r.outcome is overall]
    if overall is Outcome.GO:
        reason = f"All {len(rows)} criteria GO on fresh evidence."
    else:
        verb = "say ROLLBACK" if overall is Outcome.ROLLBACK else "hold"
        if len(worst) == 1:
            verb = "says ROLLBACK" if overall is Outcome.ROLLBACK else "holds"
        names = ", ".join(r.criterion_id for r in worst[:3]) + (", …" if len(worst) > 3 else "")
        reason = f"{len(worst)} of {len(rows)} criteria {verb}: {names}."
    return Matrix(rows, overall, reason, utc(now))


# --------------------------------------------------------------------------------------------
# recording decisions


def two_person_rule(config: Any) -> bool:
    """True when the config asks for proposer + approver (`rollback.two_person: true`)."""
    return bool(getattr(getattr(config, "rollback", None), "two_person", False))


def plan_decision(
    state: RunbookState,
    config: Any,
    decision: str,
    *,
    authority: str | None,
    rationale: str | None,
    operator: str,
    now: datetime,
    matrix: Matrix,
    approve: bool = False,
    propose: bool = False,
    override_reason: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The (kind, payload) of a proposal or a recorded decision, or Refused (see module notes)."""
    decision = (decision or "").strip().lower()
    if decision not in DECISIONS:
        raise Refused(f"{decision!r} is not a decision; expected one of {', '.join(DECISIONS)}")
    rollback = getattr(config, "rollback", None)
    if rollback is None:
        raise Refused("the config has no rollback section, so it names no decision authority")
    who = match_authority(authority, tuple(rollback.authority), "a go / hold / rollback decision")
    rationale = " ".join((rationale or "").split())
    if not rationale:
        raise Refused("a decision needs a rationale: say why, on what evidence (--rationale TEXT)")
    override = " ".join((override_reason or "").split())
    ponr = getattr(rollback, "point_of_no_return", None)
    if ponr is not None and utc(now) >= utc(ponr) and not override:
        raise Refused(f"the point of no return ({format_time(ponr, now, seconds=False)}) passed"
                      f" {format_span(utc(now) - utc(ponr))} ago; a decision now needs an override with a reason"
                      " (--override --reason TEXT)")
    if approve and propose:
        raise Refused("a decision is either proposed or approved, not both")
    run: RunState = state.current
    done = run.rollback
    if done is not None:
        raise Refused(f"rollback was already decided at {format_time(done.ts, now) if done.ts else '?'} by"
                      f" {done.authority} ({done.who}) in run {run.name!r}; that decision stands")
    payload: dict[str, Any] = {"run": run.name, "decision": decision, "authority": who, "rationale": rationale,
                               "matrix": matrix.to_json()}
    if ponr is not None:
        payload["point_of_no_return"] = utc(ponr).strftime("%Y-%m-%dT%H:%M:%SZ")
    if override:
        payload["override"] = override
    if approve:
        pending = run.pending_proposal
        if pending is None:
            raise Refused(f"nothing to approve: no decision is waiting for approval in run {run.name!r}")
        if pending.decision != decision:
            raise Refused(f"the proposal waiting for approval is {pending.decision.upper()} (by {pending.authority},"
                          f" {pending.who}), not {decision.upper()}")
        if pending.authority == who:
            raise Refused(f"two-person rule: {who} proposed this decision; a different authority must approve it")
        if pending.operator and pending.operator == operator:
            raise Refused(f"two-person rule: {operator} proposed this decision; a different person must approve it")
        payload["approves"] = pending.seq
        payload["proposer"] = pending.authority
        return DECISION_RECORDED, payload
    if propose or two_person_rule(config):
        return DECISION_PROPOSED, payload
    return DECISION_RECORDED, payload


class DecisionService:
    """Records proposals and decisions of one operator under the rules (ControlRoom and CLI)."""

    def __init__(self, config: Any, store: Any, clock: Any, actor: Any) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.actor = actor

    async def matrix(self) -> Matrix:
        """The matrix now, with evidence (result seq and hash) from the journal."""
        checks = [c.id for c in getattr(self.config, "checks", ())]
        refs = await latest_result_refs(self.store, checks)
        return build_matrix(self.config, refs, self.clock.now())

    async def decide(
        self, decision: str, *, authority: str | None, rationale: str | None, approve: bool = False,
        propose: bool = False, override_reason: str | None = None,
    ) -> Any:
        """Journals a proposal or a decision (with the matrix as evidence), or raises Refused."""
        matrix = await self.matrix()
        now = self.clock.now()
        books = runbook_of(self.config)
        state = fold(await self.store.entries(kinds=KINDS), books)
        kwargs = dict(authority=authority, rationale=rationale, operator=self.actor.operator, now=now,
                      matrix=matrix, approve=approve, propose=propose, override_reason=override_reason)
        kind, payload = plan_decision(state, self.config, decision, **kwargs)  # type: ignore[arg-type]

        def still_legal(entries: list[Any]) -> None:
            fresh = fold(entries, books)
            if fresh.current_name != payload["run"]:
                raise Refused(f"the current run changed to {fresh.current_name!r} meanwhile; nothing was written")
            again, _ = plan_decision(fresh, self.config, decision, **kwargs)  # type: ignore[arg-type]
            if again != kind:
                raise Refused("the decision state changed meanwhile; nothing was written")

        return await append_checked(self.store, kind, payload, actor=self.actor, kinds=KINDS, check=still_legal)


def decision_lines(run: RunState, now: datetime) -> list[str]:
    """The decisions and proposals of a run, newest first, one line each (for screens and the CLI)."""
    items: list[tuple[int, str]] = []
    for d in run.decisions:
        when = format_time(d.ts, now) if d.ts else "?"
        extra = f", approving {d.proposer}'s proposal" if d.approves else ""
        extra += f", override: {d.override}" if d.override else ""
        items.append((d.seq, f"{when}  RECORDED {d.decision.upper()} by {d.authority} ({d.who}{extra}): {d.rationale}"))
    pending = run.pending_proposal
    for p in run.proposals:
        when = format_time(p.ts, now) if p.ts else "?"
        status = "WAITING FOR APPROVAL" if p is pending else "proposed"
        items.append((p.seq, f"{when}  {status}: {p.decision.upper()} by {p.authority} ({p.who}): {p.rationale}"))
    return [text for _, text in sorted(items, reverse=True)]


def verdict_of(outcome: Outcome) -> Any:
    """The overview's Verdict for a matrix outcome."""
    from crmctl.views import Verdict

    return {Outcome.GO: Verdict.GO, Outcome.HOLD: Verdict.HOLD, Outcome.ROLLBACK: Verdict.ROLLBACK}[outcome]


def criteria_of(config: Any) -> Sequence[Any]:
    rollback = getattr(config, "rollback", None)
    return tuple(getattr(rollback, "criteria", ()) or ()) if rollback else ()


# --------------------------------------------------------------------------------------------
# the rollback screen's view


@dataclass(frozen=True)
class RollbackView:
    """Everything the rollback screen shows, for one moment."""

    matrix: Matrix
    run: str
    authorities: tuple[str, ...]
    ponr_text: str
    ponr_passed: bool
    forecast_text: str
    warning: str
    sla_text: str
    """"" until a rollback is decided; then the SLA countdown."""
    rollback_text: str
    """"" until a rollback is decided; then who decided it and the rollback runbook's progress."""
    rollback_warning: str
    decisions: tuple[str, ...]
    pending: Any
    """The proposal waiting for a second authority, or None."""
    decided: Any
    """The latest recorded decision of the run, or None."""
    two_person: bool

    @property
    def recommended(self) -> str:
        """The decision the matrix points at ("go", "hold" or "rollback")."""
        return self.matrix.overall.value.lower()


def build_rollback_view(config: Any, entries: Sequence[Any], results: Mapping[str, Any], now: datetime) -> RollbackView:
    """The matrix, the clocks and the decisions of the current run at `now`."""
    from crmctl.timing import build_runbook_view

    matrix = build_matrix(config, results, now)
    state = fold(entries, runbook_of(config))
    run = state.current
    rollback = getattr(config, "rollback", None)
    view = build_runbook_view(config, entries, results, now)
    rollback_text = ""
    if run.rollback is not None:
        d = run.rollback
        back = [r for r in view.rows if r.runbook == "rollback"]
        done = sum(1 for r in back if r.state.finished)
        rollback_text = (f"ROLLBACK decided {format_time(d.ts, now) if d.ts else '?'} by {d.authority} ({d.who});"
                         f" rollback runbook {done}/{len(back)} done")
        if view.rollback_timeline is not None and not view.rollback_timeline.finished:
            rollback_text += (" · forecast finish "
                              f"{format_time(view.rollback_timeline.forecast_finish, now, seconds=False)}")
    return RollbackView(
        matrix=matrix,
        run=run.name,
        authorities=tuple(getattr(rollback, "authority", ()) or ()) if rollback else (),
        ponr_text=view.ponr.text,
        ponr_passed=view.ponr.passed,
        forecast_text=view.forecast_text,
        warning=view.warning,
        sla_text=view.sla.text if view.sla is not None else "",
        rollback_text=rollback_text,
        rollback_warning=view.rollback_warning,
        decisions=tuple(decision_lines(run, now)),
        pending=run.pending_proposal,
        decided=run.latest_decision,
        two_person=two_person_rule(config),
    )
