"""Acceptance: baseline at sign-off, drift injected by an emulator scenario, Day 1 reports exactly it.

Everything is real: the demo world in the rehearsal emulator (on a private copy, since drift
writes to it), the source database, the engine and its row_count checks, the journal. Only the
clock is frozen, so "one day later" takes no time.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from checks.registry import REGISTRY, check_kinds
from crmctl.clock import FrozenClock
from crmctl.config import load_config
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.sql import open_source
from crmctl.control import ControlRoom
from crmctl.emulator.scenario import load_scenario
from crmctl.emulator.server import Emulator
from crmctl.engine import Engine, Targets
from crmctl.hypercare import BASELINE_KIND, STATUS_KIND, build_view, freeze_on_signoff
from crmctl.identity import Actor
from crmctl.runtime import EmulatorTokenProvider
from crmctl.store import Store

SCENARIO = Path(__file__).parent / "data" / "day1-drift.yaml"
SIGNED_OFF = datetime(2026, 11, 29, 9, 0, tzinfo=timezone.utc)
OPS = Actor("hypercare", "jump01")
COUNTS = ("account.count", "contact.count", "opportunity.count")


async def test_day1_reports_exactly_the_injected_drift(demo_dir: Path, demo_config: Path, tmp_path: Path) -> None:
    config = load_config(demo_config, check_kinds=check_kinds())
    config = dataclasses.replace(config, checks=tuple(c for c in config.checks if c.id in COUNTS))
    assert config.hypercare is not None and config.hypercare.go_live == SIGNED_OFF.date()
    data = tmp_path / "dataverse.db"
    shutil.copy(demo_dir / "world" / "dataverse.db", data)
    clock = FrozenClock(SIGNED_OFF)

    async with Emulator(data, scenario=load_scenario(SCENARIO), clock=clock) as emu:
        store = await Store.open(config.state, clock=clock)
        dynamics = DataverseClient(emu.api_url, EmulatorTokenProvider(emu), TargetLimiter(8, 5000, 300.0))
        source = open_source(config.source.url)
        try:
            engine = Engine(config, REGISTRY, store, Targets(dynamics, source), actor=OPS, clock=clock)
            room = ControlRoom(config, store, engine, actor=OPS, clock=clock)

            # Go-live: the pack runs, the business signs off, the baseline freezes at that moment.
            await room.run_checks()
            signoff = await store.append("signoff.recorded", {"role": "business", "name": "Dana"}, actor=OPS)
            baseline = await freeze_on_signoff(config, store, signoff, actor=OPS)
            assert baseline is not None and baseline.intact
            assert baseline.reason == f"sign-off (journal seq {signoff.seq})"
            assert {m.category for n, m in baseline.metrics.items() if n.startswith(COUNTS)} == {"counts"}
            before = baseline.metrics["account.count.target"].value

            # One day of churn in Dynamics (4 rounds at 6 h), then cron's daily run.
            clock.advance(timedelta(days=1))
            await emu.apply_due_drift()
            rounds = [e for e in emu.drift_log if e.entity == "account"]
            assert len(rounds) == 4
            injected = sum(len(e.inserted) - len(e.deleted) for e in rounds)
            assert injected == 4 * (5 - 2)

            run = await room.run_hypercare()
            entries = await store.entries(kinds=(BASELINE_KIND, STATUS_KIND))
        finally:
            await dynamics.close()
            await source.close()
            await store.close()

        status = run.status
        assert (status.day, status.checkpoint, status.baseline_seq) == (1, "Day 1", baseline.seq)
        counts_drift = {d["metric"]: d for d in status.drift if d["category"] == "counts"}
        assert set(counts_drift) == {"account.count.target", "account.count.difference", "account.count.difference_pct"}
        assert counts_drift["account.count.target"]["delta"] == injected
        assert counts_drift["account.count.difference"]["delta"] == injected
        assert counts_drift["account.count.target"]["current"] == before + injected
        source_count = status.metrics["account.count.source"]
        assert counts_drift["account.count.difference_pct"]["current"] == round(
            abs(before + injected - source_count) / source_count * 100, 4)

        # The Hypercare view (the screen and `hypercare status`) shows the same, on the Day 1 checkpoint.
        view = build_view(config, entries, clock.now())
        day1 = view.checkpoints[0]
        assert (day1.label, day1.day, day1.run.seq if day1.run else None) == ("Day 1", 1, run.entry.seq)
        assert [c.state for c in view.checkpoints[1:]] == ["UPCOMING", "UPCOMING"]
        shown = {d.metric: d.delta for d in view.drift if d.category == "counts" and d.changed}
        assert shown == {name: d["delta"] for name, d in counts_drift.items()}
        assert view.series["account.count.target"] == (injected,)
