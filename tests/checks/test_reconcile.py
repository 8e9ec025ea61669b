"""reconcile on the demo world: exactly the planted missing / extra / unkeyed keys, exports, sample compare, ERROR paths."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from crmctl.model import Status
from tests.checks.datachecks import assert_error, run, run_direct, secret_free, truth, world, write_config

RECONCILES = """\
  - {id: account.reconcile, kind: reconcile, entity: account, warn: 0, breach: 0.001}
  - {id: contact.reconcile, kind: reconcile, entity: contact, warn: 0, breach: 0.001}
  - {id: opportunity.reconcile, kind: reconcile, entity: opportunity, warn: 0, breach: 0.001, first: 5}
"""
ACCOUNT_FIELDS = "{name: name, accountnumber: accountnumber, city: address1_city, revenue: {target: revenue, type: number}}"
OPPORTUNITY_FIELDS = (
    "{name: name, stage: {target: stepname, map: {Qualify: 1-Qualify, Develop: 2-Develop, Propose: 3-Propose, "
    "Close: 4-Close}}, status: {target: statecode, map: {open: 0, won: 1, lost: 2}}, "
    "estimated_value: {target: estimatedvalue, type: number}, close_date: {target: estimatedclosedate, type: date}}"
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


def _csv_column(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row[0] for row in list(csv.reader(f))[1:]]


async def test_every_planted_key_difference_is_found_exactly(demo_dir: Path, tmp_path: Path) -> None:
    world_dir = demo_dir / "world"
    expected = truth(world_dir)["entities"]
    outcome = await run(write_config(tmp_path, world_dir, RECONCILES))
    for name in ("account", "contact", "opportunity"):
        result, t = outcome.results[f"{name}.reconcile"], expected[name]
        v = result.values
        first = 5 if name == "opportunity" else 20
        assert (v["source"], v["target"]) == (t["source_count"], t["target_count"])
        assert (v["missing"], v["extra"], v["unkeyed"]) == (
            len(t["missing_in_target"]), len(t["extra_in_target"]), len(t["unkeyed_in_target"]))
        assert v["matched"] == t["source_count"] - len(t["missing_in_target"])
        assert v["first_missing"] == sorted(t["missing_in_target"])[:first]
        assert v["first_extra"] == sorted(t["extra_in_target"])[:first]
        assert sorted(v["first_unkeyed"]) == sorted(t["unkeyed_in_target"])[:first]
        assert v["duplicate_keys"] == {"source": 0, "target": 0}
        assert v["method"] == "sorted merge"
        # the full lists, not only the first keys, are in the exports
        assert _csv_column(v["exports"]["missing"]["path"]) == sorted(t["missing_in_target"])
        assert _csv_column(v["exports"]["extra"]["path"]) == sorted(t["extra_in_target"])
        assert sorted(_csv_column(v["exports"]["unkeyed"]["path"])) == sorted(t["unkeyed_in_target"])
        assert v["missing_pct"] == round(100 * len(t["missing_in_target"]) / t["source_count"], 4)
        assert result.requests == len(result.queries) > 0
        assert {q.method for q in result.queries} == {"GET", "SQL"}
        secret_free(result, "Bearer")
    # accounts 0.2 % and contacts 0.2 % deviate (> 0.1 %: BREACH), opportunities 0.07 % (WARN)
    assert outcome.results["account.reconcile"].status is Status.BREACH
    assert outcome.results["contact.reconcile"].status is Status.BREACH
    assert outcome.results["opportunity.reconcile"].status is Status.WARN
    assert outcome.results["contact.reconcile"].values["partitions"] > 1  # 62,000 keys: scanned in ranges
    assert "37 account records missing in Dynamics" in outcome.results["account.reconcile"].explanation
    assert {r.method for r in outcome.request_log} == {"GET"}


async def test_exports_are_content_addressed_and_match_their_digest(small: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, small, RECONCILES)
    first = (await run(config, ["account.reconcile"])).results["account.reconcile"]
    again = (await run(config, ["account.reconcile"])).results["account.reconcile"]
    for name in ("missing", "extra", "unkeyed"):
        ref = first.values["exports"][name]
        assert Path(ref["path"]).parent == tmp_path / ".crmctl" / "exports"
        assert hashlib.sha256(Path(ref["path"]).read_bytes()).hexdigest() == ref["sha256"]
        assert again.values["exports"][name] == ref  # the same answer reuses the same file
    exported = sorted((tmp_path / ".crmctl" / "exports").iterdir())
    assert len(exported) == 3 and not [p for p in exported if p.name.startswith(".")]
    # record keys of customers: the operator's account alone may read them, like the state file
    assert (tmp_path / ".crmctl" / "exports").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in exported} == {0o600}


async def test_sample_of_every_matched_record_finds_exactly_the_planted_field_mismatches(
    small: Path, tmp_path: Path
) -> None:
    checks = (
        f"  - {{id: account.full, kind: reconcile, entity: account, sample: 100000, trim: false, ignore_case: false,"
        f" fields: {ACCOUNT_FIELDS}}}\n"
        f"  - {{id: opportunity.full, kind: reconcile, entity: opportunity, sample: 100000, trim: false,"
        f" ignore_case: false, fields: {OPPORTUNITY_FIELDS}}}\n"
    )
    outcome = await run(write_config(tmp_path, small, checks))
    t = truth(small)["entities"]
    for name, check_id in (("account", "account.full"), ("opportunity", "opportunity.full")):
        sample = outcome.results[check_id].values["sample"]
        compared = {f.split("->")[1] for f in sample["fields"]}
        planted = [m for m in t[name]["field_mismatches"] if m["target_field"] in compared]
        assert sample["size"] == t[name]["source_count"] - len(t[name]["missing_in_target"])
        assert sample["by_kind"] == dict(Counter(m["kind"] for m in planted))
        assert sample["mismatched_records"] == len({m["key"] for m in planted})
        assert sample["by_field"] == dict(Counter(m["target_field"] for m in planted))
        by_key = {(m["key"], m["target_field"]): m["kind"] for m in planted}
        for example in sample["examples"]:
            assert by_key[(example["key"], example["field"])] == example["kind"]
        assert sample["tolerated"] == {} and sample["vanished"] == 0
        assert outcome.results[check_id].status is Status.WARN  # sample_warn defaults to 0


async def test_random_sample_is_reproducible_and_tolerates_whitespace_and_case(small: Path, tmp_path: Path) -> None:
    checks = (
        f"  - {{id: a.sample, kind: reconcile, entity: account, sample: 400, seed: 3, fields: {ACCOUNT_FIELDS}}}\n"
        f"  - {{id: b.sample, kind: reconcile, entity: account, sample: 400, seed: 4, fields: {ACCOUNT_FIELDS}}}\n"
        f"  - {{id: all.sample, kind: reconcile, entity: account, sample: 100000, fields: {ACCOUNT_FIELDS}}}\n"
    )
    config = write_config(tmp_path, small, checks)
    one = await run(config)
    two = await run(config, ["a.sample"])
    sample = one.results["a.sample"].values["sample"]
    assert sample == two.results["a.sample"].values["sample"]  # same seed, same data: same sample
    assert sample["size"] == 400
    planted = {(m["key"], m["target_field"]): m["kind"] for m in truth(small)["entities"]["account"]["field_mismatches"]}
    for example in sample["examples"]:
        assert planted[(example["key"], example["field"])] == example["kind"]
        assert example["kind"] not in ("whitespace", "case")  # normalised away by default
    full = one.results["all.sample"].values["sample"]
    kinds = Counter(m["kind"] for m in truth(small)["entities"]["account"]["field_mismatches"]
                    if m["target_field"] != "industrycode")
    assert full["tolerated"] == {k: kinds[k] for k in ("case", "whitespace") if kinds[k]}
    assert full["mismatches"] == sum(n for k, n in kinds.items() if k not in ("case", "whitespace"))
    assert one.results["b.sample"].values["sample"]["examples"] != sample["examples"] or sample["examples"] == []


def _tiny_world(folder: Path, source_keys: list[str], target_keys: list[str | None]) -> Path:
    """A one-table world whose keys are chosen to defeat a naive (binary, case-sensitive) merge."""
    from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef

    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / "source.db") as db:
        db.execute("CREATE TABLE accounts (account_id TEXT PRIMARY KEY, name TEXT, updated_at TEXT)")
        db.executemany("INSERT INTO accounts VALUES (?, 'x', '2026-11-01T00:00:00Z')", [(k,) for k in source_keys])
    entity = EntityDef("account", "accounts", "accountid", "name", (
        Attribute("accountid", "guid"), Attribute("new_legacyid", "string"), Attribute("name", "string"),
        Attribute("createdon", "datetime"), Attribute("modifiedon", "datetime"),
    ))
    with EmulatorData(folder / "dataverse.db") as data:
        data.define_entity(entity)
        data.insert_rows("account", ({"new_legacyid": k, "name": "x"} for k in target_keys))
    return folder


def _tiny_config(folder: Path, world_dir: Path, partitions: int, page_size: int = 3) -> Path:
    config = write_config(
        folder, world_dir,
        f"  - {{id: r, kind: reconcile, entity: account, partitions: {partitions}, warn: 0, breach: 0.5}}\n",
        limits=f"{{concurrency: 2, requests_per_5min: 5000, timeout: 30s, page_size: {page_size}}}",
    )
    text = config.read_text()
    start, end = text.index("entities:\n"), text.index("checks:\n")
    config.write_text(text[:start] + (
        "entities:\n  - name: account\n    source: {table: accounts, key: account_id}\n"
        "    target: {entity_set: accounts, key: new_legacyid, id: accountid}\n"
    ) + text[end:])
    return config


@pytest.mark.parametrize("partitions", [1, 3])
async def test_keys_match_case_insensitively_as_dataverse_compares_them(tmp_path: Path, partitions: int) -> None:
    # Dynamics holds some keys in another case: the same record to Dataverse, so matched, not
    # "missing" plus "extra". Both sides' orders agree with Dataverse's, so the merge streams.
    source = [f"ACC-{i:03d}" for i in range(60)]
    target: list[str | None] = [k.lower() if i % 3 == 0 else k for i, k in enumerate(source) if i not in (5, 44)]
    target += ["ACC-044X", "acc-059z", None]
    world_dir = _tiny_world(tmp_path / "world", source, target)
    result = (await run(_tiny_config(tmp_path, world_dir, partitions))).results["r"]
    v = result.values
    assert (v["missing"], v["extra"], v["unkeyed"]) == (2, 2, 1), result.explanation
    assert v["first_missing"] == ["ACC-005", "ACC-044"]
    assert v["first_extra"] == ["ACC-044X", "acc-059z"]
    assert v["matched"] == 58 and v["target"] == len(target)
    assert v["method"] == "sorted merge" and v["partitions"] == partitions


async def test_underscores_and_mixed_case_that_sort_differently_are_still_exact(tmp_path: Path) -> None:
    # Binary order puts "AB" before "A_" and "Ab2"; Dataverse's puts "a_1" first and treats
    # "ab" and "AB" as one key.
    source = ["A_1", "AB", "A_2", "Ab2", "abc", "B-1", "b_2", "C", "c0", "Z9", "z_", "ZZ", "a[1", "A]2"]
    target: list[str | None] = ["a_1", "ab", "A_2", "AB2", "ABC", "b-1", "B_2", "c", "C1", "z9", "ZZ", "a[1", "A]2", None]
    world_dir = _tiny_world(tmp_path / "world", source, target)
    result = (await run(_tiny_config(tmp_path, world_dir, 1))).results["r"]
    v = result.values
    assert (v["missing"], v["extra"], v["unkeyed"], v["matched"]) == (2, 1, 1, 12), result.explanation
    assert v["first_missing"] == ["c0", "z_"] and v["first_extra"] == ["C1"]
    assert v["method"] == "external sort"


async def test_a_source_that_orders_keys_otherwise_switches_to_the_external_sort(tmp_path: Path) -> None:
    # Lower- and upper-case keys interleave differently in SQLite's binary order than in
    # Dataverse's: the merge notices on the first disordered batch and re-runs externally.
    source = [f"{c}{i:03d}" for i in range(40) for c in ("k", "K", "_")]
    target = [k.upper() if k[0] == "k" else k for k in source[::2]] + ["X999"]
    world_dir = _tiny_world(tmp_path / "world", source, target)
    result = (await run(_tiny_config(tmp_path, world_dir, 1, page_size=7))).results["r"]
    v = result.values
    assert v["method"] == "external sort" and "order" in v["order_note"], v
    # "k001" and "K001" are one key to Dataverse: the source repeats it, Dynamics has it once.
    expected_missing = {k.lower() for k in source} - {k.lower() for k in target}
    assert v["missing"] == len(expected_missing) and v["extra"] == 1
    assert v["duplicate_keys"]["source"] == 40
    assert "external sort" in result.explanation


# -- ERROR paths ---------------------------------------------------------------------------


async def test_throttled_past_its_budget_is_error(small: Path, tmp_path: Path) -> None:
    storm = "name: storm\nfaults:\n  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n"
    result = (await run(write_config(tmp_path, small, RECONCILES, scenario=storm), ["account.reconcile"])).results
    assert_error(result["account.reconcile"], "throttl", "back off", "wait")
    budget = write_config(tmp_path / "b", small, RECONCILES, limits="{concurrency: 2, requests_per_5min: 1, timeout: 30s, deadline: 20s}")
    assert_error((await run(budget, ["contact.reconcile"])).results["contact.reconcile"], "budget")


async def test_a_refused_token_is_error(small: Path, tmp_path: Path) -> None:
    token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ3cm9uZyJ9.c2lnbmF0dXJlLXRoYXQtZmFpbHM"
    result = await run_direct(write_config(tmp_path, small, RECONCILES), "account.reconcile", token=token)
    assert_error(result, "refused the token")
    secret_free(result, token)


async def test_an_unknown_column_is_error(small: Path, tmp_path: Path) -> None:
    checks = (
        "  - {id: t, kind: reconcile, entity: account, sample: 10, fields: {name: nosuchattribute}}\n"
        "  - {id: s, kind: reconcile, entity: account, sample: 10, fields: {nosuchcolumn: name}}\n"
    )
    results = (await run(write_config(tmp_path, small, checks))).results
    assert_error(results["t"], "nosuchattribute")
    assert_error(results["s"], "nosuchcolumn")


async def test_an_unreachable_source_is_error(small: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, small, RECONCILES, source=tmp_path / "gone" / "source.db")
    assert_error((await run(config, ["account.reconcile"])).results["account.reconcile"], "does not exist")
