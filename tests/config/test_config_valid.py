"""Valid configs load into the typed, immutable objects the rest of crmctl relies on."""

from __future__ import annotations

import dataclasses
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping

import pytest
import yaml

from crmctl.config import (
    CheckKindSpec,
    Config,
    Limits,
    Secret,
    load_config,
)

BASE = """\
project: Test cutover
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator}
"""

Load = Callable[..., Config]


@pytest.fixture
def config(full: Path, env: Mapping[str, str]) -> Config:
    return load_config(full, env=env)


def test_full_example_top_level(config: Config, full: Path) -> None:
    folder = full.parent
    assert config.path == full
    assert config.folder == folder
    assert config.project == "Contoso CRM to Dynamics 365"
    assert config.state == folder / ".crmctl" / "state.db"


def test_full_example_source_path_is_resolved_against_the_config_folder(config: Config, full: Path) -> None:
    source = config.source
    assert source.kind == "sql"
    assert source.url == f"sqlite:///{full.parent}/legacy/source.db"
    assert source.url.startswith("sqlite:////")
    assert source.sqlite_path == full.parent / "legacy" / "source.db"
    assert source.url_template == "sqlite:///legacy/source.db"
    assert not source.sensitive


def test_full_example_target_and_derived_auth(config: Config, env: Mapping[str, str]) -> None:
    target = config.target
    assert target.kind == "dataverse" and not target.is_emulator
    assert target.url == "https://contoso.crm4.dynamics.com"  # trailing slash dropped
    auth = target.auth
    assert auth is not None
    assert auth.method == "client_secret"
    assert auth.tenant_id == "8f0c2d3e-1a2b-4c5d-9e8f-0a1b2c3d4e5f"
    assert auth.client_id == "11111111-2222-3333-4444-555555555555"
    assert auth.authority == "https://login.microsoftonline.com/8f0c2d3e-1a2b-4c5d-9e8f-0a1b2c3d4e5f"
    assert auth.scope == "https://contoso.crm4.dynamics.com/.default"
    assert auth.secret == Secret("CRMCTL_SECRET")
    assert auth.secret.reveal(env) == env["CRMCTL_SECRET"]
    assert auth.certificate is None and auth.pfx is None
    assert auth.certificate_credential() is None
    assert target.limits == Limits(8, 5000, timedelta(seconds=30), 4, 5000, timedelta(minutes=10))


def test_full_example_entities(config: Config) -> None:
    assert [e.name for e in config.entities] == ["account", "contact", "opportunity"]
    account = config.entity("account")
    assert account.source.table == "accounts" and account.source.key == "account_id"
    assert account.source.modified == "updated_at"
    assert account.target.entity_set == "accounts" and account.target.id == "accountid"
    assert account.required == ("name",) and account.unique == ("accountnumber",)
    (lookup,) = account.lookups
    assert (lookup.field, lookup.entity, lookup.source_field) == ("_primarycontactid_value", "contact",
                                                                  "primary_contact_id")
    opportunity = config.entity("opportunity")
    assert opportunity.source.modified is None and opportunity.target.id is None and opportunity.unique == ()


def test_full_example_checks(config: Config) -> None:
    assert len(config.checks) == 9
    count = config.check("account.count")
    assert (count.kind, count.entity, count.warn, count.breach) == ("row_count", "account", 0, 0.001)
    assert count.every == timedelta(seconds=60) and count.timeout is None and count.params == {}
    reconcile = config.check("account.reconcile")
    assert reconcile.timeout == timedelta(minutes=4) and reconcile.params == {"sample": 500}
    freeze = config.check("source.write_freeze")
    assert freeze.title == "Source CRM accepts no writes" and freeze.entity is None
    assert dict(freeze.params) == {"window": "15m"}  # untyped without check kinds
    assert config.check("contact.count").every == timedelta(seconds=60)  # the default cadence


def test_full_example_integrations(config: Config) -> None:
    erp = config.integration("erp-sync")
    assert erp.title == "SAP ERP order sync"
    assert erp.probe is not None and erp.probe.url == "https://erp.contoso.com/crm-sync/health"
    assert erp.probe.expect_status == 200 and erp.probe.expect_body == '"status":"ok"'
    assert erp.probe.timeout == timedelta(seconds=5)
    assert erp.jobs is not None and erp.jobs.name_like == "ERP%"
    assert erp.slo is not None and (erp.slo.p95_ms, erp.slo.error_rate) == (800, 0.02)
    marketing = config.integration("marketing")
    assert marketing.probe is None and marketing.slo is None


