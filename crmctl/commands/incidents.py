"""`crmctl incident ...` and `crmctl hypercare ...`: the incident register and hypercare from scripts and cron.

The same desk, rules and journal as the control room: a transition the app would refuse is
refused here with the same sentence, and nothing is written. Notifications for what these
commands do are sent before the command exits (bounded by --notify-timeout) and their outcome
is printed and journalled. No Textual import: these run from cron on hypercare hosts.

Exit codes:
  incident *        0 done; 1 refused by the rules; 2 usage or config error.
  hypercare run     as `crmctl check`: 0 pass, 1 a check in BREACH or drift beyond tolerance,
                    3 could not judge (a check in ERROR, or no baseline yet); 2 usage.
  hypercare baseline  0 frozen; 1 refused (one exists; --replace); 3 no results to freeze.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Awaitable, Callable

from crmctl.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, config_arg, load_or_report, operator_arg

EXIT_REFUSED = 1
NOTIFY_TIMEOUT = 20.0
"""Seconds a command waits for its notifications before exiting (they are journalled either way)."""


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Adds `incident` and `hypercare` to the `crmctl` command line."""
    p = sub.add_parser("incident", help="raise, acknowledge, mitigate, resolve, close and list incidents")
    actions = p.add_subparsers(metavar="ACTION")

    q = actions.add_parser("raise", help="open an incident (from a red check with --from-check)")
    q.add_argument("title", nargs="?", help="what is wrong (default with --from-check: the check and its status)")
    q.add_argument("--severity", default="unknown", help="sev1..sev4 or unknown (timed as sev1; default unknown)")
    q.add_argument("--check", help="the check involved")
    q.add_argument("--from-check", metavar="ID", help="raise from this BREACH/ERROR check, its result as evidence")
    q.add_argument("--criterion", metavar="ID", help="raise from this rollback criterion (its check as evidence)")
    q.add_argument("--step", help="the runbook step involved")
    q.add_argument("--owner")
    q.add_argument("--note")
    _common(q)
    q.set_defaults(func=cmd_raise)

    for name, helptext in (("ack", "acknowledge: take ownership, stop the escalation timer"),
                           ("mitigate", "mark as being mitigated"),
                           ("resolve", "mark as resolved (--note says how)"),
                           ("close", "close a resolved incident")):
        q = actions.add_parser(name, help=helptext)
        q.add_argument("number", type=_number, metavar="N", help="the incident number (42 or INC-42)")
        q.add_argument("--note", required=name == "resolve")
        if name == "ack":
            q.add_argument("--owner", help="who owns it (default: you)")
            q.add_argument("--severity", help="triage: set the severity now")
        _common(q)
        q.set_defaults(func=cmd_transition, action=name)

    q = actions.add_parser("note", help="add a line to an incident's timeline")
    q.add_argument("number", type=_number, metavar="N")
    q.add_argument("text")
    q.add_argument("--severity", help="re-triage the severity")
    q.add_argument("--owner", help="hand over ownership")
    _common(q)
    q.set_defaults(func=cmd_transition, action="note")

    q = actions.add_parser("list", help="the register: active incidents (all with --all)")
    q.add_argument("--all", action="store_true", help="include resolved and closed incidents")
    _format_arg(q)
    config_arg(q)
    q.set_defaults(func=cmd_list)

    q = actions.add_parser("show", help="one incident with its timeline, evidence and notifications")
    q.add_argument("number", type=_number, metavar="N")
    _format_arg(q)
    config_arg(q)
    q.set_defaults(func=cmd_show)

    q = actions.add_parser("escalate", help="fire every escalation timer that has run out (for cron)")
    _common(q)
    q.set_defaults(func=cmd_escalate)
    p.set_defaults(func=lambda args: _usage(p))

    p = sub.add_parser("hypercare", help="go-live baseline, daily status runs, Day 1/7/30 checkpoints")
    actions = p.add_subparsers(metavar="ACTION")
    q = actions.add_parser("baseline", help="freeze the go-live baseline from the newest check results")
    q.add_argument("--replace", action="store_true", help="replace the baseline in force (needs --reason)")
    q.add_argument("--reason", default="manual", help="why (journalled with the baseline)")
    config_arg(q)
    operator_arg(q)
    q.set_defaults(func=cmd_baseline)
    q = actions.add_parser("run", help="re-run the check pack and journal today's status (cron; exit as crmctl check)")
    _format_arg(q)
    _common(q)
    q.set_defaults(func=cmd_run)
    q = actions.add_parser("status", help="checkpoints and drift against the baseline")
    _format_arg(q)
    config_arg(q)
    q.set_defaults(func=cmd_status)
    p.set_defaults(func=lambda args: _usage(p))


