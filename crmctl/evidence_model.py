"""Builds the evidence document from the journal: every section renders whatever the journal holds.

Sections follow Sprint 4.4's evidence lists and Sprint 5.1's deliverables. Kinds this module
knows (check results, runbook progress, baselines, sign-offs, lessons, exports) are laid out
specially; kinds of the other modules (decisions, incidents, rehearsals, hypercare) are
claimed by prefix and shown generically, whatever their payload; and any kind nobody claims
lands in "Other journal entries". Nothing in the journal is ever left out of the pack.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from crmctl.evidence_doc import Details, Document, Image, Para, Pre, Section, Table, slug
from crmctl.model import CheckResult, Status, iso, utc
from crmctl.scrubber import Scrubber
from crmctl.views import format_number, format_span, format_threshold, format_values, status_label

RESULT_KIND = "check.result"
SECTION_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("runbook", ("runbook.", "run.")),
    ("checks", ("check.",)),
    ("decision", ("decision.", "rollback.", "matrix.")),
    ("incidents", ("incident.", "notify.")),
    ("rehearsal", ("rehearsal.",)),
    ("hypercare", ("hypercare.", "kpi.", "plugin.")),
    ("baselines", ("baseline.",)),
    ("signoffs", ("signoff.",)),
    ("lessons", ("lesson.",)),
    ("exports", ("evidence.",)),
)
"""Which section claims which journal kinds (by prefix). Unclaimed kinds go to "other"."""

DETAIL_CHARS = 600
"""Generic payload text in a table cell is cut here; the full payload is in data/journal.json."""


@dataclass
class PackMeta:
    """What the document says about the pack itself."""

    project: str
    generated_at: datetime
    generated_by: str
    config_path: str
    head_seq: int
    head_hash: str
    entries: int
    journal_ok: bool
    journal_reason: str
    screenshots: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, title) of every screenshot in the pack."""
    warnings: list[str] = field(default_factory=list)
    config_text: str = ""
    """The redacted effective config (already scrubbed)."""


def section_of(kind: str) -> str:
    """The section a journal kind is shown in."""
    for section, prefixes in SECTION_PREFIXES:
        if kind.startswith(prefixes):
            return section
    return "other"


