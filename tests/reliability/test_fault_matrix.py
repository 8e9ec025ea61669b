"""The fault matrix: every registered check kind x every fault the war room meets.

Faults: a 429 storm, 503s, connection resets, hangs past the timeout, torn JSON, a token that
is refused even after a fresh one was fetched, a total outage (nothing listens), and the source
database held under an exclusive lock by another connection. Each fault is total for what it
reaches, so a check that reads the faulted side cannot produce a trustworthy figure: it must say
ERROR, with a reason sentence that names the cause, and nothing may raise out of the engine.

A fault that cannot reach what a kind reads (the source lock for a Dynamics-only kind, token
expiry for the health probe, which carries no token) is still run against that kind, and the
result must then be provably untouched: no query went to the faulted side, and the verdict and
its figures are those of the fault-free baseline run. Which kind reads which side is declared
per kind in `KINDS` below, cross-checked against the queries the baseline actually made, and
the untouched pairs are listed per kind too, so no allowance is a blanket one.

The kinds are taken from `checks.registry.REGISTRY`: a new kind without a row here fails.
`make reliability` repeats the matrix over three page sizes; CRMCTL_MATRIX_VERBOSE=1 prints
every verdict with its reason.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import Config, load_config
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.sql import SqlSource
from crmctl.demo_world import GroundTruth
from crmctl.emulator.scenario import parse_scenario
from crmctl.emulator.server import Emulator
from crmctl.engine import Engine, Targets
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.runtime import EmulatorTokenProvider
from crmctl.store import Store
from crmctl.views import check_row
from tests.checks.datachecks import entities_block, world
from tests.reliability.faults_probe import DeadPort, FaultyHealthServer
from tests.reliability.scale import scaled

ACTOR = Actor("matrix", "test-host")
DYNAMICS, SOURCE, PROBE = "dynamics", "source", "probe"
"""The sides a check can read: Dynamics (the emulator), the source database, an integration's endpoint."""

STORM, E503, RESET, TIMEOUT, TORN, TOKEN, OUTAGE, LOCKED = (
    "429 storm", "503", "connection reset", "timeout", "malformed JSON", "401 token expiry",
    "total outage", "source locked",
)
FAULTS = (STORM, E503, RESET, TIMEOUT, TORN, TOKEN, OUTAGE, LOCKED)
RUN_ORDER = (LOCKED, STORM, E503, RESET, TIMEOUT, TORN, TOKEN, OUTAGE)
"""The lock runs first in each round, on a fresh copy of the source: a query cancelled by an earlier
fault can leave its cursor (and a read lock) behind until garbage collection, which would turn the
lock fault into "could not take the lock". Those leftovers are counted and printed instead."""

PER_ATTEMPT_TIMEOUT_S = 1.5
"""The client's per-attempt timeout: short, so a hang is detected quickly, yet far above what a
healthy answer from a loaded 2-core machine takes."""
HANG_S = 4.0
"""How long a hung request is held before the emulator drops it: longer than the timeout."""


@dataclass(frozen=True)
class FaultSpec:
    """How a fault is injected, which sides it reaches, and what a reason naming it contains."""

    reaches: frozenset[str]
    scenario: str | None = None
    """Faults for the emulator and the probe's endpoint (YAML list items), or None."""
    dead: bool = False
    """Total outage: Dynamics and the probe endpoint point at ports nobody listens on."""
    lock_source: bool = False
    reasons: tuple[str, ...] = ()
    """Any of these (lower case) in the explanation names the cause."""