def test_full_example_runbook(config: Config) -> None:
    assert [s.id for s in config.runbook] == ["freeze", "delta", "reconcile", "integrations-on", "smoke", "go-live"]
    freeze = config.step("freeze")
    assert freeze.owner == "CRM Ops" and freeze.planned == timedelta(minutes=15)
    assert freeze.gate == ("source.write_freeze",) and freeze.after == () and freeze.phase == "freeze"
    reconcile = config.step("reconcile")
    assert reconcile.after == ("delta",)
    assert reconcile.gate == ("account.count", "account.reconcile", "contact.count")
    assert config.step("smoke").planned == timedelta(hours=1)


def test_full_example_rollback(config: Config) -> None:
    rollback = config.rollback
    assert rollback is not None
    assert rollback.authority == ("Cutover Lead", "Business Owner")
    assert rollback.sla == timedelta(hours=2)
    assert rollback.point_of_no_return == datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)
    loss, down = rollback.criteria
    assert (loss.id, loss.check, loss.rollback_if, loss.hold_if) == ("data-loss", "account.reconcile",
                                                                     "missing > 0", "missing_pct > 0")
    assert down.rollback_if == "error_rate > 0.2"
    assert [s.id for s in rollback.runbook] == ["rb-stop", "rb-unfreeze", "rb-announce"]
    assert config.step("rb-unfreeze").after == ("rb-stop",)  # step() finds rollback steps too


def test_full_example_incidents_hypercare_slos(config: Config) -> None:
    severities = config.incidents.severities
    assert list(severities) == ["sev1", "sev2", "sev3", "sev4"]
    assert severities["sev1"].respond == timedelta(minutes=15)
    assert severities["sev1"].escalate_to == "Cutover Lead"
    assert severities["sev4"].respond == timedelta(days=1) and severities["sev4"].escalate_to is None
    assert config.incidents.notify.teams_webhook == Secret("TEAMS_WEBHOOK")
    assert config.incidents.notify.webhook is None
    assert config.hypercare is not None
    assert config.hypercare.go_live == date(2026, 11, 28)
    assert config.hypercare.checkpoints == (timedelta(days=1), timedelta(days=7), timedelta(days=30))
    view, opportunities = config.slos
    assert (view.id, view.query, view.p95_ms, view.samples) == ("account-view", "accounts?$select=name&$top=50",
                                                                500, 20)
    assert opportunities.samples == 30


def test_full_example_with_check_kinds_types_the_params(full: Path, env: Mapping[str, str]) -> None:
    kinds = {
        "write_freeze": CheckKindSpec(params={"window": timedelta}),
        "whoami": CheckKindSpec(),
        "row_count": CheckKindSpec(needs_entity=True, params={"hint": bool}),
        "reconcile": CheckKindSpec(needs_entity=True, params={"sample": int}),
        "nulls": CheckKindSpec(needs_entity=True),
        "duplicates": CheckKindSpec(needs_entity=True),
        "orphans": CheckKindSpec(needs_entity=True),
        "integration": CheckKindSpec(params={"integration": str}),
    }
    config = load_config(full, env=env, check_kinds=kinds)
    assert config.check("source.write_freeze").params == {"window": timedelta(minutes=15)}
    assert config.check("erp-sync.health").params == {"integration": "erp-sync"}


def test_lookup_helpers_raise_key_error_for_unknown_ids(config: Config) -> None:
    for lookup in (config.entity, config.check, config.step, config.integration):
        with pytest.raises(KeyError):
            lookup("nope")


def test_everything_is_immutable(config: Config) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.project = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.target.limits.concurrency = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.check("account.reconcile").params["sample"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        config.incidents.severities["sev5"] = config.incidents.severities["sev1"]  # type: ignore[index]
    assert isinstance(config.checks, tuple) and isinstance(config.entity("account").required, tuple)


def test_nested_params_are_immutable_too(load: Load) -> None:
    config = load(BASE + "checks:\n  - {id: c, kind: custom, columns: [a, b], options: {deep: [1, {x: 2}]}}\n")
    params = config.check("c").params
    assert params["columns"] == ("a", "b")
    assert params["options"]["deep"][1]["x"] == 2
    with pytest.raises(TypeError):
        params["options"]["deep"][1]["x"] = 3  # type: ignore[index]


def test_minimal_emulator_config_gets_every_default(load: Load, workdir: Path) -> None:
    config = load(BASE)
    target = config.target
    assert target.is_emulator
    assert target.data == workdir / "world" / "dataverse.db"
    assert target.seed is None and target.scenario is None and target.url is None and target.auth is None
    assert target.limits == Limits()
    assert config.state == workdir / ".crmctl" / "state.db"
    assert config.entities == config.checks == config.integrations == config.runbook == config.slos == ()
    assert config.rollback is None and config.hypercare is None
    assert config.incidents.severities["sev2"].respond == timedelta(hours=1)


def test_emulator_keys(load: Load, workdir: Path) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, data: w/d.db, seed: 42, scenario: data/storm.yaml}")
    target = load(text).target
    assert target.data == workdir / "w" / "d.db"
    assert target.seed == "42"
    assert target.scenario == workdir / "data" / "storm.yaml"


