"""Hypercare: the go-live baseline frozen at sign-off, daily status runs, Day 1 / 7 / 30 checkpoints.

Why it is built this way:

* The baseline is the figure everyone signed off on, so it is journalled once (`hypercare.baseline`)
  with a SHA-256 over its canonical content and the seq/hash of every result it was taken from;
  later drift is always measured against that exact, provable set of numbers. Replacing it needs
  a reason and is itself journalled.
* Metrics are read generically from check results: every numeric value of every check, named
  `<check id>.<value>` and filed under counts, KPI aggregates, latency or integrations by the
  check's kind and the value's name, plus request-latency percentiles from the results' query
  logs. New check kinds join the baseline without code here. ERROR results contribute nothing:
  a figure that could not be measured must not become the yardstick.
* `run_hypercare` is what cron runs daily: re-run the pack, judge drift against per-metric
  tolerances, journal one `hypercare.status` entry, and exit like `crmctl check`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from crmctl.incidents import ResultRef, latest_result_refs, matches
from crmctl.journal import JournalEntry
from crmctl.model import CheckResult, Status, iso, utc

BASELINE_KIND = "hypercare.baseline"
STATUS_KIND = "hypercare.status"
HYPERCARE_KINDS: tuple[str, ...] = (BASELINE_KIND, STATUS_KIND)

SIGNOFF_KINDS: tuple[str, ...] = ("signoff.recorded", "runbook.step.done")
"""Entries that mean "signed off": a sign-off record, or the sign-off runbook step done."""

EXIT_OK, EXIT_BREACH, EXIT_ERROR = 0, 1, 3
"""As `crmctl check`: 1 wins over 3 (a breach is news even when something else is blind)."""

META_KEYS = frozenset({
    "partitions", "completed_partitions", "samples", "measured", "slo_p95_ms", "last_error_code",
    "snapshot_hint", "backlog_exceeded", "copied", "archived",
})
"""Numeric values that describe how a check measured, not what it measured: never metrics."""

CATEGORIES: tuple[str, ...] = ("counts", "kpi", "latency", "integrations", "other")

_LATENCY_KINDS = {"whoami", "api_latency", "latency", "probe", "http_probe"}
_INTEGRATION_KINDS = {"system_jobs", "integration", "integration_health", "plugin_traces"}


class BaselineRefused(Exception):
    """A baseline cannot be frozen as asked (one exists; no results to take it from)."""


# --------------------------------------------------------------------------------------------
# metrics


@dataclass(frozen=True)
class Metric:
    """One figure of the baseline or of a status run."""

    name: str
    value: float
    category: str
    check: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "category": self.category, "check": self.check}


def classify(kind: str, key: str) -> str:
    """The category a value belongs to (for the screen's grouping and the docs)."""
    if "error_rate" in key:
        return "integrations"
    if kind in _INTEGRATION_KINDS:
        return "integrations"
    if key.endswith("_ms") or "latency" in key or kind in _LATENCY_KINDS:
        return "latency"
    if kind.startswith("kpi"):
        return "kpi"
    if kind in {"row_count", "reconcile", "duplicates", "nulls", "orphans", "delta", "write_freeze"}:
        return "counts"
    return "other"


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the definition the latency checks use)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def metrics_of(results: Iterable[CheckResult]) -> dict[str, Metric]:
    """Every metric the results carry, by name, in a stable order.

    ERROR (and PENDING) results are skipped: their values are not measurements.
    """
    out: dict[str, Metric] = {}
    durations: dict[str, list[float]] = {}
    for result in sorted(results, key=lambda r: r.check_id):
        if result.status in (Status.ERROR, Status.PENDING):
            continue
        for key, raw in result.values.items():
            value = _numeric(raw)
            if value is None or key in META_KEYS:
                continue
            name = f"{result.check_id}.{key}"
            out[name] = Metric(name, value, classify(result.kind, key), result.check_id)
        for query in result.queries:
            if query.status is not None and 200 <= query.status < 300:
                durations.setdefault(query.target, []).append(query.duration_ms)
    for target, values in sorted(durations.items()):
        for p in (50, 95, 99):
            name = f"requests.{target}.p{p}_ms"
            out[name] = Metric(name, round(percentile(values, p), 3), "latency", None)
    return out


def content_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of a baseline's content (everything but the hash)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# the baseline


