"""Benchmark: reconcile 1,000,000 keys against the emulator; time, requests, peak RSS, ratio to a bare download.

It builds a source table and its Dynamics copy of `--rows` accounts in a temporary folder, with
`--differences` planted differences (60 % missing in Dynamics, 30 % extra, 10 % without a
migration key), starts the emulator in its own process (as a real Dataverse is elsewhere), and
measures in this process:

1. a bare paged download of the key column (`$select=new_legacyid`, ordered by it), over the same
   key ranges and at the same concurrency the reconcile uses: the floor any key-level
   comparison has to pay;
2. the `reconcile` check itself (engine-free: one CheckContext, as the engine builds it), whose
   result must equal the planted differences exactly.

After one untimed warm-up download, `--repeat` pairs run back to back, alternating which of the
two goes first. Printed: median wall times, requests, peak RSS of this process (the emulator's is shown separately),
and ratio = reconcile wall / download wall. Targets: ratio <= 1.25, peak RSS <= 300 MB.

    .venv/bin/python bench/reconcile.py                 # --rows 1000000 --differences 300
    .venv/bin/python bench/reconcile.py --rows 120000   # quicker

`build_world` is also what tests/checks/test_reconcile_scale.py runs its 120,000-row (always)
and 1,000,000-row (CRMCTL_BIG=1) reconciliations against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from statistics import median
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef  # noqa: E402

ACCOUNT = EntityDef(
    logical_name="account",
    entity_set="accounts",
    primary_id="accountid",
    primary_name="name",
    attributes=(
        Attribute("accountid", "guid"),
        Attribute("new_legacyid", "string"),
        Attribute("name", "string"),
        Attribute("createdon", "datetime"),
        Attribute("modifiedon", "datetime"),
    ),
)
LOADED = datetime(2026, 11, 26, 18, 0, tzinfo=timezone.utc)
CONFIG = """\
project: reconcile benchmark
state: {state}
source: {{kind: sql, url: "sqlite:///{source}"}}
target:
  kind: emulator
  data: {dataverse}
  limits: {{concurrency: {concurrency}, requests_per_5min: 6000, timeout: 60s, page_size: {page_size}, deadline: 30m}}
entities:
  - name: account
    source: {{table: accounts, key: account_id, modified: updated_at}}
    target: {{entity_set: accounts, key: new_legacyid, modified: modifiedon, id: accountid}}
checks:
  - {{id: account.reconcile, kind: reconcile, entity: account, warn: 0, breach: 0.001}}
  - {{id: account.count, kind: row_count, entity: account, warn: 0, breach: 0.001}}
