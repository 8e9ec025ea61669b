"""Benchmark: system_jobs over a large job table (backlog past the aggregate limit, completed jobs
split by window) and plugin_traces copying thousands of exceptions into the journal."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checks.registry import REGISTRY, check_kinds  # noqa: E402
from crmctl.clock import FrozenClock  # noqa: E402
from crmctl.config import load_config  # noqa: E402
from crmctl.control import ControlRoom  # noqa: E402
from crmctl.emulator.storage import EmulatorData  # noqa: E402
from crmctl.identity import Actor  # noqa: E402

NOW = datetime(2026, 11, 28, 21, 30, tzinfo=timezone.utc)
CONFIG = """\
project: integration health bench
source: {{kind: sql, url: "sqlite:///{folder}/source.db"}}
target: {{kind: emulator, data: {folder}/dataverse.db, limits: {{concurrency: 8, requests_per_5min: 5000}}}}
integrations:
  - {{id: erp, jobs: {{name_like: "ERP Sync%"}}, slo: {{error_rate: 0.02}}}}
checks:
  - {{id: erp.jobs, kind: system_jobs, integration: erp, window: 24h}}
  - {{id: plugin.traces, kind: plugin_traces, window: 24h}}
"""


def _stamp(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(folder: Path, completed: int, waiting: int, traces: int, seed: int) -> float:
    """Writes the jobs and traces in bulk; returns the seconds it took."""
    rng = random.Random(seed)
    started = time.perf_counter()

    def guid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def jobs():
        for i in range(completed):
            at = _stamp(NOW - timedelta(seconds=rng.randint(1, 86_000)))
            failed = i % 25 == 0
            yield {"asyncoperationid": guid(), "name": f"ERP Sync - Batch {i % 7}", "statecode": 3,
                   "statuscode": 31 if failed else 30, "retrycount": 2 if failed else 0,
                   "createdon": at, "completedon": at, "friendlymessage": "ERP refused the upsert" if failed else None}
        for i in range(waiting):
            at = _stamp(NOW - timedelta(seconds=rng.randint(1, 86_000)))
            yield {"asyncoperationid": guid(), "name": f"ERP Sync - Batch {i % 7}", "statecode": 0,
                   "statuscode": 0, "retrycount": 0, "createdon": at}

    def trace_rows():
        for i in range(traces):
            yield {"plugintracelogid": guid(), "typename": f"Contoso.Plugins.Step{i % 5}", "messagename": "Update",
                   "createdon": _stamp(NOW - timedelta(seconds=rng.randint(1, 86_000))),
                   "exceptiondetails": f"System.InvalidOperationException: failure {i}\n   at Contoso.Plugins.Step"}

    with EmulatorData(folder / "dataverse.db") as data:
        data.insert_rows("asyncoperation", jobs())
        data.insert_rows("plugintracelog", trace_rows())
    (folder / "source.db").touch()
    return time.perf_counter() - started


async def run(folder: Path) -> None:
    (folder / "crmctl.yaml").write_text(CONFIG.format(folder=folder))
    config = load_config(folder / "crmctl.yaml", check_kinds=check_kinds())
    async with ControlRoom.open(config, REGISTRY, actor=Actor("bench", "bench"), clock=FrozenClock(NOW)) as room:
        for label in ("first run", "second run"):
            for check_id in ("erp.jobs", "plugin.traces"):
                began = time.perf_counter()
                (result,) = await room.run_checks([check_id])
                took = time.perf_counter() - began
                print(f"{label:<11} {check_id:<14} {result.status.value:<7} {took:6.2f} s "
                      f"{result.requests:4d} requests  {result.explanation[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--completed", type=int, default=200_000, help="completed ERP jobs in the window")
    parser.add_argument("--waiting", type=int, default=60_000, help="waiting ERP jobs (over 50,000: a backlog)")
    parser.add_argument("--traces", type=int, default=5_000, help="plug-in exceptions to copy")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        built = build(folder, args.completed, args.waiting, args.traces, args.seed)
        print(f"built {args.completed:,} completed + {args.waiting:,} waiting jobs and "
              f"{args.traces:,} traces in {built:.1f} s")
        asyncio.run(run(folder))


if __name__ == "__main__":
    main()
