"""The incident register: a fold over `incident.*` journal entries, its transition rules and timers.

Why it is built this way:

* The journal is the register. An incident is nothing but the entries that name it, so every
  session, the CLI, cron and the evidence pack see the same incidents and the same timeline,
  and nothing can be edited after the fact (DESIGN.md §3-4).
* An incident's number is the journal seq of its `incident.raised` entry ("INC-42"): unique
  across processes without a counter anyone has to lock.
* Every transition is written with `Store.append_checked`, whose check re-folds the register
  inside the write transaction. Two operators who press "acknowledge" at once cannot both
  succeed, and "one open incident per check" holds across processes.
* UNKNOWN severity is timed as SEV1: when unsure, assume the worse (Sprint 4.4 triage rule).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from crmctl.clock import Clock, SystemClock
from crmctl.model import CheckResult, iso, parse_iso, utc
from crmctl.safetext import one_line

if TYPE_CHECKING:
    from crmctl.identity import Actor
    from crmctl.journal import JournalEntry

MAX_TITLE = 300
"""Longest incident title kept: one line on the register (a title may quote a server message)."""
RAISED = "incident.raised"
ACKNOWLEDGED = "incident.acknowledged"
MITIGATING = "incident.mitigating"
RESOLVED = "incident.resolved"
CLOSED = "incident.closed"
NOTE = "incident.note"
ESCALATED = "incident.escalated"

INCIDENT_KINDS: tuple[str, ...] = (RAISED, ACKNOWLEDGED, MITIGATING, RESOLVED, CLOSED, NOTE, ESCALATED)
"""Every journal kind the register folds; `append_checked` re-reads exactly these."""

AUTO_RECOVERED = "recovered"
AUTO_RELAPSED = "relapsed"


class Severity(StrEnum):
    """How bad an incident is. UNKNOWN is a real answer during triage, timed like SEV1."""

    SEV1 = "SEV1"
    SEV2 = "SEV2"
    SEV3 = "SEV3"
    SEV4 = "SEV4"
    UNKNOWN = "UNKNOWN"

    @property
    def config_key(self) -> str:
        """The `incidents.severities` key whose timer applies ("when unsure, the higher")."""
        return "sev1" if self is Severity.UNKNOWN else self.value.lower()

    @property
    def rank(self) -> int:
        """Sort order, worst first: UNKNOWN sits with SEV1, just after it."""
        return {"SEV1": 0, "UNKNOWN": 1, "SEV2": 2, "SEV3": 3, "SEV4": 4}[self.value]

    @classmethod
    def parse(cls, text: str | None) -> Severity:
        """Reads "sev1", "SEV1", "1", "unknown" or "?"; None and "" are UNKNOWN.

        Raises:
            ValueError: anything else, naming the accepted forms.
        """
        if text is None or not str(text).strip():
            return cls.UNKNOWN
        value = str(text).strip().upper()
        if value in {"?", "UNKNOWN"}:
            return cls.UNKNOWN
        if value.isdigit():
            value = f"SEV{value}"
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown severity {text!r}; expected sev1, sev2, sev3, sev4 or unknown") from None


class State(StrEnum):
    """Where an incident stands; the order is the only way forward."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"
    CLOSED = "closed"

    @property
    def active(self) -> bool:
        """True until resolved: someone still has to act on it."""
        return self in ACTIVE_STATES


ACTIVE_STATES = frozenset({State.OPEN, State.ACKNOWLEDGED, State.MITIGATING})

_TARGET_STATE = {ACKNOWLEDGED: State.ACKNOWLEDGED, MITIGATING: State.MITIGATING, RESOLVED: State.RESOLVED, CLOSED: State.CLOSED}

