"""Performance baselines (Sprint 5.1): capture them within the request budget, journal, compare.

A baseline is one journal entry of kind `baseline.captured`, named by the operator ("pre-tuning",
"day-7"). It holds the raw latency samples of every configured key query (`slos:`) and of WhoAmI
(the floor under every other call), so that any later comparison can estimate the noise from
the samples themselves; batch job windows and integration figures from the system jobs of the
window; the slowest calls in the journal's query log; and the hourly profile of system-job
volumes. Everything is read GET-only through the target's shared limiter, behind a hard cap of
its own (`BudgetCap`): a baseline is taken during business hours and must never starve the
cutover's checks of their request budget.
"""

from __future__ import annotations

import heapq
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Mapping, Sequence

from crmctl.baseline_jobs import JOB_COLUMNS, integration_figures, job_windows, peak_hours
from crmctl.baseline_stats import (
    METHOD,
    NO_CHANGE,
    CompareSettings,
    compare_samples,
    summarise,
)
from crmctl.clock import Clock, SystemClock
from crmctl.config import Config
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.errors import BudgetExhausted, ConnectorError, DeadlineExceeded
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.querylog import QueryLog, redact_url
from crmctl.identity import Actor
from crmctl.model import QueryRecord, iso, parse_iso

CAPTURED_KIND = "baseline.captured"
COMPARED_KIND = "baseline.compared"
FORMAT = 1

WHOAMI_ID = "WhoAmI"
"""The id under which WhoAmI is sampled: the cheapest authenticated call, the latency floor."""

DEFAULT_SHARE = 0.2
"""By default a capture may spend a fifth of the target's 5-minute request budget."""
DEFAULT_WINDOW = timedelta(hours=24)
MAX_JOB_ROWS = 50_000
"""System jobs read at most per capture (10 pages): a busy org has millions; the window's most
recent are what a baseline describes, and the cap is reported when it bites."""
TOP_N = 10


class BudgetCap:
    """A hard cap on the requests of one capture, in front of the target's shared limiter.

    Every attempt (retries included) first reserves one request of the cap, then takes a slot of
    the shared `TargetLimiter` like any check would: the capture counts against the shared
    budget *and* never exceeds its own share of it.
    """

    def __init__(self, limiter: TargetLimiter, cap: int) -> None:
        self.limiter = limiter
        self.cap = max(0, cap)
        self.spent = 0
        self.clock = limiter.clock
        self.name = limiter.name

    @asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[None]:
        if self.spent >= self.cap:
            raise BudgetExhausted(f"The baseline's share of the request budget ({self.cap} requests) is spent.")
        self.spent += 1  # reserved before waiting, so concurrent samples can never overshoot
        entered = False
        try:
            async with self.limiter.slot(deadline):
                entered = True
                yield
        finally:
            if not entered:
                self.spent -= 1  # the shared limiter refused: no request was sent

    def defer_until(self, monotonic_ts: float) -> None:
        self.limiter.defer_until(monotonic_ts)

    def deadline_after(self, seconds: float) -> float:
        return self.limiter.deadline_after(seconds)


