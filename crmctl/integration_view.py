"""Integration health as the control room shows it: one pane per configured integration.

A pure projection (no Textual, no I/O) of the journalled results of the checks that watch an
integration: `system_jobs` (failed, retried, waiting jobs, error rate), `http_probe` (status and
p50/p95 latency of its health endpoint), and, in a pane of their own, the `api_latency` checks of
the configured SLO queries. The figures are read tolerantly: a figure a check did not report is
drawn as "—", and an integration nobody has measured yet says "no data yet", never zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from crmctl.model import CheckResult, Status, parse_iso, utc
from crmctl.views import (
    CheckRow,
    CheckSpec,
    KeyList,
    check_row,
    format_age,
    format_number,
    format_time,
    key_lists,
    shorten,
)

API_PANE_ID = "dynamics-api"
"""Id of the pane that gathers the api_latency checks of the configured SLO queries."""

TREND_POINTS = 30
"""How many results a trend (sparkline) spans."""

FAILURES = ("failed_jobs", "failures", "failed", "error_count")
RETRIES = ("retried_jobs", "retries", "retry_count")
BACKLOG = ("backlog", "waiting_jobs", "queued")
ERROR_RATE = ("error_rate",)
P50 = ("p50_ms", "median_ms")
P95 = ("p95_ms",)
UNREACHABLE = ("unreachable",)
"""Value names each figure is read from, first found wins (checks/integration.py, checks/probe.py,
checks/latency.py name them so; the synonyms keep older or other checks readable)."""


@dataclass(frozen=True)
class Figure:
    """One figure of a pane: "Failures 3"."""

    label: str
    text: str
    """The value as text, "—" when no check reported it."""
    alarm: bool = False
    """True when the figure breaks its SLO (drawn in reverse video, readable without colour)."""


@dataclass(frozen=True)
class Trend:
    """A sparkline: one figure over the last results of one check."""

    label: str
    """ "p95 ms (erp-sync.probe)"."""
    values: tuple[float, ...]
    last_text: str
    """The newest value as text, shown beside the line."""


@dataclass(frozen=True)
class IntegrationPane:
    """Everything one integration's pane shows."""

    id: str
    title: str
    status: Status
    """Worst effective status (STALE applied) of its checks; PENDING before any result."""
    rows: tuple[CheckRow, ...]
    figures: tuple[Figure, ...]
    slo_text: str
    """ "p95 ≤ 800 ms · error rate ≤ 2 %", or "no SLO configured"."""
    slo_verdict: str
    """ "within SLO", "SLO missed: …", or "no data yet"."""
    slo_ok: bool | None
    """None when there is nothing (fresh) to judge."""
    last_error: str
    trends: tuple[Trend, ...]
    updated: datetime | None
    updated_text: str
    """ "updated 5 s ago", "no data yet"."""
    note: str = ""
    """Why a pane has nothing to show (no checks configured, no result yet)."""
    keys: tuple[KeyList, ...] = ()
    """Lists the checks reported (e.g. the ids of the newest failing jobs)."""

    @property
    def check_ids(self) -> tuple[str, ...]:
        return tuple(r.check_id for r in self.rows)


def integration_checks(integration: Any, checks: Sequence[CheckSpec]) -> list[CheckSpec]:
    """The checks that watch `integration`: those naming it (`integration: <id>`), or named
    `<id>.<something>` (the config's convention for checks without the parameter)."""
    out = []
    for check in checks:
        params = getattr(check, "params", None) or {}
        if params.get("integration") == integration.id or check.id.startswith(f"{integration.id}."):
            out.append(check)
    return out


def api_latency_checks(checks: Sequence[CheckSpec]) -> list[CheckSpec]:
    """The `api_latency` checks (SLO queries against Dynamics), which belong to no integration."""
    return [c for c in checks if c.kind == "api_latency"]