ALLOWED_FROM: Mapping[str, frozenset[State]] = {
    ACKNOWLEDGED: frozenset({State.OPEN}),
    MITIGATING: frozenset({State.ACKNOWLEDGED}),
    RESOLVED: frozenset({State.ACKNOWLEDGED, State.MITIGATING}),
    CLOSED: frozenset({State.RESOLVED}),
    NOTE: frozenset({State.OPEN, State.ACKNOWLEDGED, State.MITIGATING, State.RESOLVED}),
    ESCALATED: frozenset({State.OPEN}),
}
"""Which states each transition may start from; anything else is refused with a reason."""

_VERB = {
    ACKNOWLEDGED: "acknowledge",
    MITIGATING: "mark as mitigating",
    RESOLVED: "resolve",
    CLOSED: "close",
    NOTE: "add a note to",
    ESCALATED: "escalate",
}


class IncidentRefused(Exception):
    """A transition the rules do not allow; `str()` is one sentence an operator can act on."""


class DuplicateIncident(IncidentRefused):
    """A second open incident for a check that already has one."""

    def __init__(self, existing: Incident) -> None:
        self.existing = existing
        super().__init__(
            f"{existing.id} is already {existing.state.value} for check {existing.check}"
            f" (raised {iso(existing.raised_at)} by {existing.raised_by}); add a note to it instead."
        )


class UnknownIncident(IncidentRefused):
    """No incident has that number."""


# --------------------------------------------------------------------------------------------
# value types


@dataclass(frozen=True)
class TimelineItem:
    """One entry of an incident's timeline, exactly as journalled."""

    seq: int
    ts: datetime
    operator: str
    kind: str
    text: str
    """What happened, in one line (the note itself for notes)."""
    hash: str = ""
    auto: str | None = None
    """`recovered` / `relapsed` for notes the auto-raiser wrote, else None."""
    ref: int | None = None
    """The journal seq of the check result an auto note is about (makes auto notes idempotent)."""


@dataclass(frozen=True)
class Escalation:
    """A fired escalation timer."""

    at: datetime
    to: str
    due: datetime
    severity: Severity
    seq: int


@dataclass(frozen=True)
class Incident:
    """One incident as the register folds it at some journal position."""

    number: int
    """The seq of the `incident.raised` entry."""
    title: str
    severity: Severity
    state: State
    raised_at: datetime
    raised_by: str
    source: str = "manual"
    """manual | check (a key on a red check) | criterion | auto (a config rule)."""
    owner: str | None = None
    check: str | None = None
    step: str | None = None
    criterion: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """The result that raised it: result_seq, result_hash, status, explanation, values, ..."""
    timeline: tuple[TimelineItem, ...] = ()
    escalations: tuple[Escalation, ...] = ()
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    resolution: str | None = None
    check_recovered: bool = False
    """True after an auto note said the linked check is OK again (and no relapse since)."""
    last_seq: int = 0

    @property
    def id(self) -> str:
        return f"INC-{self.number}"

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def escalated(self) -> bool:
        return bool(self.escalations)

    def respond_within(self, severities: Mapping[str, Any]) -> timedelta | None:
        """The acknowledgement deadline of this severity (UNKNOWN uses sev1's)."""
        spec = severities.get(self.severity.config_key)
        return getattr(spec, "respond", None)

    def escalate_to(self, severities: Mapping[str, Any]) -> str:
        spec = severities.get(self.severity.config_key)
        return getattr(spec, "escalate_to", None) or "the escalation contact"

    def escalation_due(self, severities: Mapping[str, Any]) -> datetime | None:
        """When the acknowledgement timer fires; None once acknowledged or already escalated."""
        if self.state is not State.OPEN or self.escalated:
            return None
        respond = self.respond_within(severities)
        return None if respond is None else self.raised_at + respond


def _text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return str(value) if value not in (None, "") else None


def _number(payload: Mapping[str, Any]) -> int | None:
    value = payload.get("incident")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------------------------
# the fold


