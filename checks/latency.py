"""api_latency: a configured key query sampled N times against Dynamics -> p50/p95/p99 vs its SLO.

Percentiles are nearest-rank (the value at rank ceil(p/100 * n) of the sorted samples): every
reported figure is a latency that was actually measured, never an interpolation between two,
and it is the definition the demo's ground truth uses. A sample's latency is the duration of
its successful HTTP attempt as the Dataverse client recorded it (request sent to body read),
so time spent waiting for the shared limiter or a Retry-After is not billed to the server.
A sample that finally fails (throttled past the budget, 401, 5xx after retries, malformed
body) is an error, never a latency: with more errors than `max_errors` (default 0) the result
is ERROR, because percentiles over the surviving samples would describe a different population.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from crmctl.baseline_stats import METHOD, PERCENTILES, percentile  # one definition: checks and baselines agree
from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec, SloConfig
from crmctl.connectors.errors import ConnectorError
from crmctl.connectors.limits import request_chain
from crmctl.connectors.querylog import QueryLog, redact_url
from crmctl.model import CheckResult, Status

__all__ = ["METHOD", "PERCENTILES", "ApiLatency", "latency_figures", "percentile"]


def latency_figures(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 and max in ms, rounded to 0.1 ms; None for each when there are no samples."""
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        out[f"p{p}_ms"] = round(percentile(latencies, p), 1) if latencies else None
    out["max_ms"] = round(max(latencies), 1) if latencies else None
    return out


@dataclass
class _Sample:
    latency_ms: float | None = None
    error: str | None = None
    attempts: int = 0


class ApiLatency:
    """Times one SLO query (config `slos:`) N times within the target's shared limiter."""

    kind: ClassVar[str] = "api_latency"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=False,
        params={"slo": str, "samples": int, "concurrency": int, "max_errors": int},
        references={"slo": "slos"},
        description="A key Web API query sampled N times: p50/p95/p99 (nearest rank) vs the SLO's p95_ms.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        slo_id = ctx.check.params.get("slo")
        if not slo_id:
            return ctx.error(f"Check {ctx.check.id} names no SLO; add slo: <id of an entry under slos:>.")
        slo = next((s for s in ctx.config.slos if s.id == slo_id), None)
        if slo is None:
            known = ", ".join(s.id for s in ctx.config.slos) or "none"
            return ctx.error(f"No SLO {slo_id!r} under slos: in the config (known: {known}).")
        samples = max(1, int(ctx.check.params.get("samples", slo.samples)))
        concurrency = max(1, int(ctx.check.params.get("concurrency", 1)))
        max_errors = max(0, int(ctx.check.params.get("max_errors", 0)))
        results = await _sample_all(ctx, slo, samples, concurrency, max_errors)
        return _judge(ctx, slo, samples, max_errors, results)


async def _sample_all(
    ctx: CheckContext, slo: SloConfig, samples: int, concurrency: int, max_errors: int
) -> list[_Sample]:
    """Runs the samples, at most `concurrency` at once, and stops as soon as the result can only
    be ERROR (more than `max_errors` failed): further requests would only cost budget."""
    gate = asyncio.Semaphore(concurrency)
    done: list[_Sample] = []
    stop = asyncio.Event()
    started = 0

    async def one() -> None:
        nonlocal started
        async with gate:
            if stop.is_set():
                return
            # The samples are a chain (at most `concurrency` at once): tell the shared limiter how
            # long it still is, so that the check is not left for last behind the sweep's scans.
            request_chain.set(-(-(samples - started) // concurrency))
            started += 1
            sample = await _sample(ctx, slo.query)
            done.append(sample)
            if sum(1 for s in done if s.error) > max_errors:
                stop.set()

    await asyncio.gather(*(one() for _ in range(samples)))
    return done


async def _sample(ctx: CheckContext, query: str) -> _Sample:
    """One GET of the query; its own log tells which attempt succeeded and how long it took."""
    log = QueryLog("dynamics", deadline=ctx.deadline, clock=ctx.clock)
    try:
        await ctx.dynamics.get_json(query, log=log)
    except ConnectorError as exc:
        return _Sample(error=str(exc), attempts=_merge(ctx, log))
    attempts = _merge(ctx, log)
    ok = [r for r in log.records if r.status is not None and 200 <= r.status < 300]
    if not ok:  # the client returned without recording its answer: not a measurement
        return _Sample(error="the request left no timing in the query log", attempts=attempts)
    return _Sample(latency_ms=ok[-1].duration_ms, attempts=attempts)


def _merge(ctx: CheckContext, log: QueryLog) -> int:
    """Moves a sample's records into the check's Dynamics log (the result's evidence)."""
    ctx.dynamics_log.records.extend(log.records)
    return len(log.records)


def _judge(
    ctx: CheckContext, slo: SloConfig, planned: int, max_errors: int, samples: list[_Sample]
) -> CheckResult:
    latencies = [s.latency_ms for s in samples if s.latency_ms is not None]
    errors = [s.error for s in samples if s.error]
    retried = sum(1 for s in samples if s.attempts > 1)
    breach = ctx.check.breach if ctx.check.breach is not None else slo.p95_ms
    threshold = {"p95_ms": breach, **({"warn": ctx.check.warn} if ctx.check.warn is not None else {})}
    figures = latency_figures(latencies)
    values: dict[str, Any] = {
        "slo": slo.id,
        "query": redact_url(slo.query),
        "samples": planned,
        "measured": len(latencies),
        "errors": len(errors),
        "retried": retried,
        **figures,
        "slo_p95_ms": slo.p95_ms,
        "method": METHOD,
    }
    if len(errors) > max_errors or not latencies:
        tried = len(samples)
        reason = errors[0] if errors else "no sample was measured"
        stopped = f" (stopped after {tried} of {planned})" if tried < planned else ""
        return ctx.finish(
            Status.ERROR,
            f"{len(errors)} of {tried} samples of {slo.id} failed{stopped}, so no percentile is trusted: {reason}",
            values,
            threshold,
        )
    p95 = figures["p95_ms"]
    assert p95 is not None
    status = judge(p95, ctx.check.warn, breach)
    verdict = {Status.OK: "within", Status.WARN: "within (warn)", Status.BREACH: "over"}[status]
    text = (
        f"{slo.id}: p95 {p95:.0f} ms {verdict} the {breach:g} ms SLO "
        f"(p50 {figures['p50_ms']:.0f}, p99 {figures['p99_ms']:.0f} ms; {len(latencies)} samples"
    )
    if errors:
        text += f", {len(errors)} failed (allowed {max_errors})"
    return ctx.finish(status, text + ").", values, threshold)
