"""Core behind the control room's new parts, without Textual: time travel, key lists, progress,
cancel, and the integration projection (crmctl/timetravel.py, views.py, integration_view.py,
control.py, engine.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import pytest

from crmctl.checking import CheckProgress
from crmctl.clock import FrozenClock
from crmctl.config.sections import CheckConfig, CheckKindSpec
from crmctl.control import ControlRoom, ReadOnlyError
from crmctl.engine import Engine, Targets
from crmctl.integration_view import build_integrations
from crmctl.model import Status
from crmctl.store import Store
from crmctl.timetravel import as_of_banner, journal_moments, parse_as_of
from crmctl.views import KeyList, key_lists, progress_bar, progress_line
from tests.ui.integration_world import build_integration_config, fill_store_timed, integration_results
from tests.ui.world import ACTOR, NOW, build_config, result

UTC = timezone.utc


# ---------------------------------------------------------------------------------------------
# time travel: parsing and moments


def test_parse_as_of_reads_times_dates_and_seqs() -> None:
    assert parse_as_of("21:08", NOW).at == datetime(2026, 11, 28, 21, 8, tzinfo=UTC)
    assert parse_as_of(" 21:08:30 ", NOW).at == datetime(2026, 11, 28, 21, 8, 30, tzinfo=UTC)
    # A clock time later than now is yesterday's: the future has no journal.
    assert parse_as_of("23:30", NOW).at == datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    assert parse_as_of("2026-11-28 02:14", NOW).at == datetime(2026, 11, 28, 2, 14, tzinfo=UTC)
    assert parse_as_of("#1234", NOW).seq == 1234 and parse_as_of("77", NOW).seq == 77
    for bad, why in (("", "Type a time"), ("25:00", "not a time of day"), ("soon", "neither a time"),
                     ("2026-12-01 00:00", "in the future")):
        with pytest.raises(ValueError, match=why):
            parse_as_of(bad, NOW)


def test_banner_names_the_moment_and_says_live_updates_are_paused() -> None:
    at = datetime(2026, 11, 28, 2, 14, tzinfo=UTC)
    assert as_of_banner(at, NOW) == "AS OF 02:14:00 UTC — historical view, live updates paused"
    assert as_of_banner(at - timedelta(days=1), NOW).startswith("AS OF 2026-11-27 02:14:00 UTC")


class _Entry:
    def __init__(self, seq: int, ts: datetime, kind: str, payload: dict, operator: str = "alice") -> None:
        self.seq, self.ts, self.kind, self.payload, self.operator = seq, ts, kind, payload, operator


def test_moments_keep_operator_actions_apart_and_group_results_by_minute() -> None:
    t = datetime(2026, 11, 28, 21, 0, 5, tzinfo=UTC)
    entries = [
        _Entry(1, t, "check.result", {"check_id": "a", "status": "OK"}),
        _Entry(2, t + timedelta(seconds=20), "check.result", {"check_id": "b", "status": "BREACH"}),
        _Entry(3, t + timedelta(seconds=30), "runbook.step.done", {"step": "freeze"}, "bob"),
        _Entry(4, t + timedelta(seconds=40), "check.result", {"check_id": "a", "status": "OK"}),
        _Entry(5, t + timedelta(minutes=1), "check.result", {"check_id": "c", "status": "ERROR"}),
    ]
    moments = journal_moments(entries, NOW)
    assert [m.seq for m in moments] == [5, 4, 3, 2]
    assert moments[0].text == "21:01:05 UTC  #5  alice  result c ⚠ ERROR"
    assert moments[1].text.endswith("result a ✔ OK")
    assert moments[2].text == "21:00:35 UTC  #3  bob  runbook.step.done freeze"
    assert moments[3].text.endswith("2 results, 1 not OK") and moments[3].at == entries[1].ts


# ---------------------------------------------------------------------------------------------
# key lists, progress lines


def test_key_lists_show_the_first_keys_and_the_true_total() -> None:
    values = {"missing": 20_000, "missing_keys": [f"A-{n}" for n in range(25)], "extra_keys": ["X-1"],
              "failing_job_ids": [], "by_name": {"a": 1}, "flag": [True, False]}
    lists = key_lists(values, shown=3)
    assert lists == (KeyList("missing_keys", ("A-0", "A-1", "A-2"), 20_000), KeyList("extra_keys", ("X-1",), 1))
    assert lists[0].title == "missing keys (first 3 of 20,000)" and lists[0].text == "A-0, A-1, A-2, …"
    assert lists[1].title == "extra keys (1)" and lists[1].text == "X-1"
    # reconcile's shape: first_missing beside the missing count; duplicates per side.
    reconcile = {"missing": 37, "first_missing": ["A-1", "A-2"], "duplicate_keys": {"source": 4, "target": 0},
                 "first_duplicate_keys": {"source": ["D-1"], "target": []}}
    assert key_lists(reconcile) == (KeyList("first_missing", ("A-1", "A-2"), 37),
                                    KeyList("first_duplicate_keys (source)", ("D-1",), 4))


def test_progress_line_has_rows_pages_eta_and_bar_reads_without_colour() -> None:
    p = CheckProgress("account.reconcile", NOW, started=100.0, updated=110.0, rows=10_000, pages=2, total=40_000)
    line = progress_line(p, at=110.0)
    assert line.text == "10,000/40,000 rows · ETA 30 s · 2 pages · running 10 s"
    assert progress_bar(line.fraction) == "██░░░░░░░░  25%"
    unknown = progress_line(replace(p, total=None), at=112.0)
    assert unknown.text == "10,000 rows · no estimate · 2 pages · running 12 s" and unknown.fraction is None
    assert progress_bar(None).startswith("▒")


# ---------------------------------------------------------------------------------------------
# integration projection: tolerant of missing figures


def test_integration_panes_read_figures_tolerantly(tmp_path: Path) -> None:
    config = build_integration_config(tmp_path)
    odd = result("erp-sync.jobs", Status.WARN, "jobs seen", {"failures": 2, "queued": 9, "last_error": None},
                 kind="system_jobs")
    [erp, marketing, billing, api] = build_integrations(config, {"erp-sync.jobs": odd}, {}, NOW)
    figures = {f.label: f.text for f in erp.figures}
    assert figures == {"Failures": "2", "Retries": "—", "Backlog": "9", "Error rate": "—", "p50": "—", "p95": "—"}
    assert erp.status is Status.WARN  # the probe has no result: PENDING is not worse than WARN
    assert erp.slo_verdict == "nothing measured against the SLO yet" and erp.slo_ok is None
    assert marketing.note.startswith("No data yet") and marketing.updated_text == "no data yet"
    assert billing.note.startswith("No checks watch") and billing.status is Status.PENDING
    assert api.id == "dynamics-api" and api.slo_text == "none configured"


def test_an_erroring_check_is_never_within_slo(tmp_path: Path) -> None:
    config = build_integration_config(tmp_path)
    results = {
        "erp-sync.jobs": result("erp-sync.jobs", Status.OK, "ok", {"error_rate": 0.0}, kind="system_jobs"),
        "erp-sync.probe": result("erp-sync.probe", Status.ERROR, "probe unreachable", {}, kind="http_probe"),
    }
    erp = build_integrations(config, results, {}, NOW)[0]
    assert erp.status is Status.ERROR and erp.slo_ok is None
    assert erp.slo_verdict == "not judged: a check could not run (ERROR)"
    assert "probe unreachable" in erp.last_error


# ---------------------------------------------------------------------------------------------
# ControlRoom: snapshots as of a moment, seq_at, progress and cancel through the real engine


async def test_snapshot_as_of_reads_the_journal_as_it_stood(tmp_path: Path) -> None:
    config = build_integration_config(tmp_path)
    await fill_store_timed(config.state, integration_results())
    clock = FrozenClock(NOW)
    async with await Store.open(config.state, clock=clock) as store:
        room = ControlRoom(config, store, None, actor=ACTOR, clock=clock)
        live = await room.snapshot()
        assert live.as_of is None and live.last_seq == await store.last_seq()
        at = datetime(2026, 11, 28, 21, 8, tzinfo=UTC)
        past = await room.snapshot(until=at)
        assert past.as_of == at and past.loaded
        assert all(r.finished <= at for r in past.results.values())
        assert "account.count" not in past.results and "erp-sync.jobs" in past.results
        entries = await store.entries()
        assert past.last_seq == max(e.seq for e in entries if e.ts <= at)
        assert [e.payload["step"] for e in past.runbook] == ["freeze"]
        assert await room.seq_at(datetime(2000, 1, 1, tzinfo=UTC)) == 0
        assert await room.seq_at(NOW + timedelta(hours=1)) == live.last_seq
        assert (await room.entry_at(3)).seq == 3 and await room.entry_at(10_000) is None


class _Pages:
    """A check kind that reports two pages, then waits until cancelled (or released)."""

    kind: ClassVar[str] = "pages"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec()
    started: ClassVar[asyncio.Event | None] = None

    async def run(self, ctx):  # noqa: ANN001, ANN201
        ctx.report_progress(rows=500, pages=1, total=2000)
        ctx.report_progress(rows=1000, pages=2)
        assert _Pages.started is not None
        _Pages.started.set()
        await asyncio.sleep(3600)


async def test_cancel_journals_an_error_naming_the_operator_and_progress_ends(tmp_path: Path) -> None:
    check = CheckConfig("big.reconcile", "pages", "account", every=timedelta(minutes=5))
    config = build_config(tmp_path, (check,))
    clock = FrozenClock(NOW)
    _Pages.started = asyncio.Event()
    async with await Store.open(config.state, clock=clock) as store:
        engine = Engine(config, {"pages": _Pages}, store, Targets(None, None), actor=ACTOR, clock=clock)
        room = ControlRoom(config, store, engine, actor=ACTOR, clock=clock)
        seen: list[int] = []
        task = asyncio.create_task(room.run_checks())
        await asyncio.wait_for(_Pages.started.wait(), 5)
        progress = room.progress["big.reconcile"]
        assert (progress.rows, progress.pages, progress.total) == (1000, 2, 2000)  # total kept from page 1
        assert engine.running() == ["big.reconcile"]
        seen.append(room.progress_version)
        clock.advance(timedelta(seconds=12))
        assert room.cancel("big.reconcile") is True
        [res] = await asyncio.wait_for(task, 5)
        assert res.status is Status.ERROR
        assert res.explanation == "Run cancelled by alice after 12 s; no figure is trusted."
        [entry] = await store.entries(kinds=["check.result"])
        assert entry.payload["status"] == "ERROR" and entry.operator == "alice"
        assert room.progress == {} and room.progress_version > seen[0]
        assert room.cancel("big.reconcile") is False  # nothing running any more
        # Cancelling the caller (quit) is not a cancelled check: nothing is journalled.
        _Pages.started = asyncio.Event()
        task = asyncio.create_task(room.run_checks())
        await asyncio.wait_for(_Pages.started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(await store.entries(kinds=["check.result"])) == 1 and room.progress == {}
        observer = ControlRoom(config, store, None, actor=ACTOR, clock=clock, read_only=True)
        with pytest.raises(ReadOnlyError):
            observer.cancel("big.reconcile")


# ---------------------------------------------------------------------------------------------
# row_count reports progress on its long path (the key scan above every aggregate cap)


class _HugeDynamics:
    """Dynamics with more records than any aggregate takes and no createdon: only a scan counts."""

    def __init__(self, pages: int, per_page: int) -> None:
        self._pages, self._per_page = pages, per_page

    async def aggregate(self, entity_set, apply, log=None):  # noqa: ANN001, ANN201
        from crmctl.connectors.errors import AggregateLimitExceeded

        raise AggregateLimitExceeded(400, "0x8004e023", "AggregateQueryRecordLimit exceeded")

    async def get_json(self, entity_set, params, log=None):  # noqa: ANN001, ANN201
        return {"value": []}  # no createdon anywhere: partitions impossible

    async def pages(self, entity_set, select=None, filter=None, log=None):  # noqa: A002, ANN001, ANN201
        for _ in range(self._pages):
            yield [{"k": 1}] * self._per_page

    async def total_record_count(self, names, log=None):  # noqa: ANN001, ANN201
        return {}


def _accounts_source(folder: Path, rows: int):  # noqa: ANN202 - crmctl.connectors.sql.SqlSource
    """A real SQLite source holding `rows` accounts (the check counts them through its intents)."""
    import sqlite3

    from crmctl.connectors.sql import SqlSource

    path = folder / "source.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (account_id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO accounts VALUES (?)", ((f"A-{n:06d}",) for n in range(rows)))
    return SqlSource(f"sqlite:///{path}")


async def test_row_count_key_scan_reports_rows_and_pages(tmp_path: Path) -> None:
    import time

    from checks.row_count import RowCount
    from crmctl.checking import CheckContext
    from crmctl.config.sections import EntityConfig, EntitySource, EntityTarget

    entity = EntityConfig("account", EntitySource("accounts", "account_id"), EntityTarget("accounts", "new_legacyid"))
    check = CheckConfig("account.count", "row_count", "account", warn=0, breach=0.001, params={"hint": False})
    config = replace(build_config(tmp_path, (check,)), entities=(entity,))
    reports: list[CheckProgress] = []
    source = _accounts_source(tmp_path, 15_000)
    ctx = CheckContext(config, check, _HugeDynamics(3, 5000), source, FrozenClock(NOW), NOW,
                       time.monotonic() + 60, progress=reports.append)
    try:
        res = await RowCount().run(ctx)
    finally:
        await source.close()
    assert res.values["target"] == 15_000 and res.values["method"] == "key scan"
    assert [(r.rows, r.check_id) for r in reports] == [(5000, "account.count"), (10_000, "account.count"),
                                                         (15_000, "account.count")]
