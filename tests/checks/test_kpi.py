"""kpi_parity on the demo world: open pipeline by stage on both sides, exact, also above the 50,000 aggregate limit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from crmctl.model import Status
from tests.checks.datachecks import KPI, assert_error, kpi_oracle, run, run_direct, truth, world, write_config

CONTACTS = "  - {id: contact.kpi, kind: kpi_parity, entity: contact, measures: [{name: contacts, agg: count}], warn: 0}\n"
STEPS = {"Qualify": "1-Qualify", "Develop": "2-Develop", "Propose": "3-Propose", "Close": "4-Close"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


@pytest.fixture(scope="module")
def demo_run(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return asyncio.run(run(write_config(tmp_path_factory.mktemp("kpi"), demo_dir / "world", KPI + CONTACTS)))


def _affected_groups(world_dir: Path) -> set[str]:
    """Stages of every opportunity the generator made differ (missing, extra, stage/status/value changed)."""
    o = truth(world_dir)["entities"]["opportunity"]
    keys = set(o["missing_in_target"]) | {m["key"] for m in o["field_mismatches"]
                                          if m["target_field"] in ("stepname", "statecode", "estimatedvalue")}
    groups: set[str] = set()
    with sqlite3.connect(world_dir / "source.db") as db:
        for key in keys:
            row = db.execute("SELECT stage, status FROM opportunities WHERE opportunity_id = ?", (key,)).fetchone()
            if row and row[1] == "open":
                groups.add(STEPS[row[0]])
    with sqlite3.connect(world_dir / "dataverse.db") as db:
        for key in keys | set(o["extra_in_target"]):
            row = db.execute("SELECT stepname, statecode FROM e_opportunity WHERE new_legacyid = ?", (key,)).fetchone()
            if row and row[1] == 0:
                groups.add(row[0])
    return groups


def test_open_pipeline_by_stage_matches_both_databases_exactly(demo_dir: Path, demo_run: Any) -> None:
    world_dir = demo_dir / "world"
    result = demo_run.results["opportunity.kpi"]
    oracle = kpi_oracle(world_dir)
    assert set(result.values["groups"]) == set(oracle) == set(STEPS.values())
    for group, measures in oracle.items():
        for measure, (source, target) in measures.items():
            got = result.values["groups"][group][measure]
            if measure == "open":
                assert (got["source"], got["target"], got["difference"]) == (source, target, target - source)
            else:
                assert got["source"] == round(source, 4) and got["target"] == round(target, 4)
            expected = 0 if abs(target - source) <= 0.005 else abs(target - source) / abs(source)
            assert got["deviation_pct"] == round(expected * 100, 4)
    differing = {g for g, m in result.values["groups"].items() if any(f["deviation_pct"] for f in m.values())}
    assert differing and differing <= _affected_groups(world_dir)  # every difference is a planted one
    worst = max(f["deviation_pct"] for m in result.values["groups"].values() for f in m.values())
    assert result.values["max_deviation_pct"] == worst
    assert result.status is Status.WARN  # under 1 % everywhere
    assert result.values["method"] == "aggregate" and result.requests >= 2


def test_an_entity_above_the_aggregate_limit_is_aggregated_in_partitions(demo_dir: Path, demo_run: Any) -> None:
    contact = truth(demo_dir / "world")["entities"]["contact"]
    result = demo_run.results["contact.kpi"]
    figures = result.values["groups"]["all"]["contacts"]
    assert (figures["source"], figures["target"]) == (contact["source_count"], contact["target_count"])
    assert result.values["method"] == "partitioned aggregate" and result.values["partitions"] >= 2
    refused = [q for q in result.queries if q.status == 400]
    assert len(refused) == 1  # the one whole-entity aggregate Dynamics refused (0x8004e023)


# -- ERROR paths ---------------------------------------------------------------------------

ONE = KPI.replace("id: opportunity.kpi", "id: x")


async def test_throttled_past_the_budget_is_error(small: Path, tmp_path: Path) -> None:
    storm = "name: storm\nfaults:\n  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n"
    assert_error((await run(write_config(tmp_path, small, ONE, scenario=storm))).results["x"], "throttl", "wait")


async def test_a_refused_token_is_error(small: Path, tmp_path: Path) -> None:
    assert_error(await run_direct(write_config(tmp_path, small, ONE), "x", token="not-the-token"), "refused the token")


@pytest.mark.parametrize("old, new, name", [
    ("target: estimatedvalue", "target: nosuchattr", "nosuchattr"),
    ("source: estimated_value", "source: nosuchcol", "nosuchcol"),
    ("{source: stage,", "{source: nosuchcol,", "nosuchcol"),
    ("agg: sum", "agg: avg", "avg"),
])
async def test_an_unknown_column_or_measure_is_error(old: str, new: str, name: str, small: Path, tmp_path: Path) -> None:
    assert_error((await run(write_config(tmp_path, small, ONE.replace(old, new)))).results["x"], name)


async def test_an_unreachable_source_is_error(small: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, small, ONE, source=tmp_path / "gone.db")
    assert_error((await run(config)).results["x"], "does not exist")