class Register:
    """Every incident, folded from the journal; feed it entries in seq order (repeats ignored)."""

    def __init__(self) -> None:
        self._incidents: dict[int, Incident] = {}
        self.last_seq = 0

    @classmethod
    def from_entries(cls, entries: Iterable[JournalEntry]) -> Register:
        register = cls()
        register.apply_all(entries)
        return register

    def apply_all(self, entries: Iterable[JournalEntry]) -> Register:
        for entry in entries:
            self.apply(entry)
        return self

    def apply(self, entry: JournalEntry) -> None:
        """Folds one entry in. Entries not about incidents, or already seen, are ignored.

        A malformed entry (written by a buggy or foreign tool) is skipped rather than crashing
        every screen: the journal is append-only, so it can never be repaired, only outlived.
        """
        if entry.kind not in INCIDENT_KINDS:
            return
        if entry.kind == RAISED:
            if entry.seq in self._incidents:
                return
            self._incidents[entry.seq] = _raised(entry)
        else:
            number = _number(entry.payload)
            held = self._incidents.get(number) if number is not None else None
            if held is None or entry.seq <= held.last_seq:
                return
            self._incidents[held.number] = _transition(held, entry)
        self.last_seq = max(self.last_seq, entry.seq)

    def put(self, incident: Incident) -> None:
        """Takes an incident folded elsewhere from a fresher read (a desk's write), so a
        follower need not wait for the change feed to learn what it just did itself."""
        held = self._incidents.get(incident.number)
        if held is None or incident.last_seq >= held.last_seq:
            self._incidents[incident.number] = incident
            self.last_seq = max(self.last_seq, incident.last_seq)

    def get(self, number: int) -> Incident:
        """The incident INC-`number`.

        Raises:
            UnknownIncident: no incident has that number.
        """
        try:
            return self._incidents[number]
        except KeyError:
            raise UnknownIncident(f"There is no incident INC-{number}.") from None

    def __contains__(self, number: object) -> bool:
        return number in self._incidents

    def __len__(self) -> int:
        return len(self._incidents)

    def all(self) -> list[Incident]:
        """Every incident, active first, then worst severity, then oldest."""
        return sorted(self._incidents.values(), key=lambda i: (not i.active, i.severity.rank, i.number))

    def active(self) -> list[Incident]:
        return [i for i in self.all() if i.active]

    def active_for_check(self, check_id: str) -> Incident | None:
        """The one active incident linked to `check_id`, if any (dedup key)."""
        found = [i for i in self._incidents.values() if i.active and i.check == check_id]
        return min(found, key=lambda i: i.number) if found else None


def _raised(entry: JournalEntry) -> Incident:
    p = entry.payload
    try:
        severity = Severity.parse(p.get("severity"))
    except ValueError:
        severity = Severity.UNKNOWN
    title = _text(p, "title") or "(untitled incident)"
    note = _text(p, "note")
    item = TimelineItem(entry.seq, entry.ts, entry.operator, RAISED, f"Raised {severity.value}: {title}" + (f" — {note}" if note else ""), entry.hash)
    return Incident(
        number=entry.seq,
        title=title,
        severity=severity,
        state=State.OPEN,
        raised_at=entry.ts,
        raised_by=entry.operator,
        source=_text(p, "source") or "manual",
        owner=_text(p, "owner"),
        check=_text(p, "check"),
        step=_text(p, "step"),
        criterion=_text(p, "criterion"),
        evidence=dict(p.get("evidence") or {}),
        timeline=(item,),
        last_seq=entry.seq,
    )


