"""The test cutover with integrations: the world of tests/ui/world.py plus jobs, probes and SLO checks.

Result values are shaped exactly as checks/integration.py (system_jobs), checks/probe.py
(http_probe) and checks/latency.py (api_latency) journal them, with a history of earlier runs
for the trends. A separate module so that the base world (and its snapshots) stays as it is.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from crmctl.config.sections import (
    CheckConfig,
    Config,
    IntegrationConfig,
    IntegrationSlo,
    JobsConfig,
    ProbeConfig,
    SloConfig,
)
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status, iso
from crmctl.store import Store
from tests.ui.world import ACTOR, CHECKS, MINUTE, NOW, build_config, result, sample_results

INTEGRATION_CHECKS: tuple[CheckConfig, ...] = (
    CheckConfig("erp-sync.jobs", "system_jobs", None, every=MINUTE, title="ERP Sync system jobs",
                params={"integration": "erp-sync"}),
    CheckConfig("erp-sync.probe", "http_probe", None, every=MINUTE, title="ERP Sync health endpoint",
                params={"integration": "erp-sync"}),
    CheckConfig("marketing-sync.jobs", "system_jobs", None, every=MINUTE, title="Marketing Sync system jobs",
                params={"integration": "marketing-sync"}),
    CheckConfig("account-view.latency", "api_latency", None, every=5 * MINUTE, title="Account view p95",
                params={"slo": "account-view"}),
)

INTEGRATIONS = (
    IntegrationConfig(
        "erp-sync", "ERP Sync (order-to-cash)",
        probe=ProbeConfig(url="https://erp.example/health", url_template="https://erp.example/health"),
        jobs=JobsConfig("ERP Sync%"), slo=IntegrationSlo(p95_ms=800, error_rate=0.02),
    ),
    IntegrationConfig(
        "marketing-sync", "Marketing Sync (contacts, consent)",
        jobs=JobsConfig("Marketing Sync%"), slo=IntegrationSlo(p95_ms=800, error_rate=0.02),
    ),
    IntegrationConfig("billing", "Billing feed (not yet watched)"),
)


def build_integration_config(folder: Path) -> Config:
    """The base test config plus three integrations (one with no checks) and an SLO query."""
    base = build_config(folder, CHECKS + INTEGRATION_CHECKS)
    return replace(
        base,
        integrations=INTEGRATIONS,
        slos=(SloConfig("account-view", "accounts?$select=name&$top=50", p95_ms=500),),
    )


def _jobs(check_id: str, integration: str, failed: int, completed: int, waiting: int, *, ago: timedelta,
          last_error: str | None = None, ids: tuple[str, ...] = ()) -> CheckResult:
    rate = failed / completed if completed else 0.0
    status = Status.BREACH if rate > 0.02 else (Status.WARN if failed else Status.OK)
    text = (f"{integration}: {failed:,} of {completed:,} completed jobs failed in the last 24 h "
            f"({rate * 100:.1f} % vs SLO 2 %); {failed * 2:,} retried, {waiting:,} waiting, 1 in progress.")
    return result(
        check_id, status, text,
        {
            "integration": integration, "name_like": f"{integration}%", "window": "24h",
            "failed_jobs": failed, "retried_jobs": failed * 2, "retries": failed * 3,
            "waiting_jobs": waiting, "in_progress_jobs": 1, "succeeded_jobs": completed - failed,
            "canceled_jobs": 0, "completed_jobs": completed, "backlog": waiting + 1, "backlog_exceeded": False,
            "error_rate": round(rate, 6), "error_rate_pct": round(rate * 100, 2),
            "last_error": last_error, "last_error_code": -2147204784 if last_error else None,
            "last_error_at": "2026-11-28T21:09:12Z" if last_error else None,
            "failing_job_ids": list(ids),
        },
        ago=ago, kind="system_jobs", threshold={"warn": 0.0, "breach": 0.02},
    )


def _probe(p50: float, p95: float, *, ago: timedelta) -> CheckResult:
    status = Status.BREACH if p95 > 800 else Status.OK
    return result(
        "erp-sync.probe", status,
        f"erp-sync: health probe answered 200 in all 5 samples; p95 {p95:.0f} ms vs 800 ms (p50 {p50:.0f} ms).",
        {"integration": "erp-sync", "url": "https://erp.example/health", "samples": 5, "answered": 5,
         "unreachable": 0, "status_mismatches": 0, "body_mismatches": 0, "statuses": {"200": 5},
         "expect_status": 200, "p50_ms": p50, "p95_ms": p95, "p99_ms": p95, "max_ms": p95,
         "slo_p95_ms": 800, "method": "nearest-rank"},
        ago=ago, kind="http_probe", threshold={"breach": 800},
        queries=(QueryRecord("erp-sync", "GET", "https://erp.example/health", 200, p95, started=iso(NOW - ago)),),
    )


def _latency(p95: float, *, ago: timedelta) -> CheckResult:
    return result(
        "account-view.latency", Status.OK if p95 <= 500 else Status.BREACH,
        f"account-view: p95 {p95:.0f} ms vs SLO 500 ms over 20 samples (p50 {p95 / 2:.0f} ms).",
        {"slo": "account-view", "query": "accounts?$select=name&$top=50", "samples": 20, "measured": 20,
         "errors": 0, "retried": 0, "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95, "max_ms": p95,
         "slo_p95_ms": 500, "method": "nearest-rank"},
        ago=ago, kind="api_latency", threshold={"p95_ms": 500},
    )


ERP_ERROR = "Plugin ERP.Sync.AccountUpsert: the remote ERP endpoint timed out after 120 s (HTTP 504)."


def integration_results() -> list[CheckResult]:
    """The base results, then ten earlier runs of each integration check (oldest first), then
    the newest: ERP Sync breaches its error-rate SLO and its probe is slow; Marketing is fine;
    Billing has no checks at all."""
    out = list(sample_results())
    for i in range(10, 0, -1):
        ago = timedelta(minutes=i)
        out.append(_jobs("erp-sync.jobs", "erp-sync", failed=i % 4, completed=400 + i, waiting=3 + i, ago=ago))
        out.append(_probe(180 + 7 * i, 420 + 25 * (10 - i) + (i % 3) * 40, ago=ago))
        out.append(_jobs("marketing-sync.jobs", "marketing-sync", failed=0, completed=200, waiting=i % 3, ago=ago))
        out.append(_latency(300 + 10 * (i % 4), ago=ago))
    out.append(_jobs("erp-sync.jobs", "erp-sync", failed=14, completed=412, waiting=57, ago=timedelta(seconds=6),
                     last_error=ERP_ERROR, ids=("7c1e0d2a-0001", "7c1e0d2a-0002", "7c1e0d2a-0003")))
    out.append(_probe(212.0, 912.4, ago=timedelta(seconds=9)))
    out.append(_jobs("marketing-sync.jobs", "marketing-sync", failed=0, completed=198, waiting=2, ago=timedelta(seconds=20)))
    out.append(_latency(341.0, ago=timedelta(seconds=40)))
    out.append(ACCOUNT_RECONCILE)
    return out


MISSING_KEYS = tuple(f"A-{10000 + n}" for n in (17, 23, 88, 104, 131, 160, 202, 245, 311, 388, 402, 419,
                                                  477, 503, 561, 590, 644, 702, 759, 811, 866, 921))
ACCOUNT_RECONCILE = result(
    "account.count", Status.BREACH,
    "Dynamics has 37 fewer accounts than source; first missing keys: A-10017, A-10023, A-10088.",
    {"headline": "12,480 → 12,443 (-37)", "source": 12480, "target": 12443, "missing": 37,
     "missing_pct": 0.2965, "missing_keys": list(MISSING_KEYS), "extra_keys": ["A-99001"], "extra": 1},
    ago=timedelta(seconds=4),
    queries=(
        QueryRecord("source", "SQL", "SELECT account_id FROM accounts ORDER BY account_id", None, 48.0,
                    started=iso(NOW - timedelta(seconds=5))),
        QueryRecord("dynamics", "GET",
                    "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$select=new_legacyid&$orderby=new_legacyid",
                    200, 412.0, started=iso(NOW - timedelta(seconds=5))),
        QueryRecord("dynamics", "GET", "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$skiptoken=%3Ccookie%3E",
                    429, 95.5, started=iso(NOW - timedelta(seconds=5)), error="Retry-After 2 s honoured"),
    ),
)
"""A newer account.count result with the keys behind its difference (what reconcile reports)."""


class SteppedClock:
    """A clock the filler sets to each entry's moment, so journal timestamps tell a story."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


FREEZE_DONE_AGO = timedelta(minutes=7, seconds=30)
"""When bob ticked the freeze step, before NOW (a moment worth travelling back to)."""


async def fill_store_timed(path: Path, results: list[CheckResult]) -> None:
    """Journals `results` in the order they finished, each stamped at its finish time, with
    bob's "freeze done" in between: a journal that time travel can cut at any minute."""
    clock = SteppedClock(NOW)
    store = await Store.open(path, clock=clock)
    bob = Actor(operator="bob", host="ssh:10.0.0.7")
    events: list[tuple[datetime, int, object]] = [(r.finished, i, r) for i, r in enumerate(results)]
    events.append((NOW - FREEZE_DONE_AGO, -1, "freeze"))
    try:
        for n, (at, _, item) in enumerate(sorted(events, key=lambda e: (e[0], e[1]))):
            clock.at = at + timedelta(microseconds=n)  # distinct stamps, as a real night has
            if isinstance(item, CheckResult):
                await store.append_result(item, actor=ACTOR)
            else:
                await store.append("runbook.step.done", {"step": "freeze"}, actor=bob)
    finally:
        await store.close()