# --------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class QueryBaseline:
    """The measured latency of one key query (or WhoAmI) in one baseline."""

    id: str
    query: str
    """Redacted, relative to the Web API root."""
    planned: int
    tried: int
    durations_ms: tuple[float, ...]
    """Latency of each measured sample (its successful attempt), in the order taken."""
    errors: int
    retried: int
    requests: int
    statuses: Mapping[str, int]
    slo_p95_ms: float | None = None
    first_error: str | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.tried if self.tried else None

    @property
    def throughput_rps(self) -> float | None:
        """Sequential throughput: measured samples per second of time spent answering them."""
        busy = sum(self.durations_ms) / 1000
        return len(self.durations_ms) / busy if busy > 0 else None

    @property
    def meets_slo(self) -> bool | None:
        summary = summarise(self.durations_ms)
        if self.slo_p95_ms is None or summary is None:
            return None
        return summary.p95 <= self.slo_p95_ms

    def to_json(self) -> dict[str, Any]:
        summary = summarise(self.durations_ms)
        return {
            "id": self.id,
            "query": self.query,
            "planned": self.planned,
            "tried": self.tried,
            "measured": len(self.durations_ms),
            "errors": self.errors,
            "error_rate": None if self.error_rate is None else round(self.error_rate, 4),
            "retried": self.retried,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            **(summary.to_json() if summary else {"n": 0}),
            "throughput_rps": None if self.throughput_rps is None else round(self.throughput_rps, 2),
            "slo_p95_ms": self.slo_p95_ms,
            "meets_slo": self.meets_slo,
            "first_error": self.first_error,
            "durations_ms": [round(d, 2) for d in self.durations_ms],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueryBaseline:
        return cls(
            id=str(data["id"]),
            query=str(data.get("query", "")),
            planned=int(data.get("planned", 0)),
            tried=int(data.get("tried", 0)),
            durations_ms=tuple(float(d) for d in data.get("durations_ms", ())),
            errors=int(data.get("errors", 0)),
            retried=int(data.get("retried", 0)),
            requests=int(data.get("requests", 0)),
            statuses=dict(data.get("statuses", {})),
            slo_p95_ms=data.get("slo_p95_ms"),
            first_error=data.get("first_error"),
        )


@dataclass(frozen=True)
class Baseline:
    """One captured baseline, exactly as journalled (plus its journal seq and time once read back)."""

    name: str
    started: datetime
    finished: datetime
    target: str
    queries: tuple[QueryBaseline, ...]
    budget: Mapping[str, Any]
    window_hours: float
    jobs: Mapping[str, Any]
    """{"rows", "truncated", "error", "windows": [JobWindow.to_json()]}"""
    integrations: tuple[Mapping[str, Any], ...]
    peak_hours: tuple[int, ...]
    slowest: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...] = ()
    seq: int | None = None
    by: str | None = None

    def query(self, query_id: str) -> QueryBaseline | None:
        return next((q for q in self.queries if q.id == query_id), None)

    @property
    def peak_hour(self) -> int | None:
        if not any(self.peak_hours):
            return None
        return max(range(24), key=lambda h: (self.peak_hours[h], -h))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "target": self.target,
            "method": METHOD,
            "budget": dict(self.budget),
            "window_hours": self.window_hours,
            "queries": [q.to_json() for q in self.queries],
            "jobs": dict(self.jobs),
            "integrations": [dict(i) for i in self.integrations],
            "peak_hours": list(self.peak_hours),
            "peak_hour": self.peak_hour,
            "slowest": [dict(s) for s in self.slowest],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, seq: int | None = None, by: str | None = None) -> Baseline:
        return cls(
            name=str(data["name"]),
            started=parse_iso(data["started"]),
            finished=parse_iso(data["finished"]),
            target=str(data.get("target", "")),
            queries=tuple(QueryBaseline.from_json(q) for q in data.get("queries", ())),
            budget=dict(data.get("budget", {})),
            window_hours=float(data.get("window_hours", 0)),
            jobs=dict(data.get("jobs", {})),
            integrations=tuple(dict(i) for i in data.get("integrations", ())),
            peak_hours=tuple(int(n) for n in data.get("peak_hours", [0] * 24)),
            slowest=tuple(dict(s) for s in data.get("slowest", ())),
            notes=tuple(str(n) for n in data.get("notes", ())),
            seq=seq,
            by=by,
        )


# --------------------------------------------------------------------------------------------
# capture


@dataclass
class _Plan:
    id: str
    query: str
    planned: int
    slo_p95_ms: float | None
    durations: list[float] = field(default_factory=list)
    tried: int = 0
    errors: int = 0
    retried: int = 0
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None


