"""App-level messages: how news from workers reaches the screens."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from crmctl.model import CheckResult
from crmctl.views import Snapshot


@dataclass
class SnapshotUpdated(Message, bubble=False):
    """The journal moved on: here is everything the screens know of it now.

    Posted by the journal-feed worker for every batch the store's change feed delivers. Each
    snapshot includes all earlier ones, so a queued snapshot is simply replaced by a newer one:
    a flood of results costs one repaint, not one per result.
    """

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotUpdated)


@dataclass
class ChecksFinished(Message, bubble=False):
    """A run started from this session (`r`, or a re-run of one check) has finished.

    Only used to tell the operator; the results themselves arrive through the journal feed,
    like everyone else's.
    """

    results: list[CheckResult]
    only: tuple[str, ...] | None


@dataclass
class HistoryLoaded(Message, bubble=False):
    """The journal as it stood at a past moment has been read (time travel, key t).

    `snapshot.as_of` says which moment; the app ignores a load a newer request has overtaken.
    """

    snapshot: Snapshot
