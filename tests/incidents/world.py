"""A small cutover for the incident, notify and hypercare tests: a real Config, real results."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from crmctl.config import (
    AutoRaiseRule,
    CheckConfig,
    Config,
    DriftTolerance,
    HypercareConfig,
    IncidentsConfig,
    NotifyConfig,
    RollbackConfig,
    RollbackCriterion,
    RunbookStep,
    Secret,
    SeverityConfig,
    SourceConfig,
    TargetConfig,
)
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status

T0 = datetime(2026, 11, 28, 21, 0, tzinfo=timezone.utc)
ALICE = Actor("alice", "jump01")
BOB = Actor("bob", "jump02")
MINUTE = timedelta(minutes=1)

SEVERITIES = {
    "sev1": SeverityConfig(timedelta(minutes=15), "Cutover Lead"),
    "sev2": SeverityConfig(timedelta(hours=1), "Migration Lead"),
    "sev3": SeverityConfig(timedelta(hours=4), "CRM Ops"),
    "sev4": SeverityConfig(timedelta(days=1), "Hypercare Desk"),
}

CHECKS = (
    CheckConfig("account.count", "row_count", "account", warn=0, breach=0.001, every=MINUTE, title="Accounts reconcile"),
    CheckConfig("contact.count", "row_count", "contact", warn=0, breach=0.001, every=MINUTE, title="Contacts reconcile"),
    CheckConfig("dynamics.whoami", "whoami", None, warn=500, breach=2000, every=MINUTE, title="Dynamics reachable"),
    CheckConfig("erp-sync.jobs", "system_jobs", None, every=MINUTE, title="ERP sync jobs"),
)


def build_config(
    folder: Path,
    *,
    auto: tuple[AutoRaiseRule, ...] = (),
    teams: str | None = None,
    webhook: str | None = None,
    tolerances: tuple[DriftTolerance, ...] = (),
    go_live: date = date(2026, 11, 29),
) -> Config:
    """A real, frozen config (no YAML): severities with escalation contacts, a gated runbook."""
    return Config(
        path=folder / "crmctl.yaml",
        project="Contoso CRM to Dynamics 365",
        state=folder / "state.db",
        source=SourceConfig(kind="sql", url=f"sqlite:///{folder}/source.db"),
        target=TargetConfig(kind="emulator"),
        checks=CHECKS,
        runbook=(
            RunbookStep("freeze", "Freeze the source", phase="cutover"),
            RunbookStep("reconcile", "Final reconciliation", after=("freeze",), gate=("account.count", "contact.count"),
                        phase="validation"),
            RunbookStep("signoff", "Business and technical sign-off", after=("reconcile",), phase="sign-off"),
        ),
        rollback=RollbackConfig(
            authority=("Cutover Lead",), sla=timedelta(hours=2),
            criteria=(RollbackCriterion("data-loss", "Accounts missing", "account.count", "difference_pct > 0.5"),),
        ),
        incidents=IncidentsConfig(
            severities=SEVERITIES,
            notify=NotifyConfig(
                teams_webhook=Secret(teams) if teams else None,
                webhook=Secret(webhook) if webhook else None,
            ),
            auto=auto,
        ),
        hypercare=HypercareConfig(go_live=go_live, tolerances=tolerances),
    )


def result(
    check_id: str,
    status: Status,
    values: dict[str, Any] | None = None,
    *,
    at: datetime = T0,
    explanation: str | None = None,
    kind: str | None = None,
    queries: tuple[QueryRecord, ...] = (),
) -> CheckResult:
    spec = next((c for c in CHECKS if c.id == check_id), None)
    return CheckResult(
        check_id=check_id,
        kind=kind or (spec.kind if spec else "row_count"),
        status=status,
        started=at - timedelta(seconds=1),
        finished=at,
        explanation=explanation or f"{check_id} is {status.value}",
        values=values or {},
        threshold={"warn": 0, "breach": 0.001},
        requests=len(queries),
        queries=queries,
    )


BREACH_VALUES = {"source": 20000, "target": 19966, "difference": -34, "difference_pct": 0.17}
OK_VALUES = {"source": 20000, "target": 20000, "difference": 0, "difference_pct": 0.0}
