"""data/demo/crmctl.yaml loads cleanly and describes the world the generator writes.

If the config and the generator drifted apart (a renamed column, a missing lookup), the demo
would show ERROR results instead of the planted defects; these tests catch that first.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checks.registry import REGISTRY, check_kinds
from crmctl.config import load_config
from crmctl.demo.schema import BY_NAME, ENTITIES
from crmctl.demo.system import INTEGRATION_PATTERNS
from crmctl.demo_world import DEMO_NOW, POINT_OF_NO_RETURN

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"


@pytest.fixture(scope="module")
def config():
    return load_config(DEMO / "crmctl.yaml", env={}, check_kinds=check_kinds())


def test_loads_without_problems(config):
    assert config.project == "Contoso CRM to Dynamics 365 — cutover"
    assert config.state == DEMO / ".crmctl" / "state.db"


def test_points_at_the_generated_world(config):
    assert config.source.kind == "sql"
    assert config.source.sqlite_path == DEMO / "world" / "source.db"
    assert config.target.kind == "emulator" and config.target.seed == "demo"
    assert config.target.data == DEMO / "world" / "dataverse.db"
    limits = config.target.limits
    assert (limits.concurrency, limits.requests_per_5min, limits.timeout.total_seconds()) == (8, 5000, 30)


def test_text_the_shared_test_fixture_rewrites_is_present():
    """tests/conftest.py relocates the world by replacing these exact strings."""
    text = (DEMO / "crmctl.yaml").read_text()
    assert "sqlite:///world/" in text and "data: world/" in text


def test_entities_match_the_world(config):
    assert [e.name for e in config.entities] == [e.name for e in ENTITIES]
    for entity in config.entities:
        demo = BY_NAME[entity.name]
        assert (entity.source.table, entity.source.key, entity.source.modified) == (
            demo.source_table, demo.source_key, "updated_at")
        assert (entity.target.entity_set, entity.target.key, entity.target.modified, entity.target.id) == (
            demo.target.entity_set, demo.target_key, "modifiedon", demo.target.primary_id)
        assert entity.required == demo.required
        assert entity.unique == demo.unique
        assert [(lk.field, lk.entity, lk.source_field) for lk in entity.lookups] == [
            (lk.web_name, lk.parent, lk.source) for lk in demo.lookups]
        for column in (*entity.required, *entity.unique):
            assert demo.target.attribute(column) is not None


def test_checks_use_only_implemented_kinds(config):
    assert {c.kind for c in config.checks} <= set(REGISTRY)
    ids = {c.id for c in config.checks}
    assert {"account.count", "contact.count", "opportunity.count", "dynamics.whoami"} <= ids
    for name in ("account", "contact", "opportunity"):
        check = config.check(f"{name}.count")
        assert (check.kind, check.entity, check.warn, check.breach, check.every.total_seconds()) == (
            "row_count", name, 0, 0.001, 60)
    whoami = config.check("dynamics.whoami")
    assert (whoami.warn, whoami.breach, whoami.every.total_seconds()) == (500, 2000, 30)


def test_runbook_tells_sprint_4_4(config):
    steps = [s.id for s in config.runbook]
    assert steps == ["freeze", "delta", "reconcile", "integrations", "smoke", "signoff"]
    ids = {c.id for c in config.checks}
    for step in config.runbook + config.rollback.runbook:
        assert set(step.gate) <= ids
        assert step.owner and step.planned and step.phase
    assert config.step("delta").after == ("freeze",)
    assert set(config.step("reconcile").gate) == {
        f"{name}.{family}" for name in ("account", "contact", "opportunity") for family in ("count", "reconcile")}
    assert config.step("freeze").gate == ("source.write_freeze",)


def test_rollback_and_hypercare(config):
    rollback = config.rollback
    assert rollback.authority == ("Cutover Lead", "Business Owner")
    assert rollback.sla.total_seconds() == 7200
    assert rollback.point_of_no_return == POINT_OF_NO_RETURN > DEMO_NOW
    ids = {c.id for c in config.checks}
    assert rollback.criteria and all(c.check in ids for c in rollback.criteria)
    produced = {  # the values each kind's result carries that a criterion may read
        "row_count": {"source", "target", "difference", "difference_pct"},
        "reconcile": {"source", "target", "matched", "missing", "extra", "unkeyed", "missing_pct", "extra_pct",
                      "deviation_pct"},
    }
    for criterion in rollback.criteria:
        # Expressions may only read values their check's kind produces.
        names = set(re.findall(r"[A-Za-z_]\w*", f"{criterion.rollback_if} {criterion.hold_if or ''}"))
        assert names <= produced[config.check(criterion.check).kind]
    assert list(config.incidents.severities) == ["sev1", "sev2", "sev3", "sev4"]
    assert all(s.escalate_to for s in config.incidents.severities.values())
    assert config.incidents.notify.teams_webhook is None and config.incidents.notify.webhook is None
    assert str(config.hypercare.go_live) == "2026-11-29"
    assert [c.days for c in config.hypercare.checkpoints] == [1, 7, 30]
    assert config.slos[0].query == "accounts?$select=name&$top=50" and config.slos[0].p95_ms == 500


def test_integrations_select_the_planted_jobs(config):
    assert {i.id: i.jobs.name_like for i in config.integrations} == INTEGRATION_PATTERNS
    erp = config.integration("erp-sync")
    assert (erp.slo.p95_ms, erp.slo.error_rate) == (800, 0.02)
