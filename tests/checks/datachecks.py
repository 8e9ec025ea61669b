"""Shared by the data-check tests: demo worlds, configs around them, and runs through the real engine.

Every run goes through the same parts production uses: the config loader, the engine (via
`ControlRoom`), the embedded emulator (a real HTTP server), the rate-limited Dataverse client
and the SQLite source. `run_direct` builds one `CheckContext` by hand for the cases the engine
cannot be made to produce (a refused token).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from checks.registry import REGISTRY, check_kinds
from crmctl.checking import CheckContext
from crmctl.clock import SystemClock
from crmctl.config import Config, load_config
from crmctl.connectors.auth import StaticTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.sql import open_source
from crmctl.control import ControlRoom
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "data" / "demo" / "crmctl.yaml"
ACTOR = Actor("tester", "test-host")
_WORLDS: dict[float, Path] = {}

DATA_KINDS = ("reconcile", "duplicates", "nulls", "orphans", "write_freeze", "delta", "kpi_parity")
"""The check kinds these tests are about."""

KPI = """\
  - id: opportunity.kpi
    kind: kpi_parity
    entity: opportunity
    warn: 0
    breach: 0.01
    source_where: "status = 'open'"
    target_filter: "statecode eq 0"
    group: {source: stage, target: stepname, map: {Qualify: 1-Qualify, Develop: 2-Develop, Propose: 3-Propose, Close: 4-Close}}
    measures: [{name: open, agg: count}, {name: value, agg: sum, source: estimated_value, target: estimatedvalue}]
"""
ONE_OF_EACH = """\
  - {id: account.reconcile, kind: reconcile, entity: account, warn: 0, breach: 0.001}
  - {id: contact.duplicates, kind: duplicates, entity: contact, columns: {emailaddress1: email}, warn: 0, breach: 10}
  - {id: contact.nulls, kind: nulls, entity: contact, columns: {lastname: last_name}, warn: 0, breach: 10}
  - {id: opportunity.orphans, kind: orphans, entity: opportunity, warn: 0, breach: 10}
  - {id: source.write_freeze, kind: write_freeze, since: 2026-11-28T18:00:00Z, writer: updated_by, warn: 0, breach: 0}
  - {id: contact.delta, kind: delta, entity: contact, watermark: 2026-11-28T17:45:00Z, warn: 0, breach: 10}
""" + KPI
"""One check of every data kind, on the entities where the demo plants the most defects."""


def world(tmp_path_factory: Any, scale: float) -> Path:
    """A generated demo world at `scale`, made once per test process."""
    from crmctl.demo_world import ensure_world

    if scale not in _WORLDS:
        folder = tmp_path_factory.mktemp(f"world-{scale}") / "world"
        ensure_world(folder, scale=scale)
        _WORLDS[scale] = folder
    return _WORLDS[scale]


def truth(world_dir: Path) -> dict[str, Any]:
    """The generator's ground truth for a world, as plain JSON."""
    return json.loads((world_dir / "ground_truth.json").read_text())


def entities_block() -> str:
    """The `entities:` section of the demo config, verbatim (the mapping the demo world follows)."""
    text = DEMO_CONFIG.read_text()
    return text[text.index("entities:\n") : text.index("\nchecks:\n") + 1]


def write_config(
    folder: Path,
    world_dir: Path,
    checks: str,
    *,
    limits: str = "{concurrency: 8, requests_per_5min: 5000, timeout: 30s}",
    scenario: str | None = None,
    source: str | Path | None = None,
    patch: tuple[str, str] | None = None,
) -> Path:
    """A cutover config over `world_dir` with the given `checks:` entries (YAML list items).

    `patch` replaces one text in the demo's `entities:` section (to misname a column).
    """
    folder.mkdir(parents=True, exist_ok=True)
    scenario_line = ""
    if scenario is not None:
        path = folder / "scenario.yaml"
        path.write_text(scenario)
        scenario_line = f"  scenario: {path}\n"
    text = (
        "project: data checks under test\n"
        f"state: {folder / '.crmctl' / 'state.db'}\n"
        f"source: {{kind: sql, url: \"sqlite:///{source or world_dir / 'source.db'}\"}}\n"
        "target:\n"
        "  kind: emulator\n"
        f"  data: {world_dir / 'dataverse.db'}\n"
        f"{scenario_line}"
        f"  limits: {limits}\n"
        f"{_patched(entities_block(), patch)}"
        f"checks:\n{checks}"
    )
    config = folder / "crmctl.yaml"
    config.write_text(text)
    return config


