"""Pure projections from journal data to what the screens, the CLI and the evidence pack show.

Nothing here imports Textual or Rich and nothing here does I/O: every function takes the data and
the current time (from an injected clock) and returns plain, frozen view models. That keeps the
truth rules of DESIGN.md §4 (STALE, "never green on ERROR/STALE") in one testable place, shared by
every surface that renders a check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any, Iterable, Mapping, Protocol, Sequence

from crmctl.model import CheckResult, QueryRecord, Status, utc
from crmctl.safetext import one_line, safe_text

SHOWN_TEXT = 2000
"""Longest explanation a view model carries: a screen wraps it, an 80x24 terminal shows less."""
SHOWN_CELL = 300
"""Longest single-line figure, title, key or query text a view model carries."""

# --------------------------------------------------------------------------------------------
# What the views need from the config and the journal (structural, so tests and the CLI can hand
# in the real frozen dataclasses or anything shaped like them).


class CheckSpec(Protocol):
    """The parts of a configured check the views read (`crmctl.config.CheckConfig` fits)."""

    id: str
    kind: str
    entity: str | None
    warn: float | None
    breach: float | None
    every: timedelta
    title: str


class JournalLike(Protocol):
    """The parts of a `crmctl.store.JournalEntry` the views read."""

    seq: int
    kind: str
    payload: Mapping[str, Any]


RESULT_KIND = "check.result"
"""Journal kind of a check result (written by `Store.append_result`)."""

RUNBOOK_KIND_PREFIX = "runbook."
"""Journal kinds of runbook progress; the newest one names the phase the cutover is in."""

RUNBOOK_KIND_PREFIXES: tuple[str, ...] = ("runbook.", "run.", "decision.")
"""Every prefix of the kinds the runbook fold reads: steps, named runs and decisions."""

RUNBOOK_KINDS: tuple[str, ...] = (
    "run.started",
    "runbook.step.started",
    "runbook.step.done",
    "runbook.step.failed",
    "runbook.step.skipped",
    "runbook.step.blocked",
    "decision.proposed",
    "decision.recorded",
)
"""The runbook kinds read at start-up (the store filters by exact kind); the change feed takes
any kind under RUNBOOK_KIND_PREFIXES. Mirrors `crmctl.runbook.KINDS` (a test keeps them equal;
views does not import the runbook module, which imports views)."""

DEFAULT_PHASE = "Pre-cutover"
"""The phase shown before any runbook step has been journalled."""

# --------------------------------------------------------------------------------------------
# Status presentation: glyph + word, so that a status reads the same with NO_COLOR.

STATUS_GLYPHS: Mapping[Status, str] = {
    Status.OK: "✔",
    Status.WARN: "▲",
    Status.BREACH: "✖",
    Status.ERROR: "⚠",
    Status.STALE: "◌",
    Status.PENDING: "…",
}
"""One glyph per status. Each glyph has a distinct shape, so colour is never the only signal."""

STATUS_ORDER: tuple[Status, ...] = (
    Status.OK,
    Status.WARN,
    Status.BREACH,
    Status.ERROR,
    Status.STALE,
    Status.PENDING,
)
"""The order statuses are counted and listed in on every screen."""

RED_STATUSES: frozenset[Status] = frozenset({Status.BREACH, Status.ERROR, Status.STALE})
"""Statuses that make a check a "red item" on the overview: broken, blind or out of date."""

ALARM_STATUSES: frozenset[Status] = RED_STATUSES
"""Statuses drawn in reverse video, so they stay unmistakable without colour."""


def status_label(status: Status) -> str:
    """The glyph and the word, e.g. "✖ BREACH": the only way a status is ever written."""
    return f"{STATUS_GLYPHS[status]} {status.value}"


def effective_status(result: CheckResult | None, every: timedelta | None, now: datetime) -> Status:
    """The status a check is shown with at `now`, applying the STALE rule of DESIGN.md §4.

    A check with no result is PENDING. A result older than twice the check's cadence is STALE,
    unless it already says something worse (BREACH, ERROR): an old breach stays a breach, since
    turning it into "stale" would hide the one thing the operator must not miss.
    """
    if result is None or result.status is Status.PENDING:
        return Status.PENDING
    if is_stale(result, every, now):
        return max(result.status, Status.STALE, key=lambda s: s.severity)
    return result.status


def is_stale(result: CheckResult | None, every: timedelta | None, now: datetime) -> bool:
    """True when the result finished more than twice the cadence `every` before `now`."""
    if result is None or not every or every <= timedelta(0):
        return False
    return utc(now) - utc(result.finished) > 2 * every


# --------------------------------------------------------------------------------------------
# Text formatting of times, spans, values and thresholds.


def format_span(delta: timedelta, *, seconds: bool = True) -> str:
    """A compact human span: "45 s", "12 min 5 s", "3 h 05 min", "2 d 4 h".

    Only the two largest units are shown: the operator needs the order of magnitude at a
    glance, not a stopwatch.
    """
    total = int(abs(delta).total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs} s" if seconds and secs and minutes < 10 else f"{minutes} min"
    return f"{secs} s"


SKEW_TOLERANCE_S = 2.0
"""How far ahead of the screen's clock a timestamp may be before it is called clock skew."""


