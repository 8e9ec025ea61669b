"""Benchmark: export and verify an evidence pack of a long journal (a night of hypercare).

Journals N check results (each with a small query log, as the row_count checks write them) plus
a baseline, sign-offs and lessons into a temporary state file, then times `evidence.export`
(without screenshots: those cost a fixed few seconds) and `evidence.verify`, and prints the
pack's size. Figures are recorded by hand in docs/benchmarks.md.

    .venv/bin/python bench/evidence_export.py [--results 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from crmctl.clock import FrozenClock
from crmctl.evidence import export, verify
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status, iso
from crmctl.signoff import record_lesson, record_signoff
from crmctl.store import Store
from crmctl.config.sections import CheckConfig, Config, SourceConfig, TargetConfig

T0 = datetime(2026, 11, 28, 18, 0, tzinfo=timezone.utc)
ACTOR = Actor("bench", "jump01")


def build_config(folder: Path) -> Config:
    """Eight row-count checks against the emulator: the shape of a small real cutover."""
    checks = tuple(CheckConfig(f"entity{n}.count", "row_count", f"entity{n}", warn=0, breach=0.001) for n in range(8))
    return Config(path=folder / "crmctl.yaml", project="Benchmark cutover", state=folder / "state.db",
                  source=SourceConfig("sql", f"sqlite:///{folder}/source.db"), target=TargetConfig("emulator"),
                  checks=checks)


async def run(results: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = build_config(folder)
        clock = FrozenClock(T0)
        async with await Store.open(config.state, clock=clock) as store:
            t = time.perf_counter()
            batch = []
            for n in range(results):
                at = T0 + timedelta(seconds=n)
                q = (QueryRecord("source", "SQL", "SELECT COUNT(*) FROM accounts", None, 4.2, started=iso(at)),
                     QueryRecord("dynamics", "GET", "https://org.example/api/data/v9.2/accounts?$apply=aggregate($count%20as%20n)",
                                 200, 21.7, bytes=88, started=iso(at)))
                check = config.checks[n % len(config.checks)]
                result = CheckResult(check.id, check.kind, Status.OK if n % 5 else Status.WARN, at, at,
                                     "Dynamics has 0 fewer records than source.", {"source": 20000, "target": 20000},
                                     {"warn": 0}, 2, q)
                batch.append(("check.result", result.to_json()))
                if len(batch) == 1000:
                    await store.append_many(batch, actor=ACTOR)
                    batch = []
            if batch:
                await store.append_many(batch, actor=ACTOR)
            await record_signoff(store, ACTOR, role="business", statement="Accepted.")
            await record_lesson(store, ACTOR, text="Pause ERP Sync at the freeze.")
            print(f"journal:  {await store.last_seq():,} entries written in {time.perf_counter() - t:.1f} s")

            t = time.perf_counter()
            result = await export(config, store, folder / "pack", None, actor=ACTOR)
            took = time.perf_counter() - t
        size = sum(p.stat().st_size for p in result.path.rglob("*") if p.is_file())
        print(f"export:   {took:.2f} s, {result.files} files, {size / 1e6:.1f} MB "
              f"(index.html {(result.path / 'index.html').stat().st_size / 1e6:.2f} MB, "
              f"journal copy {(result.path / 'journal/state.db').stat().st_size / 1e6:.1f} MB)")
        t = time.perf_counter()
        report = verify(result.path)
        print(f"verify:   {time.perf_counter() - t:.2f} s, ok={report.ok}, {report.entries:,} journal entries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(run(args.results))


if __name__ == "__main__":
    main()
