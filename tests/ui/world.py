"""A small, deterministic cutover for the UI tests: config, clock, results and the room around them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

from crmctl.clock import FrozenClock
from crmctl.config.sections import (
    CheckConfig,
    CheckKindSpec,
    Config,
    HypercareConfig,
    RollbackConfig,
    RunbookStep,
    SourceConfig,
    TargetConfig,
)
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status, iso
from crmctl.store import Store

NOW = datetime(2026, 11, 28, 21, 14, 3, tzinfo=timezone.utc)
"""The frozen time of every UI test: 1 h 45 min 57 s before the point of no return."""

PONR = datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)
GO_LIVE = date(2026, 11, 29)
ACTOR = Actor(operator="alice", host="jump01")
MINUTE = timedelta(minutes=1)

CHECKS: tuple[CheckConfig, ...] = (
    CheckConfig("account.count", "row_count", "account", warn=0, breach=0.001, every=MINUTE, title="Accounts migrated"),
    CheckConfig("contact.count", "row_count", "contact", warn=0, breach=0.001, every=MINUTE, title="Contacts migrated"),
    CheckConfig("account.nulls", "nulls", "account", warn=0, breach=10, every=5 * MINUTE, title="Account names present"),
    CheckConfig("contact.orphans", "orphans", "contact", warn=0, breach=0, every=5 * MINUTE, title="Contacts point at accounts"),
    CheckConfig("opportunity.count", "row_count", "opportunity", warn=0, breach=0.001, every=MINUTE, title="Opportunities migrated"),
    CheckConfig("account.dupes", "duplicates", "account", warn=0, breach=0, every=5 * MINUTE, title="Account numbers unique"),
    CheckConfig("dynamics.whoami", "whoami", None, every=MINUTE, title="Dynamics reachable"),
    CheckConfig("erp.sync", "integration", None, warn=0.01, breach=0.05, every=MINUTE, title="ERP sync healthy"),
)
"""Eight checks: one of each status once the results below are in (erp.sync stays PENDING)."""


def build_config(folder: Path, checks: tuple[CheckConfig, ...] = CHECKS) -> Config:
    """A real, frozen Config for the test cutover (built directly: no YAML in UI tests)."""
    return Config(
        path=folder / "crmctl.yaml",
        project="Contoso CRM to Dynamics 365",
        state=folder / "state.db",
        source=SourceConfig(kind="sql", url=f"sqlite:///{folder}/source.db"),
        target=TargetConfig(kind="emulator"),
        checks=checks,
        runbook=(
            RunbookStep("freeze", "Announce and enforce source write freeze", phase="Freeze"),
            RunbookStep("delta", "Final delta load from last watermark", after=("freeze",), phase="Delta load"),
        ),
        rollback=RollbackConfig(authority=("Cutover Lead", "Business Owner"), sla=timedelta(hours=2), point_of_no_return=PONR),
        hypercare=HypercareConfig(go_live=GO_LIVE),
    )


def result(
    check_id: str,
    status: Status,
    explanation: str,
    values: dict[str, object] | None = None,
    *,
    ago: timedelta = timedelta(seconds=5),
    took: timedelta = timedelta(milliseconds=840),
    kind: str | None = None,
    queries: tuple[QueryRecord, ...] = (),
    threshold: dict[str, object] | None = None,
) -> CheckResult:
    """A result that finished `ago` before NOW."""
    spec = next((c for c in CHECKS if c.id == check_id), None)
    finished = NOW - ago
    if threshold is None and spec is not None:
        threshold = {k: v for k, v in (("warn", spec.warn), ("breach", spec.breach)) if v is not None}
    return CheckResult(
        check_id=check_id,
        kind=kind or (spec.kind if spec else "row_count"),
        status=status,
        started=finished - took,
        finished=finished,
        explanation=explanation,
        values=values or {},
        threshold=threshold or {},
        requests=len(queries),
        queries=queries,
    )


ACCOUNT_QUERIES = (
    QueryRecord("source", "SQL", "SELECT COUNT(*) FROM accounts", None, 12.4, started=iso(NOW - timedelta(seconds=6))),
    QueryRecord(
        "dynamics", "GET", "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$select=new_legacyid&$top=5000",
        200, 412.0, bytes=181_220, started=iso(NOW - timedelta(seconds=6)),
    ),
    QueryRecord(
        "dynamics", "GET", "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$skiptoken=…",
        429, 95.5, started=iso(NOW - timedelta(seconds=5)), error="Retry-After 2 s honoured",
    ),
    QueryRecord(
        "dynamics", "GET", "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$skiptoken=…",
        200, 388.1, bytes=176_004, started=iso(NOW - timedelta(seconds=3)),
    ),
)


def sample_results() -> list[CheckResult]:
    """One result per status (BREACH, OK, WARN, ERROR, STALE, OK, OK; erp.sync PENDING)."""
    return [
        result(
            "account.count", Status.BREACH,
            "Dynamics has 37 fewer accounts than source; first missing keys: [A-10017] A-10023, A-10088.",
            {"source": 12480, "target": 12443, "missing": 37, "missing_pct": 0.002965},
            queries=ACCOUNT_QUERIES,
        ),
        result("contact.count", Status.OK, "Contact counts match: 48,210 on both sides.",
               {"source": 48210, "target": 48210, "missing": 0}, ago=timedelta(seconds=12)),
        result("account.nulls", Status.WARN, "3 accounts have no name (required).",
               {"nulls": 3, "rows": 12443}, ago=timedelta(seconds=40)),
        result("contact.orphans", Status.ERROR,
               "Dataverse throttled the request (429) past the check's budget; no figure is trusted.",
               {}, ago=timedelta(seconds=30)),
        result("opportunity.count", Status.OK, "Opportunity counts match: 9,904 on both sides.",
               {"source": 9904, "target": 9904, "missing": 0}, ago=timedelta(minutes=5, seconds=2)),
        result("account.dupes", Status.OK, "No duplicate account numbers.", {"duplicates": 0}, ago=timedelta(seconds=50)),
        result("dynamics.whoami", Status.OK, "Signed in as crmctl-reader (app user).", {"latency_ms": 143.2},
               ago=timedelta(seconds=8)),
    ]


async def fill_store(path: Path, results: list[CheckResult], *, actor: Actor = ACTOR) -> None:
    """Writes `results` into the state file at `path` (creating it), then closes it."""
    store = await Store.open(path, clock=FrozenClock(NOW))
    try:
        for r in results:
            await store.append_result(r, actor=actor)
    finally:
        await store.close()


@dataclass
class CannedCheck:
    """A check kind that answers at once with OK: lets the real Engine run without a network."""

    kind: ClassVar[str] = "canned"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec()
    calls: ClassVar[list[str]] = []

    async def run(self, ctx):  # noqa: ANN001, ANN201 - the CheckKind protocol
        CannedCheck.calls.append(ctx.check.id)
        return ctx.finish(Status.OK, f"{ctx.check.id} ran (canned).", {"ran": True})


def canned_registry(checks: tuple[CheckConfig, ...] = CHECKS) -> dict[str, type]:
    """Every kind the test checks use, mapped to CannedCheck."""
    return {c.kind: CannedCheck for c in checks}