def format_age(then: datetime | None, now: datetime) -> str:
    """How long ago `then` was, e.g. "3 s ago"; "never" when there is no time at all."""
    if then is None:
        return "never"
    delta = utc(now) - utc(then)
    if timedelta(seconds=-SKEW_TOLERANCE_S) <= delta < timedelta(seconds=1):
        # The screen's clock ticks once a second, so a result that lands between two ticks is
        # stamped slightly after the "now" on screen: that is news, not skew.
        return "just now"
    if delta < timedelta(0):
        # A result stamped in the future: another host's clock is ahead. Say so, don't hide it.
        return f"in {format_span(delta)} (clock skew)"
    return f"{format_span(delta)} ago"


def format_clock(now: datetime) -> str:
    """The wall clock line: "2026-11-28 21:14:03 UTC"."""
    return utc(now).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_time(ts: datetime, now: datetime | None = None, *, seconds: bool = True) -> str:
    """A timestamp as "21:14:03 UTC", with the date in front when it is not `now`'s date."""
    ts = utc(ts)
    clock = "%H:%M:%S UTC" if seconds else "%H:%M UTC"
    if now is not None and utc(now).date() == ts.date():
        return ts.strftime(clock)
    return ts.strftime("%Y-%m-%d " + clock)


def format_number(value: Any) -> str:
    """One measured value as text: thousands separators, at most 4 significant decimals."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_number(v) for v in value[:3])
        return f"[{shown}{', …' if len(value) > 3 else ''}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_number(v)}" for k, v in list(value.items())[:3]) + "}"
    return str(value)


def format_values(values: Mapping[str, Any], *, limit: int | None = 3) -> str:
    """The measured values as "source 100 · target 63 · missing 37" (the first `limit` of them).

    A check may put a ready-made `headline` among its values ("20,000 → 19,966 (-34)"): the
    journal stores values with sorted keys, so only the check knows which figures matter most.
    """
    headline = values.get("headline")
    if isinstance(headline, str) and headline:
        return headline
    items = [(k, v) for k, v in values.items() if k != "headline"]
    shown = items if limit is None else items[:limit]
    text = " · ".join(f"{key} {format_number(value)}" for key, value in shown)
    if limit is not None and len(items) > limit:
        text += " · …"
    return text or "—"


def format_threshold(threshold: Mapping[str, Any]) -> str:
    """Thresholds as "warn >0 · breach >0.001".

    The ">" says what `checking.judge` does: a threshold is the largest deviation still graded
    the better way, so only values *above* it warn or breach.
    """
    parts = []
    # warn before breach, whatever order the journal's canonical JSON (sorted keys) gave them.
    for key, value in _ordered(threshold):
        if value is None:
            continue
        prefix = ">" if key in ("warn", "breach") else ""
        parts.append(f"{key} {prefix}{format_number(value)}")
    return " · ".join(parts) or "—"


def spec_threshold(check: CheckSpec) -> dict[str, Any]:
    """The configured thresholds of a check, for when no result has reported its own yet."""
    return {k: v for k, v in (("warn", check.warn), ("breach", check.breach)) if v is not None}


def shorten(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    return one_line(text, width)


# --------------------------------------------------------------------------------------------
# Journal snapshot: the data every screen projects from.


@dataclass(frozen=True)
class Snapshot:
    """What the screens know of the journal: the newest result per check and runbook progress.

    Built once from the store, then moved forward with `apply_entries` as the change feed
    delivers new entries, so a flood of results costs no re-read of the whole journal.
    """

    results: Mapping[str, CheckResult] = field(default_factory=dict)
    """The newest result of each check, by check id."""
    runbook: tuple[JournalLike, ...] = ()
    """Runbook journal entries, oldest first."""
    last_seq: int = 0
    """The sequence number of the newest journal entry reflected here."""
    loaded: bool = False
    """False until the store has been read once: screens say "loading", not "no results"."""
    as_of: datetime | None = None
    """None for the live journal; else the moment this historical view shows ("what did we
    know at 02:14?"): every entry stamped after it is left out, and no live update is applied."""

    def apply_entries(self, entries: Iterable[JournalLike]) -> Snapshot:
        """A new snapshot with `entries` (from the change feed) folded in.

        Entries at or below `last_seq` are ignored, so an overlap between the initial read and
        the feed can never count an entry twice. A result only replaces the one held when it
        finished later: two sessions can journal out of order, and the newest measurement wins.
        """
        results = dict(self.results)
        runbook = list(self.runbook)
        last_seq = self.last_seq
        for entry in entries:
            if entry.seq <= last_seq:
                continue
            last_seq = entry.seq
            if entry.kind == RESULT_KIND:
                result = CheckResult.from_json(entry.payload)
                held = results.get(result.check_id)
                if held is None or utc(result.finished) >= utc(held.finished):
                    results[result.check_id] = result
            elif entry.kind.startswith(RUNBOOK_KIND_PREFIXES):
                runbook.append(entry)
        return Snapshot(results=results, runbook=tuple(runbook), last_seq=last_seq, loaded=True, as_of=self.as_of)

    @property
    def newest(self) -> datetime | None:
        """When the freshest result finished: how current the data on screen is."""
        return max((utc(r.finished) for r in self.results.values()), default=None)


def phase_from_runbook(entries: Sequence[JournalLike], steps: Iterable[Any] = ()) -> str:
    """The cutover phase, from the newest runbook journal entry.

    The entry's payload may name the phase itself (`phase`), or the step (`step`/`step_id`),
    whose configured `phase` (else its title) is used. With no runbook entries the cutover has
    not started: "Pre-cutover". Only the current run counts (entries after the newest
    `run.started`), and a recorded rollback decision puts the cutover in "Rollback".
    """
    by_id = {getattr(step, "id", None): step for step in steps}
    for entry in reversed(entries):
        payload = entry.payload
        if entry.kind == "run.started":
            break  # a new run with no step moved yet
        if entry.kind.startswith("decision."):
            if entry.kind == "decision.recorded" and payload.get("decision") == "rollback":
                return "Rollback"
            continue
        if payload.get("phase"):
            return str(payload["phase"])
        step_id = payload.get("step") or payload.get("step_id")
        step = by_id.get(step_id)
        if step is not None:
            return str(getattr(step, "phase", None) or getattr(step, "title", step_id))
        if step_id:
            return str(step_id)
    return DEFAULT_PHASE


# --------------------------------------------------------------------------------------------
# Checks table rows.


@dataclass(frozen=True)
class CheckRow:
    """One row of the checks table, and one line of the overview's red items."""

    check_id: str
    title: str
    kind: str
    entity: str
    status: Status
    """The effective status (STALE applied); this is what is drawn and counted."""
    reported: Status
    """The status the last result reported, before the STALE rule."""
    stale: bool
    """True when the last result is older than twice the cadence."""
    status_label: str
    """Glyph and word, e.g. "◌ STALE"."""
    value_text: str
    threshold_text: str
    age_text: str
    """How old the last result is: "3 s ago", "never"."""
    explanation: str
    finished: datetime | None
    every: timedelta | None
    requests: int
    configured: bool = True
    """False for a result in the journal whose check is no longer in the config."""

    @property
    def key(self) -> str:
        """The row key in tables: the check id."""
        return self.check_id

    @property
    def is_red(self) -> bool:
        """True for BREACH, ERROR and STALE: the overview lists these."""
        return self.status in RED_STATUSES

    @property
    def is_alarm(self) -> bool:
        """True when the status must be drawn in reverse video."""
        return self.status in ALARM_STATUSES


def check_row(check: CheckSpec | None, result: CheckResult | None, now: datetime) -> CheckRow:
    """The row for one check: the config tells what it is, the newest result how it stands."""
    if check is None and result is None:
        raise ValueError("check_row needs a check, a result or both")
    every = check.every if check is not None else None
    status = effective_status(result, every, now)
    stale = is_stale(result, every, now)
    if result is None:
        explanation = "No result yet: waiting for the first run."
        threshold = spec_threshold(check) if check is not None else {}
        values_text = "—"
    else:
        explanation = result.explanation
        if stale:
            explanation = (
                f"No result for {format_span(utc(now) - utc(result.finished))}"
                f" (runs every {format_span(every or timedelta(0))}); last said: {explanation}"
            )
        threshold = dict(result.threshold) or (spec_threshold(check) if check is not None else {})
        values_text = format_values(result.values)
    check_id = check.id if check is not None else result.check_id  # type: ignore[union-attr]
    # Every text below may come from outside (server messages, record names, an old journal
    # entry): made safe and bounded here, so no screen has to remember to.
    return CheckRow(
        check_id=check_id,  # an identifier (lookups, row keys): from the config, kept as it is
        title=one_line((getattr(check, "title", None) or check_id) if check is not None else check_id, SHOWN_CELL),
        kind=one_line(check.kind if check is not None else result.kind, SHOWN_CELL),  # type: ignore[union-attr]
        entity=(check.entity or "—") if check is not None else "—",
        status=status,
        reported=result.status if result is not None else Status.PENDING,
        stale=stale,
        status_label=status_label(status),
        value_text=one_line(values_text, SHOWN_CELL),
        threshold_text=one_line(format_threshold(threshold), SHOWN_CELL),
        age_text=format_age(result.finished if result is not None else None, now),
        explanation=safe_text(explanation, limit=SHOWN_TEXT),
        finished=utc(result.finished) if result is not None else None,
        every=every,
        requests=result.requests if result is not None else 0,
        configured=check is not None,
    )


def check_rows(
    checks: Sequence[CheckSpec], results: Mapping[str, CheckResult], now: datetime
) -> list[CheckRow]:
    """One row per configured check, in config order, then any journalled check not configured.

    Results of checks that have left the config are still shown (at the end): the journal is
    the truth, and a silently vanished red check would be worse than a surplus row.
    """
    rows = [check_row(check, results.get(check.id), now) for check in checks]
    known = {check.id for check in checks}
    rows.extend(check_row(None, results[cid], now) for cid in sorted(results) if cid not in known)
    return rows


def count_statuses(rows: Iterable[CheckRow]) -> dict[Status, int]:
    """How many rows have each effective status, with every status present (in STATUS_ORDER)."""
    counts = {status: 0 for status in STATUS_ORDER}
    for row in rows:
        counts[row.status] += 1
    return counts


def red_items(rows: Iterable[CheckRow]) -> list[CheckRow]:
    """BREACH, ERROR and STALE rows, worst first, then by check id."""
    return sorted((r for r in rows if r.is_red), key=lambda r: (-r.status.severity, r.check_id))


# --------------------------------------------------------------------------------------------
# Recommendation and overview.


class Verdict(StrEnum):
    """The overall recommendation."""

    GO = "GO"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK?"
    """A rollback *candidate*: the decision belongs to the authority, never to crmctl."""


@dataclass(frozen=True)
class Recommendation:
    """The go / hold / rollback line of the overview."""

    verdict: Verdict
    reason: str
    provisional: bool = True
    """True while this is derived from check statuses alone, before the rollback matrix lands."""

    @property
    def label(self) -> str:
        """e.g. "HOLD (provisional)"."""
        return f"{self.verdict.value} (provisional)" if self.provisional else self.verdict.value


PROVISIONAL_NOTE = "Provisional: from check statuses only, until the rollback matrix lands."
"""Shown under every provisional recommendation."""


def recommend(rows: Sequence[CheckRow]) -> Recommendation:
    """GO only when every check is OK and fresh; ROLLBACK? on any BREACH; else HOLD.

    ERROR, STALE and PENDING hold: a check that could not run, or ran too long ago, gives no
    evidence, and no gate opens without evidence (DESIGN.md §4).
    """
    if not rows:
        return Recommendation(Verdict.HOLD, "No checks are configured: there is no evidence to go on.")
    breaches = [r.check_id for r in rows if r.status is Status.BREACH]
    if breaches:
        return Recommendation(
            Verdict.ROLLBACK,
            f"{_plural(len(breaches), 'check')} in BREACH: {_list_ids(breaches)}.",
        )
    not_ok = [r for r in rows if r.status is not Status.OK]
    if not_ok:
        by_status = count_statuses(not_ok)
        summary = ", ".join(f"{n} {s.value}" for s, n in by_status.items() if n)
        return Recommendation(Verdict.HOLD, f"{_plural(len(not_ok), 'check')} not OK ({summary}).")
    return Recommendation(Verdict.GO, f"All {_plural(len(rows), 'check')} OK and fresh.")


@dataclass(frozen=True)
class Countdown:
    """Time left to a milestone, e.g. the point of no return."""

    label: str
    at: datetime | None
    text: str
    """"in 1 h 45 min", "passed 20 min ago" or "not set"."""
    passed: bool = False


def countdown(label: str, at: datetime | date | None, now: datetime) -> Countdown:
    """A countdown to `at`; a date means midnight UTC at its start."""
    if at is None:
        return Countdown(label, None, "not set")
    when = _as_datetime(at)
    delta = when - utc(now)
    if delta > timedelta(0):
        return Countdown(label, when, f"in {format_span(delta)}")
    return Countdown(label, when, f"passed {format_span(delta)} ago", passed=True)


@dataclass(frozen=True)
class OverviewView:
    """Everything the overview screen shows, for one moment."""

    project: str
    now: datetime
    clock_text: str
    phase: str
    countdowns: tuple[Countdown, ...]
    counts: Mapping[Status, int]
    total: int
    red_items: tuple[CheckRow, ...]
    recommendation: Recommendation
    updated: datetime | None
    updated_text: str
    """ "updated 3 s ago", "no results yet" or "loading…"."""
    rows: tuple[CheckRow, ...] = ()
    """Every check, in config order (the wall screen lists them all)."""
    forecast: str = ""
    """The runbook's forecast finish against the point of no return ("" without a runbook)."""
    forecast_warning: str = ""
    """The loud line when the forecast finish crosses the point of no return, else ""."""


def build_overview(config: Any, snapshot: Snapshot, now: datetime) -> OverviewView:
    """Projects the config and the journal snapshot onto the overview, at `now`."""
    rows = check_rows(tuple(config.checks), snapshot.results, now)
    rollback = getattr(config, "rollback", None)
    hypercare = getattr(config, "hypercare", None)
    countdowns = (
        countdown("Point of no return", getattr(rollback, "point_of_no_return", None), now),
        countdown("Go-live", getattr(hypercare, "go_live", None), now),
    )
    return OverviewView(
        project=str(getattr(config, "project", "")),
        now=now,
        clock_text=format_clock(now),
        phase=phase_from_runbook(snapshot.runbook, runbook_steps(config) + rollback_steps(config)),
        countdowns=countdowns,
        counts=count_statuses(rows),
        total=len(rows),
        red_items=tuple(red_items(rows)),
        recommendation=matrix_recommendation(config, snapshot.results, now) or recommend(rows),
        updated=snapshot.newest,
        updated_text=updated_text(snapshot, now),
        rows=tuple(rows),
        **dict(zip(("forecast", "forecast_warning"), runbook_forecast(config, snapshot, now))),
    )


def matrix_recommendation(config: Any, results: Mapping[str, CheckResult], now: datetime) -> Recommendation | None:
    """The recommendation of the rollback decision matrix (`crmctl.decision`), or None when the
    config has no rollback criteria (the provisional, status-only `recommend` applies then)."""
    from crmctl.decision import build_matrix, criteria_of, verdict_of

    if not criteria_of(config):
        return None
    matrix = build_matrix(config, results, now)
    return Recommendation(verdict_of(matrix.overall), f"Rollback matrix: {matrix.reason}", provisional=False)


def runbook_forecast(config: Any, snapshot: Snapshot, now: datetime) -> tuple[str, str]:
    """(forecast line, loud warning or "") of the current run (`crmctl.timing`); ("", "") without a runbook."""
    from crmctl.timing import build_runbook_view

    if not any(getattr(step, "planned", None) for step in runbook_steps(config)):
        return "", ""  # nothing planned, nothing to forecast: the overview says nothing rather than "none"
    view = build_runbook_view(config, snapshot.runbook, snapshot.results, now)
    return view.forecast_text, view.warning


def rollback_steps(config: Any) -> tuple[Any, ...]:
    """The configured rollback runbook's steps."""
    rollback = getattr(config, "rollback", None)
    return tuple(getattr(rollback, "runbook", ()) or ()) if rollback is not None else ()


def updated_text(snapshot: Snapshot, now: datetime) -> str:
    """How old the data on a panel is: "updated 3 s ago" (from the freshest result)."""
    if not snapshot.loaded:
        return "loading…"
    if snapshot.newest is None:
        return "no results yet"
    return f"updated {format_age(snapshot.newest, now)}"


def runbook_steps(config: Any) -> tuple[Any, ...]:
    """The configured runbook steps, whether `config.runbook` is a list or has `.steps`."""
    runbook = getattr(config, "runbook", None)
    if runbook is None:
        return ()
    return tuple(getattr(runbook, "steps", runbook))


# --------------------------------------------------------------------------------------------
# Check detail (drill-down).


@dataclass(frozen=True)
class QueryRow:
    """One request a result cost, as the detail view lists it."""

    target: str
    method: str
    url: str
    """The URL relative to the detail's `query_base` when it starts with it, else whole."""
    status_text: str
    duration_text: str
    error: str
    full_url: str = ""
    """The URL exactly as recorded (already redacted)."""


@dataclass(frozen=True)
class HistoryRow:
    """One earlier result of the same check."""

    finished_text: str
    status_label: str
    value_text: str


@dataclass(frozen=True)
class CheckDetail:
    """The drill-down of one check: what was measured, against what, and how."""

    row: CheckRow
    cadence_text: str
    started_text: str
    finished_text: str
    duration_text: str
    values: tuple[tuple[str, str], ...]
    thresholds: tuple[tuple[str, str], ...]
    queries: tuple[QueryRow, ...]
    requests: int
    history: tuple[HistoryRow, ...] = ()
    query_base: str = ""
    """The Web API root most queries share ("https://org.crm.dynamics.com/api/data/v9.2/"),
    said once so that 80 columns show what differs: the entity set and the query options."""
    key_lists: tuple[KeyList, ...] = ()
    """The lists among the values (missing_keys, extra_keys, failing_job_ids...), shown as keys:
    the first records behind a difference are what an engineer looks up next."""


_API_ROOT = re.compile(r"^(https?://[^/?#]+(?:/api/data/v\d+(?:\.\d+)?/)?)")


def api_base(url: str) -> str:
    """The Web API root of an HTTP URL (or its origin), "" for SQL and anything else."""
    match = _API_ROOT.match(url)
    return match.group(1) if match else ""


def query_row(query: QueryRecord, base: str = "") -> QueryRow:
    """A query record as text (the URL was already redacted when it was recorded)."""
    url = query.url[len(base):] if base and query.url.startswith(base) else query.url
    return QueryRow(
        target=one_line(query.target, SHOWN_CELL),
        method=one_line(query.method, SHOWN_CELL),
        url=one_line(url, SHOWN_TEXT),
        status_text="—" if query.status is None else str(query.status),
        duration_text=f"{query.duration_ms:,.0f} ms",
        error=one_line(query.error or "", SHOWN_TEXT),
        full_url=safe_text(query.url, limit=None, multiline=False),
    )


def _common_base(queries: Sequence[QueryRecord]) -> str:
    bases = [b for b in (api_base(q.url) for q in queries) if b]
    return max(set(bases), key=bases.count) if bases else ""


def _ordered(threshold: Mapping[str, Any]) -> list[tuple[str, Any]]:
    order = {"warn": 0, "breach": 1}
    return sorted(threshold.items(), key=lambda kv: order.get(kv[0], 2))


def build_detail(
    check: CheckSpec | None,
    result: CheckResult | None,
    now: datetime,
    history: Sequence[CheckResult] = (),
) -> CheckDetail:
    """The detail of one check at `now`, with earlier results (`history`, newest first)."""
    row = check_row(check, result, now)
    every = check.every if check is not None else None
    if result is None:
        threshold = spec_threshold(check) if check is not None else {}
        return CheckDetail(
            row=row,
            cadence_text=f"every {format_span(every)}" if every else "—",
            started_text="—",
            finished_text="—",
            duration_text="—",
            values=(),
            thresholds=tuple((k, format_number(v)) for k, v in _ordered(threshold)),
            queries=(),
            requests=0,
        )
    threshold = dict(result.threshold) or (spec_threshold(check) if check is not None else {})
    base = _common_base(result.queries)
    return CheckDetail(
        row=row,
        cadence_text=f"every {format_span(every)}" if every else "—",
        started_text=format_time(result.started, now),
        finished_text=f"{format_time(result.finished, now)} ({format_age(result.finished, now)})",
        duration_text=f"{result.duration_s:,.2f} s",
        values=tuple(
            (one_line(k, SHOWN_CELL), one_line(format_number(v), SHOWN_CELL))
            for k, v in result.values.items()
            if not is_key_list(v) and k != "headline" and not (k.startswith("first_") and isinstance(v, Mapping))
        ),
        thresholds=tuple((k, format_number(v)) for k, v in _ordered(threshold)),
        queries=tuple(query_row(q, base) for q in result.queries),
        query_base=base,
        key_lists=key_lists(result.values),
        requests=result.requests,
        history=tuple(
            HistoryRow(format_time(h.finished, now), status_label(h.status), one_line(format_values(h.values), SHOWN_CELL))
            for h in history
        ),
    )


# --------------------------------------------------------------------------------------------
# Key lists: the records behind a difference.

KEY_LIST_SHOWN = 20
"""How many keys of one list a drill-down shows; the count says how many there are in all."""


@dataclass(frozen=True)
class KeyList:
    """A list-valued figure of a result (e.g. `missing_keys`), as the keys an engineer looks up."""

    name: str
    """The value's name, e.g. "missing_keys"."""
    keys: tuple[str, ...]
    """The first keys, in the order the check reported them."""
    total: int
    """How many the check reported (its own `<name>_count`/`<stem>` figure when larger)."""

    @property
    def title(self) -> str:
        """ "missing keys (37)", or "missing keys (first 20 of 37)"."""
        label = self.name.replace("_", " ")
        if len(self.keys) < self.total:
            return f"{label} (first {len(self.keys)} of {self.total:,})"
        return f"{label} ({self.total:,})"

    @property
    def text(self) -> str:
        """The keys, comma-separated, with "…" when there are more than shown."""
        more = ", …" if len(self.keys) < self.total else ""
        return ", ".join(self.keys) + more if self.keys else "none"


def is_key_list(value: Any) -> bool:
    """True for a list of scalars (keys, ids): drawn as keys, not as "[a, b, c, …]"."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    )


def key_lists(values: Mapping[str, Any], *, shown: int = KEY_LIST_SHOWN) -> tuple[KeyList, ...]:
    """The list-valued figures of a result as key lists, in the order the values hold them.

    A check may report only the first N keys of a long difference and the full count beside
    it (`missing_keys` + `missing`, or `missing_keys_count`): the larger count is the total, so
    the screen never implies 20 missing records when there are 20,000.
    """
    out = []
    for name, value in values.items():
        if isinstance(value, Mapping):
            # e.g. reconcile's first_duplicate_keys: {"source": [...], "target": [...]}, whose
            # totals sit in a sibling mapping (duplicate_keys: {"source": 3, "target": 0}).
            stem = name.removeprefix("first_")
            counts = values.get(stem) if isinstance(values.get(stem), Mapping) else {}
            for side, keys in value.items():
                if is_key_list(keys) and keys:
                    figure = counts.get(side)
                    total = max(len(keys), figure if isinstance(figure, int) and not isinstance(figure, bool) else 0)
                    out.append(KeyList(one_line(f"{name} ({side})", SHOWN_CELL), _keys(keys[:shown]), total))
            continue
        if not is_key_list(value) or not value:
            continue
        total = len(value)
        stem = name.removesuffix("_keys").removesuffix("_ids")
        bare = stem.removeprefix("first_")
        for counter in (f"{name}_count", f"{stem}_count", stem, bare):
            figure = values.get(counter)
            if counter != name and isinstance(figure, int) and not isinstance(figure, bool):
                total = max(total, figure)
                break
        out.append(KeyList(one_line(name, SHOWN_CELL), _keys(value[:shown]), total))
    return tuple(out)


def _keys(keys: Sequence[Any]) -> tuple[str, ...]:
    """Record keys as shown: one line each, bounded (a key is a record's name as often as its id)."""
    return tuple(one_line(str(v), SHOWN_CELL) for v in keys)


# --------------------------------------------------------------------------------------------
# Per-entity drill-down.


@dataclass(frozen=True)
class EntityView:
    """Every check about one entity, worst first: the entity's side of the reconciliation."""

    entity: str
    status: Status
    """The worst effective status among its checks (PENDING with none)."""
    details: tuple[CheckDetail, ...]
    counts: Mapping[Status, int]


def entities_of(checks: Sequence[CheckSpec]) -> list[str]:
    """The entities the checks are about, in config order ("—" for checks about none)."""
    return list(dict.fromkeys(check.entity or "—" for check in checks))


def build_entity(
    entity: str, checks: Sequence[CheckSpec], results: Mapping[str, CheckResult], now: datetime
) -> EntityView:
    """The drill-down of one entity: each of its checks' values, thresholds, keys and queries."""
    mine = [c for c in checks if (c.entity or "—") == entity]
    details = [build_detail(c, results.get(c.id), now) for c in mine]
    details.sort(key=lambda d: (-d.row.status.severity, d.row.check_id))
    status = max((d.row.status for d in details), key=lambda s: s.severity, default=Status.PENDING)
    return EntityView(entity, status, tuple(details), count_statuses(d.row for d in details))


# --------------------------------------------------------------------------------------------
# Progress of long-running checks (in memory, from ControlRoom.progress).


@dataclass(frozen=True)
class ProgressLine:
    """One running check as the checks screen draws it."""

    check_id: str
    fraction: float | None
    """0..1 of the expected total, None when the check cannot estimate one."""
    text: str
    """ "12,000/25,000 rows · ETA 4 s · 3 pages · running 4 s"."""


def progress_line(progress: Any, at: float) -> ProgressLine:
    """Describes a `crmctl.checking.CheckProgress` at monotonic time `at`."""
    elapsed = timedelta(seconds=max(0.0, at - progress.started))
    # Most telling first: at 80 columns the end of the line is what gets cut.
    parts = []
    if progress.total:
        parts.append(f"{progress.rows:,}/{progress.total:,} rows")
    elif progress.rows:
        parts.append(f"{progress.rows:,} rows")
    eta = progress.eta_s(at)
    if eta is not None:
        parts.append(f"ETA {format_span(timedelta(seconds=eta))}")
    elif not progress.total:
        parts.append("no estimate")
    if progress.pages:
        parts.append(_plural(progress.pages, "page"))
    parts.append(f"running {format_span(elapsed)}")
    return ProgressLine(progress.check_id, progress.fraction, " · ".join(parts))


def progress_bar(fraction: float | None, width: int = 10) -> str:
    """A text bar ("█████░░░░░ 52%") that reads without colour; "▒▒▒▒ ?" without an estimate."""
    if fraction is None:
        return "▒" * width + "    "
    filled = int(round(fraction * width))
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:3.0f}%"


# --------------------------------------------------------------------------------------------
# Helpers.


def _as_datetime(at: datetime | date) -> datetime:
    if isinstance(at, datetime):
        return utc(at)
    return datetime.combine(at, time(0, 0), tzinfo=timezone.utc)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _list_ids(ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


__all__ = [
    "ALARM_STATUSES",
    "CheckDetail",
    "CheckRow",
    "CheckSpec",
    "Countdown",
    "EntityView",
    "HistoryRow",
    "KeyList",
    "ProgressLine",
    "OverviewView",
    "PROVISIONAL_NOTE",
    "QueryRow",
    "RED_STATUSES",
    "RESULT_KIND",
    "RUNBOOK_KINDS",
    "RUNBOOK_KIND_PREFIX",
    "Recommendation",
    "STATUS_GLYPHS",
    "STATUS_ORDER",
    "Snapshot",
    "Verdict",
    "build_detail",
    "build_entity",
    "entities_of",
    "is_key_list",
    "key_lists",
    "progress_bar",
    "progress_line",
    "build_overview",
    "check_row",
    "check_rows",
    "count_statuses",
    "countdown",
    "effective_status",
    "format_age",
    "format_clock",
    "format_span",
    "format_threshold",
    "format_values",
    "is_stale",
    "phase_from_runbook",
    "recommend",
    "red_items",
    "shorten",
    "status_label",
    "updated_text",
]