def _patched(text: str, patch: tuple[str, str] | None) -> str:
    if patch is None:
        return text
    assert text.count(patch[0]) == 1, patch
    return text.replace(*patch)


def load(config_path: Path) -> Config:
    return load_config(config_path, check_kinds=check_kinds())


@dataclass
class Run:
    """What one engine run produced, and what the emulator saw."""

    results: dict[str, CheckResult]
    request_log: list[Any]


async def run(config_path: Path, only: Iterable[str] | None = None) -> Run:
    """Runs checks through the engine against the embedded emulator; results by check id."""
    config = load(config_path)
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR) as room:
        results = await room.run_checks(list(only) if only else None)
        log = list(room.emulator.request_log)
    return Run({r.check_id: r for r in results}, log)


async def run_direct(config_path: Path, check_id: str, *, token: str | None = None, retries: int = 1) -> CheckResult:
    """One check through a hand-built context: for a token Dynamics refuses (never refreshed)."""
    from crmctl.emulator.server import Emulator

    config = load(config_path)
    clock = SystemClock()
    async with Emulator(config.target.data) as emu:
        client = DataverseClient(
            emu.api_url, StaticTokenProvider(token or emu.token), TargetLimiter(4, 1000, 300.0),
            retries=retries, backoff_base=0.01, backoff_cap=0.05,
        )
        source = open_source(config.source.url)
        try:
            ctx = CheckContext(config, config.check(check_id), client, source, clock, clock.now(), time.monotonic() + 30)
            return await REGISTRY[config.check(check_id).kind]().run(ctx)
        finally:
            await client.close()
            await source.close()


def assert_error(result: CheckResult, *fragments: str) -> None:
    """ERROR with a reason that names the cause, and no figure that could be mistaken for a finding."""
    assert result.status is Status.ERROR, (result.status, result.explanation, result.values)
    assert result.explanation and "Internal error" not in result.explanation, result.explanation
    text = result.explanation.lower()
    assert any(f.lower() in text for f in fragments), f"{result.explanation!r} names none of {fragments}"
    assert not result.values, result.values


def secret_free(result: CheckResult, token: str) -> None:
    blob = json.dumps(result.to_json())
    assert token not in blob and not re.search(r"eyJ[A-Za-z0-9_-]{8,}\.", blob)


# -- exact expectations from the generator's ground truth ------------------------------------


def _first(keys: Iterable[str], n: int = 20) -> list[str]:
    return sorted(keys)[:n]


def changed_since(world_dir: Path, table: str, key: str, since: str) -> list[str]:
    """Source keys modified after `since` (the definition the delta check applies)."""
    import sqlite3

    with sqlite3.connect(world_dir / "source.db") as db:
        return [r[0] for r in db.execute(f"SELECT {key} FROM {table} WHERE updated_at > ? ORDER BY 1", (since,))]


