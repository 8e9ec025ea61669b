"""Benchmark: one sweep of every demo check with emulator latency injected, against the ideal bound.

The demo world is generated in a temporary folder and served by the emulator in its own
process with a scenario that adds a fixed latency to every request (as a distant Dataverse
would): 50 ms and 200 ms by default. At each latency, `--repeat` sweeps (the engine's
`run_once` over every check of data/demo/crmctl.yaml, each against a freshly started
emulator) run at the demo's concurrency, and one more at concurrency 1 for the first latency.
Printed per latency, for the median sweep:

- wall time, requests made (GETs to Dynamics), and the ideal bound
  `requests x latency / concurrency` (what a perfectly packed schedule would take);
- the ratio wall / ideal (target: within 1.2x), with every run's ratio;
- that ratio taken apart: request cost (mean time a request holds a connection, over the
  latency: the emulator building the page, the transfer, the client reading it) divided by
  packing (how busy the connections were kept: the schedule, i.e. crmctl's admission);
- the longest chain of requests that must follow one another (`api_latency`'s samples) times
  the latency: no schedule can beat that either;
- the client's and the emulator's CPU seconds, and their sum over the host's CPUs: on a
  2-core host that runs both, no schedule can beat that floor either;
- the sweep at concurrency 1, and the speed-up.

    .venv/bin/python bench/sweep.py                          # 50 and 200 ms, concurrency 8, 3 runs each
    .venv/bin/python bench/sweep.py --latency-ms 50 --per-check --skip-serial
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reconcile import EmulatorProcess  # noqa: E402


async def sweep(
    config_path: Path, api_url: str, token: str, concurrency: int, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Runs every check once through the engine against the emulator at `api_url`."""
    from checks.registry import REGISTRY, check_kinds
    from crmctl.config import load_config
    from crmctl.connectors.auth import StaticTokenProvider
    from crmctl.connectors.dataverse import DataverseClient
    from crmctl.connectors.limits import TargetLimiter
    from crmctl.connectors.sql import open_source
    from crmctl.engine import Engine, Targets
    from crmctl.identity import Actor
    from crmctl.store import Store

    config = load_config(config_path, check_kinds=check_kinds())
    config = replace(config, checks=tuple(c for c in config.checks if c.kind not in exclude), runbook=(), rollback=None)
    limits = replace(config.target.limits, concurrency=concurrency)
    config = replace(config, target=replace(config.target, limits=limits))
    state = config_path.parent / f"state-{concurrency}.db"
    store = await Store.open(state)
    limiter = TargetLimiter(concurrency, limits.requests_per_5min, 300.0)
    client = DataverseClient(api_url, StaticTokenProvider(token), limiter, timeout=limits.timeout.total_seconds(),
                             retries=limits.retries, page_size=limits.page_size)
    source = open_source(config.source.url)
    try:
        config = replace(config, state=state)
        engine = Engine(config, REGISTRY, store, Targets(client, source), actor=Actor("bench", "bench"))
        began, cpu = time.perf_counter(), time.process_time()
        results = await engine.run_once()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await client.close()
        await source.close()
        await store.close()
    gets = sum(1 for r in results for q in r.queries if q.method == "GET")
    chain = 0
    for check in config.checks:
        if check.kind == "api_latency":
            slo = next((s for s in config.slos if s.id == check.params.get("slo")), None)
            samples = int(check.params.get("samples", slo.samples if slo else 0))
            chain = max(chain, -(-samples // max(1, int(check.params.get("concurrency", 1)))))
    longest = max(results, key=lambda r: r.duration_s)
    return {
        "wall_s": wall, "cpu_s": cpu, "requests": gets, "limiter_requests": limiter.stats().requests,
        "checks": len(results), "statuses": sorted({r.status.value for r in results}),
        "errors": {r.check_id: r.explanation for r in results if r.status.value == "ERROR"},
        "slowest": (longest.check_id, round(longest.duration_s, 3),
                    sum(1 for q in longest.queries if q.method == "GET")),
        "per_check": {r.check_id: (round(r.duration_s, 2), sum(1 for q in r.queries if q.method == "GET"),
                                   round(sum(q.duration_ms for q in r.queries if q.method == "GET") / 1000, 2))
                      for r in results},
        "limiter_waited_s": round(limiter.stats().waited_s, 2),
        "chain": chain,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[50.0, 200.0],
                        help="injected latency per request; each value is measured in turn")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="sweeps per latency at the main concurrency (median reported)")
    parser.add_argument("--skip-serial", action="store_true", help="do not run the concurrency-1 sweep (first latency only)")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="KIND", help="leave out checks of these kinds")
    parser.add_argument("--per-check", action="store_true", help="print each check's time and requests (median run)")
    parser.add_argument("--json", action="store_true", help="one JSON object per latency, a line each")
    args = parser.parse_args()
    from crmctl.demo_world import ensure_world

    with tempfile.TemporaryDirectory(prefix="crmctl-bench-sweep-") as tmp:
        folder = Path(tmp)
        ensure_world(folder / "world")
        text = (ROOT / "data" / "demo" / "crmctl.yaml").read_text()
        text = text.replace("sqlite:///world/", f"sqlite:///{folder}/world/").replace("data: world/", f"data: {folder}/world/")
        config_path = folder / "crmctl.yaml"
        config_path.write_text(text)
        for index, latency_ms in enumerate(args.latency_ms):
            scenario = folder / f"latency-{index}.yaml"
            scenario.write_text(f"name: wan\nfaults:\n  - {{kind: latency, ms: {latency_ms}}}\n")
            runs: list[dict[str, Any]] = []
            serial: dict[str, Any] | None = None
            with_serial = index == 0 and not args.skip_serial
            for concurrency in [args.concurrency] * max(1, args.repeat) + ([1] if with_serial else []):
                # A fresh emulator for every sweep: no run inherits another's warm caches.
                emulator = EmulatorProcess(folder / "world" / "dataverse.db", scenario=scenario)
                try:
                    served = emulator.cpu_s()
                    run = asyncio.run(sweep(config_path, emulator.api_url, emulator.token, concurrency,
                                            tuple(args.exclude)))
                    run["server_cpu_s"] = emulator.cpu_s() - served
                finally:
                    emulator.stop()
                if len(runs) < max(1, args.repeat):
                    runs.append(run)
                else:
                    serial = run
            report, main_run = _figures(args, latency_ms, runs, serial)
            if args.json:
                print(json.dumps(report), flush=True)
            else:
                if index:
                    print()
                _print(args, report, main_run)
        shutil.rmtree(folder / "world", ignore_errors=True)
    return 0