def build_integrations(
    config: Any,
    results: Mapping[str, CheckResult],
    histories: Mapping[str, Sequence[CheckResult]],
    now: datetime,
) -> list[IntegrationPane]:
    """One pane per configured integration, then one for the SLO queries (if any are checked).

    `histories` holds earlier results per check id, oldest first (for the trends); a check
    without a history simply has no trend yet.
    """
    checks = tuple(config.checks)
    panes = [
        _pane(
            integration.id,
            getattr(integration, "title", None) or integration.id,
            integration_checks(integration, checks),
            getattr(integration, "slo", None),
            results,
            histories,
            now,
        )
        for integration in getattr(config, "integrations", ())
    ]
    api = api_latency_checks(checks)
    if api:
        panes.append(_pane(API_PANE_ID, "Dynamics Web API (SLO queries)", api, None, results, histories, now))
    return panes


def _pane(
    pane_id: str,
    title: str,
    checks: Sequence[CheckSpec],
    slo: Any,
    results: Mapping[str, CheckResult],
    histories: Mapping[str, Sequence[CheckResult]],
    now: datetime,
) -> IntegrationPane:
    rows = tuple(check_row(c, results.get(c.id), now) for c in checks)
    mine = [results[c.id] for c in checks if c.id in results]
    fresh = [results[r.check_id] for r in rows if r.check_id in results and not r.stale]
    status = max((r.status for r in rows), key=lambda s: s.severity, default=Status.PENDING)
    updated = max((utc(r.finished) for r in mine), default=None)

    slo_p95 = getattr(slo, "p95_ms", None)
    slo_rate = getattr(slo, "error_rate", None)
    p95 = _first(fresh, P95)
    rate = _first(fresh, ERROR_RATE)
    figures = (
        Figure("Failures", _text(_first(mine, FAILURES))),
        Figure("Retries", _text(_first(mine, RETRIES))),
        Figure("Backlog", _backlog_text(mine)),
        Figure(
            "Error rate",
            "—" if _first(mine, ERROR_RATE) is None else f"{_first(mine, ERROR_RATE) * 100:.1f} %",
            alarm=rate is not None and slo_rate is not None and rate > slo_rate,
        ),
        Figure("p50", _ms(_first(mine, P50))),
        Figure(
            "p95",
            _ms(_first(mine, P95)),
            alarm=p95 is not None and _p95_limit(fresh, slo_p95) is not None and p95 > _p95_limit(fresh, slo_p95),
        ),
    )
    slo_text, verdict, ok = _slo(slo_p95, slo_rate, fresh, rows)
    note = ""
    if not checks:
        note = "No checks watch this integration: add a system_jobs or http_probe check with integration: " + pane_id
    elif not mine:
        note = "No data yet: waiting for the first run of " + ", ".join(c.id for c in checks)
    return IntegrationPane(
        id=pane_id,
        title=title,
        status=status,
        rows=rows,
        figures=figures,
        slo_text=slo_text,
        slo_verdict=verdict,
        slo_ok=ok,
        last_error=_last_error(mine, now),
        trends=tuple(_trends(checks, results, histories)),
        updated=updated,
        updated_text=f"updated {format_age(updated, now)}" if updated else "no data yet",
        note=note,
        keys=tuple(k for r in sorted(mine, key=lambda r: r.check_id) for k in key_lists(r.values)),
    )


def _first(results: Iterable[CheckResult], names: Sequence[str]) -> float | None:
    """The first numeric figure under one of `names`, worst (largest) across `results`."""
    found = []
    for result in results:
        for name in names:
            value = result.values.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found.append(float(value))
                break
    return max(found) if found else None


def _text(value: float | None) -> str:
    return "—" if value is None else format_number(int(value) if float(value).is_integer() else value)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _backlog_text(results: Sequence[CheckResult]) -> str:
    if any(r.values.get("backlog_exceeded") for r in results):
        return "50,000+"
    return _text(_first(results, BACKLOG))


