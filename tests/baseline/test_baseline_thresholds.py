"""Proposed thresholds: a config snippet that parses, follows the documented rule, and loads."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import yaml

from checks.registry import check_kinds
from crmctl.baseline import WHOAMI_ID, Baseline, QueryBaseline
from crmctl.baseline_jobs import IntegrationFigures, like_pattern
from crmctl.baseline_thresholds import propose, snippet_data
from crmctl.config import load_config

T0 = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)


def query(qid: str, durations: list[float], errors: int = 0, slo: float | None = 500) -> QueryBaseline:
    return QueryBaseline(qid, "accounts?$select=name", len(durations) + errors, len(durations) + errors,
                         tuple(durations), errors, 0, len(durations) + errors, {"200": len(durations)}, slo)


def baseline(*queries: QueryBaseline, integrations: tuple[dict, ...] = ()) -> Baseline:
    return Baseline("steady", T0, T0, "emulator", queries, {}, 24.0,
                    {"windows": [{"name": "Nightly Import", "jobs": 8, "p95_s": 480.0, "max_s": 480.0}]},
                    integrations, tuple([0] * 24), (), seq=42)


def test_the_snippet_follows_the_rule_and_parses(demo_config: Path) -> None:
    config = load_config(demo_config, check_kinds=check_kinds())
    durations = [float(v) for v in range(100, 300, 10)]  # 20 samples: p95 = 280, p99 = 290
    erp = IntegrationFigures("erp-sync", "ERP Sync%", 50, 50, 49, 1, 0, 2.0, 0.02, 3, 5, 3, 900.0, 2000.0, (),
                             slo_p95_ms=800, slo_error_rate=0.02).to_json()
    text = propose(baseline(query("account-view", durations), query(WHOAMI_ID, [10.0] * 20, slo=None),
                            query("flaky", [50.0] * 10, errors=5), integrations=(erp,)), config)
    data = snippet_data(text)
    [slo] = data["slos"]
    assert slo == {"id": "account-view", "query": config.slos[0].query, "p95_ms": 420, "samples": 20}  # max(280*1.5, 290)
    latency = next(c for c in data["checks"] if c["kind"] == "api_latency")
    assert latency == {"id": "account-view.latency", "kind": "api_latency", "slo": "account-view", "warn": 340, "every": "5m"}
    whoami = next(c for c in data["checks"] if c["kind"] == "whoami")
    assert whoami["id"] == "dynamics.whoami" and whoami["warn"] == 15 and whoami["breach"] == 30
    assert "# flaky: no proposal" in text and "flaky" not in yaml.safe_dump(data)
    [integ] = data["integrations"]
    assert integ == {"id": "erp-sync", "slo": {"p95_ms": 3000, "error_rate": 0.04}}
    assert "Nightly Import: p95 480 s" in text and "entry 42" in text


def test_an_unsteady_integration_keeps_its_configured_error_rate(demo_config: Path) -> None:
    config = load_config(demo_config, check_kinds=check_kinds())
    bad = IntegrationFigures("erp-sync", "ERP Sync%", 52, 52, 40, 12, 3, 2.2, 0.2308, 25, 69, 10, 1000.0, 303000.0, ()).to_json()
    text = propose(baseline(integrations=(bad,)), config)
    assert snippet_data(text)["integrations"] == [{"id": "erp-sync", "slo": {"p95_ms": 460000, "error_rate": 0.02}}]
    assert "not a steady state" in text


def test_the_snippet_loads_as_part_of_a_real_config(demo_config: Path) -> None:
    """Merged into the demo config, the proposal is accepted by the loader with every check kind."""
    config = load_config(demo_config, check_kinds=check_kinds())
    durations = [float(v) for v in range(40, 80, 2)]
    proposal = snippet_data(propose(baseline(query("account-view", durations), query(WHOAMI_ID, [5.0] * 20, slo=None)), config))
    doc = yaml.safe_load(demo_config.read_text())
    doc["slos"] = [s for s in doc["slos"] if s["id"] not in {p["id"] for p in proposal["slos"]}] + proposal["slos"]
    ids = {c["id"] for c in proposal["checks"]}
    doc["checks"] = [c for c in doc["checks"] if c["id"] not in ids] + proposal["checks"]
    merged = demo_config.with_name("merged.yaml")
    merged.write_text(yaml.safe_dump(doc, sort_keys=False))
    loaded = load_config(merged, check_kinds=check_kinds())
    # p95 = 76 (the 19th of 40, 42, ..., 78): breach max(114, 78) -> 120, warn 91.2 -> 92
    assert next(s for s in loaded.slos if s.id == "account-view").p95_ms == 120
    assert next(c for c in loaded.checks if c.id == "account-view.latency").warn == 92


def test_like_patterns_match_as_dataverse_does() -> None:
    assert like_pattern("ERP Sync%").fullmatch("erp sync - Account upsert")
    assert like_pattern("Job_1").fullmatch("JobA1") and not like_pattern("Job_1").fullmatch("Job11x")
    assert not like_pattern("ERP%").fullmatch("The ERP job")
    assert like_pattern("100%").fullmatch("100 things") and like_pattern("a.b%").fullmatch("a.bc")
    assert not like_pattern("a.b%").fullmatch("axbc")
