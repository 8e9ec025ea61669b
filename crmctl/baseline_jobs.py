"""System-job (asyncoperation) analysis for baselines: batch windows, integration health, peak hours.

Pure functions over the rows Dynamics returned, so that every figure in a baseline can be
recomputed by hand from the same rows (and tested without a server). Durations come from the
documented `startedon` / `completedon` columns (dataverse.md §8); `executiontimespan` has no
documented unit and is not used.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from crmctl.baseline_stats import percentile
from crmctl.model import iso, parse_iso

JOB_COLUMNS: tuple[str, ...] = (
    "name",
    "operationtype",
    "statecode",
    "statuscode",
    "createdon",
    "startedon",
    "completedon",
    "retrycount",
    "errorcode",
    "friendlymessage",
)
"""What a baseline reads of each system job; never `message` (up to 100,000 characters each)."""

SUCCEEDED, FAILED, CANCELED = 30, 31, 32
COMPLETED_STATE = 3

MESSAGE_CHARS = 160
"""Error messages are cut to this many characters: enough to recognise, not a data dump."""


def like_pattern(name_like: str) -> re.Pattern[str]:
    """A compiled, case-insensitive regex for a SQL LIKE pattern (`%` any run, `_` one character).

    Dataverse compares names case-insensitively; so does this.
    """
    out = []
    for ch in name_like:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def duration_s(row: Mapping[str, Any]) -> float | None:
    """completedon - startedon in seconds for a completed job; None when either is missing."""
    started, completed = _when(row.get("startedon")), _when(row.get("completedon"))
    if started is None or completed is None or completed < started:
        return None
    return (completed - started).total_seconds()


def outcome(row: Mapping[str, Any]) -> str:
    """"succeeded", "failed", "canceled" or "pending" (not completed yet)."""
    status = row.get("statuscode")
    if status == SUCCEEDED:
        return "succeeded"
    if status == FAILED:
        return "failed"
    if status == CANCELED:
        return "canceled"
    return "pending"


@dataclass(frozen=True)
class JobWindow:
    """How long one named job takes and when it runs: the "batch job window" of Sprint 5.1 §4.3."""

    name: str
    jobs: int
    succeeded: int
    failed: int
    canceled: int
    pending: int
    first_start: str | None
    last_end: str | None
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    busy_s: float
    """Sum of the completed jobs' durations: how much of the window the job kept the queue busy."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def job_windows(rows: Iterable[Mapping[str, Any]], names: Sequence[str] = ()) -> list[JobWindow]:
    """One window per job name (optionally only names matching one of the LIKE patterns `names`),
    longest p95 first."""
    patterns = [like_pattern(n) for n in names]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        name = str(row.get("name") or "(unnamed)")
        if patterns and not any(p.fullmatch(name) for p in patterns):
            continue
        groups.setdefault(name, []).append(row)
    out = []
    for name, items in groups.items():
        outcomes = Counter(outcome(r) for r in items)
        durations = [d for d in (duration_s(r) for r in items) if d is not None]
        starts = [t for t in (_when(r.get("startedon")) for r in items) if t is not None]
        ends = [t for t in (_when(r.get("completedon")) for r in items) if t is not None]
        out.append(
            JobWindow(
                name=name,
                jobs=len(items),
                succeeded=outcomes["succeeded"],
                failed=outcomes["failed"],
                canceled=outcomes["canceled"],
                pending=outcomes["pending"],
                first_start=iso(min(starts)) if starts else None,
                last_end=iso(max(ends)) if ends else None,
                p50_s=round(percentile(durations, 50), 3) if durations else None,
                p95_s=round(percentile(durations, 95), 3) if durations else None,
                max_s=round(max(durations), 3) if durations else None,
                busy_s=round(sum(durations), 3),
            )
        )
    out.sort(key=lambda w: (-(w.p95_s or 0.0), w.name))
    return out