SPECS: dict[str, FaultSpec] = {
    STORM: FaultSpec(
        frozenset({DYNAMICS, PROBE}),
        "  - {kind: throttle, every: 1, retry_after: 10m, limit: requests}\n",
        reasons=("throttl", "429"),
    ),
    E503: FaultSpec(frozenset({DYNAMICS, PROBE}), "  - {kind: error, status: 503}\n", reasons=("503", "unavailable")),
    RESET: FaultSpec(frozenset({DYNAMICS, PROBE}), "  - {kind: reset}\n", reasons=("reset", "connection")),
    TIMEOUT: FaultSpec(
        frozenset({DYNAMICS, PROBE}), f"  - {{kind: timeout, hang: {HANG_S}s}}\n",
        reasons=("did not answer within", "timed out", "timeout"),
    ),
    TORN: FaultSpec(frozenset({DYNAMICS, PROBE}), "  - {kind: malformed}\n", reasons=("not json", "unusable", "without")),
    TOKEN: FaultSpec(frozenset({DYNAMICS}), "  - {kind: token_expiry, lifetime: 0s}\n", reasons=("token",)),
    OUTAGE: FaultSpec(frozenset({DYNAMICS, PROBE}), dead=True, reasons=("refused", "could not connect", "cannot connect")),
    LOCKED: FaultSpec(frozenset({SOURCE}), lock_source=True, reasons=("locked",)),
}


@dataclass(frozen=True)
class KindRow:
    """One check of a kind, what it reads, and the faults that provably cannot touch it."""

    check: str
    """The `checks:` entry (YAML flow mapping); its id is `m.<kind>`."""
    reads: frozenset[str]
    untouched_by: frozenset[str] = frozenset()
    """Faults that reach none of `reads`: the result must equal the baseline's."""
    answered: dict[str, str] | None = None
    """Faults under which an answer is itself the finding (the health probe): fault -> reason."""


BOTH = frozenset({DYNAMICS, SOURCE})
ONLY_DYNAMICS = frozenset({DYNAMICS})
KINDS: dict[str, KindRow] = {
    "row_count": KindRow("{id: m.row_count, kind: row_count, entity: account, warn: 0, breach: 0.001}", BOTH),
    "whoami": KindRow("{id: m.whoami, kind: whoami, samples: 2, warn: 60000, breach: 120000}", ONLY_DYNAMICS,
                      frozenset({LOCKED})),
    "system_jobs": KindRow("{id: m.system_jobs, kind: system_jobs, integration: erp-sync, window: 24h}",
                           ONLY_DYNAMICS, frozenset({LOCKED})),
    # The probe reads the integration's own endpoint with no token: the source lock and token
    # expiry cannot reach it. An endpoint that answers 429/503 or a torn page has answered: that
    # answer is what a health probe measures, so BREACH naming the status is its honest verdict.
    "http_probe": KindRow(
        "{id: m.http_probe, kind: http_probe, integration: erp-sync, samples: 3, warn: 60000, breach: 120000}",
        frozenset({PROBE}), frozenset({LOCKED, TOKEN}),
        answered={STORM: "answered 429 instead of 200", E503: "answered 503 instead of 200",
                  TORN: "answered 200 but without"},
    ),
    "plugin_traces": KindRow("{id: m.plugin_traces, kind: plugin_traces, window: 24h, warn: 0, breach: 5}",
                             ONLY_DYNAMICS, frozenset({LOCKED})),
    "api_latency": KindRow("{id: m.api_latency, kind: api_latency, slo: account-view, samples: 3}",
                           ONLY_DYNAMICS, frozenset({LOCKED})),
    "reconcile": KindRow("{id: m.reconcile, kind: reconcile, entity: account, warn: 0, breach: 0.001, sample: 20, "
                         "fields: {name: name}, export: false}", BOTH),
    "duplicates": KindRow("{id: m.duplicates, kind: duplicates, entity: contact, columns: {emailaddress1: email}, "
                          "warn: 0, breach: 10, export: false}", BOTH),
    "nulls": KindRow("{id: m.nulls, kind: nulls, entity: contact, columns: {lastname: last_name}, warn: 0, "
                     "breach: 10, export: false}", BOTH),
    "orphans": KindRow("{id: m.orphans, kind: orphans, entity: opportunity, warn: 0, breach: 10, export: false}",
                       BOTH),
    # The write freeze reads only the source: no Dynamics fault (nor the dead network) reaches it.
    "write_freeze": KindRow(
        "{id: m.write_freeze, kind: write_freeze, since: 2026-11-28T18:00:00Z, writer: updated_by, warn: 0, "
        "breach: 0, export: false}",
        frozenset({SOURCE}), frozenset({STORM, E503, RESET, TIMEOUT, TORN, TOKEN, OUTAGE}),
    ),
    "delta": KindRow("{id: m.delta, kind: delta, entity: contact, watermark: 2026-11-28T17:45:00Z, warn: 0, "
                     "breach: 10, export: false}", BOTH),
    "kpi_parity": KindRow(
        "{id: m.kpi_parity, kind: kpi_parity, entity: opportunity, warn: 0, breach: 0.01, "
        "source_where: \"status = 'open'\", target_filter: \"statecode eq 0\", "
        "group: {source: stage, target: stepname, map: {Qualify: 1-Qualify, Develop: 2-Develop, "
        "Propose: 3-Propose, Close: 4-Close}}, measures: [{name: open, agg: count}]}",
        BOTH,
    ),
}


