"""Unit tests of crmctl.views: the pure projections every screen (and later the CLI) renders."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from crmctl.model import Status
from crmctl.views import (
    Snapshot,
    Verdict,
    build_detail,
    build_overview,
    check_row,
    check_rows,
    count_statuses,
    countdown,
    effective_status,
    format_age,
    format_span,
    format_threshold,
    format_values,
    phase_from_runbook,
    recommend,
    red_items,
    status_label,
)
from tests.ui.world import ACCOUNT_QUERIES, CHECKS, NOW, build_config, result, sample_results

MIN = timedelta(minutes=1)


@dataclass(frozen=True)
class Entry:
    """Shaped like a JournalEntry, as far as the views care."""

    seq: int
    kind: str
    payload: Mapping[str, Any]


def results_by_id() -> dict[str, Any]:
    return {r.check_id: r for r in sample_results()}


def test_views_import_no_textual_or_rich() -> None:
    code = "import sys, crmctl.views; print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_status_labels_are_glyph_and_word() -> None:
    assert [status_label(s) for s in Status] == ["… PENDING", "✔ OK", "▲ WARN", "✖ BREACH", "⚠ ERROR", "◌ STALE"]


def test_effective_status_applies_stale_after_twice_the_cadence() -> None:
    ok = result("contact.count", Status.OK, "fine", ago=2 * MIN)
    assert effective_status(ok, MIN, NOW) is Status.OK  # exactly 2x: not yet
    assert effective_status(ok, MIN, NOW + timedelta(seconds=1)) is Status.STALE
    warn = result("account.nulls", Status.WARN, "w", ago=10 * MIN)
    assert effective_status(warn, MIN, NOW) is Status.STALE
    # An old BREACH or ERROR stays what it is: STALE must never hide something worse.
    assert effective_status(result("account.count", Status.BREACH, "b", ago=10 * MIN), MIN, NOW) is Status.BREACH
    assert effective_status(result("account.count", Status.ERROR, "e", ago=10 * MIN), MIN, NOW) is Status.ERROR
    assert effective_status(None, MIN, NOW) is Status.PENDING


def test_format_span_and_age() -> None:
    assert format_span(timedelta(seconds=45)) == "45 s"
    assert format_span(timedelta(minutes=1)) == "1 min"
    assert format_span(timedelta(minutes=5, seconds=2)) == "5 min 2 s"
    assert format_span(timedelta(minutes=12, seconds=30)) == "12 min"
    assert format_span(timedelta(hours=1, minutes=5)) == "1 h 05 min"
    assert format_span(timedelta(days=2, hours=4, minutes=9)) == "2 d 4 h"
    assert format_age(NOW - timedelta(seconds=3), NOW) == "3 s ago"
    assert format_age(None, NOW) == "never"
    assert format_age(NOW + timedelta(seconds=4), NOW) == "in 4 s (clock skew)"


def test_values_and_thresholds_text() -> None:
    assert format_values({"source": 12480, "target": 12443, "missing": 37}) == "source 12,480 · target 12,443 · missing 37"
    assert format_values({"a": 1, "b": 2.5, "c": None, "d": True}) == "a 1 · b 2.5 · c — · …"
    assert format_values({}) == "—"
    assert format_threshold({"breach": 0.001, "warn": 0}) == "warn >0 · breach >0.001"
    assert format_threshold({}) == "—"


def test_check_rows_follow_config_order_and_keep_unconfigured_results() -> None:
    results = results_by_id()
    results["retired.check"] = result("retired.check", Status.OK, "old", kind="row_count")
    rows = check_rows(CHECKS, results, NOW)
    assert [r.check_id for r in rows] == [c.id for c in CHECKS] + ["retired.check"]
    assert not rows[-1].configured
    by_id = {r.check_id: r for r in rows}
    assert by_id["opportunity.count"].status is Status.STALE and by_id["opportunity.count"].reported is Status.OK
    assert by_id["opportunity.count"].explanation.startswith("No result for 5 min 2 s (runs every 1 min); last said:")
    assert by_id["erp.sync"].status is Status.PENDING and by_id["erp.sync"].threshold_text == "warn >0.01 · breach >0.05"
    assert by_id["dynamics.whoami"].entity == "—"
    counts = count_statuses(rows)
    assert list(counts) == [Status.OK, Status.WARN, Status.BREACH, Status.ERROR, Status.STALE, Status.PENDING]
    assert counts == {Status.OK: 4, Status.WARN: 1, Status.BREACH: 1, Status.ERROR: 1, Status.STALE: 1, Status.PENDING: 1}
    assert [r.check_id for r in red_items(rows)] == ["account.count", "contact.orphans", "opportunity.count"]


def test_recommendation_rules() -> None:
    fresh_ok = {c.id: result(c.id, Status.OK, "ok", ago=timedelta(0), kind=c.kind) for c in CHECKS}
    rec = recommend(check_rows(CHECKS, fresh_ok, NOW))
    assert rec.verdict is Verdict.GO and rec.provisional and rec.label == "GO (provisional)"
    # Anything not OK holds, including ERROR, STALE and PENDING (no evidence, no go).
    for status in (Status.WARN, Status.ERROR):
        results = {**fresh_ok, "contact.count": result("contact.count", status, "x", ago=timedelta(0))}
        assert recommend(check_rows(CHECKS, results, NOW)).verdict is Verdict.HOLD
    stale = {**fresh_ok, "contact.count": result("contact.count", Status.OK, "x", ago=3 * MIN)}
    assert recommend(check_rows(CHECKS, stale, NOW)).verdict is Verdict.HOLD
    pending = dict(fresh_ok)
    del pending["erp.sync"]
    hold = recommend(check_rows(CHECKS, pending, NOW))
    assert hold.verdict is Verdict.HOLD and hold.reason == "1 check not OK (1 PENDING)."
    rollback = recommend(check_rows(CHECKS, results_by_id(), NOW))
    assert rollback.verdict is Verdict.ROLLBACK and rollback.reason == "1 check in BREACH: account.count."
    assert recommend([]).verdict is Verdict.HOLD


def test_countdowns() -> None:
    ponr = datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)
    assert countdown("PONR", ponr, NOW).text == "in 1 h 45 min"
    passed = countdown("PONR", ponr, ponr + timedelta(minutes=20))
    assert passed.passed and passed.text == "passed 20 min ago"
    assert countdown("Go-live", date(2026, 11, 29), NOW).at == datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert countdown("Go-live", None, NOW).text == "not set"


def test_snapshot_applies_feed_entries_once_and_keeps_the_newest_result() -> None:
    newer = result("contact.count", Status.BREACH, "newer", ago=timedelta(0))
    older = result("contact.count", Status.OK, "older", ago=MIN)
    snap = Snapshot(last_seq=10, loaded=True)
    snap = snap.apply_entries([
        Entry(9, "check.result", result("account.count", Status.OK, "already seen").to_json()),
        Entry(11, "check.result", newer.to_json()),
        Entry(12, "check.result", older.to_json()),  # journalled late by a slow session
        Entry(13, "runbook.step.started", {"step": "freeze"}),
        Entry(14, "incident.raised", {"id": 1}),
    ])
    assert snap.last_seq == 14
    assert set(snap.results) == {"contact.count"}
    assert snap.results["contact.count"].explanation == "newer"
    assert [e.seq for e in snap.runbook] == [13]
    assert snap.newest == NOW


def test_phase_from_runbook_entries(tmp_path: Path) -> None:
    steps = build_config(tmp_path).runbook
    assert phase_from_runbook((), steps) == "Pre-cutover"
    assert phase_from_runbook((Entry(1, "runbook.step.started", {"step": "freeze"}),), steps) == "Freeze"
    assert phase_from_runbook((Entry(1, "runbook.phase", {"phase": "Hypercare"}),), steps) == "Hypercare"
    assert phase_from_runbook((Entry(1, "runbook.step.done", {"step_id": "unknown"}),), steps) == "unknown"


def test_overview_view(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    snap = Snapshot(results=results_by_id(), last_seq=7, loaded=True)
    view = build_overview(config, snap, NOW)
    assert view.phase == "Pre-cutover" and view.clock_text == "2026-11-28 21:14:03 UTC"
    assert [c.text for c in view.countdowns] == ["in 1 h 45 min", "in 2 h 45 min"]
    assert view.total == 8 and view.updated_text == "updated 5 s ago"
    assert build_overview(config, Snapshot(), NOW).updated_text == "loading…"
    assert build_overview(config, Snapshot(loaded=True), NOW).updated_text == "no results yet"


def test_detail_lists_queries_relative_to_the_api_root() -> None:
    r = result("account.count", Status.BREACH, "37 missing", {"missing": 37}, queries=ACCOUNT_QUERIES)
    earlier = [result("account.count", Status.OK, "fine", {"missing": 0}, ago=2 * MIN)]
    detail = build_detail(CHECKS[0], r, NOW, earlier)
    assert detail.query_base == "https://contoso.crm.dynamics.com/api/data/v9.2/"
    assert [q.url for q in detail.queries][:2] == ["SELECT COUNT(*) FROM accounts", "accounts?$select=new_legacyid&$top=5000"]
    assert detail.queries[1].full_url.startswith("https://contoso.crm.dynamics.com/")
    assert [(q.status_text, q.duration_text) for q in detail.queries[:3]] == [("—", "12 ms"), ("200", "412 ms"), ("429", "96 ms")]
    assert detail.thresholds == (("warn", "0"), ("breach", "0.001"))
    assert detail.requests == 4 and detail.cadence_text == "every 1 min" and detail.duration_text == "0.84 s"
    assert detail.history[0].status_label == "✔ OK" and detail.history[0].value_text == "missing 0"
    pending = build_detail(CHECKS[-1], None, NOW)
    assert pending.row.status is Status.PENDING and pending.queries == () and pending.started_text == "—"
    assert check_row(None, r, NOW).configured is False


def test_format_values_prefers_the_checks_headline() -> None:
    values = {"headline": "20,000 → 19,966 (-34)", "difference": -34, "source": 20000}
    assert format_values(values) == "20,000 → 19,966 (-34)"
    assert format_values({"headline": "", "a": 1}) == "a 1"


def test_a_result_landing_between_two_clock_ticks_is_just_now_not_skew() -> None:
    assert format_age(NOW + timedelta(milliseconds=600), NOW) == "just now"
    assert format_age(NOW - timedelta(milliseconds=300), NOW) == "just now"
    assert format_age(NOW + timedelta(seconds=2.5), NOW) == "in 2 s (clock skew)"
