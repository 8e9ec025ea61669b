"""duplicates, nulls and orphans on the demo world: exactly the planted defects, and ERROR when they cannot be known."""

from __future__ import annotations

import asyncio
import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.integrity import _groups_in_page
from checks.keys import fold
from crmctl.model import Status
from tests.checks.datachecks import assert_error, run, run_direct, truth, world, write_config

INTEGRITY = """\
  - {id: account.duplicates, kind: duplicates, entity: account, warn: 0, breach: 10}
  - {id: contact.duplicates, kind: duplicates, entity: contact, columns: {emailaddress1: email}, warn: 0, breach: 10}
  - {id: account.nulls, kind: nulls, entity: account, warn: 0, breach: 10}
  - {id: contact.nulls, kind: nulls, entity: contact, columns: {lastname: last_name}, warn: 0, breach: 10}
  - {id: opportunity.nulls, kind: nulls, entity: opportunity, warn: 0, breach: 10}
  - {id: account.orphans, kind: orphans, entity: account, warn: 0, breach: 10}
  - {id: contact.orphans, kind: orphans, entity: contact, warn: 0, breach: 10}
  - {id: opportunity.orphans, kind: orphans, entity: opportunity, warn: 0, breach: 10}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


def _rows(path: str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture(scope="module")
def demo_run(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One engine run of every integrity check on the full demo world, shared by the truth tests."""
    return asyncio.run(run(write_config(tmp_path_factory.mktemp("integrity"), demo_dir / "world", INTEGRITY)))


async def test_duplicates_are_exactly_the_planted_groups_on_both_sides(demo_dir: Path, demo_run: Any) -> None:
    e = truth(demo_dir / "world")["entities"]
    for name, column in (("account", "accountnumber"), ("contact", "emailaddress1")):
        result = demo_run.results[f"{name}.duplicates"]
        v = result.values
        planted = {side: e[name]["duplicates"][side][column] for side in ("source", "target")}
        assert (v["target_groups"], v["source_groups"]) == (len(planted["target"]), len(planted["source"]))
        exported: dict[tuple[str, str], list[str]] = defaultdict(list)
        for side, col, value, key in _rows(v["exports"]["duplicates"]["path"]):
            exported[(side, value.lower())].append(key)
        for side in ("source", "target"):
            expected = {(side, g["value"].lower()): sorted(g["keys"]) for g in planted[side]}
            assert {k: sorted(keys) for k, keys in exported.items() if k[0] == side} == expected
    contact = demo_run.results["contact.duplicates"]
    assert contact.values["new_in_target"] == 4  # made by Marketing Sync, in Dynamics only
    assert contact.status is Status.BREACH and demo_run.results["account.duplicates"].status is Status.WARN
    assert "19 values of emailaddress1 repeat in Dynamics" in contact.explanation


async def test_nulls_are_exactly_the_planted_empty_required_columns(demo_dir: Path, demo_run: Any) -> None:
    e = truth(demo_dir / "world")["entities"]
    for name, column in (("account", "name"), ("contact", "lastname"), ("opportunity", "name")):
        result = demo_run.results[f"{name}.nulls"]
        planted = e[name]["nulls"]
        assert (result.values["target"], result.values["source"]) == (
            len(planted["target"][column]), len(planted["source"][column]))
        assert result.values["columns"][column]["first_target"] == sorted(planted["target"][column])[:20]
        exported = [key for side, col, key in _rows(result.values["exports"]["nulls"]["path"]) if side == "target"]
        assert exported == sorted(planted["target"][column])
    assert demo_run.results["opportunity.nulls"].status is Status.OK  # the demo's one green family
    assert demo_run.results["contact.nulls"].status is Status.BREACH  # 25 > 10


