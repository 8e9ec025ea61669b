"""Proposed alert thresholds from a baseline, printed as a crmctl.yaml snippet (Sprint 5.1 -> 5.2).

The rule is deliberately simple, so that a reviewer can redo it with a calculator:

* key query (`slos:` + an `api_latency` check): **warn** at the measured p95 + 20 %; **breach**
  (the SLO's `p95_ms`) at the larger of p95 + 50 % and the measured p99;
* WhoAmI (`whoami` check, which grades the median): warn at the larger of p95 and 1.5 x p50,
  breach at the larger of p99, 3 x p50 and 1.5 x warn;
* integration (`integrations[].slo`): `p95_ms` at the jobs' measured p95 + 50 %; `error_rate`
  at twice the measured failure rate, at least 1 %; a measured rate above the configured SLO is
  not a steady state and is never proposed as the new normal;

every figure rounded *up* to two significant digits. A query measured on fewer than
`MIN_SAMPLES` samples, or with errors in more than 10 % of them, gets no proposal, only a note.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from crmctl.baseline import WHOAMI_ID, Baseline
from crmctl.baseline_stats import MIN_SAMPLES, nice_ceil, summarise
from crmctl.config import Config
from crmctl.model import iso

MAX_ERROR_RATE = 0.10


def _num(value: float) -> str:
    return f"{value:g}"


def _str(value: str) -> str:
    """A YAML scalar that reads back as exactly `value` (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def propose(baseline: Baseline, config: Config) -> str:
    """The YAML snippet: `slos:`, `checks:` and `integrations:` entries with proposed thresholds."""
    where = f", entry {baseline.seq}" if baseline.seq is not None else ""
    lines = [
        f"# Proposed alert thresholds from baseline {_str(baseline.name)} "
        f"(captured {iso(baseline.started)}{where}).",
        "# Rule (docs/baselines.md): warn = p95 + 20 %; breach = max(p95 + 50 %, p99); rounded up.",
        "# Review with the service owner before merging into crmctl.yaml.",
    ]
    slo_lines: list[str] = []
    check_lines: list[str] = []
    configured = {s.id: s for s in config.slos}
    for q in baseline.queries:
        summary = summarise(q.durations_ms)
        error_rate = q.error_rate or 0.0
        if summary is None or summary.n < MIN_SAMPLES or error_rate > MAX_ERROR_RATE:
            n = summary.n if summary else 0
            lines.append(
                f"# {q.id}: no proposal ({n} measured samples, {error_rate:.0%} errors): "
                "capture a steadier baseline first."
            )
            continue
        if q.id == WHOAMI_ID:
            warn = nice_ceil(max(summary.p95, 1.5 * summary.p50))
            breach = nice_ceil(max(summary.p99, 3 * summary.p50, 1.5 * warn))
            check_id = next((c.id for c in config.checks if c.kind == "whoami"), "dynamics.whoami")
            check_lines.append(
                f"  - {{id: {_str(check_id)}, kind: whoami, warn: {_num(warn)}, breach: {_num(breach)}, every: 30s}}"
                f"  # median {summary.p50:.0f} ms, p95 {summary.p95:.0f}, p99 {summary.p99:.0f} ({summary.n} samples)"
            )
            continue
        warn = nice_ceil(summary.p95 * 1.2)
        breach = nice_ceil(max(summary.p95 * 1.5, summary.p99))
        slo = configured.get(q.id)
        was = f"; configured {_num(slo.p95_ms)}" if slo is not None else "; not configured yet"
        over = (
            " - MEASURED p95 IS OVER THE CONFIGURED SLO"
            if slo is not None and summary.p95 > slo.p95_ms
            else ""
        )
        query = slo.query if slo is not None else q.query
        slo_lines.append(f"  - id: {_str(q.id)}")
        slo_lines.append(f"    query: {_str(query)}")
        slo_lines.append(
            f"    p95_ms: {_num(breach)}  # measured p50 {summary.p50:.0f}, p95 {summary.p95:.0f}, "
            f"p99 {summary.p99:.0f} ms over {summary.n} samples{was}{over}"
        )
        slo_lines.append(f"    samples: {slo.samples if slo is not None else summary.n}")
        check_lines.append(
            f"  - {{id: {_str(q.id + '.latency')}, kind: api_latency, slo: {_str(q.id)}, "
            f"warn: {_num(warn)}, every: 5m}}"
        )
    integ_lines = _integrations(baseline, config)
    for header, body in (("slos:", slo_lines), ("checks:", check_lines), ("integrations:", integ_lines)):
        if body:
            lines.append(header)
            lines.extend(body)
    windows = baseline.jobs.get("windows", []) if isinstance(baseline.jobs, Mapping) else []
    if windows:
        lines.append("# Batch job windows (for the runbook and monitoring plan; no config key yet):")
        for w in windows[:10]:
            if w.get("p95_s") is None:
                continue
            lines.append(
                f"#   {w['name']}: p95 {w['p95_s']:g} s, max {w['max_s']:g} s, {w['jobs']} jobs "
                f"-> alert when a run exceeds {nice_ceil(float(w['p95_s']) * 1.5):g} s"
            )
    return "\n".join(lines) + "\n"


def _integrations(baseline: Baseline, config: Config) -> list[str]:
    lines: list[str] = []
    configured = {i.id: i for i in config.integrations}
    for figures in baseline.integrations:
        iid = str(figures.get("id"))
        p95 = figures.get("p95_ms")
        rate = figures.get("failure_rate")
        if p95 is None and rate is None:
            lines.append(f"  # {iid}: no completed jobs in the window; no proposal.")
            continue
        parts = []
        notes = []
        if p95 is not None:
            parts.append(f"p95_ms: {_num(nice_ceil(float(p95) * 1.5))}")
            notes.append(f"jobs p95 {float(p95):.0f} ms")
        integ = configured.get(iid)
        slo_rate = integ.slo.error_rate if integ is not None and integ.slo is not None else None
        if rate is not None:
            rate = float(rate)
            notes.append(f"failure rate {rate:.1%} of {figures.get('completed')} completed")
            if slo_rate is not None and rate > slo_rate:
                parts.append(f"error_rate: {_num(slo_rate)}")
                notes.append(f"OVER the configured {slo_rate:g}: not a steady state, kept")
            else:
                parts.append(f"error_rate: {_num(max(0.01, nice_ceil(rate * 2)))}")
        lines.append(f"  - id: {_str(iid)}")
        lines.append(f"    slo: {{{', '.join(parts)}}}  # {'; '.join(notes)}")
    return lines


def snippet_data(text: str) -> dict[str, Any]:
    """The snippet read back as YAML (tests and `--check` use it to prove it parses)."""
    import yaml

    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}