@dataclass(frozen=True)
class Baseline:
    """A frozen go-live baseline, as journalled."""

    seq: int
    entry_hash: str
    """The journal entry's own chain hash."""
    content_hash: str
    """SHA-256 of the baseline's content (`baseline_hash` in the payload)."""
    ts: datetime
    operator: str
    reason: str
    metrics: Mapping[str, Metric]
    checks: Mapping[str, Mapping[str, Any]]
    replaces: int | None = None

    @classmethod
    def from_entry(cls, entry: JournalEntry) -> Baseline:
        p = entry.payload
        metrics = {
            name: Metric(name, float(m["value"]), str(m.get("category", "other")), m.get("check"))
            for name, m in (p.get("metrics") or {}).items()
        }
        return cls(
            seq=entry.seq,
            entry_hash=entry.hash,
            content_hash=str(p.get("baseline_hash", "")),
            ts=entry.ts,
            operator=entry.operator,
            reason=str(p.get("reason", "")),
            metrics=metrics,
            checks=dict(p.get("checks") or {}),
            replaces=p.get("replaces"),
        )

    @property
    def intact(self) -> bool:
        """True when the stored content still hashes to the stored `baseline_hash`."""
        content = {
            "metrics": {n: m.to_json() for n, m in self.metrics.items()},
            "checks": {k: dict(v) for k, v in self.checks.items()},
        }
        return content_hash(content) == self.content_hash


def baseline_payload(refs: Mapping[str, ResultRef], *, reason: str, go_live: date | None,
                     replaces: int | None = None) -> dict[str, Any]:
    """The `hypercare.baseline` payload for these results (with its content hash)."""
    checks = {
        check_id: {
            "status": ref.result.status.value,
            "kind": ref.result.kind,
            "finished": iso(ref.result.finished),
            "result_seq": ref.seq,
            "result_hash": ref.hash,
        }
        for check_id, ref in sorted(refs.items())
    }
    metrics = {n: m.to_json() for n, m in metrics_of(r.result for r in refs.values()).items()}
    content = {"metrics": metrics, "checks": checks}
    payload: dict[str, Any] = {
        **content,
        "baseline_hash": content_hash(content),
        "reason": reason,
        "go_live": go_live.isoformat() if go_live else None,
        "excluded": sorted(c for c, ref in refs.items() if ref.result.status in (Status.ERROR, Status.PENDING)),
    }
    if replaces is not None:
        payload["replaces"] = replaces
    return payload


def current_baseline(entries: Iterable[JournalEntry]) -> Baseline | None:
    """The baseline in force: the newest `hypercare.baseline` entry."""
    latest = None
    for entry in entries:
        if entry.kind == BASELINE_KIND:
            latest = entry
    return Baseline.from_entry(latest) if latest is not None else None


async def freeze_baseline(
    config: Any,
    store: Any,
    *,
    actor: Any,
    reason: str = "sign-off",
    replace: bool = False,
) -> Baseline:
    """Freezes the go-live baseline from every check's newest result.

    Refused (BaselineRefused, nothing written) when a baseline exists and `replace` is False,
    decided inside the write so two processes signing off at once freeze exactly one; and
    when no check has a result at all.
    """
    checks = [c.id for c in getattr(config, "checks", ())]
    refs = await latest_result_refs(store, checks)
    refs = {k: v for k, v in refs.items() if k in checks} if checks else refs
    if not refs:
        raise BaselineRefused("No check has a result yet: run the checks before freezing a baseline.")
    existing = current_baseline(await store.entries(kinds=(BASELINE_KIND,)))
    hypercare = getattr(config, "hypercare", None)
    payload = baseline_payload(refs, reason=" ".join(reason.split()) or "manual",
                               go_live=getattr(hypercare, "go_live", None),
                               replaces=existing.seq if (replace and existing) else None)

    def check(entries: list[JournalEntry]) -> None:
        held = current_baseline(entries)
        if held is None:
            return
        if not replace:
            raise BaselineRefused(
                f"A go-live baseline is already frozen (journal seq {held.seq}, {iso(held.ts)} by {held.operator});"
                " replacing it needs --replace and a reason."
            )
        if payload.get("replaces") != held.seq:
            raise BaselineRefused(f"The baseline changed meanwhile (now seq {held.seq}); look again before replacing it.")

    entry = await store.append_checked(BASELINE_KIND, payload, actor=actor, kinds=(BASELINE_KIND,), check=check)
    return Baseline.from_entry(entry)


