"""Benchmark: the control room against a bare Textual app — time to first screen, CPU, RSS.

Both run headless in a child process of their own (so their CPU and memory are theirs alone),
at 200x50, showing a table of 300 rows that change every second:

* crmctl: the real CrmctlApp on a real ControlRoom over a state file, Checks screen (key 2), while
  a *writer process* journals a fresh result for each of 300 checks every second; every update
  travels store -> change feed -> snapshot -> screens, exactly as in production.
* bare: a Textual App with one DataTable of 300 rows whose every cell is rewritten each second by
  a timer (`update_cell`), the least a live table can cost.

Time to first screen is from the parent's launch of the child to the child's first painted
frame with its data (process start, imports, mount, first journal read included): the bare
app's filled table, crmctl's Overview of the 300 checks; beside it, the CPU time the child used
until then (steadier than the wall time when the machine is busy). CPU is
the child's user+system time over a steady window after warm-up, as % of one core; RSS is the
child's resident set at the end of the window. Prints one table; record it in docs/benchmarks.md.

    .venv/bin/python bench/tui.py [--seconds 10] [--rows 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (200, 50)
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# children


def _ready(launched: float, extra: dict | None = None) -> None:
    """Tells the parent the first screen is up (one JSON line on stdout), with the CPU time the
    child has used so far (all its threads): unlike the wall time, that barely moves when other
    processes load the machine, so it is the figure to compare between two loaded runs."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"ready": time.time() - launched, "ready_cpu": cpu, **(extra or {})}), flush=True)


def child_bare(rows: int, launched: float) -> None:
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable, Footer, Header

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Header()
            yield DataTable(id="t")
            yield Footer()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            for column in ("status", "check", "age", "value"):
                table.add_column(column.title(), key=column)
            for i in range(rows):
                table.add_row("OK", f"bench.{i:03d}", "0 s", "0", key=str(i))
            self.tick = 0
            self.set_interval(1.0, self.update_rows)
            self.call_after_refresh(_ready, launched)

        def update_rows(self) -> None:
            self.tick += 1
            table = self.query_one(DataTable)
            for i in range(rows):
                table.update_cell(str(i), "value", str(self.tick * 1000 + i))
                table.update_cell(str(i), "age", f"{self.tick % 60} s")

    Bare().run(headless=True, size=SIZE)


def bench_config(folder: Path, rows: int):
    """A real config of `rows` checks (the app only draws them; nothing runs them)."""
    from crmctl.config.sections import CheckConfig, Config, SourceConfig, TargetConfig

    checks = tuple(
        CheckConfig(f"bench.{i:03d}", "row_count", None, warn=0, breach=0.001, every=timedelta(seconds=60),
                    title=f"Bench check {i}")
        for i in range(rows)
    )
    return Config(
        path=folder / "crmctl.yaml",
        project="crmctl bench",
        state=folder / "state.db",
        source=SourceConfig(kind="sql", url=f"sqlite:///{folder}/source.db"),
        target=TargetConfig(kind="emulator"),
        checks=checks,
    )


def child_crmctl(rows: int, launched: float, folder: Path) -> None:
    from crmctl.clock import SystemClock
    from crmctl.control import ControlRoom
    from crmctl.identity import Actor
    from crmctl.store import Store
    from screens.app import CrmctlApp

    async def main() -> None:
        config = bench_config(folder, rows)
        store = await Store.open(config.state)
        room = ControlRoom(config, store, None, actor=Actor("bench", "local"), clock=SystemClock())

        class Bench(CrmctlApp):
            """The control room, plus a signal to the parent once the checks table is drawn."""

            CSS_PATH = [str(ROOT / "screens" / "app.tcss")]  # relative paths resolve against this file

            def on_mount(self) -> None:
                super().on_mount()
                self.run_worker(self._first_screen(), group="bench")

            async def _first_screen(self) -> None:
                # The first screen is the overview, drawn with what the journal holds; then the
                # checks table (300 live rows) is shown for the steady-state measurement.
                while not self.snapshot.loaded:
                    await asyncio.sleep(0.005)
                self.call_after_refresh(self._drawn)

            def _drawn(self) -> None:
                _ready(launched)
                self.call_later(self.switch_mode, "checks")

        app = Bench(room, auto_run=False)
        try:
            await app.run_async(headless=True, size=SIZE)
        finally:
            await store.close()

    asyncio.run(main())