def check_id(kind: str) -> str:
    return f"m.{kind}"


# -- the world, the config, one run -------------------------------------------------------------


def write_config(folder: Path, world_dir: Path, source_db: Path, probe_url: str, page_size: int) -> Config:
    """A cutover config with one check of every kind in `KINDS` (all of them, in registry order)."""
    checks = "".join(f"  - {KINDS[kind].check}\n" for kind in REGISTRY if kind in KINDS)
    text = (
        "project: fault matrix\n"
        f"state: {folder / 'state.db'}\n"
        f"source: {{kind: sql, url: \"sqlite:///{source_db}\"}}\n"
        "target:\n"
        "  kind: emulator\n"
        f"  data: {world_dir / 'dataverse.db'}\n"
        f"  limits: {{concurrency: 4, requests_per_5min: 5000, timeout: {PER_ATTEMPT_TIMEOUT_S}s, retries: 1, "
        f"page_size: {page_size}, deadline: 30s}}\n"
        f"{entities_block()}"
        f"checks:\n{checks}"
        "integrations:\n"
        "  - id: erp-sync\n"
        "    title: ERP Sync\n"
        "    jobs: {name_like: \"ERP Sync%\"}\n"
        "    slo: {p95_ms: 60000, error_rate: 0.02}\n"
        f"    probe: {{url: \"{probe_url}\", expect_status: 200, expect_body: '\"db\": \"up\"', "
        f"timeout: {PER_ATTEMPT_TIMEOUT_S}s}}\n"
        "slos:\n"
        "  - {id: account-view, query: \"accounts?$select=name&$top=50\", p95_ms: 60000}\n"
    )
    path = folder / "crmctl.yaml"
    path.write_text(text)
    return load_config(path, check_kinds=check_kinds())


@dataclass
class Outcome:
    """One run of every kind under one fault: results by kind, and how often the fault struck."""

    results: dict[str, CheckResult]
    injected: int
    methods: set[str]


