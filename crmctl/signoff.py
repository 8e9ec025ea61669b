"""Business and technical sign-off, and lessons learned (Sprint 4.4.4 closure), as journal entries.

A sign-off is a statement by a named person in a role, stamped by the journal (who typed it,
from where, when) and quoting the journal head they signed at, so the record pins down exactly
which evidence was in front of them (docs/journal.md §7: a head hash held outside the file
freezes everything up to it). The check statuses at that moment are recorded too: "signed while
two checks were in BREACH" is something an auditor must be able to see.

Text is scrubbed of secrets and control characters *before* it is journalled: the journal is
append-only, so a pasted token could never be taken out again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from crmctl.identity import Actor
from crmctl.scrubber import Scrubber, neutralise

SIGNOFF_KIND = "signoff.recorded"
LESSON_KIND = "lesson.recorded"
ROLES: tuple[str, ...] = ("business", "technical")
"""Sprint 4.4.4: business acceptance, and technical sign-off (data, integrations, monitoring)."""
LESSON_KINDS: tuple[str, ...] = ("went-well", "improve", "action")

MAX_STATEMENT = 4000
MAX_FIELD = 200


class SignoffError(ValueError):
    """A sign-off or lesson that cannot be recorded as given; the message says what to change."""


@dataclass(frozen=True)
class SignOff:
    """One sign-off as journalled."""

    seq: int
    ts: datetime
    role: str
    name: str
    """Who signs (as they want to appear); the journal's operator is who recorded it."""
    title: str
    statement: str
    operator: str
    host: str
    head_seq: int
    head_hash: str
    checks: Mapping[str, int]
    """Check results by status when signing, e.g. {"OK": 5, "BREACH": 1}."""

    @classmethod
    def from_entry(cls, entry: Any) -> SignOff:
        p = entry.payload
        return cls(
            seq=entry.seq,
            ts=entry.ts,
            role=str(p.get("role", "")),
            name=str(p.get("name", entry.operator)),
            title=str(p.get("title", "")),
            statement=str(p.get("statement", "")),
            operator=entry.operator,
            host=entry.host,
            head_seq=int(p.get("head_seq", 0) or 0),
            head_hash=str(p.get("head_hash", "")),
            checks=dict(p.get("checks", {})),
        )


@dataclass(frozen=True)
class Lesson:
    """One lessons-learned entry as journalled."""

    seq: int
    ts: datetime
    text: str
    category: str
    action: str
    owner: str
    operator: str

    @classmethod
    def from_entry(cls, entry: Any) -> Lesson:
        p = entry.payload
        return cls(
            seq=entry.seq,
            ts=entry.ts,
            text=str(p.get("text", "")),
            category=str(p.get("category", "")),
            action=str(p.get("action", "")),
            owner=str(p.get("owner", "")),
            operator=entry.operator,
        )


def _clean(scrubber: Scrubber | None, value: str | None, limit: int, *, multiline: bool = False) -> str:
    text = (value or "").strip()
    # Control characters become visible text (\x1b) rather than vanish: the journal keeps what
    # was typed, in a form that cannot act on anyone's terminal.
    text = scrubber.text(text, multiline=multiline) if scrubber else neutralise(text, multiline=multiline)
    if len(text) > limit:
        raise SignoffError(f"too long: {len(text)} characters, at most {limit}")
    return text


async def journal_head(store: Any) -> tuple[int, str]:
    """(seq, hash) of the newest journal entry; (0, "") for an empty journal."""
    last = await store.last_seq()
    if last == 0:
        return 0, ""
    entries = await store.entries(last - 1, limit=1)
    return (entries[0].seq, entries[0].hash) if entries else (0, "")


