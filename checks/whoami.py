"""whoami: is Dynamics reachable with our credentials, and how fast does it answer?

WhoAmI is the cheapest authenticated request the Web API has, so its latency is the floor of
every other query: a slow WhoAmI explains slow checks before anyone blames the checks.
"""

from __future__ import annotations

import statistics
import time
from typing import ClassVar

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec
from crmctl.connectors.errors import ConnectorError
from crmctl.model import CheckResult


class WhoAmI:
    """Calls WhoAmI `samples` times; grades the median latency in milliseconds."""

    kind: ClassVar[str] = "whoami"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=False,
        params={"samples": int},
        description="Dynamics reachability and WhoAmI latency (ms) against warn/breach thresholds.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        samples = max(1, int(ctx.check.params.get("samples", 3)))
        latencies: list[float] = []
        user_id = None
        try:
            for _ in range(samples):
                began = time.perf_counter()
                body = await ctx.dynamics.whoami(log=ctx.dynamics_log)
                latencies.append((time.perf_counter() - began) * 1000)
                user_id = body.get("UserId")
        except ConnectorError as exc:
            return ctx.error(f"Dynamics did not answer WhoAmI: {exc}")
        median = statistics.median(latencies)
        status = judge(median, ctx.check.warn, ctx.check.breach)
        values = {
            "headline": f"{median:.0f} ms median · {max(latencies):.0f} ms max",
            "median_ms": round(median, 1),
            "max_ms": round(max(latencies), 1),
            "samples": samples,
            "user_id": user_id,
        }
        return ctx.finish(status, f"WhoAmI answered in {median:.0f} ms (median of {samples}).", values)