class SourceLock:
    """Another connection holding an exclusive lock on the source file (as a bulk loader would).

    `BEGIN EXCLUSIVE` on a rollback-journal database keeps every reader out; for a WAL database
    the exclusive locking mode plus a write does the same. Either way readers get "locked".
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode == "wal":
            self._conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        self._conn.execute("BEGIN EXCLUSIVE")
        self._conn.execute("CREATE TABLE IF NOT EXISTS _matrix_lock (x)")  # a write: the lock is held now

    def close(self) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.close()


async def run_fault(
    config: Config, world_dir: Path, probe: FaultyHealthServer, fault: str | None, seed: int, now: Any
) -> Outcome:
    """Runs every check once through a fresh engine under `fault` (None: the baseline)."""
    spec = SPECS[fault] if fault else FaultSpec(frozenset())
    # A journal of its own per run: plug-in traces copied by an earlier run would change the figures.
    config = replace(config, state=Path(config.state).with_name(f"state-{(fault or 'baseline').replace(' ', '-')}.db"))
    scenario = parse_scenario(yaml.safe_load(f"name: m\nseed: {seed}\nfaults:\n{spec.scenario}")) if spec.scenario else None
    clock = FrozenClock(now)
    async with AsyncExitStack() as stack:
        emu = Emulator(world_dir / "dataverse.db", scenario=scenario)
        await emu.start()
        stack.push_async_callback(emu.stop)
        probe.set_scenario(scenario)
        probe.faults.clear()
        api_url, probe_config = emu.api_url, config
        if spec.dead:
            dead = DeadPort()
            stack.callback(dead.close)
            api_url = f"http://127.0.0.1:{dead.port}/api/data/v9.2/"
            dead_probe = f"http://127.0.0.1:{dead.port}/health"
            integrations = tuple(
                replace(i, probe=replace(i.probe, url=dead_probe, url_template=dead_probe)) if i.probe else i
                for i in config.integrations
            )
            probe_config = replace(config, integrations=integrations)
        limits = config.target.limits
        dynamics = DataverseClient(
            api_url, EmulatorTokenProvider(emu), TargetLimiter(limits.concurrency, limits.requests_per_5min, 300.0),
            timeout=limits.timeout.total_seconds(), retries=limits.retries, page_size=limits.page_size,
            backoff_base=0.01, backoff_cap=0.05,
        )
        stack.push_async_callback(dynamics.close)
        source = SqlSource(config.source.url, busy_timeout=0.3)
        stack.push_async_callback(source.close)
        if spec.lock_source:
            lock = SourceLock(Path(config.source.url.removeprefix("sqlite:///")))
            stack.callback(lock.close)
        store = await Store.open(config.state, clock=clock)
        stack.push_async_callback(store.close)
        engine = Engine(probe_config, REGISTRY, store, Targets(dynamics, source), actor=ACTOR, clock=clock)
        results = await engine.run_once()
        journalled = await store.latest_results()
        log = list(emu.request_log)
    for result in results:  # what the screens will draw is what was judged, never greener
        row = check_row(config.check(result.check_id), journalled.get(result.check_id), clock.now())
        assert row.status is result.status, (result.check_id, row.status, result.status)
        assert row.is_red or result.status not in (Status.ERROR, Status.STALE)
    by_kind = {r.kind: r for r in results}
    injected = sum(1 for r in log if [f for f in r.faults if f != "latency"] or r.error_code == "ExpiredAuthTicket")
    injected += len(probe.faults)
    if spec.dead or spec.lock_source:  # every refused connection and every locked query struck
        side = SOURCE if spec.lock_source else None
        injected += sum(1 for r in results for q in r.queries if q.error and (side is None or q.target == side))
    return Outcome(by_kind, injected, {r.method for r in log})


# -- judging --------------------------------------------------------------------------------------

_TIMING = ("_ms", "headline", "latency")


def stable(values: Any) -> Any:
    """The figures of a result without the measured timings, which differ between any two runs."""
    if isinstance(values, dict):
        return {k: stable(v) for k, v in values.items() if not any(t in k for t in _TIMING)}
    if isinstance(values, list):
        return [stable(v) for v in values]
    return values


def sides(result: CheckResult) -> set[str]:
    """Which sides a result's queries went to (the probe's records carry the integration id)."""
    return {q.target if q.target in (DYNAMICS, SOURCE) else PROBE for q in result.queries}


def judge(kind: str, fault: str, result: CheckResult, baseline: CheckResult) -> list[str]:
    """Problems with one result of the matrix (empty when it is honest)."""
    row, spec = KINDS[kind], SPECS[fault]
    where = f"{kind} x {fault}"
    text = result.explanation or ""
    problems: list[str] = []
    if "Internal error" in text:
        problems.append(f"{where}: raised inside the check: {text}")
    if fault in row.untouched_by:
        touched = sides(result) & spec.reaches
        if touched:
            problems.append(f"{where}: declared untouched, but queried {sorted(touched)}")
        if (result.status, stable(result.values)) != (baseline.status, stable(baseline.values)):
            problems.append(f"{where}: untouched, yet differs from the baseline: {result.status} {text}")
        return problems
    if row.answered and fault in row.answered:
        if result.status is not Status.BREACH or row.answered[fault] not in text:
            problems.append(f"{where}: expected BREACH '{row.answered[fault]}…', got {result.status}: {text}")
        return problems
    if result.status not in (Status.ERROR, Status.STALE):
        problems.append(f"{where}: {result.status} on data the fault made untrustworthy: {text}")
    elif not any(r in text.lower() for r in spec.reasons):
        problems.append(f"{where}: the reason names none of {spec.reasons}: {text}")
    elif not text.rstrip().endswith((".", ")", "…")) or len(text) < 20:
        problems.append(f"{where}: the reason is not a sentence: {text!r}")
    return problems


# -- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


def test_every_registered_kind_has_a_row_and_honest_allowances() -> None:
    """A new check kind must be added to the matrix; each allowance follows from what the kind reads."""
    missing = sorted(set(REGISTRY) - set(KINDS))
    assert not missing, f"check kinds without a fault-matrix row: {missing} (add them to KINDS)"
    assert not set(KINDS) - set(REGISTRY), f"rows for kinds that no longer exist: {sorted(set(KINDS) - set(REGISTRY))}"
    for kind, row in KINDS.items():
        derived = {f for f, spec in SPECS.items() if not spec.reaches & row.reads}
        assert row.untouched_by == derived, f"{kind}: untouched_by {sorted(row.untouched_by)} != {sorted(derived)}"
        assert not set(row.answered or {}) & row.untouched_by


def open_handles(path: Path) -> int:
    """How many file descriptors of this process point at `path` (0 where /proc is missing)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return 0
    target = str(path.resolve())
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.path.realpath(fd) == target
        except OSError:
            continue
    return count