async def freeze_on_signoff(config: Any, store: Any, entry: JournalEntry, *, actor: Any) -> Baseline | None:
    """Freezes the baseline when `entry` is a sign-off and none exists yet; else does nothing.

    A sign-off is a `signoff.recorded` entry, or `runbook.step.done` for a step in the
    sign-off phase (or with id `signoff`).
    """
    if entry.kind not in SIGNOFF_KINDS:
        return None
    if entry.kind == "runbook.step.done":
        step_id = str(entry.payload.get("step") or entry.payload.get("step_id") or "")
        steps = {s.id: s for s in getattr(config, "runbook", ())}
        step = steps.get(step_id)
        phase = str(getattr(step, "phase", "") or "").lower().replace("_", "-")
        if step_id != "signoff" and phase not in {"sign-off", "signoff"}:
            return None
    try:
        return await freeze_baseline(config, store, actor=actor, reason=f"sign-off (journal seq {entry.seq})")
    except BaselineRefused:
        return None


# --------------------------------------------------------------------------------------------
# drift


@dataclass(frozen=True)
class Drift:
    """One metric against the baseline."""

    metric: str
    category: str
    baseline: float | None
    current: float | None
    tolerance: Any | None = None

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return round(self.current - self.baseline, 9)

    @property
    def pct(self) -> float | None:
        """Drift in percent of the baseline (None when the baseline is 0 or missing)."""
        if self.delta is None or not self.baseline:
            return None
        return round(self.delta / abs(self.baseline) * 100, 4)

    @property
    def ok(self) -> bool:
        """Within tolerance; a metric that vanished or appeared fails only if it has one."""
        tol = self.tolerance
        if tol is None:
            return True
        if self.delta is None:
            return False
        if tol.max_abs is not None and abs(self.delta) > tol.max_abs:
            return False
        if tol.max_pct is not None:
            if self.pct is None:
                return self.delta == 0
            if abs(self.pct) > tol.max_pct:
                return False
        return True

    @property
    def changed(self) -> bool:
        return self.delta is None or self.delta != 0

    def to_json(self) -> dict[str, Any]:
        tol = self.tolerance
        return {
            "metric": self.metric,
            "category": self.category,
            "baseline": self.baseline,
            "current": self.current,
            "delta": self.delta,
            "pct": self.pct,
            "tolerance": None if tol is None else {"metric": tol.metric, "max_pct": tol.max_pct, "max_abs": tol.max_abs},
            "ok": self.ok,
        }


def tolerance_for(metric: str, tolerances: Sequence[Any]) -> Any | None:
    return next((t for t in tolerances if matches(t.metric, metric)), None)


def compare(baseline: Mapping[str, Metric], current: Mapping[str, Metric], tolerances: Sequence[Any] = ()) -> list[Drift]:
    """Every metric of either side, judged; in name order."""
    out = []
    for name in sorted(set(baseline) | set(current)):
        b, c = baseline.get(name), current.get(name)
        category = (c or b).category  # type: ignore[union-attr]
        out.append(Drift(name, category, b.value if b else None, c.value if c else None, tolerance_for(name, tolerances)))
    return out


# --------------------------------------------------------------------------------------------
# daily status runs


@dataclass(frozen=True)
class StatusRun:
    """One `hypercare.status` entry, read back."""

    seq: int
    ts: datetime
    operator: str
    day: int
    date: date
    checkpoint: str | None
    verdict: str
    exit_code: int
    baseline_seq: int | None
    metrics: Mapping[str, float]
    drift: tuple[Mapping[str, Any], ...]
    checks: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_entry(cls, entry: JournalEntry) -> StatusRun:
        p = entry.payload
        return cls(
            seq=entry.seq,
            ts=entry.ts,
            operator=entry.operator,
            day=int(p.get("day", 0)),
            date=date.fromisoformat(str(p.get("date"))) if p.get("date") else entry.ts.date(),
            checkpoint=p.get("checkpoint"),
            verdict=str(p.get("verdict", "")),
            exit_code=int(p.get("exit_code", EXIT_ERROR)),
            baseline_seq=p.get("baseline_seq"),
            metrics={k: float(v) for k, v in (p.get("metrics") or {}).items()},
            drift=tuple(p.get("drift") or ()),
            checks=dict(p.get("checks") or {}),
        )

    @property
    def failing(self) -> list[str]:
        return [d["metric"] for d in self.drift if not d.get("ok", True)]


def go_live_start(go_live: date) -> datetime:
    return datetime.combine(go_live, time(0, 0), tzinfo=timezone.utc)


def day_of(go_live: date, when: datetime) -> int:
    """Days since go-live (go-live day is Day 0)."""
    return (utc(when).date() - go_live).days


