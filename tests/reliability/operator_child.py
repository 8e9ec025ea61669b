"""One of the many operators acting on one state file at once (run as a script, never collected).

    operator_child.py CONFIG INDEX COUNT ROUNDS BARRIER_DIR

Operator `op-INDEX` of COUNT opens the cutover's journal through the same ControlRoom as the app
and the CLI, and plays a fixed script in which every operator tries the same thing at the same
moment (a file barrier lines them up before each move):

* per round, a new run (round 0 uses the default run): all race `start_run`;
* per runbook step, in order: all race `start`; then all race `done` (steps without a gate) or
  `block` and then `skip` (gated steps: the gates have no results in this file);
* all raise one incident each; then all race to acknowledge every incident; then each comments
  on every incident (comments never conflict: all must land).

It prints `ACK <json>` after each call returned (seq, hash and kind of the entry written) and
`REFUSED <json>` with the refusal's sentence, so the parent can prove one winner per move, a
refusal naming who and when for every loser, and no lost or doubled update.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

GATED = {"freeze", "reconcile", "integrations", "signoff"}


def emit(tag: str, record: dict[str, Any]) -> None:
    sys.stdout.write(f"{tag} {json.dumps(record, sort_keys=True)}\n")
    sys.stdout.flush()


class Barrier:
    """Lines the operators up: each marks the move, then waits until all have marked it."""

    def __init__(self, folder: Path, me: int, count: int) -> None:
        self.folder, self.me, self.count = folder, me, count
        self.n = 0

    async def wait(self) -> None:
        self.n += 1
        (self.folder / f"{self.n}.{self.me}").touch()
        others = [self.folder / f"{self.n}.{k}" for k in range(self.count)]
        while not all(p.exists() for p in others):
            await asyncio.sleep(0.002)


async def attempt(move: str, call: Callable[[], Awaitable[Any]], refused: tuple[type[Exception], ...]) -> Any:
    try:
        done = await call()
    except refused as exc:
        emit("REFUSED", {"move": move, "why": str(exc)})
        return None
    if hasattr(done, "timeline"):  # an incident: its newest timeline item is the entry written
        last = done.timeline[-1]
        emit("ACK", {"move": move, "seq": last.seq, "hash": last.hash, "kind": last.kind, "operator": last.operator})
    else:
        emit("ACK", {"move": move, "seq": done.seq, "hash": done.hash, "kind": done.kind, "operator": done.operator})
    return done


async def main(config_path: str, me: int, count: int, rounds: int, barrier_dir: str) -> None:
    from crmctl.cli import load_or_report
    from crmctl.control import ControlRoom
    from crmctl.identity import Actor
    from crmctl.incidents import IncidentRefused
    from crmctl.runtime import config_clock
    from crmctl.store import Store
    from crmctl.runbook import Refused

    config = load_or_report(Path(config_path))
    if config is None:
        raise SystemExit(2)
    clock = config_clock(config)
    actor = Actor(f"op-{me}", f"pid-host-{me}")
    store = await Store.open(config.state, clock=clock)
    room = ControlRoom(config, store, None, actor=actor, clock=clock)
    barrier = Barrier(Path(barrier_dir), me, count)
    steps = [s.id for s in config.runbook]
    emit("READY", {})
    try:
        for r in range(rounds):
            if r:
                name = f"round-{r}"
                await barrier.wait()
                await attempt(f"r{r} run", lambda: room.start_run(name), (Refused,))
            for step in steps:
                moves = ["start", "block", "skip"] if step in GATED else ["start", "done"]
                for action in moves:
                    reason = f"{action} by op-{me} in round {r}" if action in ("block", "skip") else None
                    await barrier.wait()
                    await attempt(f"r{r} {step} {action}",
                                  lambda: room.step_action(action, step, reason=reason), (Refused,))
            await barrier.wait()
            mine = await attempt(f"r{r} raise op-{me}",
                                 lambda: room.raise_incident(f"round {r}: slow sync seen by op-{me}", severity="sev3"),
                                 (IncidentRefused,))
            assert mine is not None
            await barrier.wait()
            register = await room.incident_desk().register()
            numbers = sorted(i.number for i in register.all()
                             if i.title.startswith(f"round {r}: slow sync seen by op-"))
            assert len(numbers) == count, numbers
            for number in numbers:
                await attempt(f"r{r} ack {number}", lambda: room.incident_action("ack", number), (IncidentRefused,))
            await barrier.wait()
            for number in numbers:
                await attempt(f"r{r} comment {number} op-{me}",
                              lambda: room.incident_action("note", number, note=f"op-{me} looked at it in round {r}"),
                              (IncidentRefused,))
        await barrier.wait()
    finally:
        await store.close()
    emit("DONE", {})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