def _copy_source(world_dir: Path, folder: Path) -> Path:
    """A private copy of the source database: the lock must not disturb other tests' readers."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "source.db"
    with closing(sqlite3.connect(world_dir / "source.db")) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


async def test_fault_matrix_never_shows_green_on_faulted_data(matrix_world: Path, tmp_path: Path) -> None:
    truth = GroundTruth.load(matrix_world)
    rounds = scaled(1, 3)
    page_sizes = (200, 37, 1000)
    problems: list[str] = []
    injected = judged = leftovers = 0
    table: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    probe = FaultyHealthServer()
    await probe.start()
    began = time.monotonic()
    try:
        for n in range(rounds):
            folder = tmp_path / f"round-{n}"
            source_db = _copy_source(matrix_world, folder)
            config = write_config(folder, matrix_world, source_db, probe.url, page_sizes[n % len(page_sizes)])
            base = await run_fault(config, matrix_world, probe, None, seed=n, now=truth.now_dt)
            assert set(base.results) == set(KINDS)
            for kind, result in base.results.items():
                assert result.status is not Status.ERROR, f"baseline {kind}: {result.explanation}"
                assert sides(result) == set(KINDS[kind].reads), (kind, sides(result), KINDS[kind].reads)
            for fault in RUN_ORDER:
                outcome = await run_fault(config, matrix_world, probe, fault, seed=n, now=truth.now_dt)
                leftovers = max(leftovers, open_handles(source_db))
                assert outcome.methods <= {"GET"}, outcome.methods
                assert set(outcome.results) == set(KINDS)
                if outcome.injected == 0:
                    problems.append(f"{fault}: the fault never struck, so this run proved nothing")
                injected += outcome.injected
                for kind, result in outcome.results.items():
                    judged += 1
                    problems += judge(kind, fault, result, base.results[kind])
                    table[kind][fault] = result.status.value
                    if os.environ.get("CRMCTL_MATRIX_VERBOSE"):
                        print(f"{kind} x {fault}: {result.status} {result.explanation}")
    finally:
        await probe.stop()
    took = time.monotonic() - began
    width = max(map(len, KINDS))
    print(f"\nfault matrix: {len(KINDS)} kinds x {len(FAULTS)} faults x {rounds} round(s); "
          f"{injected} faults injected, {judged} results judged, {took:.1f} s; "
          f"source connections still open after ended runs (most at once): {leftovers}")
    print(" " * width + "  " + " | ".join(f[:9] for f in FAULTS))
    for kind, row in table.items():
        print(f"{kind:<{width}}  " + " | ".join(f"{row.get(f, '-'):<9}"[:9] for f in FAULTS))
    assert judged == rounds * len(KINDS) * len(FAULTS)
    assert not problems, "\n".join(problems)