def checkpoint_label(offset: timedelta) -> str:
    days = offset / timedelta(days=1)
    return f"Day {days:g}" if days >= 1 else f"+{offset}"


def checkpoint_days(hypercare: Any) -> dict[int, str]:
    """{day number: label} of the configured checkpoints (Day 1 / Day 7 / Day 30)."""
    out = {}
    for offset in getattr(hypercare, "checkpoints", ()):
        due = go_live_start(hypercare.go_live) + offset
        out[(due.date() - hypercare.go_live).days] = checkpoint_label(offset)
    return out


def status_payload(
    config: Any,
    refs: Mapping[str, ResultRef],
    baseline: Baseline | None,
    now: datetime,
) -> dict[str, Any]:
    """The `hypercare.status` payload of a run whose results are `refs`."""
    hypercare = getattr(config, "hypercare", None)
    go_live = getattr(hypercare, "go_live", None)
    results = [r.result for r in refs.values()]
    current = metrics_of(results)
    tolerances = getattr(hypercare, "tolerances", ()) if hypercare else ()
    drift = compare(baseline.metrics, current, tolerances) if baseline else []
    statuses = {r.check_id: r.status.value for r in results}
    breach = any(s == "BREACH" for s in statuses.values()) or any(not d.ok for d in drift)
    error = baseline is None or any(s in ("ERROR", "PENDING", "STALE") for s in statuses.values())
    if breach:
        verdict, code = "FAIL", EXIT_BREACH
    elif error:
        verdict, code = ("NO BASELINE" if baseline is None else "ERROR"), EXIT_ERROR
    else:
        verdict, code = "PASS", EXIT_OK
    day = day_of(go_live, now) if go_live else None
    labels = checkpoint_days(hypercare) if hypercare else {}
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    return {
        "date": utc(now).date().isoformat(),
        "day": day,
        "checkpoint": labels.get(day) if day is not None else None,
        "baseline_seq": baseline.seq if baseline else None,
        "baseline_hash": baseline.content_hash if baseline else None,
        "checks": {
            check_id: {"status": ref.result.status.value, "result_seq": ref.seq, "result_hash": ref.hash}
            for check_id, ref in sorted(refs.items())
        },
        "summary": dict(sorted(counts.items())),
        "metrics": {n: m.value for n, m in current.items()},
        "drift": [d.to_json() for d in drift if d.changed or not d.ok],
        "verdict": verdict,
        "exit_code": code,
    }


@dataclass(frozen=True)
class HypercareRun:
    """What `run_hypercare` did: the journalled entry and how the process should exit."""

    entry: JournalEntry
    status: StatusRun
    results: tuple[CheckResult, ...]

    @property
    def exit_code(self) -> int:
        return self.status.exit_code


async def run_hypercare(
    config: Any,
    store: Any,
    run_checks: Callable[[], Awaitable[Sequence[CheckResult]]],
    *,
    actor: Any,
    clock: Any,
) -> HypercareRun:
    """Re-runs the check pack, judges it against the baseline, and journals `hypercare.status`.

    The seq and hash of every fresh result are recorded (read back from the journal after the
    run), so the day's status entry points at the exact evidence it judged.
    """
    before = await store.last_seq()
    results = list(await run_checks())
    ran = {r.check_id for r in results}
    refs: dict[str, ResultRef] = {}
    for entry in await store.entries(before, kinds=("check.result",)):
        result = CheckResult.from_json(entry.payload)
        if result.check_id in ran:
            refs[result.check_id] = ResultRef(result, entry.seq, entry.hash)
    baseline = current_baseline(await store.entries(kinds=(BASELINE_KIND,)))
    payload = status_payload(config, refs, baseline, clock.now())
    entry = await store.append(STATUS_KIND, payload, actor=actor)
    return HypercareRun(entry, StatusRun.from_entry(entry), tuple(results))


# --------------------------------------------------------------------------------------------
# the view: checkpoints, drift table, drift over time


@dataclass(frozen=True)
class CheckpointView:
    label: str
    day: int
    due: date
    state: str
    """PASS / FAIL / ERROR / NO BASELINE (from that day's run), DUE (today, not run yet),
    UPCOMING, or MISSED (the day passed without a run)."""
    detail: str
    run: StatusRun | None = None