"""


def _key(i: int) -> str:
    return f"ACC-{i:07d}"


def build_world(folder: Path, rows: int, differences: int, seed: int = 7) -> dict[str, Any]:
    """Writes source.db and dataverse.db (`rows` source accounts) into `folder`; returns the truth.

    The truth holds the exact missing / extra / unkeyed figures planted, and the counts.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_missing = round(differences * 0.6)
    n_extra = round(differences * 0.3)
    n_unkeyed = differences - n_missing - n_extra
    missing = set(rng.sample(range(rows), n_missing))
    extra = sorted(f"{_key(i)}X" for i in rng.sample(range(rows), n_extra))  # sorts between real keys
    source = sqlite3.connect(folder / "source.db")
    source.execute("PRAGMA journal_mode=WAL")
    source.execute("CREATE TABLE accounts (account_id TEXT PRIMARY KEY NOT NULL, name TEXT, updated_at TEXT NOT NULL)")
    with source:
        source.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?)",
            ((_key(i), f"Account {i}", "2026-11-20T10:00:00Z") for i in range(rows)),
        )
    source.close()
    span = 3 * 86_400  # the load ran over three days: createdon partitions for row_count

    def target_rows() -> Iterator[dict[str, Any]]:
        for i in range(rows):
            if i in missing:
                continue
            created = LOADED + timedelta(seconds=i * span // rows)
            yield {"accountid": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "new_legacyid": _key(i),
                   "name": f"Account {i}", "createdon": created, "modifiedon": created}
        for n, key in enumerate(extra + [None] * n_unkeyed):
            created = LOADED + timedelta(seconds=span + n)
            yield {"accountid": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "new_legacyid": key,
                   "name": f"Extra {n}", "createdon": created, "modifiedon": created}

    with EmulatorData(folder / "dataverse.db") as data:
        data.connection.execute("PRAGMA synchronous=OFF")
        data.define_entity(ACCOUNT)
        data.insert_rows("account", target_rows())
        with data.connection as conn:
            # A migration key is an alternate key in Dataverse: indexed, as it is here.
            conn.execute('CREATE INDEX ix_account_new_legacyid ON "e_account" ("new_legacyid")')
            conn.execute('CREATE INDEX ix_account_createdon ON "e_account" ("createdon")')
            conn.execute("ANALYZE")
    return {
        "source_count": rows,
        "target_count": rows - n_missing + n_extra + n_unkeyed,
        "missing": sorted(_key(i) for i in missing),
        "extra": extra,
        "unkeyed": n_unkeyed,
    }


def write_config(folder: Path, concurrency: int = 8, page_size: int = 5000) -> Path:
    """A cutover config around a world built by `build_world` (state and exports in `folder`)."""
    path = folder / "crmctl.yaml"
    path.write_text(CONFIG.format(
        state=folder / ".crmctl" / "state.db", source=folder / "source.db", dataverse=folder / "dataverse.db",
        concurrency=concurrency, page_size=page_size,
    ))
    return path


class EmulatorProcess:
    """The emulator serving `data` in a child process, as a remote Dataverse would be."""

    def __init__(self, data: Path, token: str = "bench-token", scenario: Path | None = None) -> None:
        self.token = token
        extra = ["--scenario", str(scenario)] if scenario else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmctl.emulator", "--data", str(data), "--port", "0", "--token", token, *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.api_url = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = re.match(r"\s*api:\s*(\S+)", line)
            if match:
                self.api_url = match.group(1)
                break
        if not self.api_url:
            raise RuntimeError("the emulator did not start")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """User + system CPU seconds the emulator has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def measure(
    folder: Path, api_url: str, token: str, concurrency: int, page_size: int, repeat: int = 3,
    server_cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, Any]:
    """Runs the bare download and the reconcile `repeat` times each, against the emulator at `api_url`.

    Pairs run back to back, alternating which goes first, after one untimed warm-up download;
    medians over the pairs keep a busy machine (or a warm cache) from favouring either side.
    """
    from checks.keys import plan_ranges
    from checks.reconcile import Reconcile
    from checks.registry import check_kinds
    from crmctl.checking import CheckContext
    from crmctl.clock import SystemClock
    from crmctl.config import load_config
    from crmctl.connectors.auth import StaticTokenProvider
    from crmctl.connectors.dataverse import DataverseClient
    from crmctl.connectors.limits import TargetLimiter
    from crmctl.connectors.querylog import QueryLog
    from crmctl.connectors.sql import SqlSource

    config = load_config(write_config(folder, concurrency, page_size), check_kinds=check_kinds())
    clock = SystemClock()

    def context(client: DataverseClient, source: SqlSource, check_id: str) -> CheckContext:
        return CheckContext(config, config.check(check_id), client, source, clock, clock.now(), time.monotonic() + 1800)

    out: dict[str, Any] = {}
    source = SqlSource(config.source.url)
    client = DataverseClient(api_url, StaticTokenProvider(token), TargetLimiter(concurrency, 6000, 300.0),
                             page_size=page_size, timeout=60)
    try:
        planning = context(client, source, "account.reconcile")
        rows = int(await source.scalar("SELECT COUNT(*) FROM accounts"))
        ranges = await plan_ranges(planning, "accounts", "account_id", rows)
        out["partitions"] = len(ranges)

        # As many ranges in progress at once as the reconcile keeps (checks/compare.py): all 30
        # at once would interleave more streams than there are connections, and be slower.
        active = asyncio.Semaphore(concurrency + max(2, concurrency // 2))

        async def download_all() -> list[int]:
            async def download(condition: str) -> int:
                count = 0
                async with active:
                    async for page in client.pages("accounts", select=["new_legacyid"], filter=condition,
                                                   orderby="new_legacyid asc", log=log):
                        count += len(page)
                return count

            return await asyncio.gather(*(download(r.odata("new_legacyid")) for r in ranges))

        # One untimed pass first: the emulator's and the OS's caches are then as warm for the first
        # measured run as for the later ones (a long-running Dataverse is never cold either).
        log = QueryLog("dynamics")
        await download_all()
        for turn in range(repeat):
            # The two alternate which goes first (download, reconcile; reconcile, download; ...):
            # whatever the one run first leaves warm or busy favours each side equally often.
            for step in (("download", "reconcile") if turn % 2 == 0 else ("reconcile", "download")):
                began, cpu, served = time.perf_counter(), time.process_time(), server_cpu()
                if step == "download":
                    # 1. the floor: the key column of every range, paged, nothing else
                    log = QueryLog("dynamics")
                    counts = await download_all()
                    out["download_rows"] = sum(counts)
                    out["download_requests"] = log.requests
                else:
                    # 2. the reconcile check, under the same conditions
                    out["result"] = await Reconcile().run(context(client, source, "account.reconcile"))
                out.setdefault(f"{step}_s", []).append(time.perf_counter() - began)
                out.setdefault(f"{step}_cpu_s", []).append(time.process_time() - cpu)
                out.setdefault(f"{step}_server_cpu_s", []).append(server_cpu() - served)
    finally:
        await client.close()
        await source.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--differences", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=4, help="download/reconcile pairs to take medians over")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--world", type=Path, help="keep the world in this folder and reuse it on later runs")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the measured work here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmctl-bench-reconcile-") as tmp:
        folder = args.world or Path(tmp)
        began = time.perf_counter()
        truth_file = folder / "truth.json"
        if truth_file.exists():
            truth = json.loads(truth_file.read_text())
        else:
            truth = _build_in_child(folder, args.rows, args.differences, args.seed)
            truth_file.write_text(json.dumps(truth))
        build_s = time.perf_counter() - began
        emulator = EmulatorProcess(folder / "dataverse.db")
        try:
            work = measure(folder, emulator.api_url, emulator.token, args.concurrency, args.page_size, args.repeat,
                           emulator.cpu_s)
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                figures = profiler.runcall(asyncio.run, work)
                profiler.dump_stats(args.profile)
            else:
                figures = asyncio.run(work)
            emulator_rss = emulator.peak_rss_mb()
        finally:
            emulator.stop()
    return _report(args, truth, figures, build_s, emulator_rss)


def _build_in_child(folder: Path, rows: int, differences: int, seed: int) -> dict[str, Any]:
    """Builds the world in a child process, so this process's peak RSS is the measured work alone."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from bench.reconcile import build_world; "
        "print(json.dumps(build_world(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(folder), str(rows), str(differences), str(seed)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return json.loads(done.stdout)


def _report(args: argparse.Namespace, truth: dict[str, Any], figures: dict[str, Any], build_s: float,
            emulator_rss: float) -> int:
    result = figures["result"]
    values = result.values
    exact = (
        values.get("missing") == len(truth["missing"]) and values.get("extra") == len(truth["extra"])
        and values.get("unkeyed") == truth["unkeyed"] and values.get("target") == truth["target_count"]
        and values.get("first_missing") == truth["missing"][: len(values.get("first_missing", []))]
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gets = sum(1 for q in result.queries if q.method == "GET")
    download_s, reconcile_s = median(figures["download_s"]), median(figures["reconcile_s"])
    download_cpu, reconcile_cpu = median(figures["download_cpu_s"]), median(figures["reconcile_cpu_s"])
    ratio = reconcile_s / download_s
    report = {
        "rows": args.rows, "differences": args.differences, "concurrency": args.concurrency,
        "partitions": figures["partitions"], "build_s": round(build_s, 2), "repeat": args.repeat,
        "download_s": round(download_s, 3), "download_requests": figures["download_requests"],
        "reconcile_s": round(reconcile_s, 3), "reconcile_requests": gets,
        "download_cpu_s": round(download_cpu, 3), "reconcile_cpu_s": round(reconcile_cpu, 3),
        "download_server_cpu_s": round(median(figures["download_server_cpu_s"]), 3),
        "reconcile_server_cpu_s": round(median(figures["reconcile_server_cpu_s"]), 3),
        "reconcile_sql_queries": result.requests - gets, "ratio": round(ratio, 3),
        "ratios": [round(r / d, 3) for r, d in zip(figures["reconcile_s"], figures["download_s"])],
        "peak_rss_mb": round(peak_mb, 1), "emulator_peak_rss_mb": round(emulator_rss, 1),
        "status": result.status.value, "exact": exact, "method": values.get("method"),
        "missing": values.get("missing"), "extra": values.get("extra"), "unkeyed": values.get("unkeyed"),
        "load_average": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"world: {args.rows:,} source rows, {args.differences} planted differences, built in {build_s:.1f} s")
        print(f"bare download of the key column: {figures['download_rows']:,} keys, {figures['download_requests']} "
              f"requests over {figures['partitions']} ranges at concurrency {args.concurrency}: "
              f"{download_s:.2f} s (median of {args.repeat}; client CPU {download_cpu:.2f} s, emulator CPU "
              f"{report['download_server_cpu_s']:.2f} s)")
        print(f"reconcile: {result.status.value}, {values.get('missing')} missing, {values.get('extra')} extra, "
              f"{values.get('unkeyed')} without key; exact: {exact}; {gets} requests + {result.requests - gets} SQL "
              f"queries; {reconcile_s:.2f} s (median; client CPU {reconcile_cpu:.2f} s, emulator CPU "
              f"{report['reconcile_server_cpu_s']:.2f} s; {values.get('method')})")
        print(f"ratio reconcile / download: {ratio:.3f} (target <= 1.25; pairs: {report['ratios']})")
        print(f"peak RSS of this process: {peak_mb:.0f} MB (target <= 300 MB); emulator process: {emulator_rss:.0f} MB")
        print(f"load average while measuring: {report['load_average']} on {os.cpu_count()} CPUs")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