def _common(p: argparse.ArgumentParser) -> None:
    config_arg(p)
    operator_arg(p)
    p.add_argument("--notify-timeout", type=float, default=NOTIFY_TIMEOUT, metavar="S",
                   help=f"seconds to wait for notifications before exiting (default {NOTIFY_TIMEOUT:g})")


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")


def _number(text: str) -> int:
    value = text.strip().upper().removeprefix("INC-")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an incident number (42 or INC-42)")
    return int(value)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return EXIT_USAGE


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    """Loads the config and runs `work` on a control room over the journal (no engine: the
    incident commands need nothing else, and `hypercare run` borrows the CLI's check runner)."""
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE

    async def main() -> int:
        from crmctl.control import ControlRoom
        from crmctl.identity import current_actor
        from crmctl.runtime import config_clock
        from crmctl.store import Store

        actor = current_actor(getattr(args, "operator", None))
        clock = config_clock(config)  # the session clock: the rehearsal clock when configured
        store = await Store.open(config.state, clock=clock)
        try:
            return await _with_notifier(ControlRoom(config, store, None, actor=actor, clock=clock), args, work)
        finally:
            await store.close()

    return asyncio.run(main())


async def _with_notifier(room: Any, args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    """Runs `work` with the room's notifier delivering, then waits (bounded) for it to finish."""
    notifier = room.notifier
    if not notifier.channels:
        return await work(room)
    async with notifier.running():
        code = await work(room)
        done = await notifier.flush(getattr(args, "notify_timeout", NOTIFY_TIMEOUT))
    for outcome in notifier.outcomes:
        if outcome.ok:
            print(f"notified {outcome.channel}: INC-{outcome.incident} {outcome.event}"
                  f" (attempt {outcome.attempts}, HTTP {outcome.status})", file=sys.stderr)
        else:
            print(f"notification to {outcome.channel} FAILED: INC-{outcome.incident} {outcome.event}: {outcome.reason}",
                  file=sys.stderr)
    if not done:
        print(f"notifications still pending after {args.notify_timeout:g} s; abandoned (not journalled as delivered)",
              file=sys.stderr)
    return code


def _refused(command: str, exc: Exception) -> int:
    print(f"crmctl incident {command}: refused: {exc}", file=sys.stderr)
    return EXIT_REFUSED


# --------------------------------------------------------------------------------------------
# incident


def cmd_raise(args: argparse.Namespace) -> int:
    if not (args.title or args.from_check or args.criterion):
        print("crmctl incident raise: give a TITLE, --from-check ID or --criterion ID", file=sys.stderr)
        return EXIT_USAGE

    async def work(room: Any) -> int:
        from crmctl.incidents import IncidentRefused, Severity

        try:
            severity = Severity.parse(args.severity)
        except ValueError as exc:
            print(f"crmctl incident raise: {exc}", file=sys.stderr)
            return EXIT_USAGE
        desk = room.incident_desk()
        try:
            if args.from_check:
                incident = await desk.raise_from_check(args.from_check, severity=severity, title=args.title)
            elif args.criterion:
                incident = await desk.raise_from_criterion(args.criterion, severity=severity)
            else:
                incident = await desk.raise_incident(args.title, severity=severity, check=args.check, step=args.step,
                                                     owner=args.owner, note=args.note)
        except IncidentRefused as exc:
            return _refused("raise", exc)
        print(f"{incident.id} raised: {incident.severity.value} {incident.title}"
              f" (journal entry {incident.number}, by {room.actor.operator})")
        due = incident.escalation_due(room.config.incidents.severities)
        if due is not None:
            from crmctl.model import iso

            print(f"escalates to {incident.escalate_to(room.config.incidents.severities)} at {iso(due)}"
                  " unless acknowledged")
        return EXIT_OK

    return _run(args, work)


def cmd_transition(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.incidents import IncidentRefused

        note = args.text if args.action == "note" else args.note
        try:
            incident = await room.incident_action(args.action, args.number, note=note,
                                                  owner=getattr(args, "owner", None),
                                                  severity=getattr(args, "severity", None))
        except IncidentRefused as exc:
            return _refused(args.action, exc)
        except ValueError as exc:  # a severity that is not one
            print(f"crmctl incident {args.action}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        last = incident.timeline[-1]
        print(f"{incident.id} {incident.state.value}: {last.text} (journal entry {last.seq}, by {last.operator})")
        return EXIT_OK

    return _run(args, work)


def cmd_escalate(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        fired = await room.tick_escalations()
        for incident in fired:
            first = incident.escalations[0]
            print(f"{incident.id} escalated to {first.to} ({incident.severity.value}, not acknowledged in time)")
        if not fired:
            print("no escalation due")
        return EXIT_OK

    return _run(args, work)


def cmd_list(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.incidents import escalation_text

        register = await room.incident_desk().register()
        incidents = register.all() if args.all else register.active()
        now = room.clock.now()
        severities = room.config.incidents.severities
        if args.format == "json":
            print(json.dumps({"incidents": [_incident_json(i, severities, now) for i in incidents]}, indent=2))
            return EXIT_OK
        if not incidents:
            print("no active incidents" if not args.all else "no incidents")
            return EXIT_OK
        print(f"{'ID':<9} {'SEV':<8} {'STATE':<13} {'OWNER':<12} {'ESCALATION':<30} TITLE")
        for i in incidents:
            print(f"{i.id:<9} {i.severity.value:<8} {i.state.value:<13} {(i.owner or '—'):<12.12}"
                  f" {escalation_text(i, severities, now):<30.30} {i.title}")
        return EXIT_OK

    return _run(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.incidents import IncidentRefused, escalation_text
        from crmctl.model import iso
        from crmctl.notify import NOTIFY_KINDS

        try:
            incident = (await room.incident_desk().register()).get(args.number)
        except IncidentRefused as exc:
            print(f"crmctl incident show: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        now = room.clock.now()
        severities = room.config.incidents.severities
        deliveries = [e for e in await room.store.entries(incident.number, kinds=NOTIFY_KINDS)
                      if e.payload.get("incident") == incident.number]
        if args.format == "json":
            data = _incident_json(incident, severities, now)
            data["notifications"] = [{"kind": e.kind, **e.payload} for e in deliveries]
            print(json.dumps(data, indent=2))
            return EXIT_OK
        print(f"{incident.id} · {incident.severity.value} · {incident.state.value} · {incident.title}")
        for label, value in (("owner", incident.owner), ("check", incident.check), ("step", incident.step),
                             ("criterion", incident.criterion), ("raised", f"{iso(incident.raised_at)} by {incident.raised_by}"),
                             ("escalation", escalation_text(incident, severities, now))):
            if value:
                print(f"  {label:<11} {value}")
        if incident.evidence:
            ev = incident.evidence
            print(f"  evidence    result seq {ev.get('result_seq')} ({str(ev.get('result_hash', ''))[:16]}…)"
                  f" {ev.get('status')}: {ev.get('explanation')}")
        print("timeline:")
        for item in incident.timeline:
            print(f"  {iso(item.ts)}  {item.operator:<10} {item.text}")
        if deliveries:
            print("notifications:")
            for e in deliveries:
                p = e.payload
                verdict = "delivered" if e.kind.endswith("delivered") else f"FAILED: {p.get('reason', '')}"
                print(f"  {iso(e.ts)}  {p.get('channel'):<8} {p.get('event')}: {verdict}")
        return EXIT_OK

    return _run(args, work)


def _incident_json(incident: Any, severities: Any, now: Any) -> dict[str, Any]:
    from crmctl.incidents import escalation_text
    from crmctl.model import iso

    due = incident.escalation_due(severities)
    return {
        "id": incident.id,
        "number": incident.number,
        "title": incident.title,
        "severity": incident.severity.value,
        "state": incident.state.value,
        "owner": incident.owner,
        "check": incident.check,
        "step": incident.step,
        "criterion": incident.criterion,
        "source": incident.source,
        "raised_at": iso(incident.raised_at),
        "raised_by": incident.raised_by,
        "escalation_due": iso(due) if due else None,
        "escalation": escalation_text(incident, severities, now),
        "escalations": [{"to": e.to, "at": iso(e.at), "seq": e.seq} for e in incident.escalations],
        "evidence": dict(incident.evidence),
        "timeline": [{"seq": t.seq, "ts": iso(t.ts), "operator": t.operator, "kind": t.kind, "text": t.text}
                     for t in incident.timeline],
    }


# --------------------------------------------------------------------------------------------
# hypercare


def cmd_baseline(args: argparse.Namespace) -> int:
    if args.replace and args.reason == "manual":
        print("crmctl hypercare baseline: --replace needs --reason TEXT", file=sys.stderr)
        return EXIT_USAGE

    async def work(room: Any) -> int:
        from crmctl.hypercare import BaselineRefused

        try:
            baseline = await room.freeze_baseline(reason=args.reason, replace=args.replace)
        except BaselineRefused as exc:
            print(f"crmctl hypercare baseline: refused: {exc}", file=sys.stderr)
            return EXIT_ERROR if "No check has a result" in str(exc) else EXIT_REFUSED
        print(f"go-live baseline frozen: {len(baseline.metrics)} metrics from {len(baseline.checks)} checks"
              f" (journal entry {baseline.seq}, sha256 {baseline.content_hash})")
        return EXIT_OK

    return _run(args, work)


def cmd_run(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.autoraise import AutoRaiser
        from crmctl.cli import _run_checks  # the composition root owns the check registry
        from crmctl.hypercare import run_hypercare
        from crmctl.incidents import Escalator

        async def run_checks() -> Any:
            return await _run_checks(room.config, None, args.operator, room.clock)

        run = await run_hypercare(room.config, room.store, run_checks, actor=room.actor, clock=room.clock)
        status = run.status
        # Cron is often the only process awake: it applies the incident rules and timers too.
        desk = room.incident_desk()
        raiser = AutoRaiser(desk)
        await raiser.start()
        fired = await Escalator(desk).tick()
        if args.format == "json":
            print(json.dumps({"seq": run.entry.seq, **run.entry.payload}, indent=2))
        else:
            print(_status_text(status, run.results))
            for incident in fired:
                print(f"{incident.id} escalated to {incident.escalations[0].to}")
        return status.exit_code

    return _run(args, work)


def _status_text(status: Any, results: Any) -> str:
    head = f"hypercare Day {status.day}" + (f" ({status.checkpoint} checkpoint)" if status.checkpoint else "")
    lines = [f"{head}: {status.verdict}  (journal entry {status.seq})"]
    for r in results:
        lines.append(f"  {r.status.value:<8} {r.check_id:<24.24} {r.explanation}")
    if status.drift:
        lines.append("drift against the go-live baseline:")
        for d in status.drift:
            mark = "ok  " if d.get("ok", True) else "FAIL"
            pct = f" ({d['pct']:+.3g} %)" if d.get("pct") is not None else ""
            delta = "missing" if d.get("current") is None else ("new" if d.get("baseline") is None else f"{d['delta']:+,.6g}")
            lines.append(f"  {mark} {d['metric']:<40.40} {delta}{pct}")
    elif status.baseline_seq is None:
        lines.append("no go-live baseline yet: `crmctl hypercare baseline` (or sign off) to freeze one")
    else:
        lines.append("no drift against the go-live baseline")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    async def work(room: Any) -> int:
        from crmctl.hypercare import build_view, format_drift, format_tolerance
        from crmctl.model import iso

        view = build_view(room.config, await room.hypercare_entries(), room.clock.now())
        if args.format == "json":
            print(json.dumps(_view_json(view), indent=2))
            return EXIT_OK
        if not view.configured:
            print("no hypercare section in the config")
            return EXIT_OK
        print(f"go-live {view.go_live} · today is Day {view.day}")
        if view.baseline is None:
            print("baseline: none frozen yet")
        else:
            b = view.baseline
            print(f"baseline: journal entry {b.seq}, {iso(b.ts)} by {b.operator} ({b.reason}); sha256 {b.content_hash}"
                  + ("" if b.intact else "  ** CONTENT DOES NOT MATCH ITS HASH **"))
        for c in view.checkpoints:
            print(f"  {c.label:<7} {c.due}  {c.state:<11} {c.detail}")
        changed = [d for d in view.drift if d.changed or not d.ok]
        if changed:
            print("drift (latest run):")
            for d in changed:
                print(f"  {'ok  ' if d.ok else 'FAIL'} {d.metric:<40.40} {format_drift(d):<22} tolerance {format_tolerance(d.tolerance)}")
        return EXIT_OK

    return _run(args, work)


def _view_json(view: Any) -> dict[str, Any]:
    from crmctl.model import iso

    b = view.baseline
    return {
        "go_live": view.go_live.isoformat() if view.go_live else None,
        "day": view.day,
        "baseline": None if b is None else {"seq": b.seq, "ts": iso(b.ts), "operator": b.operator, "reason": b.reason,
                                             "sha256": b.content_hash, "intact": b.intact, "metrics": len(b.metrics)},
        "checkpoints": [{"label": c.label, "day": c.day, "due": c.due.isoformat(), "state": c.state, "detail": c.detail,
                         "run_seq": c.run.seq if c.run else None} for c in view.checkpoints],
        "latest_run_seq": view.latest.seq if view.latest else None,
        "drift": [d.to_json() for d in view.drift if d.changed or not d.ok],
    }


__all__ = ["register"]