def _transition(held: Incident, entry: JournalEntry) -> Incident:
    p = entry.payload
    kind = entry.kind
    changes: dict[str, Any] = {"last_seq": entry.seq}
    note = _text(p, "note") or _text(p, "text")
    severity = held.severity
    if p.get("severity"):
        try:
            severity = Severity.parse(p["severity"])
        except ValueError:
            pass
    if severity is not held.severity:
        changes["severity"] = severity
    retriage = f" (severity {held.severity.value} → {severity.value})" if severity is not held.severity else ""
    auto = _text(p, "auto")
    if kind in _TARGET_STATE:
        changes["state"] = _TARGET_STATE[kind]
        if kind == ACKNOWLEDGED:
            changes["acknowledged_at"] = entry.ts
            changes["owner"] = _text(p, "owner") or held.owner or entry.operator
            text = f"Acknowledged; owner {changes['owner']}"
        elif kind == MITIGATING:
            text = "Mitigating"
        elif kind == RESOLVED:
            changes["resolved_at"] = entry.ts
            changes["resolution"] = note
            text = "Resolved"
        else:
            changes["closed_at"] = entry.ts
            text = "Closed"
        text += retriage + (f": {note}" if note else "")
    elif kind == ESCALATED:
        to = _text(p, "escalate_to") or "the escalation contact"
        due = parse_iso(p["due"]) if isinstance(p.get("due"), str) else entry.ts
        escalation = Escalation(entry.ts, to, due, held.severity, entry.seq)
        changes["escalations"] = held.escalations + (escalation,)
        respond = p.get("respond") or ""
        text = f"Escalated to {to}: not acknowledged within {respond}".rstrip(": ") if respond else f"Escalated to {to}"
    else:  # NOTE
        if _text(p, "owner"):
            changes["owner"] = _text(p, "owner")
            if not note:
                note = f"Owner now {changes['owner']}"
        if auto == AUTO_RECOVERED:
            changes["check_recovered"] = True
        elif auto == AUTO_RELAPSED:
            changes["check_recovered"] = False
        text = (note or "") + retriage
    ref = p.get("result_seq") if isinstance(p.get("result_seq"), int) else None
    item = TimelineItem(entry.seq, entry.ts, entry.operator, kind, text.strip(), entry.hash, auto, ref)
    changes["timeline"] = held.timeline + (item,)
    return replace(held, **changes)


# --------------------------------------------------------------------------------------------
# the rules


def validate(register: Register, kind: str, payload: Mapping[str, Any]) -> None:
    """Refuses (raises IncidentRefused) a transition the register does not allow now.

    Pure: the same function runs before a write (to fail fast) and inside the write transaction
    on the freshly read journal (to be right when another process got there first).
    """
    if kind == RAISED:
        if not _text(payload, "title"):
            raise IncidentRefused("An incident needs a title.")
        Severity.parse(payload.get("severity"))
        check = _text(payload, "check")
        if check:
            existing = register.active_for_check(check)
            if existing is not None:
                raise DuplicateIncident(existing)
        return
    if kind not in ALLOWED_FROM:
        raise IncidentRefused(f"{kind} is not an incident transition.")
    number = _number(payload)
    if number is None:
        raise IncidentRefused("The transition does not name an incident.")
    incident = register.get(number)
    if payload.get("severity"):
        Severity.parse(payload["severity"])
    if incident.state not in ALLOWED_FROM[kind]:
        raise IncidentRefused(_refusal(incident, kind))
    if kind == RESOLVED and not _text(payload, "note"):
        raise IncidentRefused(f"Say how {incident.id} was resolved (a resolution note is required).")
    if kind == NOTE and not (_text(payload, "note") or payload.get("severity") or _text(payload, "owner")):
        raise IncidentRefused("A note needs some text.")
    if kind == NOTE and _text(payload, "auto"):
        ref = payload.get("result_seq")
        if ref is not None and any(item.ref == ref for item in incident.timeline if item.auto):
            raise IncidentRefused(f"{incident.id} already has the note for result {ref}.")
        if _text(payload, "auto") == AUTO_RECOVERED and incident.check_recovered:
            raise IncidentRefused(f"{incident.id} already says its check recovered.")
        if _text(payload, "auto") == AUTO_RELAPSED and not incident.check_recovered:
            raise IncidentRefused(f"{incident.id}'s check has not recovered, so it cannot relapse.")
    if kind == ESCALATED and incident.escalated:
        first = incident.escalations[0]
        raise IncidentRefused(f"{incident.id} was already escalated to {first.to} at {iso(first.at)}.")


