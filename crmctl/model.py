"""The vocabulary shared by the engine, the checks, the store and the screens."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Mapping


class Status(StrEnum):
    """The status of one check result.

    ERROR means the check could not run (auth, network, throttled past its budget, bad query);
    STALE means the last good result is older than twice the check's cadence. Neither is ever
    drawn as green, and no gate opens on either.
    """

    PENDING = "PENDING"
    OK = "OK"
    WARN = "WARN"
    BREACH = "BREACH"
    ERROR = "ERROR"
    STALE = "STALE"

    @property
    def is_green(self) -> bool:
        """True only for OK: the one status a gate may open on."""
        return self is Status.OK

    @property
    def severity(self) -> int:
        """Orders statuses from best to worst, for "worst of" roll-ups."""
        return _SEVERITY[self]


_SEVERITY = {
    Status.OK: 0,
    Status.PENDING: 1,
    Status.WARN: 2,
    Status.STALE: 3,
    Status.ERROR: 4,
    Status.BREACH: 5,
}


def utc(ts: datetime) -> datetime:
    """Returns `ts` as an aware UTC datetime; naive values are taken to be UTC already."""
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def iso(ts: datetime) -> str:
    """Formats a timestamp the one way crmctl writes them: UTC, microseconds, trailing Z."""
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Parses a timestamp written by `iso` (or any ISO-8601 form) into aware UTC."""
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


@dataclass(frozen=True)
class QueryRecord:
    """One request a check made: the query log behind every result.

    The URL is stored without secrets (no tokens, no credentials in query strings).
    """

    target: str
    """Which side was asked: "dynamics", "source" or an integration id."""
    method: str
    url: str
    status: int | None
    """HTTP status, or None when no response arrived (reset, timeout, SQL)."""
    duration_ms: float
    bytes: int = 0
    started: str = ""
    """ISO timestamp of the request start."""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "url": self.url,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "bytes": self.bytes,
            "started": self.started,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueryRecord:
        return cls(
            target=data.get("target", ""),
            method=data["method"],
            url=data["url"],
            status=data.get("status"),
            duration_ms=float(data.get("duration_ms", 0.0)),
            bytes=int(data.get("bytes", 0)),
            started=data.get("started", ""),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one run of one check, exactly as it is journalled."""

    check_id: str
    kind: str
    status: Status
    started: datetime
    finished: datetime
    explanation: str
    """A short human sentence: "Dynamics has 37 fewer accounts than source; first missing keys: …"."""
    values: Mapping[str, Any] = field(default_factory=dict)
    """Measured figures (JSON-serialisable), e.g. {"source": 100, "target": 63, "missing": 37}."""
    threshold: Mapping[str, Any] = field(default_factory=dict)
    """The thresholds the values were judged against, e.g. {"warn": 0, "breach": 0.001}."""
    requests: int = 0
    """How many requests (HTTP and SQL) the result cost."""
    queries: tuple[QueryRecord, ...] = ()

    @property
    def duration_s(self) -> float:
        return (self.finished - self.started).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "kind": self.kind,
            "status": self.status.value,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "explanation": self.explanation,
            "values": dict(self.values),
            "threshold": dict(self.threshold),
            "requests": self.requests,
            "queries": [q.to_json() for q in self.queries],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            check_id=data["check_id"],
            kind=data["kind"],
            status=Status(data["status"]),
            started=parse_iso(data["started"]),
            finished=parse_iso(data["finished"]),
            explanation=data.get("explanation", ""),
            values=dict(data.get("values", {})),
            threshold=dict(data.get("threshold", {})),
            requests=int(data.get("requests", 0)),
            queries=tuple(QueryRecord.from_json(q) for q in data.get("queries", ())),
        )
