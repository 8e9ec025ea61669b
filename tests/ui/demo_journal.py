"""The demo's cutover night as a journal, for snapshots of every screen on the demo data.

Built in two stages:

1. `run_demo_checks` runs every check of `data/demo/crmctl.yaml` once, for real: the demo
   world, the embedded emulator, the engine and every check kind, on a FrozenClock at the
   config's `clock_start` (21:30 UTC on cutover night).
2. `write_demo_journal` appends those results to a fresh state file and then takes a few
   operator actions through the real ControlRoom (start the freeze step, raise an incident from
   a red check and acknowledge it), each a few seconds later on the frozen clock.

Everything in the picture is then the same on every run and machine except what a real run
cannot repeat: how long each request took, and the emulator's ephemeral port in every URL.
Those are pinned (see `pinned`) before anything is journalled, so that the hashes on screen
(incident evidence) are stable too. The latency checks (`whoami`, `api_latency`), whose *value* is a duration, run alone and in
sequence on a stepping time base, so their figures come out of the real code paths yet repeat.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import pytest

from crmctl.clock import FrozenClock
from crmctl.config import Config, load_config
from crmctl.control import ControlRoom
from crmctl.engine import Engine
from crmctl.identity import Actor
from crmctl.model import CheckResult, iso
from crmctl.runtime import Runtime, open_runtime
from crmctl.store import Store

LEAD = Actor(operator="lead", host="war-room")
"""The operator at the keyboard in every demo picture (no OS user, no SSH client address)."""

TIMED_KINDS = ("whoami", "api_latency")
"""Check kinds whose value is a measured duration: run alone, on the stepping time base."""

STEPS_S = (0.018, 0.023, 0.031, 0.019, 0.064, 0.027, 0.022)
"""The stepping time base's increments: plausible request latencies, in a fixed cycle."""

PINNED_MS = (42.0, 118.0, 67.0, 233.0, 54.0)
"""Durations given to the requests of every other check, by position in its query log."""

EMULATOR_ORIGIN = re.compile(r"^http://127\.0\.0\.1:\d+/")
PINNED_ORIGIN = "http://127.0.0.1:5555/"
"""The embedded emulator listens on an ephemeral port; the pictures show this one instead."""

STATE_FOLDER = ".crmctl"
"""The demo config's state folder (`state: .crmctl/state.db`), as the pictures show it."""

SHOWN_AFTER = timedelta(seconds=45)
"""How long after the check run the pictures are taken (ages read "45 s", nothing STALE)."""


class SteppingClock:
    """A monotonic time base that moves on by the next of `STEPS_S` at every reading.

    Given to the Dataverse client's limiter while a latency check runs on its own: each request
    is timed between two readings, so every sample comes out the same on every machine.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self._t = start
        self._n = 0

    def monotonic(self) -> float:
        self._t += STEPS_S[self._n % len(STEPS_S)]
        self._n += 1
        return self._t

    def perf_counter(self) -> float:
        return self.monotonic()

    async def sleep(self, seconds: float) -> None:
        self._t += max(0.0, seconds)
        await asyncio.sleep(0)


def _relative(value: Any, folder: str) -> Any:
    """`value` (JSON) with every string's `folder` prefix written as the demo's `.crmctl`."""
    if isinstance(value, str):
        return value.replace(folder, STATE_FOLDER)
    if isinstance(value, dict):
        return {k: _relative(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, folder) for v in value]
    return value


def pinned(result: CheckResult, state_folder: Path) -> CheckResult:
    """`result` without what no second run repeats.

    - the state file's (temporary) folder, where key lists are exported as CSV: `.crmctl`;
    - the emulator's ephemeral port in every URL;
    - each request's start (the client stamps it from the wall clock): the result's start;
    - the order of requests sent concurrently (partitions): sorted by target and URL;
    - each request's duration, but for the latency kinds, whose stepped durations are their
      value and already repeat.
    """
    timed = result.kind in TIMED_KINDS
    queries = [replace(q, url=EMULATOR_ORIGIN.sub(PINNED_ORIGIN, q.url), started=iso(result.started))
               for q in result.queries]
    if not timed:
        queries.sort(key=lambda q: (q.target, q.url))
        queries = [replace(q, duration_ms=PINNED_MS[n % len(PINNED_MS)]) for n, q in enumerate(queries)]
    folder = str(state_folder)
    return replace(result, queries=tuple(queries), values=_relative(dict(result.values), folder),
                   explanation=_relative(result.explanation, folder))


def demo_config_in(demo_dir: Path, folder: Path) -> Config:
    """The demo config pointing at the seeded world in `demo_dir`, its state file in `folder`."""
    from checks.registry import check_kinds

    text = (demo_dir / "crmctl.yaml").read_text()
    text = text.replace("sqlite:///world/", f"sqlite:///{demo_dir}/world/")
    text = text.replace("data: world/", f"data: {demo_dir}/world/")
    text = text.replace("state: .crmctl/state.db", f"state: {folder}/state.db")
    path = folder / "crmctl.yaml"
    path.write_text(text)
    return load_config(path, check_kinds=check_kinds())


@contextmanager
def _stepped_latency(runtime: Runtime) -> Iterator[None]:
    """Times every request (and WhoAmI's own samples) on a fresh SteppingClock."""
    stepping = SteppingClock()
    held = runtime.limiter.clock
    runtime.limiter.clock = stepping
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("checks.whoami.time", SimpleNamespace(perf_counter=stepping.perf_counter))
        try:
            yield
        finally:
            runtime.limiter.clock = held


async def run_demo_checks(config: Config) -> list[CheckResult]:
    """Every demo check run once for real at `clock_start`, in config order, with what no second
    run repeats pinned (`pinned`). The results are journalled in `config.state` too (a scratch
    journal: the pictures are taken of the one `write_demo_journal` writes)."""
    from checks.registry import REGISTRY

    assert config.clock_start is not None
    clock = FrozenClock(config.clock_start)
    timed = [c.id for c in config.checks if c.kind in TIMED_KINDS]
    rest = [c.id for c in config.checks if c.kind not in TIMED_KINDS]
    async with open_runtime(config) as runtime:
        store = await Store.open(config.state, clock=clock)
        try:
            engine = Engine(config, REGISTRY, store, runtime.targets, actor=LEAD, clock=clock)
            results = {r.check_id: r for r in await engine.run_once(only=rest)}
            for check_id in timed:  # one at a time: nothing else reads the stepping clock meanwhile
                with _stepped_latency(runtime):
                    results.update({r.check_id: r for r in await engine.run_once(only=[check_id])})
        finally:
            await store.close()
    return [pinned(results[c.id], config.state.parent) for c in config.checks]


async def write_demo_journal(config: Config, results: Sequence[CheckResult], state: Path) -> datetime:
    """Journals `results` and a few operator actions at `state`; returns the picture's time."""
    assert config.clock_start is not None
    clock = FrozenClock(config.clock_start)
    config = replace(config, state=state)
    store = await Store.open(state, clock=clock)
    try:
        for result in results:
            await store.append_result(result, actor=LEAD)
        room = ControlRoom(config, store, None, actor=LEAD, clock=clock)
        clock.advance(timedelta(seconds=12))
        await room.step_action("start", "freeze")
        clock.advance(timedelta(seconds=9))
        incident = await room.raise_incident_from_check("account.count")
        clock.advance(timedelta(seconds=14))
        await room.incident_action("ack", incident.number, note="Looking at the 34 missing accounts")
    finally:
        await store.close()
    return config.clock_start + SHOWN_AFTER