def plan_samples(
    wanted: Sequence[int], budget: int
) -> list[int]:
    """Samples per query within `budget` requests: as wanted, or scaled down proportionally
    (at least one each while the budget lasts) when the total would not fit."""
    total = sum(wanted)
    if total <= budget:
        return list(wanted)
    if budget <= 0:
        return [0] * len(wanted)
    scaled = [max(1, int(n * budget / total)) for n in wanted]
    while sum(scaled) > budget:  # the max(1, ...) floor can overshoot a tiny budget
        i = max(range(len(scaled)), key=lambda k: scaled[k])
        scaled[i] -= 1
    return scaled


async def capture(
    config: Config,
    dynamics: DataverseClient,
    *,
    name: str,
    store: Any | None = None,
    clock: Clock | None = None,
    samples: int | None = None,
    whoami: bool = True,
    jobs: bool = True,
    job_names: Sequence[str] = (),
    window: timedelta = DEFAULT_WINDOW,
    max_requests: int | None = None,
    deadline_s: float = 300.0,
    top_n: int = TOP_N,
    max_job_rows: int = MAX_JOB_ROWS,
) -> Baseline:
    """Measures a baseline now. Nothing is journalled here: see `record`.

    Args:
        config: The cutover config; `slos:` are the key queries, `integrations:` name the jobs.
        dynamics: The target's client; its limiter (the shared budget) is used, behind a cap.
        name: What the operator calls this baseline.
        store: When given, the slowest calls are also taken from the journal's check results.
        samples: Samples per query, overriding each SLO's `samples` (and WhoAmI's default 20).
        whoami: Also sample WhoAmI.
        jobs: Also read the window's system jobs (batch windows, integrations, peak hours).
        job_names: LIKE patterns limiting the batch windows reported (default: every name).
        window: How far back system jobs and the query log are read.
        max_requests: The capture's share of the request budget; default a fifth of the
            target's 5-minute budget. Never exceeded, retries included.
        deadline_s: Wall-clock seconds allowed; waiting on the shared budget past it stops
            sampling (reported), never blocks for ever.
    """
    clock = clock or SystemClock()
    started = clock.now()
    notes: list[str] = []
    limiter: TargetLimiter = dynamics.limiter
    cap = max_requests if max_requests is not None else max(1, int(limiter.requests_per_window * DEFAULT_SHARE))
    job_pages = -(-max_job_rows // dynamics.page_size) if jobs else 0
    job_reserve = min(job_pages, max(0, cap // 4)) if jobs else 0
    budget = BudgetCap(limiter, cap)
    client = DataverseClient(
        dynamics.api_url,
        dynamics.tokens,
        budget,  # type: ignore[arg-type]  # the cap speaks the limiter's interface
        timeout=dynamics.timeout,
        retries=dynamics.retries,
        page_size=dynamics.page_size,
        clock=clock,
    )
    deadline = limiter.deadline_after(deadline_s)
    try:
        plans = [
            _Plan(s.id, s.query, samples or s.samples, s.p95_ms) for s in config.slos
        ]
        if whoami:
            plans.append(_Plan(WHOAMI_ID, "WhoAmI", samples or 20, None))
        wanted = [p.planned for p in plans]
        granted = plan_samples(wanted, cap - job_reserve)
        if granted != wanted:
            notes.append(
                f"Samples reduced from {sum(wanted)} to {sum(granted)} to stay within the capture's "
                f"share of the request budget ({cap} requests)."
            )
        for plan, n in zip(plans, granted):
            plan.planned = n
        records: list[QueryRecord] = []
        stop = await _sample_round_robin(client, plans, deadline, clock, records)
        if stop:
            notes.append(stop)
        job_section: dict[str, Any] = {"rows": 0, "truncated": False, "error": None, "windows": []}
        integrations: list[dict[str, Any]] = []
        hours = [0] * 24
        if jobs:
            since = started - window
            rows, truncated, error = await _read_jobs(client, since, deadline, clock, max_job_rows, records)
            job_section.update(rows=len(rows), truncated=truncated, error=error, since=iso(since))
            if truncated:
                notes.append(f"Only the first {len(rows):,} system jobs of the window were read.")
            if error:
                notes.append(f"System jobs could not be read: {error}")
            job_section["windows"] = [w.to_json() for w in job_windows(rows, job_names)]
            for integ in config.integrations:
                if integ.jobs is None:
                    continue
                figures = integration_figures(
                    integ.id,
                    integ.jobs.name_like,
                    rows,
                    window,
                    slo_p95_ms=integ.slo.p95_ms if integ.slo else None,
                    slo_error_rate=integ.slo.error_rate if integ.slo else None,
                )
                integrations.append(figures.to_json())
            hours = peak_hours(rows)
        slowest = await _slowest(store, records, started - window, top_n)
    finally:
        await client.close()
    finished = clock.now()
    return Baseline(
        name=name,
        started=started,
        finished=finished,
        target=_target_label(config),
        queries=tuple(
            QueryBaseline(
                id=p.id,
                query=redact_url(p.query),
                planned=p.planned,
                tried=p.tried,
                durations_ms=tuple(p.durations),
                errors=p.errors,
                retried=p.retried,
                requests=p.requests,
                statuses=dict(sorted(p.statuses.items())),
                slo_p95_ms=p.slo_p95_ms,
                first_error=p.first_error,
            )
            for p in plans
        ),
        budget={
            "max_requests": cap,
            "spent": budget.spent,
            "requests_per_window": limiter.requests_per_window,
            "window_s": limiter.window_s,
            "wall_s": round((finished - started).total_seconds(), 3),
        },
        window_hours=round(window.total_seconds() / 3600, 3),
        jobs=job_section,
        integrations=tuple(integrations),
        peak_hours=tuple(hours),
        slowest=tuple(slowest),
        notes=tuple(notes),
    )


def _target_label(config: Config) -> str:
    target = config.target
    if target.kind == "emulator":
        return "emulator"
    return target.url_template or "dataverse"


async def _sample_round_robin(
    client: DataverseClient,
    plans: list[_Plan],
    deadline: float,
    clock: Clock,
    records: list[QueryRecord],
) -> str | None:
    """Takes the samples one at a time, rotating through the queries.

    One request in flight measures latency, not queueing behind our own requests; rotating
    means a slow minute of the platform lands on every query alike instead of on whichever
    happened to be sampled then. Returns why sampling stopped early, else None.
    """
    rounds = max((p.planned for p in plans), default=0)
    for i in range(rounds):
        for plan in plans:
            if i >= plan.planned:
                continue
            log = QueryLog("dynamics", deadline=deadline, clock=clock)
            plan.tried += 1
            try:
                await client.get_json(plan.query, log=log)
            except (BudgetExhausted, DeadlineExceeded) as exc:
                plan.tried -= 1  # our own limit, not the platform's answer: not a sample
                _count(plan, log, records)
                return f"Sampling stopped early: {exc}"
            except ConnectorError as exc:
                plan.errors += 1
                plan.first_error = plan.first_error or str(exc)
                _count(plan, log, records)
                continue
            _count(plan, log, records)
            ok = [r for r in log.records if r.status is not None and 200 <= r.status < 300]
            if ok:
                plan.durations.append(ok[-1].duration_ms)
            else:  # an answer without a timing is no measurement
                plan.errors += 1
                plan.first_error = plan.first_error or "the request left no timing in the query log"
    return None


def _count(plan: _Plan, log: QueryLog, records: list[QueryRecord]) -> None:
    plan.requests += len(log.records)
    if len(log.records) > 1:
        plan.retried += 1
    for rec in log.records:
        key = str(rec.status) if rec.status is not None else "none"
        plan.statuses[key] = plan.statuses.get(key, 0) + 1
    records.extend(log.records)


async def _read_jobs(
    client: DataverseClient,
    since: datetime,
    deadline: float,
    clock: Clock,
    max_rows: int,
    records: list[QueryRecord],
) -> tuple[list[dict[str, Any]], bool, str | None]:
    """The window's system jobs, newest pages last, at most `max_rows` (truncated=True then)."""
    log = QueryLog("dynamics", deadline=deadline, clock=clock)
    rows: list[dict[str, Any]] = []
    literal = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        async for page in client.pages(
            "asyncoperations", select=list(JOB_COLUMNS), filter=f"createdon ge {literal}", log=log
        ):
            rows.extend(page)
            if len(rows) >= max_rows:
                return rows[:max_rows], True, None
    except ConnectorError as exc:
        return rows, False, str(exc)
    finally:
        records.extend(log.records)
    return rows, False, None


async def _slowest(store: Any | None, own: Sequence[QueryRecord], since: datetime, n: int) -> list[dict[str, Any]]:
    """The `n` slowest calls: the journal's check results since `since`, and this capture's own."""
    heap: list[tuple[float, int, dict[str, Any]]] = []
    counter = 0

    def offer(rec: Mapping[str, Any], source: str) -> None:
        nonlocal counter
        duration = float(rec.get("duration_ms") or 0.0)
        item = {
            "source": source,
            "target": rec.get("target"),
            "method": rec.get("method"),
            "url": redact_url(str(rec.get("url", ""))) if rec.get("method") != "SQL" else rec.get("url"),
            "status": rec.get("status"),
            "duration_ms": round(duration, 1),
            "started": rec.get("started"),
            "error": rec.get("error"),
        }
        counter += 1
        entry = (duration, -counter, item)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)

    for rec in own:
        offer(rec.to_json(), "baseline")
    if store is not None:
        after = 0
        while True:
            batch = await store.entries(after, kinds=["check.result"], limit=2000)
            if not batch:
                break
            for entry in batch:
                if entry.ts < since:
                    continue
                for rec in entry.payload.get("queries", ()):
                    offer(rec, f"check {entry.payload.get('check_id', '?')}")
            after = batch[-1].seq
    return [item for _d, _c, item in sorted(heap, reverse=True)]


# --------------------------------------------------------------------------------------------
# the journal


async def record(store: Any, baseline: Baseline, *, actor: Actor) -> Baseline:
    """Journals a baseline (`baseline.captured`); returns it with its seq."""
    entry = await store.append(CAPTURED_KIND, baseline.to_json(), actor=actor)
    return Baseline.from_json(entry.payload, seq=entry.seq, by=entry.operator)


async def baselines(store: Any) -> list[Baseline]:
    """Every baseline in the journal, oldest first."""
    return [
        Baseline.from_json(e.payload, seq=e.seq, by=e.operator)
        for e in await store.entries(kinds=[CAPTURED_KIND])
    ]


class UnknownBaseline(LookupError):
    """No baseline of that name (or `@seq`) is in the journal."""


async def find(store: Any, ref: str) -> Baseline:
    """The newest baseline called `ref`, or the one journalled as entry N for `@N`."""
    found = await baselines(store)
    if ref.startswith("@") and ref[1:].isdigit():
        match = [b for b in found if b.seq == int(ref[1:])]
    else:
        match = [b for b in found if b.name == ref]
    if not match:
        known = ", ".join(sorted({b.name for b in found})) or "none yet"
        raise UnknownBaseline(f"no baseline {ref!r} in the journal (known: {known})")
    return match[-1]


# --------------------------------------------------------------------------------------------
# compare


@dataclass(frozen=True)
class BaselineComparison:
    """Before (A) and after (B), query by query, with verdicts beyond the noise."""

    a: Baseline
    b: Baseline
    settings: CompareSettings
    rows: tuple[Mapping[str, Any], ...]

    @property
    def verdicts(self) -> dict[str, str]:
        return {str(r["id"]): str(r["verdict"]) for r in self.rows}

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"name": self.a.name, "seq": self.a.seq, "started": iso(self.a.started)},
            "b": {"name": self.b.name, "seq": self.b.seq, "started": iso(self.b.started)},
            "settings": self.settings.to_json(),
            "queries": [dict(r) for r in self.rows],
        }

    def text(self) -> str:
        """The report `crmctl baseline compare` prints."""
        lines = [
            f"Baseline comparison: A = {self.a.name!r} ({iso(self.a.started)}) -> "
            f"B = {self.b.name!r} ({iso(self.b.started)})",
            f"Method: {self.settings.to_json()['method']}; {self.settings.resamples} resamples, "
            f"{self.settings.confidence:.0%} CI, seed {self.settings.seed}; a change must exceed "
            f"{self.settings.min_change:.0%} and {self.settings.min_change_ms:g} ms.",
            "",
            f"{'QUERY':<22} {'VERDICT':<18} {'p50 A->B ms':>16} {'p95 A->B ms':>16} {'errors A->B':>13}",
        ]
        for row in self.rows:
            p50 = _pair(row.get("a", {}).get("p50_ms"), row.get("b", {}).get("p50_ms"))
            p95 = _pair(row.get("a", {}).get("p95_ms"), row.get("b", {}).get("p95_ms"))
            err = _pair(row.get("a", {}).get("error_rate"), row.get("b", {}).get("error_rate"), pct=True)
            lines.append(f"{str(row['id'])[:22]:<22} {str(row['verdict']).upper():<18} {p50:>16} {p95:>16} {err:>13}")
        lines.append("")
        lines.extend(str(row["sentence"]) for row in self.rows)
        return "\n".join(lines)