class _Builder:
    def __init__(self, config: Any, entries: Sequence[Any], meta: PackMeta, scrub: Scrubber) -> None:
        self.config = config
        self.entries = list(entries)
        self.meta = meta
        self.s = scrub
        self.by_section: dict[str, list[Any]] = defaultdict(list)
        for entry in self.entries:
            self.by_section[section_of(entry.kind)].append(entry)

    # -- helpers --------------------------------------------------------------------------

    def t(self, value: Any) -> str:
        """Any value as scrubbed display text."""
        if value is None:
            return ""
        if isinstance(value, datetime):
            return iso(value)
        if isinstance(value, str):
            return self.s.text(value)
        if isinstance(value, (int, float, bool)):
            return format_number(value)
        return self.s.text(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))

    def table(self, id: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> Table:
        return Table(id, tuple(columns), tuple(tuple(self.t(c) for c in row) for row in rows), self.t(caption))

    def who(self, entry: Any) -> str:
        return f"{entry.operator}@{entry.host}"

    def details_text(self, payload: Mapping[str, Any], skip: Iterable[str] = ()) -> str:
        skipped = set(skip)
        parts = []
        for key, value in payload.items():
            if key in skipped:
                continue
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
            parts.append(f"{key}: {text}")
        text = "; ".join(parts)
        return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"

    def generic(self, sec: Section, entries: Sequence[Any], id: str, caption: str = "") -> None:
        """Every entry as one row: seq, time, who, kind, and its payload spelled out."""
        sec.add(
            self.table(
                id,
                ("Seq", "Time (UTC)", "By", "Kind", "Details"),
                ((e.seq, e.ts, self.who(e), e.kind, self.details_text(e.payload)) for e in entries),
                caption,
            )
        )

    # -- sections -------------------------------------------------------------------------

    def build(self) -> Document:
        m = self.meta
        doc = Document(
            title=self.t(f"Evidence pack: {m.project}"),
            subtitle=self.t(
                f"Generated {iso(m.generated_at)} by {m.generated_by}; journal head entry {m.head_seq} "
                f"({m.head_hash or 'empty journal'})."
            ),
        )
        self.summary(doc.section("summary", "Summary and integrity"))
        self.runbook(doc.section("runbook", "Cutover runbook with timings"))
        self.checks(doc.section("checks", "Checks, results and the queries that ran"))
        self.decision(doc.section("decision", "Rollback matrix and decision"))
        self.prefixed(doc.section("incidents", "Incidents"), "incidents", group_key=("incident", "incident_id", "number"))
        self.rehearsal(doc.section("rehearsal", "Rehearsal comparisons"))
        self.prefixed(doc.section("hypercare", "Hypercare and monitoring"), "hypercare")
        self.baselines(doc.section("baselines", "Performance baselines"))
        self.signoffs(doc.section("signoffs", "Sign-offs"))
        self.lessons(doc.section("lessons", "Lessons learned"))
        self.exports(doc.section("exports", "Earlier evidence exports"))
        self.other(doc.section("other", "Other journal entries"))
        self.screens(doc.section("screens", "Screenshots"))
        self.configuration(doc.section("config", "Configuration (redacted)"))
        return doc

    def summary(self, sec: Section) -> None:
        m = self.meta
        if m.journal_ok:
            sec.add(Para(f"Journal chain verified: {m.entries} entries, head entry {m.head_seq}.", "ok"))
        else:
            sec.add(Para(f"JOURNAL VERIFICATION FAILED: {m.journal_reason}", "warn"))
        for warning in m.warnings:
            sec.add(Para(self.t(warning), "warn"))
        kinds = Counter(e.kind for e in self.entries)
        sec.add(
            self.table(
                "facts",
                ("Item", "Value"),
                [
                    ("Project", m.project),
                    ("Generated at (UTC)", iso(m.generated_at)),
                    ("Generated by", m.generated_by),
                    ("Config file", m.config_path),
                    ("Journal entries", m.entries),
                    ("Journal head seq", m.head_seq),
                    ("Journal head hash", m.head_hash),
                    ("First entry", iso(self.entries[0].ts) if self.entries else "none"),
                    ("Last entry", iso(self.entries[-1].ts) if self.entries else "none"),
                ],
            ),
            self.table("kinds", ("Journal kind", "Entries", "Shown in section"), ((k, n, section_of(k)) for k, n in sorted(kinds.items()))),
            Para(
                "How to check this pack without trusting crmctl: `sha256sum -c SHA256SUMS` in this folder "
                "proves every file (manifest.json included) is as exported; manifest.json records the journal "
                "head above; journal/state.db can be re-verified entry by entry with the standard-library "
                "recipe in crmctl's docs/journal.md §8, and its last hash must equal the head hash above. "
                "`crmctl evidence verify <folder>` does all of this at once.",
                "note",
            ),
        )

    def steps(self) -> list[tuple[str, Any]]:
        """(book, step) of every configured step: the cutover runbook, then the rollback one."""
        rollback = getattr(self.config, "rollback", None)
        out = [("cutover", s) for s in (getattr(self.config, "runbook", ()) or ())]
        out += [("rollback", s) for s in (getattr(rollback, "runbook", ()) or ())] if rollback else []
        return out

    def runbook(self, sec: Section) -> None:
        entries = self.by_section.get("runbook", [])
        runs = _run_times(entries)
        steps = self.steps()
        if not steps:
            sec.add(Para("No runbook steps in the config.", "note"))
        for run, timing in runs.items():
            rows = []
            for book, step in steps:
                t = timing.get(step.id, {})
                if book == "rollback" and not t:
                    continue  # a rollback runbook that never started is no news in this run
                started, done = t.get("started"), t.get("done")
                actual = done - started if started and done else None
                planned = step.planned
                variance = actual - planned if actual is not None and planned else None
                rows.append((
                    step.id, book, step.title, step.owner or "", format_span(planned) if planned else "",
                    iso(started) if started else "", iso(t["ended"]) if t.get("ended") else "",
                    t.get("state", "not started"),
                    format_span(actual) if actual is not None else "",
                    _signed_span(variance) if variance is not None else "", t.get("by", ""),
                ))
            sec.add(self.table(
                f"run-{slug(run)}",
                ("Step", "Runbook", "Title", "Owner", "Planned", "Started (UTC)", "Ended (UTC)", "State", "Actual",
                 "vs plan", "By"),
                rows,
                f"Run '{run}': every step with its planned and actual timings.",
            ))
        if not runs:
            sec.add(self.table(
                "plan",
                ("Step", "Runbook", "Title", "Owner", "Phase", "Planned", "After", "Gate"),
                ((s.id, book, s.title, s.owner or "", s.phase or "", format_span(s.planned) if s.planned else "",
                  ", ".join(s.after), ", ".join(s.gate)) for book, s in steps),
                "The planned runbook (no step has been journalled yet).",
            ))
        if entries:
            self.generic(sec, entries, "log", "Runbook journal (every action, in order)")
        else:
            sec.none_recorded("Runbook progress:")

    def rehearsal(self, sec: Section) -> None:
        runs = _run_times(self.by_section.get("runbook", []))
        if runs:
            names = list(runs)
            rows = []
            totals = [timedelta(0)] * len(names)
            for book, step in self.steps():
                cells = []
                for i, name in enumerate(names):
                    t = runs[name].get(step.id, {})
                    if t.get("started") and t.get("done"):
                        took = t["done"] - t["started"]
                        totals[i] += took
                        cells.append(format_span(took))
                    else:
                        cells.append(t.get("state", "-"))
                if book == "rollback" and all(c == "-" for c in cells):
                    continue
                rows.append((step.id, format_span(step.planned) if step.planned else "", *cells))
            rows.append(("TOTAL (finished steps)", "", *(format_span(t) for t in totals)))
            sec.add(self.table(
                "runs",
                ("Step", "Planned", *names),
                rows,
                "Actual step durations per run (rehearsals and production), side by side.",
            ))
        entries = self.by_section.get("rehearsal", [])
        if entries:
            self.generic(sec, entries, "log", "Rehearsal entries as journalled.")
        if not runs and not entries:
            sec.none_recorded()

    def checks(self, sec: Section) -> None:
        results = [(e, CheckResult.from_json(e.payload)) for e in self.entries if e.kind == RESULT_KIND]
        latest: dict[str, tuple[Any, CheckResult]] = {}
        counts: Counter[str] = Counter()
        for entry, result in results:
            counts[result.check_id] += 1
            held = latest.get(result.check_id)
            if held is None or utc(result.finished) >= utc(held[1].finished):
                latest[result.check_id] = (entry, result)
        configured = list(getattr(self.config, "checks", ()) or ())
        ids = [c.id for c in configured] + sorted(set(latest) - {c.id for c in configured})
        if not ids:
            sec.none_recorded("Checks:")
            return
        rows = []
        for cid in ids:
            held = latest.get(cid)
            if held is None:
                rows.append((cid, status_label(Status.PENDING), "no result recorded", "", "", 0, 0, ""))
                continue
            _entry, r = held
            headline = r.values.get("headline")
            rows.append((
                cid,
                status_label(r.status),
                headline if isinstance(headline, str) and headline else format_values(r.values, limit=4),
                format_threshold(r.threshold),
                iso(r.finished),
                r.requests,
                counts[cid],
                r.explanation,
            ))
        sec.add(self.table(
            "latest",
            ("Check", "Status", "Values", "Threshold", "Finished (UTC)", "Requests", "Results in journal", "Explanation"),
            rows,
            "Latest result of every check (the journal holds every run; see data/checks-history.csv).",
        ))
        for cid in ids:
            held = latest.get(cid)
            if held is None:
                continue
            entry, r = held
            blocks: list[Any] = [
                Para(self.t(f"Entry {entry.seq}, run by {self.who(entry)}, {iso(r.started)} - {iso(r.finished)} "
                            f"({r.duration_s:.2f} s, {r.requests} requests).")),
                self.table(f"{slug(cid)}-values", ("Value", "Measured"), sorted((k, v) for k, v in r.values.items())),
            ]
            if r.queries:
                blocks.append(self.table(
                    f"{slug(cid)}-queries",
                    ("Target", "Method", "URL / SQL", "Status", "ms", "Bytes", "Started (UTC)", "Error"),
                    ((q.target, q.method, q.url, q.status if q.status is not None else "", f"{q.duration_ms:.1f}",
                      q.bytes, q.started, q.error or "") for q in r.queries),
                    "The queries that produced these figures.",
                ))
            else:
                blocks.append(Para("No queries recorded for this result.", "note"))
            sec.add(Details(self.t(f"{cid}: {status_label(r.status)} - {r.explanation}"), tuple(blocks)))
        sec.add(self.table(
            "history",
            ("Seq", "Finished (UTC)", "Check", "Status", "Values", "Requests"),
            ((e.seq, iso(r.finished), r.check_id, status_label(r.status), format_values(r.values, limit=None), r.requests)
             for e, r in results),
            "Every check result in the journal, in order.",
        ))
        others = [e for e in self.by_section.get("checks", []) if e.kind != RESULT_KIND]
        if others:
            self.generic(sec, others, "other", "Other check entries.")

    def decision(self, sec: Section) -> None:
        rollback = getattr(self.config, "rollback", None)
        latest = {}
        for e in self.entries:
            if e.kind == RESULT_KIND:
                r = CheckResult.from_json(e.payload)
                latest[r.check_id] = r
        if rollback is not None:
            pnr = getattr(rollback, "point_of_no_return", None)
            sec.add(self.table(
                "authority",
                ("Item", "Value"),
                [
                    ("Decision authority", ", ".join(rollback.authority)),
                    ("Rollback SLA", format_span(rollback.sla)),
                    ("Point of no return", iso(pnr) if pnr else "not set"),
                ],
            ))
            if rollback.criteria:
                rows = []
                for c in rollback.criteria:
                    r = latest.get(c.check)
                    rows.append((
                        c.id, c.title, c.check, c.rollback_if, c.hold_if or "",
                        status_label(r.status) if r else status_label(Status.PENDING),
                        format_values(r.values, limit=None) if r else "no result recorded",
                    ))
                sec.add(self.table(
                    "matrix",
                    ("Criterion", "Title", "Check", "Rollback if", "Hold if", "Check status", "Check values (latest)"),
                    rows,
                    "Rollback decision matrix: criteria from the config, figures from the latest journalled results.",
                ))
        else:
            sec.add(Para("No rollback section in the config.", "note"))
        entries = self.by_section.get("decision", [])
        if entries:
            rows = []
            for e in entries:
                p = e.payload
                rows.append((
                    e.seq, e.ts, self.who(e), e.kind,
                    _first(p, "verdict", "decision", "recommendation", "outcome"),
                    _first(p, "authority", "role", "decided_by", "by", "name"),
                    _first(p, "rationale", "reason", "statement", "note"),
                    self.details_text(p, skip=("verdict", "decision", "recommendation", "outcome", "authority", "role",
                                               "decided_by", "by", "name", "rationale", "reason", "statement", "note")),
                ))
            sec.add(self.table(
                "decisions",
                ("Seq", "Time (UTC)", "Recorded by", "Kind", "Decision", "Authority", "Rationale", "Other details"),
                rows,
                "Decisions and matrix events as journalled.",
            ))
            for e in entries:
                matrix = e.payload.get("matrix")
                criteria = matrix.get("criteria") if isinstance(matrix, Mapping) else None
                if not isinstance(criteria, list):
                    continue
                sec.add(Details(
                    self.t(f"Matrix as it stood at entry {e.seq} ({e.kind}): {matrix.get('overall', '')} - "
                           f"{matrix.get('reason', '')}"),
                    (self.table(
                        f"matrix-{e.seq}",
                        ("Criterion", "Check", "Outcome", "Check status", "Why", "Values"),
                        ((c.get("id"), c.get("check"), c.get("outcome"), c.get("status"), c.get("reason"),
                          format_values(c.get("values") or {}, limit=None))
                         for c in criteria if isinstance(c, Mapping)),
                    ),),
                ))
        else:
            sec.none_recorded("Decisions:")

    def prefixed(self, sec: Section, section: str, group_key: Sequence[str] = ()) -> None:
        entries = self.by_section.get(section, [])
        if not entries:
            sec.none_recorded()
            return
        if group_key:
            groups: dict[str, list[Any]] = defaultdict(list)
            for e in entries:
                key = _first(e.payload, *group_key) or (e.seq if e.kind.endswith(".raised") else "(no id)")
                groups[str(key)].append(e)
            rows = []
            for gid, items in groups.items():
                merged: dict[str, Any] = {}
                for e in items:
                    merged.update(e.payload)
                rows.append((
                    gid,
                    _first(merged, "severity", "sev"),
                    _first(merged, "title", "summary", "text"),
                    _first(merged, "status", "state") or items[-1].kind.rsplit(".", 1)[-1],
                    items[0].ts,
                    items[-1].ts,
                    len(items),
                ))
            sec.add(self.table(
                "register",
                ("Id", "Severity", "Title", "Status", "First entry (UTC)", "Last entry (UTC)", "Entries"),
                rows,
                "Register: one row per id, latest values.",
            ))
        self.generic(sec, entries, "log", "Every entry, in order.")

    def baselines(self, sec: Section) -> None:
        entries = self.by_section.get("baselines", [])
        captured = [e for e in entries if e.kind == "baseline.captured"]
        compared = [e for e in entries if e.kind == "baseline.compared"]
        if not entries:
            sec.none_recorded()
            return
        for e in captured:
            p = e.payload
            name = str(p.get("name", "?"))
            budget = p.get("budget", {}) or {}
            blocks: list[Any] = [
                Para(self.t(
                    f"Captured {p.get('started')} - {p.get('finished')} by {self.who(e)} (entry {e.seq}) against "
                    f"{p.get('target')}; {budget.get('spent', '?')} of at most {budget.get('max_requests', '?')} "
                    f"requests; percentiles: {p.get('method', 'nearest-rank')}."
                )),
                self.table(
                    f"{slug(name)}-{e.seq}-queries",
                    ("Query", "Samples", "p50 ms", "p95 ms", "p99 ms", "Errors", "Retried", "Seq. throughput /s",
                     "SLO p95 ms", "Meets SLO", "Query text"),
                    ((q.get("id"), f"{q.get('measured', q.get('n', 0))}/{q.get('planned')}", q.get("p50_ms"),
                      q.get("p95_ms"), q.get("p99_ms"), _pct(q.get("error_rate")), q.get("retried"),
                      q.get("throughput_rps"), q.get("slo_p95_ms"), _yes(q.get("meets_slo")), q.get("query"))
                     for q in p.get("queries", ())),
                    "Key queries and API calls.",
                ),
            ]
            jobs = p.get("jobs", {}) or {}
            windows = jobs.get("windows", ())
            if windows:
                blocks.append(self.table(
                    f"{slug(name)}-{e.seq}-jobs",
                    ("Job", "Runs", "Succeeded", "Failed", "Pending", "p50 s", "p95 s", "Max s", "Busy s", "First start", "Last end"),
                    ((w.get("name"), w.get("jobs"), w.get("succeeded"), w.get("failed"), w.get("pending"), w.get("p50_s"),
                      w.get("p95_s"), w.get("max_s"), w.get("busy_s"), w.get("first_start"), w.get("last_end"))
                     for w in windows),
                    f"Batch job windows from {jobs.get('rows', 0)} system jobs since {jobs.get('since', '?')}.",
                ))
            elif jobs.get("error"):
                blocks.append(Para(self.t(f"System jobs could not be read: {jobs['error']}"), "warn"))
            integ = p.get("integrations", ())
            if integ:
                blocks.append(self.table(
                    f"{slug(name)}-{e.seq}-integrations",
                    ("Integration", "Jobs", "Completed / h", "Failed", "Failure rate", "Retried jobs", "Retries",
                     "Retried then OK", "p95 ms", "SLO p95 / errors", "Meets SLO", "Top errors"),
                    ((i.get("id"), i.get("jobs"), i.get("per_hour"), i.get("failed"), _pct(i.get("failure_rate")),
                      i.get("retried"), i.get("retries"), i.get("retried_then_succeeded"), i.get("p95_ms"),
                      f"{i.get('slo_p95_ms')} / {i.get('slo_error_rate')}", _yes(i.get("meets_slo")),
                      "; ".join(f"{x.get('hex')} x{x.get('jobs')}: {x.get('message')}" for x in i.get("top_errors", ())))
                     for i in integ),
                    "Integration throughput, failures and retries.",
                ))
            hours = p.get("peak_hours") or []
            if any(hours):
                top = max(hours) or 1
                chart = "\n".join(f"{h:02d}:00 {n:>5} {'#' * round(30 * n / top)}" for h, n in enumerate(hours))
                blocks.append(Para(self.t(f"Peak-hour profile of system-job volumes (UTC); peak at {p.get('peak_hour'):02d}:00."
                                          if p.get("peak_hour") is not None else "Peak-hour profile (UTC).")))
                blocks.append(Pre(chart))
            slowest = p.get("slowest", ())
            if slowest:
                blocks.append(self.table(
                    f"{slug(name)}-{e.seq}-slowest",
                    ("ms", "Source", "Method", "URL / SQL", "Status", "Started (UTC)", "Error"),
                    ((s.get("duration_ms"), s.get("source"), s.get("method"), s.get("url"), s.get("status"),
                      s.get("started"), s.get("error") or "") for s in slowest),
                    "Top slowest calls from the query log.",
                ))
            for note in p.get("notes", ()):
                blocks.append(Para(self.t(note), "note"))
            sec.add(Details(self.t(f"Baseline '{name}' (entry {e.seq})"), tuple(blocks)))
        if not captured:
            sec.add(Para("No baseline captured.", "note"))
        for e in compared:
            p = e.payload
            a, b = p.get("a", {}), p.get("b", {})
            sec.add(self.table(
                f"comparison-{e.seq}",
                ("Query", "Verdict", "p50 A -> B ms", "p95 A -> B ms", "Statement"),
                ((q.get("id"), str(q.get("verdict", "")).upper(),
                  f"{(q.get('a') or {}).get('p50_ms')} -> {(q.get('b') or {}).get('p50_ms')}",
                  f"{(q.get('a') or {}).get('p95_ms')} -> {(q.get('b') or {}).get('p95_ms')}",
                  q.get("sentence")) for q in p.get("queries", ())),
                f"Comparison (entry {e.seq}, by {self.who(e)}): '{a.get('name')}' -> '{b.get('name')}'; "
                f"{(p.get('settings') or {}).get('method', '')}.",
            ))
        others = [e for e in entries if e.kind not in ("baseline.captured", "baseline.compared")]
        if others:
            self.generic(sec, others, "other")

    def signoffs(self, sec: Section) -> None:
        all_entries = self.by_section.get("signoffs", [])
        entries = [e for e in all_entries if e.kind == "signoff.recorded"]
        others = [e for e in all_entries if e.kind != "signoff.recorded"]
        if others:
            self.generic(sec, others, "other", "Other sign-off entries.")
        newest: dict[str, Any] = {}
        for e in entries:
            newest[str(e.payload.get("role", ""))] = e
        closure = [(role, "signed" if role in newest else "MISSING",
                    f"{newest[role].payload.get('name')} at {iso(newest[role].ts)}" if role in newest else "")
                   for role in ("business", "technical")]
        sec.add(self.table("closure", ("Sign-off", "State", "Latest"), closure, "Closure needs both."))
        if not entries:
            sec.none_recorded("Sign-offs:")
            return
        sec.add(self.table(
            "records",
            ("Seq", "Signed (UTC)", "Role", "Name", "Title", "Statement", "Recorded by", "Journal head when signed",
             "Checks when signed"),
            ((e.seq, e.ts, e.payload.get("role"), e.payload.get("name"), e.payload.get("title"), e.payload.get("statement"),
              self.who(e), f"entry {e.payload.get('head_seq')} {e.payload.get('head_hash', '')}",
              ", ".join(f"{k} {v}" for k, v in (e.payload.get("checks") or {}).items()))
             for e in entries),
        ))

    def lessons(self, sec: Section) -> None:
        all_entries = self.by_section.get("lessons", [])
        entries = [e for e in all_entries if e.kind == "lesson.recorded"]
        others = [e for e in all_entries if e.kind != "lesson.recorded"]
        if others:
            self.generic(sec, others, "other", "Other lesson entries.")
        if not entries:
            sec.none_recorded()
            return
        sec.add(self.table(
            "register",
            ("Seq", "Recorded (UTC)", "Category", "Lesson", "Action", "Owner", "By"),
            ((e.seq, e.ts, e.payload.get("category"), e.payload.get("text"), e.payload.get("action"),
              e.payload.get("owner"), self.who(e)) for e in entries),
        ))

    def exports(self, sec: Section) -> None:
        entries = self.by_section.get("exports", [])
        if not entries:
            sec.none_recorded()
            return
        self.generic(sec, entries, "log", "Each earlier export records the journal head it froze.")

    def other(self, sec: Section) -> None:
        entries = self.by_section.get("other", [])
        if not entries:
            sec.add(Para("Every journal entry is shown in one of the sections above.", "note"))
            return
        self.generic(sec, entries, "log", "Kinds no section claims, shown as journalled.")

    def screens(self, sec: Section) -> None:
        if not self.meta.screenshots:
            sec.none_recorded("Screenshots:")
            return
        for path, title in self.meta.screenshots:
            sec.add(Image(path, self.t(title)))

    def configuration(self, sec: Section) -> None:
        if self.meta.config_text:
            sec.add(Pre(self.meta.config_text))
        else:
            sec.none_recorded()


def _first(payload: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = payload.get(key)
        if value not in (None, ""):
            return value
    return ""


def _pct(value: Any) -> str:
    return "" if value is None else f"{float(value):.1%}"


def _yes(value: Any) -> str:
    return {True: "yes", False: "NO"}.get(value, "n/a")


def _signed_span(delta: timedelta) -> str:
    return ("+" if delta >= timedelta(0) else "-") + format_span(delta)


DEFAULT_RUN = "rehearsal-1"
"""The run a step belongs to when its entry names none (the runbook module's default)."""

_ENDED = {"done": "done", "completed": "done", "finished": "done", "failed": "failed",
          "skipped": "skipped", "blocked": "blocked"}


def _run_times(entries: Sequence[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per run, per step id: first start, the end, its state, and who ended it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for e in entries:
        run = str(e.payload.get("run") or DEFAULT_RUN)
        if e.kind == "run.started":
            out.setdefault(run, {})
            continue
        step = e.payload.get("step") or e.payload.get("step_id")
        if not step:
            continue
        t = out.setdefault(run, {}).setdefault(str(step), {})
        verb = e.kind.rsplit(".", 1)[-1]
        if verb in ("started", "start"):
            t.setdefault("started", e.ts)
            t["state"] = "in progress"
            t.pop("done", None)
        elif verb in _ENDED:
            t["state"] = _ENDED[verb]
            t["ended"] = e.ts
            t["by"] = f"{e.operator}@{e.host}"
            if _ENDED[verb] == "done":
                t["done"] = e.ts
        elif verb in ("reopened", "reopen"):
            t.pop("done", None)
            t["state"] = "reopened"
    return out


def build_document(config: Any, entries: Sequence[Any], meta: PackMeta, scrub: Scrubber) -> Document:
    """The evidence document for `entries` (the whole journal of the pack's copy)."""
    return _Builder(config, entries, meta, scrub).build()