async def test_orphans_are_exactly_the_lost_and_wrong_parents(demo_dir: Path, demo_run: Any) -> None:
    e = truth(demo_dir / "world")["entities"]
    for name, lookup in (("account", "_primarycontactid_value"), ("contact", "_parentcustomerid_value"),
                         ("opportunity", "_parentaccountid_value")):
        result = demo_run.results[f"{name}.orphans"]
        planted = e[name]["orphans"][lookup]
        found = result.values["lookups"][lookup]
        assert (found["lost"], found["wrong"]) == (len(planted["lost"]), len(planted["wrong"]))
        rows = _rows(result.values["exports"]["orphans"]["path"])
        assert sorted(k for _, k, kind, _, _ in rows if kind == "lost") == sorted(planted["lost"])
        assert sorted((k, exp, act) for _, k, kind, exp, act in rows if kind == "wrong") == sorted(
            (w["key"], w["expected"] or "", w["actual"] or "") for w in planted["wrong"])
        assert found["method"] == "sorted merge"
    assert demo_run.results["opportunity.orphans"].values["orphans"] == 14
    assert "9 pointing at another account" in demo_run.results["opportunity.orphans"].explanation


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "A", "b", "c", "C", "d"]), min_size=1, max_size=30),
       st.lists(st.integers(1, 7), min_size=1, max_size=5))
def test_groups_of_equal_neighbours_survive_any_page_boundary(values: list[str], sizes: list[int]) -> None:
    values = sorted(values, key=fold)
    rows = [{"v": v, "k": f"K{i}"} for i, v in enumerate(values)]
    found: list[list[str]] = []

    def close(group: list[dict[str, str]]) -> None:
        if len(group) > 1:
            found.append([r["k"] for r in group])

    carried: list[Any] = []
    carried_folded = None
    i = 0
    for size in sizes * len(rows):
        page = rows[i : i + size]
        if not page:
            break
        folded = [fold(r["v"]) for r in page]
        carried = _groups_in_page(page, folded, carried, carried_folded, close)
        carried_folded = folded[-1]
        i += size
    close(carried)
    expected: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        expected[fold(r["v"])].append(r["k"])
    assert sorted(found) == sorted(keys for keys in expected.values() if len(keys) > 1)


# -- ERROR paths ---------------------------------------------------------------------------

ONE_EACH = {
    "duplicates": "  - {id: x, kind: duplicates, entity: contact, columns: {emailaddress1: email}}\n",
    "nulls": "  - {id: x, kind: nulls, entity: contact, columns: {lastname: last_name}}\n",
    "orphans": "  - {id: x, kind: orphans, entity: opportunity}\n",
}
UNKNOWN = {
    "duplicates": [("  - {id: x, kind: duplicates, entity: contact, columns: {nosuchattr: email}}\n", None, "nosuchattr"),
                   ("  - {id: x, kind: duplicates, entity: contact, columns: {emailaddress1: nosuchcol}}\n", None, "nosuchcol")],
    "nulls": [("  - {id: x, kind: nulls, entity: contact, columns: {nosuchattr: last_name}}\n", None, "nosuchattr"),
              ("  - {id: x, kind: nulls, entity: contact, columns: {lastname: nosuchcol}}\n", None, "nosuchcol")],
    "orphans": [(ONE_EACH["orphans"], ("field: _parentaccountid_value", "field: _nosuchattr_value"), "_nosuchattr_value"),
                (ONE_EACH["orphans"], ("{field: _parentaccountid_value, entity: account, source_field: account_id}",
                                       "{field: _parentaccountid_value, entity: account, source_field: nosuchcol}"),
                 "nosuchcol")],
}


@pytest.mark.parametrize("kind", list(ONE_EACH))
async def test_throttled_past_the_budget_is_error(kind: str, small: Path, tmp_path: Path) -> None:
    storm = "name: storm\nfaults:\n  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n"
    result = (await run(write_config(tmp_path, small, ONE_EACH[kind], scenario=storm))).results["x"]
    assert_error(result, "throttl", "back off", "wait")


@pytest.mark.parametrize("kind", list(ONE_EACH))
async def test_a_refused_token_is_error(kind: str, small: Path, tmp_path: Path) -> None:
    result = await run_direct(write_config(tmp_path, small, ONE_EACH[kind]), "x", token="not-the-token")
    assert_error(result, "refused the token")


@pytest.mark.parametrize("kind", list(ONE_EACH))
async def test_an_unknown_column_is_error(kind: str, small: Path, tmp_path: Path) -> None:
    for n, (checks, patch, name) in enumerate(UNKNOWN[kind]):
        config = write_config(tmp_path / str(n), small, checks, patch=patch)
        assert_error((await run(config)).results["x"], name)


@pytest.mark.parametrize("kind", list(ONE_EACH))
async def test_an_unreachable_source_is_error(kind: str, small: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, small, ONE_EACH[kind], source=tmp_path / "gone.db")
    assert_error((await run(config)).results["x"], "does not exist")