def test_paths_resolve_against_the_config_folder_not_the_working_directory(
    workdir: Path, env: Mapping[str, str]
) -> None:
    (workdir / "cutover").mkdir()
    path = workdir / "cutover" / "crmctl.yaml"
    path.write_text(BASE + "state: journal/state.db\n")
    os.chdir("/")
    config = load_config(path, env=env)
    assert config.state == workdir / "cutover" / "journal" / "state.db"
    assert config.source.url == f"sqlite:///{workdir}/cutover/source.db"


def test_absolute_sqlite_path_is_kept(load: Load) -> None:
    config = load(BASE.replace("sqlite:///source.db", "sqlite:////srv/crm/source.db?mode=ro"))
    assert config.source.url == "sqlite:////srv/crm/source.db?mode=ro"
    assert config.source.sqlite_path == Path("/srv/crm/source.db?mode=ro")


def test_odata_source(load: Load) -> None:
    config = load(BASE.replace('{kind: sql, url: "sqlite:///source.db"}',
                               "{kind: odata, url: 'http://legacy-crm.corp.local/odata/v4'}"))
    assert config.source.kind == "odata" and config.source.url == "http://legacy-crm.corp.local/odata/v4"


DATAVERSE = """\
project: Test cutover
source: {{kind: sql, url: "sqlite:///source.db"}}
target:
  kind: dataverse
  url: https://contoso.crm.dynamics.com
  auth: {auth}
"""


def test_device_code_scope_is_user_impersonation(load: Load) -> None:
    auth = load(DATAVERSE.format(
        auth="{method: device_code, tenant_id: contoso.onmicrosoft.com, client_id: 11111111-2222-3333-4444-555555555555}"
    )).target.auth
    assert auth is not None
    assert auth.scope == "https://contoso.crm.dynamics.com/user_impersonation"
    assert auth.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert auth.secret is None


def test_sovereign_cloud_overrides_authority_and_scope(load: Load) -> None:
    text = DATAVERSE.replace("contoso.crm.dynamics.com", "contoso.crm.microsoftdynamics.us").format(auth="""
    method: client_secret
    client_id: 11111111-2222-3333-4444-555555555555
    secret: ${env:CRMCTL_SECRET}
    authority: https://login.microsoftonline.us/contoso.onmicrosoft.us/
    scope: https://contoso.crm.microsoftdynamics.us/.default""")
    auth = load(text).target.auth
    assert auth is not None
    assert auth.authority == "https://login.microsoftonline.us/contoso.onmicrosoft.us"
    assert auth.scope == "https://contoso.crm.microsoftdynamics.us/.default"
    assert auth.tenant_id == ""  # not needed once the authority is explicit