def _pair(a: Any, b: Any, *, pct: bool = False) -> str:
    def one(v: Any) -> str:
        if v is None:
            return "-"
        return f"{float(v) * 100:.0f}%" if pct else f"{float(v):.0f}"

    return f"{one(a)}->{one(b)}"


def compare(a: Baseline, b: Baseline, settings: CompareSettings = CompareSettings()) -> BaselineComparison:
    """Compares every query present in either baseline (those in only one say so)."""
    ids = list(dict.fromkeys([q.id for q in a.queries] + [q.id for q in b.queries]))
    rows = []
    for qid in ids:
        qa, qb = a.query(qid), b.query(qid)
        if qa is None or qb is None:
            only = "B" if qa is None else "A"
            rows.append({
                "id": qid,
                "verdict": f"only in {only}",
                "sentence": f"{qid}: sampled only in baseline {only}; nothing to compare.",
                "a": _figures(qa),
                "b": _figures(qb),
            })
            continue
        result = compare_samples(qid, qa.durations_ms, qb.durations_ms, settings)
        sentence = result.sentence
        if qa.error_rate is not None and qb.error_rate is not None and qa.error_rate != qb.error_rate:
            sentence += f" Error rate {qa.error_rate:.1%} -> {qb.error_rate:.1%}."
        rows.append({
            "id": qid,
            "verdict": result.verdict,
            "sentence": sentence,
            "a": _figures(qa),
            "b": _figures(qb),
            **{k: v for k, v in result.to_json().items() if k in ("intervals", "a_n", "b_n")},
        })
    return BaselineComparison(a, b, settings, tuple(rows))


def _figures(q: QueryBaseline | None) -> dict[str, Any]:
    if q is None:
        return {}
    data = q.to_json()
    return {k: data.get(k) for k in ("n", "p50_ms", "p95_ms", "p99_ms", "error_rate", "requests")}


async def record_comparison(store: Any, comparison: BaselineComparison, *, actor: Actor) -> int:
    """Journals a comparison (`baseline.compared`) as before/after evidence; returns its seq."""
    entry = await store.append(COMPARED_KIND, comparison.to_json(), actor=actor)
    return int(entry.seq)


__all__ = [
    "CAPTURED_KIND",
    "COMPARED_KIND",
    "WHOAMI_ID",
    "Baseline",
    "BaselineComparison",
    "BudgetCap",
    "NO_CHANGE",
    "QueryBaseline",
    "UnknownBaseline",
    "baselines",
    "capture",
    "compare",
    "find",
    "plan_samples",
    "record",
    "record_comparison",
]
