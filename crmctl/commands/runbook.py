"""`crmctl step`, `crmctl decide`, `crmctl runs` and `crmctl runbook`: the runbook from scripts.

These write through the same journal, and under the same rules, as the control room: a step
the app would refuse is refused here with the same sentence, and nothing is written. No Textual
import (they run from cron and automation); exit 0 when done, 1 when refused, 2 on bad usage or
an invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Awaitable, Callable

from crmctl.cli import EXIT_OK, EXIT_USAGE, config_arg, load_or_report, operator_arg

EXIT_REFUSED = 1
"""The rules refused the action (the message says why); nothing was written."""

STEP_ACTIONS = ("start", "done", "fail", "skip", "block")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Adds `step`, `decide`, `runs` and `runbook` to the `crmctl` command line."""
    p = sub.add_parser("step", help="start, complete, fail, skip or block a runbook step")
    p.add_argument("action", choices=STEP_ACTIONS)
    p.add_argument("step_id", metavar="ID", help="the step id (see crmctl runbook)")
    p.add_argument("--reason", help="why (required to skip or block, and to override a gate)")
    p.add_argument("--override", action="store_true", help="complete despite a gate that is not OK")
    p.add_argument("--authority", metavar="NAME", help="the authority who allows the override")
    config_arg(p)
    operator_arg(p)
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("decide", help="record a go / hold / rollback decision (authorities only)")
    p.add_argument("decision", choices=("go", "hold", "rollback"))
    p.add_argument("--rationale", required=True, help="why, on what evidence")
    p.add_argument("--as", dest="authority", metavar="NAME", help="the authority deciding (from rollback.authority)")
    p.add_argument("--approve", action="store_true", help="approve the proposal waiting (two-person rule)")
    p.add_argument("--propose", action="store_true", help="propose only; a second authority approves")
    p.add_argument("--override", action="store_true", help="decide after the point of no return")
    p.add_argument("--reason", help="why deciding after the point of no return is right (with --override)")
    config_arg(p)
    operator_arg(p)
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser("runs", help="list, start and compare named runs (rehearsals, production)")
    runs = p.add_subparsers(metavar="ACTION", dest="runs_action")
    q = runs.add_parser("list", help="every run with its progress, drift and decision")
    _format_arg(q)
    config_arg(q)
    q.set_defaults(func=cmd_runs_list)
    q = runs.add_parser("start", help="start a new named run; step actions then go to it")
    q.add_argument("name", help="e.g. rehearsal-2 or production")
    config_arg(q)
    operator_arg(q)
    q.set_defaults(func=cmd_runs_start)
    q = runs.add_parser("compare", help="per-step and per-phase deltas and data outcomes of two runs")
    q.add_argument("a")
    q.add_argument("b")
    _format_arg(q)
    config_arg(q)
    q.set_defaults(func=cmd_runs_compare)
    p.set_defaults(func=lambda args: _usage(p))

    p = sub.add_parser("runbook", help="print the runbook of the current run: states, timing, gates")
    p.add_argument("--run", help="another run than the current one")
    _format_arg(p)
    config_arg(p)
    p.set_defaults(func=cmd_runbook)


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return EXIT_USAGE


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]], *, operator: bool = True) -> int:
    """Loads the config, opens the state file as a control room without an engine, runs `work`."""
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE

    async def main() -> int:
        from crmctl.control import ControlRoom
        from crmctl.identity import current_actor
        from crmctl.runtime import config_clock
        from crmctl.store import Store

        clock = config_clock(config)  # the session clock (the rehearsal clock when configured), as the app's
        store = await Store.open(config.state, clock=clock)
        try:
            actor = current_actor(getattr(args, "operator", None) if operator else None)
            return await work(ControlRoom(config, store, None, actor=actor, clock=clock))
        finally:
            await store.close()

    return asyncio.run(main())


def _refused(command: str, exc: Exception) -> int:
    print(f"crmctl {command}: refused: {exc}", file=sys.stderr)
    return EXIT_REFUSED


# --------------------------------------------------------------------------------------------
# step


def cmd_step(args: argparse.Namespace) -> int:
    if args.override and not args.authority:
        print("crmctl step: --override needs --authority NAME (and --reason TEXT)", file=sys.stderr)
        return EXIT_USAGE
    if args.authority and not args.override:
        print("crmctl step: --authority is only used with --override", file=sys.stderr)
        return EXIT_USAGE

    async def work(room: Any) -> int:
        from crmctl.runbook import Refused

        try:
            entry = await room.step_action(args.action, args.step_id, reason=args.reason,
                                           override_authority=args.authority if args.override else None)
        except Refused as exc:
            return _refused("step", exc)
        what = {"start": "started", "done": "done", "fail": "failed", "skip": "skipped", "block": "blocked"}
        extra = " (gate OVERRIDDEN)" if "override" in entry.payload else ""
        print(f"step {args.step_id!r} {what[args.action]}{extra} in run {entry.payload['run']!r}"
              f" (journal entry {entry.seq}, by {entry.operator}@{entry.host})")
        return EXIT_OK

    return _run(args, work)


# --------------------------------------------------------------------------------------------
# decide


