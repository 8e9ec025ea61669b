"""write_freeze and delta on the demo world: exactly the planted post-freeze writes and lagging rows."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from checks.sourcetime import _literal, parse_time
from crmctl.model import Status
from tests.checks.datachecks import assert_error, changed_since, run, run_direct, truth, world, write_config

WATERMARK_SQL = "SELECT last_watermark FROM migration_watermarks WHERE table_name = '{table}'"
FREEZE = """\
  - {id: source.write_freeze, kind: write_freeze, since: 2026-11-28T18:00:00Z, writer: updated_by, warn: 0, breach: 0}
  - {id: late.write_freeze, kind: write_freeze, since: 2026-11-28T21:29:00Z, entities: [account], warn: 0, breach: 0}
"""
DELTAS = "".join(
    f'  - {{id: {name}.delta, kind: delta, entity: {name}, warn: 0, breach: 10, '
    f'watermark_sql: "{WATERMARK_SQL.format(table=table)}"}}\n'
    f'  - {{id: {name}.delta_scan, kind: delta, entity: {name}, watermark: 2026-11-28T17:45:00Z, batch: 1}}\n'
    for name, table in (("account", "accounts"), ("contact", "contacts"), ("opportunity", "opportunities"))
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


@pytest.fixture(scope="module")
def demo_run(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return asyncio.run(run(write_config(tmp_path_factory.mktemp("freeze"), demo_dir / "world", FREEZE + DELTAS)))


def test_every_write_after_the_freeze_is_found_with_its_writer(demo_dir: Path, demo_run: Any) -> None:
    world_dir = demo_dir / "world"
    e = truth(world_dir)["entities"]
    result = demo_run.results["source.write_freeze"]
    v = result.values
    assert v["writes"] == sum(len(x["post_freeze_writes"]) for x in e.values()) == 26
    assert v["by_entity"] == {name: len(x["post_freeze_writes"]) for name, x in e.items()}
    assert v["first"] == {name: sorted(x["post_freeze_writes"]) for name, x in e.items()}
    writers: Counter[str] = Counter()
    with sqlite3.connect(world_dir / "source.db") as db:
        for table in ("accounts", "contacts", "opportunities"):
            writers.update(w for (w,) in db.execute(
                f"SELECT updated_by FROM {table} WHERE updated_at > '2026-11-28T18:00:00Z'"))
    assert v["by_writer"] == dict(writers) and next(iter(v["by_writer"])) == "svc_erp_sync"
    assert result.status is Status.BREACH and "svc_erp_sync" in result.explanation
    assert {q.method for q in result.queries} == {"SQL"}  # the source only: no Dynamics request
    late = demo_run.results["late.write_freeze"]
    assert late.status is Status.OK and late.values["writes"] == 0


def test_every_change_since_the_watermark_is_applied_or_named_behind(demo_dir: Path, demo_run: Any) -> None:
    world_dir = demo_dir / "world"
    t = truth(world_dir)
    for name, table, key in (("account", "accounts", "account_id"), ("contact", "contacts", "contact_id"),
                             ("opportunity", "opportunities", "opportunity_id")):
        e = t["entities"][name]
        changed = changed_since(world_dir, table, key, t["watermark"])
        missing = sorted(set(changed) & set(e["missing_in_target"]))
        for check_id, method in ((f"{name}.delta", "key lookups"), (f"{name}.delta_scan", "sorted merge")):
            v = demo_run.results[check_id].values
            assert v["watermark"] == t["watermark"] and v["method"] == method
            assert (v["changed"], v["applied"], v["behind"], v["missing"]) == (
                len(changed), len(e["delta_applied"]), len(e["delta_behind"]), len(missing))
            assert [b["key"] for b in v["first_behind"]] == sorted(e["delta_behind"])[:20]
            assert all(b["stale_s"] > 0 and b["target"] < b["source"] for b in v["first_behind"])
            assert v["first_missing"] == missing[:20]
            if not missing:
                assert v["oldest_pending"] == min(b["source"] for b in v["first_behind"])
    assert demo_run.results["account.delta"].status is Status.WARN  # 9 behind: > 0, not > 10
    assert demo_run.results["contact.delta"].status is Status.BREACH  # 37 behind


def test_source_timestamps_are_compared_in_the_column_s_own_layout() -> None:
    at = datetime(2026, 11, 28, 18, 0, 5, tzinfo=timezone.utc)
    assert _literal("2026-01-01T00:00:00Z", at, timezone.utc) == "2026-11-28T18:00:05Z"
    assert _literal("2026-01-01 00:00:00", at, timezone.utc) == "2026-11-28 18:00:05"
    assert _literal("2026-01-01 00:00:00.123", at, timezone.utc) == "2026-11-28 18:00:05.000"
    assert _literal(1_700_000_000, at, timezone.utc) == at.timestamp()
    assert _literal(1_700_000_000_000, at, timezone.utc) == at.timestamp() * 1000
    assert _literal("2026-01-01T00:00:00+02:00", at, timezone.utc) is None  # offsets vary: filter in Python
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    assert _literal("2026-01-01 00:00:00", at, berlin) == "2026-11-28 19:00:05"
    assert parse_time("2026-11-28 19:00:05", berlin) == at
    assert parse_time(at.timestamp() * 1000) == at and parse_time("not a time") is None


# -- ERROR paths ---------------------------------------------------------------------------

DELTA = '  - {id: x, kind: delta, entity: contact, watermark: 2026-11-28T17:45:00Z}\n'
WRITE_FREEZE = "  - {id: x, kind: write_freeze, since: 2026-11-28T18:00:00Z, writer: updated_by}\n"


async def test_delta_throttled_past_the_budget_is_error(small: Path, tmp_path: Path) -> None:
    storm = "name: storm\nfaults:\n  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n"
    assert_error((await run(write_config(tmp_path, small, DELTA, scenario=storm))).results["x"], "throttl", "wait")


async def test_delta_with_a_refused_token_is_error(small: Path, tmp_path: Path) -> None:
    assert_error(await run_direct(write_config(tmp_path, small, DELTA), "x", token="not-the-token"), "refused the token")


async def test_write_freeze_reads_only_the_source_so_dynamics_faults_leave_it_exact(small: Path, tmp_path: Path) -> None:
    storm = "name: storm\nfaults:\n  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n"
    throttled = (await run(write_config(tmp_path / "a", small, WRITE_FREEZE, scenario=storm))).results["x"]
    refused = await run_direct(write_config(tmp_path / "b", small, WRITE_FREEZE), "x", token="not-the-token")
    planted = sum(len(x["post_freeze_writes"]) for x in truth(small)["entities"].values())
    for result in (throttled, refused):
        assert result.status is not Status.ERROR and result.values["writes"] == planted


@pytest.mark.parametrize("kind, checks, patch, name", [
    ("delta", DELTA, ("target: {entity_set: contacts, key: new_legacyid, modified: modifiedon",
                      "target: {entity_set: contacts, key: new_legacyid, modified: nosuchattr"), "nosuchattr"),
    ("delta", DELTA, ("source: {table: contacts, key: contact_id, modified: updated_at}",
                      "source: {table: contacts, key: contact_id, modified: nosuchcol}"), "nosuchcol"),
    ("delta", '  - {id: x, kind: delta, entity: contact, watermark_sql: "SELECT nosuchcol FROM migration_watermarks"}\n',
     None, "nosuchcol"),
    ("write_freeze", "  - {id: x, kind: write_freeze, since: 2026-11-28T18:00:00Z, writer: nosuchcol}\n", None, "nosuchcol"),
])
async def test_an_unknown_column_is_error(kind: str, checks: str, patch: Any, name: str, small: Path, tmp_path: Path) -> None:
    assert_error((await run(write_config(tmp_path, small, checks, patch=patch))).results["x"], name)


@pytest.mark.parametrize("checks", [DELTA, WRITE_FREEZE])
async def test_an_unreachable_source_is_error(checks: str, small: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, small, checks, source=tmp_path / "gone.db")
    assert_error((await run(config)).results["x"], "does not exist")


async def test_a_delta_without_a_watermark_is_error(small: Path, tmp_path: Path) -> None:
    checks = "  - {id: x, kind: delta, entity: contact}\n  - {id: y, kind: write_freeze}\n"
    results = (await run(write_config(tmp_path, small, checks))).results
    assert_error(results["x"], "watermark")
    assert_error(results["y"], "since")