@dataclass(frozen=True)
class IntegrationFigures:
    """Throughput and failure / retry analysis of one integration's system jobs."""

    id: str
    name_like: str
    jobs: int
    completed: int
    succeeded: int
    failed: int
    pending: int
    per_hour: float
    """Completed jobs per hour over the baseline window: the integration's throughput."""
    failure_rate: float | None
    """failed / completed; None when nothing completed."""
    retried: int
    """Jobs that needed at least one retry."""
    retries: int
    """Retries in total."""
    retried_then_succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    top_errors: tuple[dict[str, Any], ...]
    slo_p95_ms: float | None = None
    slo_error_rate: float | None = None
    resolution_ms: float = 0.0
    """How coarse the durations are: 1000 when every timestamp is a whole second (Dataverse
    stores job times to the second), so a p95 of "1000 ms" means anything from 0 to 2 s."""

    @property
    def latency_verdict(self) -> bool | None:
        """p95 within the SLO: True/False only when that holds whatever the timestamps' rounding;
        None when there is no SLO, no duration, or the resolution cannot decide."""
        if self.slo_p95_ms is None or self.p95_ms is None:
            return None
        if self.p95_ms + self.resolution_ms <= self.slo_p95_ms:
            return True
        if self.p95_ms - self.resolution_ms > self.slo_p95_ms:
            return False
        return None

    @property
    def meets_slo(self) -> bool | None:
        """True/False against the configured SLO, None when nothing can be decided."""
        verdicts = [v for v in (self.latency_verdict,) if v is not None]
        if self.slo_error_rate is not None and self.failure_rate is not None:
            verdicts.append(self.failure_rate <= self.slo_error_rate)
        return all(verdicts) if verdicts else None

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["top_errors"] = [dict(e) for e in self.top_errors]
        data["latency_within_slo"] = self.latency_verdict
        data["meets_slo"] = self.meets_slo
        return data


def integration_figures(
    integration_id: str,
    name_like: str,
    rows: Iterable[Mapping[str, Any]],
    window: timedelta,
    *,
    slo_p95_ms: float | None = None,
    slo_error_rate: float | None = None,
    top: int = 3,
) -> IntegrationFigures:
    """Figures of the jobs whose name matches `name_like`, over a window of `window`."""
    pattern = like_pattern(name_like)
    mine = [r for r in rows if pattern.fullmatch(str(r.get("name") or ""))]
    outcomes = Counter(outcome(r) for r in mine)
    completed = outcomes["succeeded"] + outcomes["failed"] + outcomes["canceled"]
    durations_ms = [d * 1000 for d in (duration_s(r) for r in mine) if d is not None]
    retry_counts = [_int(r.get("retrycount")) for r in mine]
    errors: Counter[tuple[int | None, str]] = Counter()
    for row in mine:
        if outcome(row) == "failed" or row.get("errorcode") not in (None, 0):
            code = row.get("errorcode")
            text = str(row.get("friendlymessage") or "")[:MESSAGE_CHARS]
            errors[(code if isinstance(code, int) else None, text)] += 1
    top_errors = tuple(
        {"errorcode": code, "hex": _hex(code), "message": text, "jobs": n}
        for (code, text), n in errors.most_common(top)
    )
    hours = max(window.total_seconds() / 3600, 1e-9)
    stamps = [t for r in mine for t in (_when(r.get("startedon")), _when(r.get("completedon"))) if t]
    whole_seconds = bool(stamps) and all(t.microsecond == 0 for t in stamps)
    return IntegrationFigures(
        id=integration_id,
        name_like=name_like,
        jobs=len(mine),
        completed=completed,
        succeeded=outcomes["succeeded"],
        failed=outcomes["failed"],
        pending=outcomes["pending"],
        per_hour=round(completed / hours, 3),
        failure_rate=round(outcomes["failed"] / completed, 4) if completed else None,
        retried=sum(1 for n in retry_counts if n > 0),
        retries=sum(retry_counts),
        retried_then_succeeded=sum(
            1 for r, n in zip(mine, retry_counts) if n > 0 and outcome(r) == "succeeded"
        ),
        p50_ms=round(percentile(durations_ms, 50), 1) if durations_ms else None,
        p95_ms=round(percentile(durations_ms, 95), 1) if durations_ms else None,
        top_errors=top_errors,
        slo_p95_ms=slo_p95_ms,
        slo_error_rate=slo_error_rate,
        resolution_ms=1000.0 if whole_seconds else 0.0,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _hex(code: int | None) -> str | None:
    """Dataverse error codes are negative 32-bit ints; people search for them as 0x8004...."""
    return None if code is None else f"0x{code & 0xFFFFFFFF:08X}"


def peak_hours(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """Jobs created in each UTC hour of the day (24 counts): the peak-hour profile."""
    counts = [0] * 24
    for row in rows:
        created = _when(row.get("createdon"))
        if created is not None:
            counts[created.hour] += 1
    return counts