def _p95_limit(results: Sequence[CheckResult], slo_p95: float | None) -> float | None:
    if slo_p95 is not None:
        return float(slo_p95)
    own = _first(results, ("slo_p95_ms",))
    return own


def _slo(
    slo_p95: float | None, slo_rate: float | None, fresh: Sequence[CheckResult], rows: Sequence[CheckRow]
) -> tuple[str, str, bool | None]:
    """(what the SLO is, how the fresh figures stand against it, ok or None when unknowable)."""
    limit_p95 = _p95_limit(fresh, slo_p95)
    parts = []
    if limit_p95 is not None:
        parts.append(f"p95 ≤ {limit_p95:,.0f} ms")
    if slo_rate is not None:
        parts.append(f"error rate ≤ {slo_rate * 100:g} %")
    text = " · ".join(parts) if parts else "none configured"
    if not fresh:
        blind = [r.check_id for r in rows if r.stale]
        return text, ("no fresh data: " + ", ".join(blind) + " STALE") if blind else "no data yet", None
    missed = []
    p95 = _first(fresh, P95)
    rate = _first(fresh, ERROR_RATE)
    if limit_p95 is not None and p95 is not None and p95 > limit_p95:
        missed.append(f"p95 {p95:,.0f} ms > {limit_p95:,.0f} ms")
    if slo_rate is not None and rate is not None and rate > slo_rate:
        missed.append(f"error rate {rate * 100:.1f} % > {slo_rate * 100:g} %")
    if missed:
        return text, "SLO missed: " + "; ".join(missed), False
    if (limit_p95 is not None and p95 is None) and (slo_rate is not None and rate is None):
        return text, "nothing measured against the SLO yet", None
    if any(r.status is Status.ERROR for r in rows):
        return text, "not judged: a check could not run (ERROR)", None
    return text, "within SLO", True


def _last_error(results: Sequence[CheckResult], now: datetime) -> str:
    """The newest error an integration reported: a job's message, else a failed run's reason."""
    best: tuple[datetime, str] | None = None
    for result in results:
        message = result.values.get("last_error")
        if isinstance(message, str) and message:
            when = result.values.get("last_error_at")
            stamp = ""
            if isinstance(when, str) and when:
                try:
                    stamp = f" (job failed {format_time(parse_iso(when), now)})"
                except ValueError:
                    stamp = f" (job failed {when})"
            candidate = (utc(result.finished), shorten(message, 200) + stamp)
        elif result.status in (Status.ERROR, Status.BREACH):
            candidate = (utc(result.finished), f"{format_time(result.finished, now)}: {shorten(result.explanation, 200)}")
        else:
            continue
        if best is None or candidate[0] > best[0]:
            best = candidate
    return best[1] if best else ""


def _trends(
    checks: Sequence[CheckSpec], results: Mapping[str, CheckResult], histories: Mapping[str, Sequence[CheckResult]]
) -> list[Trend]:
    """A latency trend for each probe/latency check, an error-rate and backlog trend for jobs."""
    trends = []
    for check in checks:
        series = list(histories.get(check.id, ()))
        latest = results.get(check.id)
        if latest is not None and (not series or series[-1].finished < latest.finished):
            series.append(latest)
        series = series[-TREND_POINTS:]
        for label, names, unit in (
            ("p95", P95, "ms"),
            ("error rate", ERROR_RATE, "%"),
            ("backlog", BACKLOG, ""),
        ):
            points = [_first([r], names) for r in series]
            values = tuple(p * (100 if unit == "%" else 1) for p in points if p is not None)
            if not values:
                continue
            last = values[-1]
            last_text = f"{last:,.1f} %" if unit == "%" else f"{last:,.0f}{' ms' if unit == 'ms' else ''}"
            trends.append(Trend(f"{label} · {check.id}", values, last_text))
    return trends


__all__ = [
    "API_PANE_ID",
    "Figure",
    "IntegrationPane",
    "Trend",
    "api_latency_checks",
    "build_integrations",
    "integration_checks",
]
