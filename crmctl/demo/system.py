"""System jobs (asyncoperation) and plug-in trace logs of the demo Dynamics environment.

The story: ERP Sync was never paused at the freeze. It keeps writing to the legacy CRM
(the post-freeze writes by `svc_erp_sync`) and its Dynamics leg fails on the duplicated
account numbers, on accounts that never arrived and on service-protection throttling, with
retries piling up. Marketing Sync is healthy. Plug-in traces show the same faults from the
inside. Volumes here do not scale: an integration runs as often whatever the data size.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Sequence

from crmctl.demo.timeline import Timeline, fmt

INTEGRATION_PATTERNS: dict[str, str] = {
    "erp-sync": "ERP Sync%",
    "marketing-sync": "Marketing Sync%",
}
"""Integration id (as in data/demo/crmctl.yaml) -> asyncoperation `name_like` pattern."""

ERR_DUPLICATE = -2147220937  # 0x80040237 DuplicateRecord
ERR_NOT_FOUND = -2147220969  # 0x80040217 ObjectDoesNotExist
ERR_THROTTLED = -2147015902  # 0x80072322 service protection: number of requests exceeded

_THROTTLE_MESSAGE = (
    "Number of requests exceeded the limit of 6000 over time window of 300 seconds. "
    "Retry-After: 00:00:24"
)


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build_async_operations(
    rng: random.Random,
    tl: Timeline,
    *,
    duplicate_accounts: Sequence[tuple[str, str]],
    missing_account_keys: Sequence[str],
    account_guids: Sequence[str],
    opportunity_guids: Sequence[str],
    contact_guids: Sequence[str],
) -> list[dict[str, Any]]:
    """The last 24 h of system jobs: ERP Sync failing, Marketing Sync healthy, platform jobs.

    `duplicate_accounts` are (accountnumber, account GUID) pairs the ERP upsert trips over;
    `missing_account_keys` are accounts the ERP references but Dynamics does not have.
    """
    rows: list[dict[str, Any]] = []
    seq = iter(range(1, 10_000))

    def job(name: str, operationtype: int, messagename: str | None, entity: str | None,
            regarding: str | None, created: int, *, outcome: str, span_ms: float,
            retries: int = 0, error: tuple[int, str, str] | None = None) -> None:
        started = created + rng.randint(1, 40)
        row: dict[str, Any] = {
            "asyncoperationid": _guid(rng),
            "name": name,
            "operationtype": operationtype,
            "messagename": messagename,
            "primaryentitytype": entity,
            "regardingobjectid": regarding,
            "createdon": fmt(created),
            "retrycount": retries,
            "depth": 1,
            "correlationid": _guid(rng),
            "requestid": _guid(rng),
            "sequence": next(seq),
            "iswaitingforevent": False,
        }
        if outcome in ("succeeded", "failed"):
            completed = started + max(1, round(span_ms / 1000)) + retries * 60
            row.update(
                statecode=3,
                statuscode=30 if outcome == "succeeded" else 31,
                startedon=fmt(started),
                completedon=fmt(completed),
                modifiedon=fmt(completed),
                executiontimespan=round(span_ms, 1),
            )
        elif outcome == "waiting":
            row.update(
                statecode=1,
                statuscode=10,
                startedon=fmt(started),
                modifiedon=fmt(started + 30 + retries * 60),
                postponeuntil=fmt(tl.now + rng.randint(4, 14) * 60),
            )
        elif outcome == "in_progress":
            row.update(statecode=2, statuscode=20, startedon=fmt(started), modifiedon=fmt(started))
        else:  # pragma: no cover - programming error
            raise ValueError(outcome)
        if error is not None:
            code, message, friendly = error
            row.update(errorcode=code, message=message, friendlymessage=friendly)
        rows.append(row)

    def spread(n: int, start: int, end: int) -> list[int]:
        """`n` run times every (end-start)/n seconds with jitter: a scheduled integration."""
        step = (end - start) / n
        return [int(start + i * step + rng.uniform(0, step * 0.3)) for i in range(n)]

    def throttle() -> tuple[int, str, str]:
        return (
            ERR_THROTTLED,
            _THROTTLE_MESSAGE,
            "The ERP Sync service account is being throttled by Dataverse service protection limits.",
        )

    erp_from = tl.now - 17 * 3600
    failing_from = tl.freeze_at + 25 * 60
    # ERP Sync - Account upsert: 24 succeeded (6 needed retries), 8 failed, 2 waiting.
    acc_ok = spread(24, erp_from, failing_from)
    for i, t in enumerate(acc_ok):
        job("ERP Sync - Account upsert", 1, "Upsert", "account", rng.choice(account_guids), t,
            outcome="succeeded", span_ms=rng.uniform(380, 1250), retries=1 if i % 4 == 1 else 0)
    acc_fail = spread(8, failing_from, tl.now - 10 * 60)
    for i, t in enumerate(acc_fail):
        if i < 5:
            number, guid = duplicate_accounts[i % len(duplicate_accounts)]
            err = (
                ERR_DUPLICATE,
                "A record with matching key values already exists. Entity: account, "
                f"alternate key accountnumber = '{number}' matches more than one record.",
                f"ERP upsert rejected: account number {number} exists twice in Dynamics.",
            )
            regarding: str | None = guid
        else:
            err = throttle()
            regarding = rng.choice(account_guids)
        job("ERP Sync - Account upsert", 1, "Upsert", "account", regarding, t,
            outcome="failed", span_ms=rng.uniform(900, 4200), retries=rng.randint(3, 5), error=err)
    for t in (tl.now - 14 * 60, tl.now - 6 * 60):
        job("ERP Sync - Account upsert", 1, "Upsert", "account", rng.choice(account_guids), t,
            outcome="waiting", span_ms=0, retries=rng.randint(1, 3), error=throttle())

    # ERP Sync - Opportunity upsert: 16 succeeded (4 needed retries), 4 failed, 1 waiting.
    opp_ok = spread(16, erp_from + 600, failing_from)
    for i, t in enumerate(opp_ok):
        job("ERP Sync - Opportunity upsert", 1, "Upsert", "opportunity", rng.choice(opportunity_guids), t,
            outcome="succeeded", span_ms=rng.uniform(420, 1400), retries=1 if i % 4 == 2 else 0)
    opp_fail = spread(4, failing_from + 900, tl.now - 15 * 60)
    for i, t in enumerate(opp_fail):
        if i < 2:
            key = missing_account_keys[i % len(missing_account_keys)]
            err = (
                ERR_NOT_FOUND,
                f"account With Id = new_legacyid '{key}' Does Not Exist",
                f"ERP upsert of an opportunity failed: parent account {key} is not in Dynamics.",
            )
        else:
            err = throttle()
        job("ERP Sync - Opportunity upsert", 1, "Upsert", "opportunity", rng.choice(opportunity_guids), t,
            outcome="failed", span_ms=rng.uniform(700, 3100), retries=rng.randint(2, 5), error=err)
    job("ERP Sync - Opportunity upsert", 1, "Upsert", "opportunity", rng.choice(opportunity_guids),
        tl.now - 9 * 60, outcome="waiting", span_ms=0, retries=2, error=throttle())

    # Marketing Sync - Contact upsert: healthy, 30 succeeded, one running now.
    for t in spread(30, tl.now - 23 * 3600, tl.now - 20 * 60):
        job("Marketing Sync - Contact upsert", 1, "Upsert", "contact", rng.choice(contact_guids), t,
            outcome="succeeded", span_ms=rng.uniform(140, 520))
    job("Marketing Sync - Contact upsert", 1, "Upsert", "contact", rng.choice(contact_guids),
        tl.now - 40, outcome="in_progress", span_ms=0)

    # Platform jobs, for realism (and the snapshot job explains the stale counts).
    job("Regenerate Entity Row Count Snapshot Data", 46, None, None, None, tl.snapshot_at - 35,
        outcome="succeeded", span_ms=31_200)
    job("Bulk Delete: plug-in trace log cleanup", 13, "BulkDelete", "plugintracelog", None,
        tl.snapshot_at + 5400, outcome="succeeded", span_ms=8_400)
    for t in (tl.now - 11 * 3600, tl.now - 3 * 3600):
        job("Calculate Rollup Field: account.openrevenue", 57, None, "account", None, t,
            outcome="succeeded", span_ms=rng.uniform(2_000, 6_000))
    rows.sort(key=lambda r: (r["createdon"], r["sequence"]))
    return rows


def build_plugin_traces(
    rng: random.Random,
    tl: Timeline,
    *,
    duplicate_numbers: Sequence[str],
    account_guids: Sequence[str],
) -> list[dict[str, Any]]:
    """Plug-in trace logs (setting: All) of the last day, plus two older exceptions.

    The two older rows are 25-26 h old: the daily cleanup job has not run yet, so a check
    must filter on `createdon` rather than trust that everything present is recent.
    """
    rows: list[dict[str, Any]] = []

    def trace(typename: str, message: str, entity: str, mode: int, created: int,
              duration: int, exception: str | None, block: str) -> None:
        rows.append({
            "plugintracelogid": _guid(rng),
            "typename": typename,
            "messagename": message,
            "primaryentity": entity,
            "mode": mode,
            "operationtype": 1,
            "depth": 1 if mode == 0 else 2,
            "exceptiondetails": exception,
            "messageblock": block,
            "performanceexecutionduration": duration,
            "performanceexecutionstarttime": fmt(created),
            "performanceconstructorduration": rng.randint(0, 3),
            "correlationid": _guid(rng),
            "requestid": _guid(rng),
            "pluginstepid": _guid(rng),
            "persistencekey": _guid(rng),
            "issystemcreated": False,
            "createdon": fmt(created),
        })

    guard = "Contoso.Crm.Plugins.AccountNumberGuard"
    rollup = "Contoso.Crm.Plugins.OpportunityPipelineRollup"
    erp = "Contoso.Integration.ErpSync.UpsertAccountStep"

    def at(hours_ago_lo: float, hours_ago_hi: float) -> int:
        return tl.now - int(rng.uniform(hours_ago_lo, hours_ago_hi) * 3600)

    for _ in range(14):
        trace(guard, rng.choice(("Create", "Update")), "account", 0, at(0.2, 23.5), rng.randint(3, 40),
              None, "AccountNumberGuard: account number is unique; continuing.")
    for i in range(5):
        number = duplicate_numbers[i % len(duplicate_numbers)]
        trace(guard, "Update", "account", 0, at(0.1, 3.2), rng.randint(20, 90),
              "Microsoft.Xrm.Sdk.InvalidPluginExecutionException: Account number "
              f"{number} is already used by another account.\n   at Contoso.Crm.Plugins."
              "AccountNumberGuard.Execute(IServiceProvider serviceProvider)",
              f"AccountNumberGuard: checking {number} ... 2 matches found; refusing the update.")
    for _ in range(10):
        trace(rollup, "Update", "opportunity", 1, at(0.5, 22.0), rng.randint(120, 900), None,
              "PipelineRollup: recalculated open revenue for parent account.")
    for _ in range(3):
        trace(rollup, "Update", "opportunity", 1, at(0.3, 6.0), 120_000,
              "System.TimeoutException: The operation has timed out while recalculating "
              "pipeline totals (2 minute plug-in limit exceeded).",
              "PipelineRollup: loading open opportunities for parent account ... (timed out)")
    for _ in range(8):
        trace(erp, "Upsert", "account", 1, at(1.0, 17.0), rng.randint(200, 700), None,
              "ErpSync: upsert ok.")
    for _ in range(2):
        guid = rng.choice(account_guids)
        trace(erp, "Upsert", "account", 1, at(0.2, 2.5), rng.randint(300, 900),
              "System.ServiceModel.FaultException`1[Microsoft.Xrm.Sdk.OrganizationServiceFault]: "
              "Number of requests exceeded the limit of 6000 over time window of 300 seconds. "
              f"(Fault Detail is equal to ErrorCode {ERR_THROTTLED}).",
              f"ErpSync: upsert account {guid} ... throttled.")
    for hours in (25.2, 26.1):
        trace(rollup, "Update", "opportunity", 1, tl.now - int(hours * 3600), 120_000,
              "System.TimeoutException: The operation has timed out while recalculating pipeline totals.",
              "PipelineRollup: (older than 24 h, awaiting the daily cleanup)")
    rows.sort(key=lambda r: r["createdon"])
    return rows

