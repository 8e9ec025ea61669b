"""The cutover night the demo world tells, as instants.

Every instant is defined relative to the default demo `now` (2026-11-28T21:30:00Z, before the
point of no return at 23:00). A caller passing another `now` shifts the whole story by the
same amount, so "the freeze was 3.5 hours ago" stays true whatever the clock says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

DEMO_NOW = datetime(2026, 11, 28, 21, 30, tzinfo=timezone.utc)
"""Cutover night, 90 minutes before the point of no return."""
POINT_OF_NO_RETURN = datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)

_TIMES: dict[str, str] = {
    "history_start": "2012-01-09T08:00:00Z",   # oldest record in the legacy CRM
    "history_end": "2026-11-20T17:00:00Z",     # newest ordinary record before the load
    "load_start": "2026-11-26T18:00:00Z",      # bulk load begins (accounts first)
    "accounts_end": "2026-11-27T03:00:00Z",
    "contacts_start": "2026-11-27T05:00:00Z",
    "contacts_end": "2026-11-28T07:00:00Z",
    "opps_start": "2026-11-28T00:30:00Z",
    "opps_end": "2026-11-28T12:30:00Z",
    "retry_start": "2026-11-28T09:10:00Z",     # re-run of the failed account batch
    "retry_end": "2026-11-28T09:40:00Z",
    "fixup_start": "2026-11-28T10:30:00Z",     # second pass that sets account.primarycontactid
    "fixup_end": "2026-11-28T11:15:00Z",
    "rehearsal_start": "2026-11-28T15:05:00Z",  # smoke-test records left behind by rehearsal 3
    "rehearsal_end": "2026-11-28T15:40:00Z",
    "marketing_start": "2026-11-28T16:20:00Z",  # Marketing Sync switched on too early
    "marketing_end": "2026-11-28T17:20:00Z",
    "watermark": "2026-11-28T17:45:00Z",       # last watermark: the final delta extracts after it
    "freeze_at": "2026-11-28T18:00:00Z",       # source write freeze announced and enforced
    "delta_start": "2026-11-28T18:20:00Z",     # final incremental delta load
    "delta_end": "2026-11-28T18:55:00Z",
    "snapshot_at": "2026-11-28T01:30:00Z",     # RetrieveTotalRecordCount snapshot (20 h old)
    "now": "2026-11-28T21:30:00Z",
}


def parse_z(text: str) -> int:
    """'YYYY-MM-DDTHH:MM:SSZ' -> epoch seconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def fmt(ts: int) -> str:
    """Epoch seconds -> 'YYYY-MM-DDTHH:MM:SSZ', the one timestamp form both databases hold."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class Timeline:
    """The instants of one generated world, in epoch seconds (integers keep generation fast)."""

    history_start: int
    history_end: int
    load_start: int
    accounts_end: int
    contacts_start: int
    contacts_end: int
    opps_start: int
    opps_end: int
    retry_start: int
    retry_end: int
    fixup_start: int
    fixup_end: int
    rehearsal_start: int
    rehearsal_end: int
    marketing_start: int
    marketing_end: int
    watermark: int
    freeze_at: int
    delta_start: int
    delta_end: int
    snapshot_at: int
    now: int

    @classmethod
    def at(cls, now: datetime | None = None) -> Timeline:
        """The demo timeline, shifted so that its `now` is the given instant (whole seconds)."""
        base = parse_z(_TIMES["now"])
        if now is None:
            offset = 0
        else:
            aware = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
            offset = int(aware.timestamp()) - base
        return cls(**{name: parse_z(text) + offset for name, text in _TIMES.items()})

    def iso(self, name: str) -> str:
        return fmt(getattr(self, name))

    def dt(self, name: str) -> datetime:
        """An instant as an aware UTC datetime."""
        return datetime.fromtimestamp(getattr(self, name), tz=timezone.utc)