def writer(rows: int, folder: Path) -> None:
    """Journals one new result for every check, once a second, until killed."""
    from crmctl.clock import SystemClock
    from crmctl.identity import Actor
    from crmctl.model import CheckResult, Status
    from crmctl.store import Store

    async def main() -> None:
        clock = SystemClock()
        store = await Store.open(folder / "state.db", clock=clock)
        actor = Actor("writer", "bench")
        tick = 0
        while True:
            began = time.monotonic()
            now = clock.now()
            items = []
            for i in range(rows):
                status = Status.BREACH if (i + tick) % 17 == 0 else Status.OK
                result = CheckResult(f"bench.{i:03d}", "row_count", status, now - timedelta(seconds=1), now,
                                     f"tick {tick}", {"headline": f"{tick * 1000 + i:,}"})
                items.append(("check.result", result.to_json()))
            await store.append_many(items, actor=actor)
            tick += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# parent


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(kind: str, rows: int, seconds: float, warmup: float) -> dict[str, float]:
    """Runs one child (and, for crmctl, the writer) and returns its figures."""
    folder = Path(tempfile.mkdtemp(prefix="crmctl-bench-"))
    writer_proc = None
    if kind == "crmctl":
        # The journal exists (with a first round of results) before the app starts, as on a real night.
        writer_proc = subprocess.Popen([sys.executable, __file__, "--writer", "--rows", str(rows), "--folder", str(folder)])
        deadline = time.monotonic() + 20
        while not (folder / "state.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    launched = time.time()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, "--rows", str(rows), "--folder", str(folder), "--launched", repr(launched)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        import select

        if not select.select([child.stdout], [], [], 60)[0]:
            raise RuntimeError(f"{kind}: no first screen within 60 s")
        first = json.loads(child.stdout.readline())
        time.sleep(warmup)
        cpu0, wall0 = _cpu_seconds(child.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = _cpu_seconds(child.pid), time.monotonic()
        rss = _rss_mb(child.pid)
    finally:
        child.kill()
        child.wait()
        if writer_proc is not None:
            writer_proc.kill()
            writer_proc.wait()
    return {"first_screen_s": first["ready"], "first_screen_cpu_s": first["ready_cpu"],
            "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0), "rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state window for CPU")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per app (medians are printed)")
    parser.add_argument("--child", choices=("crmctl", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.rows, args.folder)
        return 0
    if args.child == "bare":
        child_bare(args.rows, args.launched)
        return 0
    if args.child == "crmctl":
        child_crmctl(args.rows, args.launched, args.folder)
        return 0

    figures: dict[str, list[dict[str, float]]] = {"bare": [], "crmctl": []}
    for _ in range(args.runs):
        for kind in ("bare", "crmctl"):
            figures[kind].append(measure(kind, args.rows, args.seconds, args.warmup))
    med = {k: {m: statistics.median(r[m] for r in runs) for m in runs[0]} for k, runs in figures.items()}
    bare, room = med["bare"], med["crmctl"]
    ratio = room["first_screen_s"] / bare["first_screen_s"]
    print(f"crmctl TUI benchmark: {args.rows} rows updated every second, headless {SIZE[0]}x{SIZE[1]}, "
          f"{os.cpu_count()} CPUs, median of {args.runs} runs ({args.seconds:.0f} s CPU window)")
    print(f"{'':24}{'bare Textual':>14}{'crmctl':>12}{'target':>22}")
    print(f"{'time to first screen':24}{bare['first_screen_s']:>12.2f} s{room['first_screen_s']:>10.2f} s"
          f"{'<= 1.7x bare':>22}   ratio {ratio:.2f}x {'OK' if ratio <= 1.7 else 'MISSED'}")
    cpu_ratio = room["first_screen_cpu_s"] / bare["first_screen_cpu_s"]
    print(f"{'  its CPU time':24}{bare['first_screen_cpu_s']:>12.2f} s{room['first_screen_cpu_s']:>10.2f} s"
          f"{'(load-robust)':>22}   ratio {cpu_ratio:.2f}x")
    print(f"{'CPU (% of one core)':24}{bare['cpu_pct']:>12.1f} %{room['cpu_pct']:>10.1f} %{'<= 10 %':>22}"
          f"   {'OK' if room['cpu_pct'] <= 10 else 'MISSED'}")
    print(f"{'RSS':24}{bare['rss_mb']:>11.0f} MB{room['rss_mb']:>9.0f} MB{'<= 150 MB':>22}"
          f"   {'OK' if room['rss_mb'] <= 150 else 'MISSED'}")
    for kind, runs in figures.items():
        print(f"  {kind} runs: " + "; ".join(
            f"{r['first_screen_s']:.2f} s ({r['first_screen_cpu_s']:.2f} s CPU), {r['cpu_pct']:.1f} %, {r['rss_mb']:.0f} MB"
            for r in runs))
    print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