def _refusal(incident: Incident, kind: str) -> str:
    verb = _VERB[kind]
    if kind == ACKNOWLEDGED and incident.state is not State.OPEN:
        who = incident.owner or "someone"
        when = f" at {iso(incident.acknowledged_at)}" if incident.acknowledged_at else ""
        return f"{incident.id} is already {incident.state.value} (acknowledged by {who}{when})."
    if kind == MITIGATING and incident.state is State.OPEN:
        return f"Acknowledge {incident.id} first: mitigation needs an owner."
    if kind == RESOLVED and incident.state is State.OPEN:
        return f"Acknowledge {incident.id} before resolving it."
    if kind == CLOSED and incident.state.active:
        return f"Resolve {incident.id} before closing it."
    if kind == ESCALATED:
        return f"{incident.id} is {incident.state.value}: only an unacknowledged incident escalates."
    return f"Cannot {verb} {incident.id}: it is {incident.state.value}."


def checker(kind: str, payload: Mapping[str, Any]):  # noqa: ANN201 - Callable[[list], None]
    """The `check` for `Store.append_checked`: folds what is committed now and validates."""

    def check(entries: list[JournalEntry]) -> None:
        validate(Register.from_entries(entries), kind, payload)

    return check


# --------------------------------------------------------------------------------------------
# evidence: the check result an incident is about


@dataclass(frozen=True)
class ResultRef:
    """A check result together with the journal entry that holds it (seq and hash prove it)."""

    result: CheckResult
    seq: int
    hash: str

    def evidence(self, *, max_values: int = 40) -> dict[str, Any]:
        """What an incident records of the result: enough to judge it without the journal.

        Long lists (missing keys) are cut to their first 20 items and large mappings to
        `max_values` keys; the seq and hash point at the whole result in the journal.
        """
        values: dict[str, Any] = {}
        for index, (key, value) in enumerate(self.result.values.items()):
            if index >= max_values:
                values["…"] = f"{len(self.result.values) - max_values} more values in result {self.seq}"
                break
            values[key] = _cut(value)
        return {
            "result_seq": self.seq,
            "result_hash": self.hash,
            "check": self.result.check_id,
            "status": self.result.status.value,
            "explanation": self.result.explanation,
            "values": values,
            "threshold": dict(self.result.threshold),
            "finished": iso(self.result.finished),
        }


def _cut(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_cut(v) for v in value[:20]] + ([f"… {len(value) - 20} more"] if len(value) > 20 else [])
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k): _cut(v) for k, v in items[:20]}
        if len(items) > 20:
            out["…"] = f"{len(items) - 20} more"
        return out
    if isinstance(value, str) and len(value) > 500:
        return value[:499] + "…"
    return value


class _EntryReader(Protocol):
    async def last_seq(self) -> int: ...

    async def entries(self, after_seq: int = 0, *, kinds: Iterable[str] | None = None, until: datetime | None = None,
                      limit: int | None = None) -> list[JournalEntry]: ...

    async def latest_result_entries(self, check_ids: Iterable[str] = ()) -> dict[str, tuple[CheckResult, int, str]]: ...


async def latest_result_refs(store: _EntryReader, check_ids: Iterable[str] = ()) -> dict[str, ResultRef]:
    """The newest result of each of `check_ids` that has one (every check's when empty), with
    the seq and hash of its journal entry: the evidence a verdict cites."""
    found = await store.latest_result_entries(check_ids)
    return {cid: ResultRef(result, seq, digest) for cid, (result, seq, digest) in found.items()}


# --------------------------------------------------------------------------------------------
# writing: the desk operators act through, and the escalation timers