def kpi_oracle(world_dir: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Open pipeline by stage on both sides, straight from the two database files."""
    import sqlite3

    steps = {"Qualify": "1-Qualify", "Develop": "2-Develop", "Propose": "3-Propose", "Close": "4-Close"}
    with sqlite3.connect(world_dir / "source.db") as db:
        source = {steps[s]: (n, v) for s, n, v in db.execute(
            "SELECT stage, COUNT(*), SUM(estimated_value) FROM opportunities WHERE status = 'open' GROUP BY stage")}
    with sqlite3.connect(world_dir / "dataverse.db") as db:
        target = {s: (n, v) for s, n, v in db.execute(
            "SELECT stepname, COUNT(*), SUM(estimatedvalue) FROM e_opportunity WHERE statecode = 0 GROUP BY stepname")}
    return {g: {"open": (source[g][0], target[g][0]), "value": (source[g][1], target[g][1])} for g in source}


def verify(result: CheckResult, world_dir: Path) -> None:
    """Asserts a non-ERROR result of the ONE_OF_EACH checks carries exactly the planted figures."""
    t = truth(world_dir)
    e = t["entities"]
    v = result.values
    if result.check_id == "account.reconcile":
        a = e["account"]
        assert (v["missing"], v["extra"], v["unkeyed"], v["target"]) == (
            len(a["missing_in_target"]), len(a["extra_in_target"]), len(a["unkeyed_in_target"]), a["target_count"])
        assert v["first_missing"] == _first(a["missing_in_target"])
    elif result.check_id == "contact.duplicates":
        groups = e["contact"]["duplicates"]
        target, source = groups["target"]["emailaddress1"], groups["source"]["emailaddress1"]
        assert (v["target_groups"], v["source_groups"]) == (len(target), len(source))
        assert v["target_rows"] == sum(len(g["keys"]) for g in target)
        in_source = {g["value"].lower() for g in source}
        assert v["new_in_target"] == sum(1 for g in target if g["value"].lower() not in in_source)
        shown = {(g["value"].lower(), tuple(g["keys"])) for g in v["columns"]["emailaddress1"]["first_target"]}
        assert shown <= {(g["value"].lower(), tuple(sorted(g["keys"]))) for g in target}
        assert len(shown) == min(20, len(target))
    elif result.check_id == "contact.nulls":
        nulls = e["contact"]["nulls"]
        assert (v["target"], v["source"]) == (len(nulls["target"]["lastname"]), len(nulls["source"]["lastname"]))
        assert sorted(v["columns"]["lastname"]["first_target"]) == _first(nulls["target"]["lastname"])
    elif result.check_id == "opportunity.orphans":
        lk = e["opportunity"]["orphans"]["_parentaccountid_value"]
        assert (v["lost"], v["wrong"]) == (len(lk["lost"]), len(lk["wrong"]))
        found = v["lookups"]["_parentaccountid_value"]
        assert found["first_lost"] == _first(lk["lost"])
        wrong = sorted(lk["wrong"], key=lambda w: w["key"])[:20]
        assert found["first_wrong"] == [{"key": w["key"], "expected": w["expected"], "actual": w["actual"]} for w in wrong]
    elif result.check_id == "source.write_freeze":
        writes = {name: x["post_freeze_writes"] for name, x in e.items()}
        assert v["writes"] == sum(len(w) for w in writes.values())
        assert v["by_entity"] == {name: len(w) for name, w in writes.items()}
        assert v["first"] == {name: _first(w) for name, w in writes.items() if w}
    elif result.check_id == "contact.delta":
        c = e["contact"]
        changed = changed_since(world_dir, "contacts", "contact_id", t["watermark"])
        missing = sorted(set(changed) & set(c["missing_in_target"]))
        assert (v["changed"], v["applied"], v["behind"], v["missing"]) == (
            len(changed), len(c["delta_applied"]), len(c["delta_behind"]), len(missing))
        assert [b["key"] for b in v["first_behind"]] == _first(c["delta_behind"])
    elif result.check_id == "opportunity.kpi":
        for group, measures in kpi_oracle(world_dir).items():
            for measure, (s, tg) in measures.items():
                got = v["groups"][group][measure]
                assert (got["source"], got["target"]) == (
                    (s, tg) if measure == "open" else (round(s, 4), round(tg, 4))), (group, measure, got)
    else:
        raise AssertionError(f"no expectation for {result.check_id}")