async def record_signoff(
    store: Any,
    actor: Actor,
    *,
    role: str,
    statement: str,
    name: str | None = None,
    title: str | None = None,
    scrubber: Scrubber | None = None,
) -> SignOff:
    """Journals a sign-off (`signoff.recorded`); returns it once it is committed.

    Raises:
        SignoffError: unknown role, empty statement, or a field too long.
    """
    role = (role or "").strip().lower()
    if role not in ROLES:
        raise SignoffError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    text = _clean(scrubber, statement, MAX_STATEMENT, multiline=True)
    if not text:
        raise SignoffError("a sign-off needs a statement (what is accepted, and on what basis)")
    who = _clean(scrubber, name, MAX_FIELD) or actor.operator
    head_seq, head_hash = await journal_head(store)
    results = await store.latest_results()
    checks = dict(sorted(Counter(r.status.value for r in results.values()).items()))
    payload = {
        "role": role,
        "name": who,
        "title": _clean(scrubber, title, MAX_FIELD),
        "statement": text,
        "head_seq": head_seq,
        "head_hash": head_hash,
        "checks": checks,
    }
    entry = await store.append(SIGNOFF_KIND, payload, actor=actor)
    return SignOff.from_entry(entry)


async def record_lesson(
    store: Any,
    actor: Actor,
    *,
    text: str,
    category: str = "improve",
    action: str | None = None,
    owner: str | None = None,
    scrubber: Scrubber | None = None,
) -> Lesson:
    """Journals a lessons-learned entry (`lesson.recorded`).

    Raises:
        SignoffError: empty text, unknown category, or a field too long.
    """
    category = (category or "improve").strip().lower()
    if category not in LESSON_KINDS:
        raise SignoffError(f"category must be one of {', '.join(LESSON_KINDS)}, not {category!r}")
    body = _clean(scrubber, text, MAX_STATEMENT, multiline=True)
    if not body:
        raise SignoffError("a lesson needs some text")
    payload = {
        "text": body,
        "category": category,
        "action": _clean(scrubber, action, MAX_STATEMENT, multiline=True),
        "owner": _clean(scrubber, owner, MAX_FIELD),
    }
    entry = await store.append(LESSON_KIND, payload, actor=actor)
    return Lesson.from_entry(entry)


async def signoffs(store: Any) -> list[SignOff]:
    """Every sign-off in the journal, oldest first."""
    return [SignOff.from_entry(e) for e in await store.entries(kinds=[SIGNOFF_KIND])]


async def lessons(store: Any) -> list[Lesson]:
    """Every lesson in the journal, oldest first."""
    return [Lesson.from_entry(e) for e in await store.entries(kinds=[LESSON_KIND])]


def closure(records: list[SignOff]) -> dict[str, SignOff | None]:
    """The newest sign-off per role (None where a role has not signed): closure needs both."""
    out: dict[str, SignOff | None] = {role: None for role in ROLES}
    for record in records:
        if record.role in out:
            out[record.role] = record
    return out


EXPORTED_KIND = "evidence.exported"
"""Journalled by `crmctl.evidence.export`: where a pack went and the head it froze."""


@dataclass(frozen=True)
class ClosureState:
    """What the Evidence & sign-off screen shows: sign-offs, lessons and earlier exports."""

    signoffs: tuple[SignOff, ...]
    lessons: tuple[Lesson, ...]
    exports: tuple[Any, ...]
    """`evidence.exported` journal entries, oldest first."""

    @property
    def closed(self) -> bool:
        """True once both business and technical sign-off are recorded."""
        return all(closure(list(self.signoffs)).values())


async def closure_state(store: Any, until: datetime | None = None) -> ClosureState:
    """Reads sign-offs, lessons and exports in one pass (as of `until` in a historical view)."""
    entries = await store.entries(kinds=[SIGNOFF_KIND, LESSON_KIND, EXPORTED_KIND], until=until)
    return ClosureState(
        signoffs=tuple(SignOff.from_entry(e) for e in entries if e.kind == SIGNOFF_KIND),
        lessons=tuple(Lesson.from_entry(e) for e in entries if e.kind == LESSON_KIND),
        exports=tuple(e for e in entries if e.kind == EXPORTED_KIND),
    )