NOTIFY_KINDS: frozenset[str] = frozenset({RAISED, ACKNOWLEDGED, ESCALATED, RESOLVED})
"""Transitions that are announced to Teams / the webhook (notes and closing are not)."""


@dataclass(frozen=True)
class IncidentEvent:
    """A committed transition, as the notifier announces it."""

    kind: str
    seq: int
    """The journal seq of the transition entry."""
    hash: str
    ts: datetime
    operator: str
    incident: Incident
    """The incident as it stands after the transition."""


class EventSink(Protocol):
    """Where committed transitions go to be announced (the notifier); must never block."""

    def submit(self, event: IncidentEvent) -> None: ...


class _Writer(_EntryReader, Protocol):
    async def append_checked(self, kind: str, payload: Mapping[str, Any], *, actor: Actor, kinds: Iterable[str],
                             check: Any) -> JournalEntry: ...


class IncidentDesk:
    """Raises incidents and moves them on, journalling each step under the rules.

    Used by the control room (screens), the CLI and the auto-raiser alike, so the same rules
    and the same evidence apply whichever surface an operator acts from.
    """

    def __init__(
        self,
        config: Any,
        store: _Writer,
        *,
        actor: Actor,
        clock: Clock | None = None,
        sink: EventSink | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.actor = actor
        self.clock = clock or SystemClock()
        self.sink = sink
        self._scrubber: Any = None

    @property
    def severities(self) -> Mapping[str, Any]:
        return self.config.incidents.severities

    async def register(self) -> Register:
        """The register as the journal holds it now."""
        return Register.from_entries(await self.store.entries(kinds=INCIDENT_KINDS))

    async def write(self, kind: str, payload: Mapping[str, Any]) -> Incident:
        """Journals one transition if the rules allow it at commit time; returns the incident after it.

        Raises:
            IncidentRefused: the transition is not allowed (nothing was written).
        """
        payload = self._scrubbed(payload)
        folded: list[Register] = []

        def check(entries: list[JournalEntry]) -> None:
            register = Register.from_entries(entries)
            validate(register, kind, payload)
            folded.append(register)

        entry = await self.store.append_checked(kind, dict(payload), actor=self.actor, kinds=INCIDENT_KINDS, check=check)
        register = folded[-1]
        register.apply(entry)
        number = entry.seq if kind == RAISED else int(payload["incident"])
        incident = register.get(number)
        if self.sink is not None and kind in NOTIFY_KINDS:
            self.sink.submit(IncidentEvent(kind, entry.seq, entry.hash, entry.ts, entry.operator, incident))
        return incident

    def _scrubbed(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Operator text with secrets and terminal escapes taken out before it is journalled:
        the journal is append-only, so a pasted token could never be removed again."""
        if self._scrubber is None:
            from crmctl.scrubber import Scrubber

            self._scrubber = Scrubber.for_config(self.config)
        out = dict(payload)
        for key in ("title", "note", "owner"):
            if isinstance(out.get(key), str):
                out[key] = self._scrubber.text(out[key], multiline=False)
        if isinstance(out.get("evidence"), Mapping):
            out["evidence"] = self._scrubber.value(out["evidence"])
        return out

    # ---------------------------------------------------------------- raising

    async def raise_incident(
        self,
        title: str,
        *,
        severity: Severity | str | None = None,
        check: str | None = None,
        step: str | None = None,
        criterion: str | None = None,
        owner: str | None = None,
        note: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        source: str = "manual",
    ) -> Incident:
        """Opens an incident. With `check`, refused while another is active for that check."""
        sev = severity if isinstance(severity, Severity) else Severity.parse(severity)
        payload: dict[str, Any] = {"title": one_line(title, MAX_TITLE), "severity": sev.value, "source": source}
        for key, value in (("check", check), ("step", step), ("criterion", criterion), ("owner", owner), ("note", note)):
            if value:
                payload[key] = value
        if evidence:
            payload["evidence"] = dict(evidence)
        return await self.write(RAISED, payload)

    async def raise_from_result(
        self,
        ref: ResultRef,
        *,
        severity: Severity | str | None = None,
        source: str = "check",
        title: str | None = None,
        criterion: str | None = None,
        step: str | None = None,
        note: str | None = None,
    ) -> Incident:
        """Opens an incident about a red result, with that result as evidence."""
        result = ref.result
        check_title = self._check_title(result.check_id)
        return await self.raise_incident(
            title or f"{result.check_id} {result.status.value}: {check_title}",
            severity=severity,
            check=result.check_id,
            step=step or self._gated_step(result.check_id),
            criterion=criterion,
            note=note,
            evidence=ref.evidence(),
            source=source,
        )

    async def raise_from_check(
        self, check_id: str, *, severity: Severity | str | None = None, title: str | None = None
    ) -> Incident:
        """The `i` key on the Checks screen: an incident from the check's newest result.

        Raises:
            IncidentRefused: the check has no result, its result is not BREACH or ERROR, or an
                incident is already active for it.
        """
        refs = await latest_result_refs(self.store, [check_id])
        ref = refs.get(check_id)
        if ref is None:
            raise IncidentRefused(f"{check_id} has no result yet: there is no evidence to raise an incident on.")
        if ref.result.status.value not in ("BREACH", "ERROR"):
            raise IncidentRefused(
                f"{check_id} is {ref.result.status.value}: incidents are raised from BREACH or ERROR results."
            )
        return await self.raise_from_result(ref, severity=severity, source="check", title=title)

    async def raise_from_criterion(self, criterion_id: str, *, severity: Severity | str | None = None) -> Incident:
        """An incident from a rollback criterion: its check's newest result is the evidence."""
        rollback = getattr(self.config, "rollback", None)
        criteria = {c.id: c for c in getattr(rollback, "criteria", ())}
        criterion = criteria.get(criterion_id)
        if criterion is None:
            raise IncidentRefused(f"There is no rollback criterion {criterion_id!r}.")
        refs = await latest_result_refs(self.store, [criterion.check])
        ref = refs.get(criterion.check)
        if ref is None:
            raise IncidentRefused(f"{criterion.check} has no result yet: there is no evidence for {criterion_id}.")
        return await self.raise_from_result(
            ref, severity=severity, source="criterion", criterion=criterion_id,
            title=f"{criterion.title} ({criterion_id}: {ref.result.status.value})",
        )

    def _check_title(self, check_id: str) -> str:
        for check in getattr(self.config, "checks", ()):
            if check.id == check_id:
                return getattr(check, "title", None) or check.kind
        return check_id

    def _gated_step(self, check_id: str) -> str | None:
        """The first runbook step this check gates: the step the red result holds up."""
        for step in getattr(self.config, "runbook", ()):
            if check_id in getattr(step, "gate", ()):
                return step.id
        return None

    # ---------------------------------------------------------------- moving on

    async def acknowledge(
        self, number: int, *, owner: str | None = None, severity: Severity | str | None = None, note: str | None = None
    ) -> Incident:
        """Takes ownership (default: the acting operator) and stops the escalation timer."""
        payload: dict[str, Any] = {"incident": number, "owner": owner or self.actor.operator}
        return await self.write(ACKNOWLEDGED, _extra(payload, severity=severity, note=note))

    async def mitigate(self, number: int, *, note: str | None = None) -> Incident:
        return await self.write(MITIGATING, _extra({"incident": number}, note=note))

    async def resolve(self, number: int, note: str) -> Incident:
        """Marks it resolved; `note` says how (required)."""
        return await self.write(RESOLVED, _extra({"incident": number}, note=note))

    async def close(self, number: int, *, note: str | None = None) -> Incident:
        return await self.write(CLOSED, _extra({"incident": number}, note=note))

    async def note(
        self, number: int, text: str, *, severity: Severity | str | None = None, owner: str | None = None
    ) -> Incident:
        """Adds a line to the timeline; may re-triage the severity or hand over ownership."""
        return await self.write(NOTE, _extra({"incident": number}, note=text, severity=severity, owner=owner))


def _extra(payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    for key, value in extra.items():
        if value is None or value == "":
            continue
        if key == "severity":
            value = (value if isinstance(value, Severity) else Severity.parse(value)).value
        payload[key] = " ".join(value.split()) if key == "note" and isinstance(value, str) else value
    return payload


class Escalator:
    """Fires the per-severity acknowledgement timers and journals `incident.escalated`.

    `tick` is idempotent across processes: every session (and cron) may tick, and exactly one
    escalation per incident is recorded, because the refusal is decided inside the write.
    """

    def __init__(self, desk: IncidentDesk) -> None:
        self.desk = desk

    async def tick(self, now: datetime | None = None) -> list[Incident]:
        """Escalates every open incident whose timer has run out at `now`; returns those fired here."""
        desk = self.desk
        now = utc(now or desk.clock.now())
        fired: list[Incident] = []
        for incident in (await desk.register()).active():
            due = incident.escalation_due(desk.severities)
            if due is None or due > now:
                continue
            respond = incident.respond_within(desk.severities)
            payload = {
                "incident": incident.number,
                "severity": incident.severity.value,
                "escalate_to": incident.escalate_to(desk.severities),
                "due": iso(due),
                "respond": _span(respond) if respond else "",
            }
            try:
                fired.append(await desk.write(ESCALATED, payload))
            except IncidentRefused:
                continue  # acknowledged or escalated by someone else a moment ago
        return fired


def _span(delta: timedelta) -> str:
    from crmctl.views import format_span

    return format_span(delta)


# --------------------------------------------------------------------------------------------
# what the screens and the CLI show


def escalation_text(incident: Incident, severities: Mapping[str, Any], now: datetime) -> str:
    """The escalation countdown in words: "→ Cutover Lead in 12 min 3 s", "OVERDUE 2 min", ..."""
    from crmctl.views import format_span, format_time

    if incident.escalated:
        first = incident.escalations[0]
        return f"escalated to {first.to} {format_time(first.at, now, seconds=False)}"
    due = incident.escalation_due(severities)
    if due is None:
        return "—" if incident.state is not State.OPEN else "no timer"
    left = due - utc(now)
    to = incident.escalate_to(severities)
    if left <= timedelta(0):
        return f"OVERDUE {format_span(-left)} → {to}"
    return f"→ {to} in {format_span(left)}"


def matches(pattern: str, check_id: str) -> bool:
    """Glob match of a rule's `check:` pattern against a check id (`account.*`, `*`)."""
    return fnmatch.fnmatchcase(check_id, pattern)


def summary_line(incident: Incident) -> str:
    """One line for lists, cron mail and notifications."""
    parts = [incident.id, incident.severity.value, incident.state.value, incident.title]
    if incident.check:
        parts.append(f"check {incident.check}")
    if incident.owner:
        parts.append(f"owner {incident.owner}")
    return " · ".join(parts)


__all__ = [
    "ACKNOWLEDGED",
    "ACTIVE_STATES",
    "CLOSED",
    "DuplicateIncident",
    "ESCALATED",
    "Escalation",
    "Escalator",
    "EventSink",
    "INCIDENT_KINDS",
    "Incident",
    "IncidentDesk",
    "IncidentEvent",
    "IncidentRefused",
    "MITIGATING",
    "NOTE",
    "NOTIFY_KINDS",
    "RAISED",
    "RESOLVED",
    "Register",
    "ResultRef",
    "Severity",
    "State",
    "TimelineItem",
    "UnknownIncident",
    "checker",
    "escalation_text",
    "latest_result_refs",
    "matches",
    "summary_line",
    "validate",
]