def test_certificate_pem(load: Load, workdir: Path) -> None:
    (workdir / "keys").mkdir()
    (workdir / "keys" / "crmctl.pem").write_text("-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n")
    text = DATAVERSE.format(auth="""
    method: certificate
    tenant_id: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    certificate:
      path: keys/crmctl.pem
      thumbprint: "a1:b2:c3:d4:e5:f6:a1:b2:c3:d4:e5:f6:a1:b2:c3:d4:e5:f6:a1:b2"
      passphrase: ${env:CRMCTL_SECRET}""")
    auth = load(text).target.auth
    assert auth is not None and auth.certificate is not None
    assert auth.certificate.path == workdir / "keys" / "crmctl.pem"
    assert auth.certificate.thumbprint == "A1B2C3D4E5F6A1B2C3D4E5F6A1B2C3D4E5F6A1B2"
    assert auth.scope == "https://contoso.crm.dynamics.com/.default"
    credential = auth.certificate_credential(env={"CRMCTL_SECRET": "pass"})
    assert credential is not None
    assert credential["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert credential["thumbprint"] == "A1B2C3D4E5F6A1B2C3D4E5F6A1B2C3D4E5F6A1B2"
    assert credential["passphrase"] == "pass"


def test_certificate_pfx(load: Load, workdir: Path) -> None:
    text = DATAVERSE.format(auth="""
    method: certificate
    tenant_id: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    pfx: {path: keys/crmctl.pfx}""")
    auth = load(text).target.auth
    assert auth is not None
    assert auth.certificate_credential() == {"private_key_pfx_path": str(workdir / "keys" / "crmctl.pfx")}


def test_anchors_and_merge_keys(load: Load) -> None:
    text = """\
        project: Test cutover
        x-limits: &limits {concurrency: 2, timeout: 5s}
        source: {kind: sql, url: "sqlite:///source.db"}
        target: {kind: emulator, limits: {<<: *limits, concurrency: 3}}
        checks:
          - &count {id: a.count, kind: row_count, every: 2m}
          - {<<: *count, id: b.count}
    """
    config = load(text)
    assert config.target.limits.concurrency == 3 and config.target.limits.timeout == timedelta(seconds=5)
    assert config.check("b.count").every == timedelta(minutes=2)


def test_partial_severities_keep_the_other_defaults(load: Load) -> None:
    config = load(BASE + "incidents: {severities: {sev1: {respond: 5m, escalate_to: Duty Manager}}}\n")
    severities = config.incidents.severities
    assert severities["sev1"].respond == timedelta(minutes=5)
    assert severities["sev3"].respond == timedelta(hours=4)


def test_explicit_null_means_default(load: Load) -> None:
    config = load(BASE + "checks: [{id: c, kind: whoami, every: ~, title: }]\nrunbook:\nslos: null\n")
    assert config.check("c").every == timedelta(seconds=60) and config.check("c").title is None
    assert config.runbook == () and config.slos == ()


def test_quoted_timestamp_with_offset_is_normalised_to_utc(load: Load) -> None:
    config = load(BASE + "rollback: {authority: [Lead], sla: 90m, point_of_no_return: '2026-11-29T01:00:00+02:00'}\n")
    assert config.rollback is not None
    assert config.rollback.point_of_no_return == datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)
    assert config.rollback.sla == timedelta(minutes=90)


def test_typed_params(load: Load, check_kinds: dict) -> None:
    text = BASE + """\
entities: [{name: contact, source: {table: c, key: k}, target: {entity_set: contacts, key: k}}]
checks:
  - {id: n, kind: nulls, entity: contact, columns: [lastname, email], sample: 100, ratio: 1}
  - {id: f, kind: write_freeze, window: 1h30m, since: 2026-11-28T20:00:00Z}
  - {id: h, kind: http, api_key: "${env:CRMCTL_SECRET}", headers: {Accept: json}, limit: null}
"""
    config = load(text, check_kinds=check_kinds)
    assert config.check("n").params == {"columns": ("lastname", "email"), "sample": 100, "ratio": 1.0}
    assert isinstance(config.check("n").params["ratio"], float)
    assert config.check("f").params == {"window": timedelta(hours=1, minutes=30),
                                        "since": datetime(2026, 11, 28, 20, tzinfo=timezone.utc)}
    http = config.check("h").params
    assert http["api_key"] == Secret("CRMCTL_SECRET") and http["headers"] == {"Accept": "json"}
    assert http["limit"] is None


def test_redacted_is_yaml_of_the_effective_config(config: Config) -> None:
    data = yaml.safe_load(config.redacted())
    assert data["target"]["auth"]["secret"] == "${env:CRMCTL_SECRET}"
    assert data["target"]["auth"]["scope"] == "https://contoso.crm4.dynamics.com/.default"
    assert data["checks"][0]["every"] == "30s"
    assert data["rollback"]["point_of_no_return"] == "2026-11-28T23:00:00Z"
    assert data["incidents"]["notify"] == {"teams_webhook": "${env:TEAMS_WEBHOOK}"}


def test_clock_start_is_an_aware_timestamp_or_absent(tmp_path) -> None:
    from datetime import datetime, timezone

    from crmctl.config import ConfigError, load_config

    base = "project: p\nsource: {kind: sql, url: 'sqlite:///s.db'}\ntarget: {kind: emulator}\n"
    path = tmp_path / "c.yaml"
    path.write_text(base)
    assert load_config(path).clock_start is None
    path.write_text(base + "clock_start: 2026-11-28T21:30:00Z\n")
    assert load_config(path).clock_start == datetime(2026, 11, 28, 21, 30, tzinfo=timezone.utc)
    path.write_text(base + "clock_start: 2026-11-28T21:30:00\n")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}:4:14: clock_start")
    else:
        raise AssertionError("a naive clock_start was accepted")