def _figures(
    args: argparse.Namespace, latency_ms: float, runs: list[dict[str, Any]], serial: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The median run's figures, the spread of the ratio, and the ratio taken apart.

    wall / ideal = (mean request time / latency) / packing, where
    packing = requests x mean request time / (concurrency x wall). The first factor is what each
    request costs beyond the injected latency (the emulator building the page, the transfer, the
    client reading it, on a shared 2-core host); packing (<= 1) is how well the schedule kept
    every connection busy, the part crmctl's admission decides.
    """
    latency = latency_ms / 1000
    runs = sorted(runs, key=lambda r: r["wall_s"])
    main_run = runs[len(runs) // 2]
    ideal = main_run["requests"] * latency / args.concurrency
    in_flight = sum(flight for _, _, flight in main_run["per_check"].values())
    mean_request = in_flight / max(1, main_run["requests"])
    cpu_floor = (main_run["cpu_s"] + main_run["server_cpu_s"]) / (os.cpu_count() or 1)
    report: dict[str, Any] = {
        "latency_ms": latency_ms, "concurrency": args.concurrency, "checks": main_run["checks"],
        "requests": main_run["requests"], "wall_s": round(main_run["wall_s"], 3), "ideal_s": round(ideal, 3),
        "ratio_to_ideal": round(main_run["wall_s"] / ideal, 3),
        "ratios": [round(r["wall_s"] / (r["requests"] * latency / args.concurrency), 3) for r in runs],
        "mean_request_ms": round(mean_request * 1000, 1),
        "request_cost_factor": round(mean_request / latency, 3),
        "packing": round(in_flight / args.concurrency / main_run["wall_s"], 3),
        "client_cpu_s": round(main_run["cpu_s"], 3), "server_cpu_s": round(main_run["server_cpu_s"], 3),
        "cpu_floor_s": round(cpu_floor, 3), "chain": main_run["chain"],
        "chain_bound_s": round(main_run["chain"] * latency, 3),
        "slowest_check": main_run["slowest"], "errors": main_run["errors"], "load_average": round(os.getloadavg()[0], 2),
    }
    if serial is not None:
        report.update({
            "serial_wall_s": round(serial["wall_s"], 3), "serial_requests": serial["requests"],
            "serial_ideal_s": round(serial["requests"] * latency, 3),
            "speedup": round(serial["wall_s"] / main_run["wall_s"], 2),
        })
    return report, main_run


def _print(args: argparse.Namespace, report: dict[str, Any], main_run: dict[str, Any]) -> None:
    if args.exclude:
        print(f"(checks of kind {', '.join(args.exclude)} left out)")
    print(f"sweep of {report['checks']} demo checks, {report['latency_ms']:g} ms latency per request, concurrency "
          f"{args.concurrency}: {report['wall_s']:.2f} s wall (median of {len(report['ratios'])}), "
          f"{report['requests']} requests")
    print(f"ideal bound (requests x latency / concurrency): {report['ideal_s']:.2f} s; ratio "
          f"{report['ratio_to_ideal']:.2f} (target <= 1.2; runs: {report['ratios']})")
    print(f"  = request cost {report['request_cost_factor']:.2f} (mean request {report['mean_request_ms']:.0f} ms "
          f"for {report['latency_ms']:g} ms of latency) / packing {report['packing']:.2f} (connections busy)")
    if report["chain"]:
        print(f"longest sequential chain: {report['chain']} requests x latency = {report['chain_bound_s']:.2f} s "
              f"(ratio to it {report['wall_s'] / max(report['chain_bound_s'], 1e-9):.2f})")
    print(f"CPU: client {report['client_cpu_s']:.2f} s, emulator {report['server_cpu_s']:.2f} s; on "
          f"{os.cpu_count()} CPUs no schedule beats {report['cpu_floor_s']:.2f} s "
          f"({report['cpu_floor_s'] / report['ideal_s']:.2f}x the ideal bound)")
    check_id, seconds, requests = report["slowest_check"]
    print(f"longest check: {check_id}, {seconds:.2f} s, {requests} requests")
    if "serial_wall_s" in report:
        print(f"concurrency 1: {report['serial_wall_s']:.2f} s wall, {report['serial_requests']} requests "
              f"(ideal {report['serial_ideal_s']:.2f} s); concurrency {args.concurrency} is {report['speedup']}x faster")
    if args.per_check:
        print("  check                          wall  requests  in flight (sum of request durations)")
        for check_id, (seconds, requests, flight) in sorted(main_run["per_check"].items(), key=lambda kv: -kv[1][0]):
            print(f"  {check_id:28} {seconds:6.2f} s {requests:4}     {flight:6.2f} s")
    if report["errors"]:
        print(f"ERROR results: {report['errors']}")
    print(f"load average while measuring: {report['load_average']} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    sys.exit(main())
