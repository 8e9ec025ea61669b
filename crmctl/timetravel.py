"""Time travel: reading the journal "as of" a past moment ("what did we know at 02:14?").

Pure functions, no Textual and no I/O: parsing what the operator typed, the list of recent
journal moments to pick from, and the banner every screen carries while it shows the past.
The projections themselves come from `ControlRoom.snapshot(until=...)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Iterable, Sequence

from crmctl.model import Status, utc
from crmctl.views import RESULT_KIND, format_time, status_label

MOMENT_LIMIT = 30
"""How many moments the time-travel dialog lists."""


@dataclass(frozen=True)
class AsOfRequest:
    """What the operator asked for: a moment in time, or a journal sequence number."""

    at: datetime | None = None
    seq: int | None = None


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_SEQ = re.compile(r"^(?:#|seq\s*)?(\d+)$", re.IGNORECASE)


def parse_as_of(text: str, now: datetime) -> AsOfRequest:
    """Reads "02:14", "02:14:30", "2026-11-28 02:14", "#1234" or "1234" (a journal seq).

    A bare clock time means the latest such moment at or before `now` (UTC): at 01:00, "23:30"
    is yesterday's 23:30, since the future has no journal to read.

    Raises:
        ValueError: with a sentence saying what is accepted.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("Type a time (HH:MM or HH:MM:SS, UTC), a date and time, or a journal seq (#123).")
    seq = _SEQ.match(raw)
    if seq and ":" not in raw:
        return AsOfRequest(seq=int(seq.group(1)))
    clock = _CLOCK.match(raw)
    now = utc(now)
    if clock:
        hours, minutes, seconds = int(clock.group(1)), int(clock.group(2)), int(clock.group(3) or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ValueError(f"{raw!r} is not a time of day (HH:MM or HH:MM:SS, UTC).")
        at = datetime.combine(now.date(), time(hours, minutes, seconds), tzinfo=now.tzinfo)
        if at > now:
            at -= timedelta(days=1)
        return AsOfRequest(at=at)
    try:
        at = utc(datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" UTC", "")))
    except ValueError:
        raise ValueError(
            f"{raw!r} is neither a time (HH:MM, UTC), a date and time (2026-11-28 02:14) nor a seq (#123)."
        ) from None
    if at > now:
        raise ValueError(f"{format_time(at)} is in the future: there is no journal of it yet.")
    return AsOfRequest(at=at)


@dataclass(frozen=True)
class JournalMoment:
    """One line of the time-travel list: a moment worth going back to."""

    seq: int
    at: datetime
    text: str
    """ "21:14:03 UTC  #1234  alice  runbook.step.done delta"."""


def journal_moments(entries: Sequence[Any], now: datetime, limit: int = MOMENT_LIMIT) -> list[JournalMoment]:
    """Recent journal moments, newest first: every operator action on its own, results by minute.

    Check results arrive by the hundred; listed one by one they would bury the runbook steps,
    incidents and decisions an operator wants to go back to. So a run of results within one
    minute is one moment ("12 results, 2 not OK"), at its last entry.
    """
    moments: list[JournalMoment] = []
    group: list[Any] = []

    def flush() -> None:
        if not group:
            return
        last = group[-1]
        bad = [e for e in group if _result_status(e) not in (Status.OK, None)]
        if len(group) == 1:
            text = f"result {last.payload.get('check_id', '?')} {_label(_result_status(last))}"
        else:
            text = f"{len(group)} results" + (f", {len(bad)} not OK" if bad else ", all OK")
        moments.append(_moment(last, text, now))
        group.clear()

    for entry in entries:
        if entry.kind == RESULT_KIND:
            if group and _minute(group[-1].ts) != _minute(entry.ts):
                flush()
            group.append(entry)
            continue
        flush()
        moments.append(_moment(entry, _describe(entry), now))
    flush()
    moments.reverse()
    return moments[:limit]


def as_of_banner(as_of: datetime, now: datetime) -> str:
    """The banner of a historical view: "AS OF 02:14:00 UTC — historical view, live updates paused"."""
    return f"AS OF {format_time(as_of, now)} — historical view, live updates paused"


def _moment(entry: Any, text: str, now: datetime) -> JournalMoment:
    when = utc(entry.ts)
    return JournalMoment(entry.seq, when, f"{format_time(when, now)}  #{entry.seq}  {entry.operator}  {text}")


def _describe(entry: Any) -> str:
    payload = entry.payload if isinstance(entry.payload, dict) else {}
    subject = next(
        (str(payload[k]) for k in ("step", "step_id", "incident", "id", "title", "decision", "phase") if payload.get(k)),
        "",
    )
    return f"{entry.kind} {subject}".strip()


def _result_status(entry: Any) -> Status | None:
    try:
        return Status(entry.payload.get("status"))
    except ValueError:
        return None


def _label(status: Status | None) -> str:
    return status_label(status) if status is not None else "?"


def _minute(ts: datetime) -> tuple[int, ...]:
    ts = utc(ts)
    return (ts.year, ts.month, ts.day, ts.hour, ts.minute)


def moments_text(moments: Iterable[JournalMoment]) -> list[str]:
    """The moments as plain lines (for the CLI and tests)."""
    return [m.text for m in moments]


__all__ = ["AsOfRequest", "JournalMoment", "MOMENT_LIMIT", "as_of_banner", "journal_moments", "parse_as_of"]