def cmd_decide(args: argparse.Namespace) -> int:
    if args.override and not args.reason:
        print("crmctl decide: --override needs --reason TEXT", file=sys.stderr)
        return EXIT_USAGE
    if args.reason and not args.override:
        print("crmctl decide: --reason is only used with --override (the rationale goes in --rationale)",
              file=sys.stderr)
        return EXIT_USAGE

    async def work(room: Any) -> int:
        from crmctl.runbook import Refused

        try:
            entry = await room.decide(args.decision, authority=args.authority, rationale=args.rationale,
                                      approve=args.approve, propose=args.propose,
                                      override_reason=args.reason if args.override else None)
        except Refused as exc:
            return _refused("decide", exc)
        payload = entry.payload
        matrix = payload.get("matrix", {})
        verb = "proposed (waiting for a second authority: --approve)" if entry.kind == "decision.proposed" else "recorded"
        print(f"{args.decision.upper()} {verb} by {payload['authority']} in run {payload['run']!r}"
              f" (journal entry {entry.seq}); the matrix recommended {matrix.get('overall', '?')}")
        return EXIT_OK

    return _run(args, work)


# --------------------------------------------------------------------------------------------
# runs


def cmd_runs_list(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.runs import format_runs, list_runs

        now = room.clock.now()
        runs = list_runs(room.config, await room.runbook_state(), now)
        if args.format == "json":
            print(json.dumps({"runs": [r.to_json() for r in runs]}, indent=2))
        else:
            print(format_runs(runs, now))
        return EXIT_OK

    return _run(args, work, operator=False)


def cmd_runs_start(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.runbook import Refused

        try:
            entry = await room.start_run(args.name)
        except Refused as exc:
            return _refused("runs start", exc)
        print(f"run {args.name!r} started (journal entry {entry.seq}); step actions now go to it")
        return EXIT_OK

    return _run(args, work)


def cmd_runs_compare(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.runs import compare_runs, format_comparison, gates_of

        try:
            comparison = compare_runs(room.config, await room.runbook_state(), args.a, args.b, room.clock.now())
        except KeyError as exc:
            print(f"crmctl runs compare: {exc.args[0]}", file=sys.stderr)
            return EXIT_USAGE
        if args.format == "json":
            print(json.dumps(comparison.to_json(), indent=2))
        else:
            print(format_comparison(comparison, gates_of(room.config)))
        return EXIT_OK

    return _run(args, work, operator=False)


# --------------------------------------------------------------------------------------------
# runbook


def cmd_runbook(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.runbook import KINDS, RUN_STARTED

        entries = await room.store.entries(kinds=KINDS)
        if args.run:
            names = {e.payload.get("run") for e in entries}
            if args.run not in names:
                known = ", ".join(sorted(n for n in names if n)) or "none yet"
                print(f"crmctl runbook: no run named {args.run!r} (known runs: {known})", file=sys.stderr)
                return EXIT_USAGE
            # The view shows the current run: make the asked one current by cutting what followed it.
            entries = [e for e in entries if e.payload.get("run") == args.run
                       or (e.kind == RUN_STARTED and e.payload.get("run") == args.run)]
        results = await room.store.latest_results()
        text = format_runbook(room.config, entries, results, room.clock.now(), as_json=args.format == "json")
        print(text)
        return EXIT_OK

    return _run(args, work, operator=False)


def format_runbook(config: Any, entries: Any, results: Any, now: Any, *, as_json: bool = False) -> str:
    """The runbook status as plain text or JSON (shared with tests)."""
    from crmctl.decision import build_matrix, decision_lines
    from crmctl.runbook import fold, runbook_of
    from crmctl.timing import build_runbook_view

    view = build_runbook_view(config, entries, results, now)
    matrix = build_matrix(config, results, now)
    run = fold(entries, runbook_of(config)).current
    if as_json:
        return json.dumps({
            "run": view.run,
            "phase": view.phase,
            "steps": [{"id": r.step_id, "runbook": r.runbook, "state": r.state.value, "owner": r.owner,
                       "planned": r.planned_text, "actual": r.actual_text, "drift": r.drift_text,
                       "gate": r.gate_text, "late": r.late, "critical": r.critical} for r in view.rows],
            "forecast_finish": view.timeline.forecast_finish.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "planned_finish": view.timeline.planned_finish.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "drift_s": view.timeline.drift.total_seconds(),
            "critical_path": list(view.timeline.critical_path),
            "warning": view.warning or None,
            "recommendation": matrix.to_json(),
        }, indent=2)
    lines = [f"Run {view.run_text} · phase {view.phase}", ""]
    lines.append(f"{'STATE':<14} {'STEP':<22} {'OWNER':<18} {'PLANNED':>8} {'ACTUAL':>12} {'DRIFT':>12}  GATE")
    for r in view.rows:
        mark = "*" if r.critical else " "
        step = ("rb " if r.runbook == "rollback" else "") + r.step_id
        lines.append(f"{r.label:<14} {mark}{step:<21.21} {r.owner:<18.18} {r.planned_text:>8} {r.actual_text:>12}"
                     f" {r.drift_text:>12}  {r.gate_text}")
    lines.append("")
    lines.append(f"{view.forecast_text} · {view.drift_text}")
    lines.append(f"critical path (*): {view.critical_text}")
    lines.append(f"point of no return: {view.ponr.text}")
    if view.sla is not None:
        lines.append(f"rollback SLA: {view.sla.text}")
    for warning in (view.warning, view.rollback_warning):
        if warning:
            lines.append(f"!!! {warning}")
    lines.append(f"recommendation: {matrix.overall.value} — {matrix.reason}")
    for line in decision_lines(run, now)[:5]:
        lines.append(f"decision: {line}")
    if view.ready:
        lines.append(f"ready to start: {', '.join(view.ready)}")
    return "\n".join(lines)
