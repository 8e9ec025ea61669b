"""http_probe: an integration's health endpoint, sampled N times: status, body and p50/p95 latency.

Grading, worst first: a wrong status or a body without the expected text in any sample is
BREACH (the endpoint answered, and the answer says it is unwell); a sample without an answer
(refused, reset, timed out) makes the result ERROR, because the latency figures would then
describe only the lucky samples; otherwise the nearest-rank p95 is judged against the
check's `breach` (default: the integration's `slo.p95_ms`) and `warn` in milliseconds.
The URL is shown as written in the config (`${env:NAME}` kept), never as substituted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec
from crmctl.connectors.probe import DEFAULT_CONCURRENCY, HttpProber, ProbeSample
from crmctl.connectors.querylog import QueryLog
from crmctl.model import CheckResult, Status
from checks.integration import IntegrationNotFound, integration_for
from checks.latency import METHOD, latency_figures

DEFAULT_SAMPLES = 5


class HttpProbe:
    """Samples an integration's `probe:` endpoint and grades status, body and latency."""

    kind: ClassVar[str] = "http_probe"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=False,
        params={"integration": str, "samples": int, "concurrency": int},
        references={"integration": "integrations"},
        description="An integration's HTTP health endpoint: status, body text, p50/p95 latency vs slo.p95_ms.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        try:
            integration = integration_for(ctx)
        except IntegrationNotFound as exc:
            return ctx.error(str(exc))
        probe = integration.probe
        if probe is None:
            return ctx.error(f"Integration {integration.id!r} has no probe: {{url: …}} to sample.")
        samples = max(1, int(ctx.check.params.get("samples", DEFAULT_SAMPLES)))
        concurrency = max(1, int(ctx.check.params.get("concurrency", DEFAULT_CONCURRENCY)))
        log = QueryLog(integration.id, deadline=ctx.deadline, clock=ctx.clock)
        async with HttpProber(concurrency=concurrency, redact=ctx.config.redact, clock=ctx.clock) as prober:
            shown = prober.shown(probe.url)
            timeout = probe.timeout.total_seconds()
            got = await asyncio.gather(
                *(prober.sample(probe.url, timeout=timeout, expect_body=probe.expect_body, log=log,
                                deadline=ctx.deadline)
                  for _ in range(samples))
            )
        ctx.dynamics_log.records.extend(log.records)  # the result's evidence, tagged with the integration id
        slo_p95 = integration.slo.p95_ms if integration.slo else None
        return _judge(ctx, integration.id, shown, probe.expect_status, probe.expect_body, slo_p95, list(got))


def _judge(
    ctx: CheckContext,
    name: str,
    shown: str,
    expect_status: int,
    expect_body: str | None,
    slo_p95: float | None,
    samples: list[ProbeSample],
) -> CheckResult:
    answered = [s for s in samples if s.answered]
    latencies = [s.latency_ms for s in answered if s.latency_ms is not None]
    wrong_status = [s for s in answered if s.status != expect_status]
    wrong_body = [s for s in answered if s.status == expect_status and s.body_ok is False]
    unanswered = [s for s in samples if not s.answered]
    breach = ctx.check.breach if ctx.check.breach is not None else slo_p95
    threshold = {k: v for k, v in (("warn", ctx.check.warn), ("breach", breach)) if v is not None}
    figures = latency_figures(latencies)
    values: dict[str, Any] = {
        "integration": name,
        "url": shown,
        "samples": len(samples),
        "answered": len(answered),
        "unreachable": len(unanswered),
        "status_mismatches": len(wrong_status),
        "body_mismatches": len(wrong_body),
        "statuses": {str(k): v for k, v in sorted(Counter(s.status for s in answered).items())},
        "expect_status": expect_status,
        **figures,
        "slo_p95_ms": slo_p95,
        "method": METHOD,
    }
    if wrong_status:
        first = wrong_status[0]
        moved = f" (redirect to {first.location}, not followed)" if first.location else ""
        text = (f"{name}: health probe {shown} answered {first.status} instead of {expect_status} "
                f"in {len(wrong_status)} of {len(samples)} samples{moved}.")
        return ctx.finish(Status.BREACH, text, values, threshold)
    if wrong_body:
        text = (f"{name}: health probe {shown} answered {expect_status} but without {expect_body!r} "
                f"in {len(wrong_body)} of {len(samples)} samples.")
        return ctx.finish(Status.BREACH, text, values, threshold)
    if unanswered:
        text = (f"{name}: health probe {shown} got no answer in {len(unanswered)} of {len(samples)} "
                f"samples: {unanswered[0].error}.")
        return ctx.finish(Status.ERROR, text, values, threshold)
    p95 = figures["p95_ms"]
    assert p95 is not None
    status = judge(p95, ctx.check.warn, breach)
    slo = f" vs {breach:g} ms" if breach is not None else ""
    text = (f"{name}: health probe answered {expect_status} in all {len(samples)} samples; "
            f"p95 {p95:.0f} ms{slo} (p50 {figures['p50_ms']:.0f} ms).")
    return ctx.finish(status, text, values, threshold)