@dataclass(frozen=True)
class HypercareView:
    """Everything the Hypercare screen and `crmctl hypercare status` show, at `now`."""

    configured: bool
    go_live: date | None
    day: int | None
    baseline: Baseline | None
    checkpoints: tuple[CheckpointView, ...]
    latest: StatusRun | None
    drift: tuple[Drift, ...]
    """The latest run's metrics against the baseline (changed or failing first)."""
    series: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Per metric, its drift from the baseline at each status run, oldest first."""
    runs: tuple[StatusRun, ...] = ()


def build_view(config: Any, entries: Iterable[JournalEntry], now: datetime) -> HypercareView:
    """Projects the hypercare entries of the journal at `now` (pure; no I/O)."""
    hypercare = getattr(config, "hypercare", None)
    baseline = None
    runs: list[StatusRun] = []
    for entry in entries:
        if entry.kind == BASELINE_KIND:
            baseline = Baseline.from_entry(entry)
        elif entry.kind == STATUS_KIND:
            runs.append(StatusRun.from_entry(entry))
    if hypercare is None:
        return HypercareView(False, None, None, baseline, (), runs[-1] if runs else None, (), {}, tuple(runs))
    go_live = hypercare.go_live
    today = utc(now).date()
    by_day: dict[int, StatusRun] = {}
    for run in runs:
        by_day[run.day] = run  # the latest run of a day stands for it
    checkpoints = []
    for day, label in sorted(checkpoint_days(hypercare).items()):
        due = go_live + timedelta(days=day)
        run = by_day.get(day)
        if run is not None:
            failing = run.failing
            detail = f"{len(failing)} out of tolerance" if failing else f"{len(run.drift)} drifted, all ok"
            if run.verdict == "FAIL" and not failing:
                detail = "a check in BREACH"
            if run.verdict in ("ERROR", "NO BASELINE"):
                detail = "no baseline yet" if run.verdict == "NO BASELINE" else "a check could not run"
            checkpoints.append(CheckpointView(label, day, due, run.verdict, detail, run))
        elif due > today:
            checkpoints.append(CheckpointView(label, day, due, "UPCOMING", f"in {(due - today).days} d ({due:%m-%d})"))
        elif due == today:
            checkpoints.append(CheckpointView(label, day, due, "DUE", "today, not run yet"))
        else:
            checkpoints.append(CheckpointView(label, day, due, "MISSED", "no status run that day"))
    latest = runs[-1] if runs else None
    drift: tuple[Drift, ...] = ()
    series: dict[str, tuple[float, ...]] = {}
    if baseline is not None and latest is not None:
        current = {n: Metric(n, v, baseline.metrics[n].category if n in baseline.metrics else "other") for n, v in latest.metrics.items()}
        judged = compare(baseline.metrics, current, hypercare.tolerances)
        drift = tuple(sorted(judged, key=lambda d: (d.ok, not d.changed, CATEGORIES.index(d.category) if d.category in CATEGORIES else 9, d.metric)))
        for name, metric in baseline.metrics.items():
            points = tuple(round(run.metrics[name] - metric.value, 6) for run in runs
                           if run.baseline_seq == baseline.seq and name in run.metrics)
            if points:
                series[name] = points
    return HypercareView(True, go_live, (today - go_live).days, baseline, tuple(checkpoints), latest, drift, series, tuple(runs))


def format_drift(d: Drift) -> str:
    """ "+3 (+0.024 %)" / "−2" / "missing" / "new"."""
    if d.baseline is None:
        return "new"
    if d.current is None:
        return "missing"
    delta = d.delta or 0.0
    text = f"{delta:+,.6g}"
    if d.pct is not None and delta:
        text += f" ({d.pct:+.3g} %)"
    return text


def format_tolerance(tol: Any | None) -> str:
    if tol is None:
        return "—"
    parts = []
    if tol.max_pct is not None:
        parts.append(f"±{tol.max_pct:g} %")
    if tol.max_abs is not None:
        parts.append(f"±{tol.max_abs:g}")
    return " & ".join(parts)


__all__ = [
    "BASELINE_KIND",
    "Baseline",
    "BaselineRefused",
    "CATEGORIES",
    "CheckpointView",
    "Drift",
    "HYPERCARE_KINDS",
    "HypercareRun",
    "HypercareView",
    "Metric",
    "STATUS_KIND",
    "StatusRun",
    "build_view",
    "checkpoint_days",
    "classify",
    "compare",
    "content_hash",
    "current_baseline",
    "format_drift",
    "format_tolerance",
    "freeze_baseline",
    "freeze_on_signoff",
    "metrics_of",
    "run_hypercare",
    "status_payload",
]
