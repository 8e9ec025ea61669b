"""Child process of the crash-safety harness (run as a script, never collected by pytest).

    crash_child.py app CONFIG OPERATOR SEED

Opens the real control room (`ControlRoom.open`: store, embedded demo emulator, engine) and the
real `CrmctlApp` on it, headless, then streams operator actions and check runs into the state
file until the parent SIGKILLs it: runbook step start/done/fail/skip/block, new runs, incidents
raised/acknowledged/commented, go/hold decisions, and check runs against the emulator, while the
app follows the journal and switches screens under Pilot key presses.

Every action that returned is printed as one `ACK <json>` line, and only after the call returned,
i.e. after the journal commit: the parent holds that the state file must contain every one of
them whatever instant the kill lands. Refusals print `REFUSED <json>` (nothing was written).
stdout is flushed per line, so what the parent reads is exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

CHEAP_CHECKS = ("dynamics.whoami", "source.write_freeze", "account.count", "contact.count", "plugin.traces")
"""Checks quick enough to run many times a second against the demo emulator."""

SCREEN_KEYS = "12345678"


def emit(tag: str, record: dict[str, Any]) -> None:
    sys.stdout.write(f"{tag} {json.dumps(record, sort_keys=True)}\n")
    sys.stdout.flush()


def ack_entry(what: str, entry: Any) -> None:
    emit("ACK", {"what": what, "seq": entry.seq, "hash": entry.hash, "kind": entry.kind,
                 "operator": entry.operator})


def ack_incident(what: str, incident: Any, kind: str) -> None:
    """An incident action returns the incident; its newest timeline item is the entry just written."""
    last = incident.timeline[-1]
    emit("ACK", {"what": what, "seq": last.seq, "hash": last.hash, "kind": kind, "operator": last.operator})


async def step_action(room: Any, rng: random.Random, serial: int) -> None:
    """A runbook action that is legal on the state as read now (another process may still win
    the race, and is then refused by the store's checked append)."""
    from crmctl.runbook import Refused, StepState, runbook_of

    state = await room.runbook_state()
    run = state.current
    books = runbook_of(room.config)
    cutover = [s for s in room.config.runbook]
    choices: list[tuple[str, str, str | None]] = []
    for step in cutover:
        st = run.state_of(step.id)
        ready = all(run.state_of(d).finished for d in step.after)
        if st is StepState.PENDING:
            if ready:
                choices += [("start", step.id, None)] * 3
            choices.append(("skip", step.id, f"not needed in this rehearsal ({serial})"))
            choices.append(("block", step.id, f"waiting for a go from the lead ({serial})"))
        elif st is StepState.IN_PROGRESS:
            choices += [("done", step.id, None)] * 2
            choices.append(("fail", step.id, f"failed on attempt {serial}"))
            choices.append(("block", step.id, f"blocked on attempt {serial}"))
        elif st in (StepState.FAILED, StepState.BLOCKED):
            if ready:
                choices.append(("start", step.id, None))
            choices.append(("skip", step.id, f"skipped after a failure ({serial})"))
    if not choices or rng.random() < 0.04:
        name = f"r{serial}-{rng.randrange(10**6)}"
        try:
            entry = await room.start_run(name)
        except Refused as exc:
            emit("REFUSED", {"what": f"run {name}", "why": str(exc)})
            return
        ack_entry(f"run {name}", entry)
        return
    action, step_id, reason = rng.choice(choices)
    assert books[step_id] == "cutover"
    try:
        entry = await room.step_action(action, step_id, reason=reason)
    except Refused as exc:
        emit("REFUSED", {"what": f"step {action} {step_id}", "why": str(exc)})
        return
    ack_entry(f"step {action} {step_id}", entry)


async def incident_action(room: Any, rng: random.Random, serial: int) -> None:
    from crmctl.incidents import RAISED, IncidentRefused

    desk = room.incident_desk()
    register = await desk.register()
    active = register.active()
    roll = rng.random()
    try:
        if not active or roll < 0.35:
            incident = await room.raise_incident(f"crash harness incident {serial}", severity=rng.choice(
                ["sev1", "sev2", "sev3", "sev4", "unknown"]), note="raised by the crash harness")
            ack_incident(f"incident raise {incident.number}", incident, RAISED)
            return
        target = rng.choice(active)
        action = rng.choice(["ack", "note", "note", "mitigate", "resolve", "close"])
        note = f"comment {serial} from {room.actor.operator}" if action in ("note", "resolve") else None
        incident = await room.incident_action(action, target.number, note=note)
        ack_incident(f"incident {action} {target.number}", incident, incident.timeline[-1].kind)
    except IncidentRefused as exc:
        emit("REFUSED", {"what": "incident", "why": str(exc)})


async def decision(room: Any, rng: random.Random, serial: int) -> None:
    from crmctl.runbook import Refused

    authority = rng.choice(list(room.config.rollback.authority))
    choice = rng.choice(["go", "hold"])
    try:
        entry = await room.decide(choice, authority=authority,
                                  rationale=f"crash harness decision {serial}: matrix read and agreed",
                                  override_reason="the crash harness decides after the point of no return too")
    except Refused as exc:
        emit("REFUSED", {"what": f"decide {choice}", "why": str(exc)})
        return
    ack_entry(f"decide {choice}", entry)


async def checks(room: Any, rng: random.Random) -> None:
    only = rng.sample(CHEAP_CHECKS, rng.randint(1, 3))
    for result in await room.run_checks(only):
        # The engine journals each result before run_once returns it; the parent finds it by
        # (check_id, started, finished), which no other run shares.
        emit("ACK", {"what": f"check {result.check_id}", "kind": "check.result", "check_id": result.check_id,
                     "started": result.to_json()["started"], "finished": result.to_json()["finished"],
                     "operator": room.actor.operator})


async def stream(room: Any, pilot: Any, rng: random.Random) -> None:
    serial = 0
    emit("READY", {})
    while True:
        serial += 1
        roll = rng.random()
        if roll < 0.45:
            await step_action(room, rng, serial)
        elif roll < 0.70:
            await incident_action(room, rng, serial)
        elif roll < 0.78:
            await decision(room, rng, serial)
        elif roll < 0.90:
            await checks(room, rng)
        else:
            await pilot.press(rng.choice(SCREEN_KEYS))


async def app_main(config_path: str, operator: str, seed: int) -> None:
    from checks.registry import REGISTRY
    from crmctl.cli import load_or_report
    from crmctl.control import ControlRoom
    from crmctl.identity import current_actor
    from screens.app import CrmctlApp

    config = load_or_report(Path(config_path))
    if config is None:
        raise SystemExit(2)
    rng = random.Random(seed)
    async with ControlRoom.open(config, REGISTRY, actor=current_actor(operator)) as room:
        app = CrmctlApp(room, auto_run=False, clock_tick=5.0)
        async with app.run_test(headless=True, size=(120, 40)) as pilot:
            await stream(room, pilot, rng)


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "app":
        asyncio.run(app_main(argv[2], argv[3], int(argv[4])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
