"""`crmctl baseline`, `crmctl evidence`, `crmctl signoff` and `crmctl lesson`: Sprint 5.1 and 4.4.4 closure.

No Textual import here: the evidence pack's screenshots come from `crmctl.cli.screen_renderer`
(the composition root), loaded only when an export asks for them.

Exit codes: 0 done; 1 the answer is bad news (a pack that does not verify, a journal that does
not verify at export, a query slower beyond the noise); 2 usage or config error; 3 could not
be done (a leak stopped the export, nothing could be measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from crmctl.cli import EXIT_BREACH, EXIT_ERROR, EXIT_OK, EXIT_USAGE, config_arg, load_or_report, operator_arg


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Adds `baseline`, `evidence`, `signoff` and `lesson` to the `crmctl` command line."""
    p = sub.add_parser("baseline", help="capture, compare and derive thresholds from performance baselines")
    actions = p.add_subparsers(metavar="ACTION")
    q = actions.add_parser("capture", help="sample the key queries, WhoAmI and system jobs; journal the baseline")
    q.add_argument("--name", required=True, help="what to call it (e.g. pre-tuning, day-7)")
    q.add_argument("--samples", type=int, help="samples per query (default: each SLO's samples; WhoAmI 20)")
    q.add_argument("--max-requests", type=int, help="the capture's request budget (default: a fifth of the target's)")
    q.add_argument("--window", default="24h", help="how far back system jobs and the query log are read (default 24h)")
    q.add_argument("--job", action="append", default=[], metavar="PATTERN", help="report only jobs named LIKE this (repeatable)")
    q.add_argument("--no-jobs", action="store_true", help="do not read system jobs")
    q.add_argument("--no-whoami", action="store_true", help="do not sample WhoAmI")
    _format_arg(q)
    config_arg(q)
    operator_arg(q)
    q.set_defaults(func=cmd_capture)
    q = actions.add_parser("compare", help="before/after per query, with a verdict beyond the noise")
    q.add_argument("a", help="the before baseline (name, or @SEQ)")
    q.add_argument("b", help="the after baseline (name, or @SEQ)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0: reproducible)")
    q.add_argument("--resamples", type=int, default=2000)
    q.add_argument("--no-record", action="store_true", help="do not journal the comparison")
    _format_arg(q)
    config_arg(q)
    operator_arg(q)
    q.set_defaults(func=cmd_compare)
    q = actions.add_parser("thresholds", help="print proposed alert thresholds as a crmctl.yaml snippet")
    q.add_argument("name", help="the baseline (name, or @SEQ)")
    config_arg(q)
    q.set_defaults(func=cmd_thresholds)
    q = actions.add_parser("list", help="every baseline in the journal")
    config_arg(q)
    q.set_defaults(func=cmd_list)
    p.set_defaults(func=lambda args: _usage(p))

    p = sub.add_parser("evidence", help="export the audit evidence pack, or verify one")
    actions = p.add_subparsers(metavar="ACTION")
    q = actions.add_parser("export", help="write the evidence pack into a new folder")
    q.add_argument("--out", type=Path, required=True, metavar="DIR", help="a folder that does not exist yet")
    q.add_argument("--no-screenshots", action="store_true", help="leave the screen SVGs out (faster)")
    config_arg(q)
    operator_arg(q)
    q.set_defaults(func=cmd_export)
    q = actions.add_parser("verify", help="re-check every hash and the journal chain of a pack; exit 0 or 1")
    q.add_argument("dir", type=Path)
    q.set_defaults(func=cmd_verify_pack)
    p.set_defaults(func=lambda args: _usage(p))

    p = sub.add_parser("signoff", help="record a business or technical sign-off")
    p.add_argument("--role", required=True, choices=("business", "technical"))
    p.add_argument("--statement", required=True, help="what is accepted, and on what basis")
    p.add_argument("--name", help="who signs (default: the operator)")
    p.add_argument("--title", help="their title, e.g. Business Owner")
    config_arg(p)
    operator_arg(p)
    p.set_defaults(func=cmd_signoff)

    p = sub.add_parser("lesson", help="record or list lessons learned")
    actions = p.add_subparsers(metavar="ACTION")
    q = actions.add_parser("add", help="record a lesson learned")
    q.add_argument("text")
    q.add_argument("--category", default="improve", choices=("went-well", "improve", "action"))
    q.add_argument("--action", dest="action_item", help="the action item that follows from it")
    q.add_argument("--owner", help="who owns the action")
    config_arg(q)
    operator_arg(q)
    q.set_defaults(func=cmd_lesson_add)
    q = actions.add_parser("list", help="every lesson and sign-off recorded")
    config_arg(q)
    q.set_defaults(func=cmd_lesson_list)
    p.set_defaults(func=lambda args: _usage(p))


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text")


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return EXIT_USAGE


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(message, file=sys.stderr)
    return code


# --------------------------------------------------------------------------------------------
# baselines


def cmd_capture(args: argparse.Namespace) -> int:
    from crmctl.config import parse_duration

    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        window = parse_duration(args.window)
    except ValueError as exc:
        return _fail(f"crmctl baseline capture: --window: {exc}")
    if not args.name.strip():
        return _fail("crmctl baseline capture: --name must not be empty")
    return asyncio.run(_capture(config, args, window))


async def _capture(config: Any, args: argparse.Namespace, window: Any) -> int:
    from crmctl import baseline as bl
    from crmctl.identity import current_actor
    from crmctl.runtime import open_runtime
    from crmctl.store import Store

    actor = current_actor(args.operator)
    async with open_runtime(config, device_code_callback=_print_device_code) as runtime:
        async with await Store.open(config.state) as store:
            captured = await bl.capture(
                config,
                runtime.dynamics,
                name=args.name.strip(),
                store=store,
                samples=args.samples,
                whoami=not args.no_whoami,
                jobs=not args.no_jobs,
                job_names=args.job,
                window=window,
                max_requests=args.max_requests,
            )
            captured = await bl.record(store, captured, actor=actor)
    if args.format == "json":
        print(json.dumps(captured.to_json(), indent=2))
    else:
        print(format_baseline(captured))
    measured = sum(len(q.durations_ms) for q in captured.queries)
    return EXIT_OK if measured or not captured.queries else EXIT_ERROR


def _print_device_code(flow: dict) -> None:
    print(flow.get("message") or f"Sign in at {flow.get('verification_uri')} with code {flow.get('user_code')}", file=sys.stderr)


def format_baseline(b: Any) -> str:
    """The plain-text summary `baseline capture` prints."""
    lines = [
        f"Baseline {b.name!r} (journal entry {b.seq}) - {b.target}, {b.budget.get('spent')} of at most "
        f"{b.budget.get('max_requests')} requests, {b.budget.get('wall_s')} s",
        "",
        f"{'QUERY':<22} {'N':>5} {'p50':>8} {'p95':>8} {'p99':>8} {'ERR':>6} {'SLO p95':>8}  MEETS",
    ]
    for q in b.queries:
        d = q.to_json()
        meets = {True: "yes", False: "NO", None: "-"}[d["meets_slo"]]
        lines.append(
            f"{q.id[:22]:<22} {d.get('n', 0):>5} {_ms(d.get('p50_ms')):>8} {_ms(d.get('p95_ms')):>8} "
            f"{_ms(d.get('p99_ms')):>8} {_pct(d.get('error_rate')):>6} {_ms(d.get('slo_p95_ms')):>8}  {meets}"
        )
    windows = b.jobs.get("windows", []) if isinstance(b.jobs, dict) else []
    if windows:
        lines += ["", f"Batch job windows ({b.jobs.get('rows')} system jobs in {b.window_hours:g} h):"]
        for w in windows[:10]:
            p95 = "-" if w["p95_s"] is None else f"{w['p95_s']:g} s"
            top = "-" if w["max_s"] is None else f"{w['max_s']:g} s"
            lines.append(f"  {w['name'][:44]:<44} {w['jobs']:>4} runs  p95 {p95}  max {top}  failed {w['failed']}")
    for i in b.integrations:
        lines.append(
            f"Integration {i['id']}: {i['per_hour']} completed/h, failure rate {_pct(i.get('failure_rate'))}, "
            f"{i['retried']} jobs retried ({i['retries']} retries), meets SLO: {i.get('meets_slo')}"
        )
    if b.peak_hour is not None:
        lines.append(f"Peak hour of system jobs: {b.peak_hour:02d}:00 UTC ({max(b.peak_hours)} jobs)")
    if b.slowest:
        lines += ["", "Slowest calls:"]
        for s in b.slowest[:5]:
            lines.append(f"  {s['duration_ms']:>9.1f} ms  {s['source']:<22.22} {str(s['url'])[:90]}")
    lines += [f"Note: {n}" for n in b.notes]
    return "\n".join(lines)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def cmd_compare(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    return asyncio.run(_compare(config, args))


async def _compare(config: Any, args: argparse.Namespace) -> int:
    from crmctl import baseline as bl
    from crmctl.baseline_stats import MIXED, SLOWER, CompareSettings
    from crmctl.identity import current_actor
    from crmctl.store import Store

    async with await Store.open(config.state) as store:
        try:
            a = await bl.find(store, args.a)
            b = await bl.find(store, args.b)
        except bl.UnknownBaseline as exc:
            return _fail(f"crmctl baseline compare: {exc}")
        result = bl.compare(a, b, CompareSettings(resamples=max(100, args.resamples), seed=args.seed))
        if not args.no_record:
            await bl.record_comparison(store, result, actor=current_actor(args.operator))
    print(json.dumps(result.to_json(), indent=2) if args.format == "json" else result.text())
    # Only a query slower beyond the noise (alone, or mixed with a faster statistic) is bad news.
    return EXIT_BREACH if set(result.verdicts.values()) & {SLOWER, MIXED} else EXIT_OK


def cmd_thresholds(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if not Path(config.state).exists():
        return _fail(f"crmctl baseline thresholds: no state file at {config.state}; capture a baseline first")
    return asyncio.run(_thresholds(config, args.name))


async def _thresholds(config: Any, name: str) -> int:
    from crmctl import baseline as bl
    from crmctl.baseline_thresholds import propose
    from crmctl.store import Store

    async with await Store.open(config.state, readonly=True) as store:
        try:
            found = await bl.find(store, name)
        except bl.UnknownBaseline as exc:
            return _fail(f"crmctl baseline thresholds: {exc}")
    print(propose(found, config), end="")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if not Path(config.state).exists():
        print("No baselines recorded.")
        return EXIT_OK
    return asyncio.run(_list(config))


async def _list(config: Any) -> int:
    from crmctl import baseline as bl
    from crmctl.model import iso
    from crmctl.store import Store

    async with await Store.open(config.state, readonly=True) as store:
        found = await bl.baselines(store)
    if not found:
        print("No baselines recorded.")
    for b in found:
        measured = sum(len(q.durations_ms) for q in b.queries)
        print(f"@{b.seq:<6} {b.name:<24} {iso(b.started)}  by {b.by}  {len(b.queries)} queries, {measured} samples")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# evidence


def cmd_export(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if not Path(config.state).exists():
        return _fail(f"crmctl evidence export: no state file at {config.state}")
    renderer = None
    if not args.no_screenshots:
        from crmctl.cli import screen_renderer

        renderer = screen_renderer()
    return asyncio.run(_export(config, args, renderer))


async def _export(config: Any, args: argparse.Namespace, renderer: Any) -> int:
    from crmctl.evidence import EvidenceError, export
    from crmctl.identity import current_actor
    from crmctl.store import Store

    actor = current_actor(args.operator)
    async with await Store.open(config.state) as store:
        try:
            result = await export(config, store, args.out, renderer, actor=actor)
        except FileExistsError as exc:
            return _fail(f"crmctl evidence export: {exc}")
        except EvidenceError as exc:
            return _fail(f"crmctl evidence export: {exc}", EXIT_ERROR)
    print(f"Evidence pack written to {result.path}")
    print(f"  {result.files} files; journal {result.entries} entries, head entry {result.head_seq}")
    print(f"  journal head hash   {result.head_hash}")
    print(f"  manifest.json SHA-256 {result.manifest_sha256}")
    print("  Keep the manifest hash somewhere else (ticket, e-mail): it anchors the whole pack.")
    for warning in result.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    if not result.journal_ok:
        print(f"  JOURNAL DOES NOT VERIFY: {result.journal_reason}", file=sys.stderr)
        return EXIT_BREACH
    return EXIT_OK


def cmd_verify_pack(args: argparse.Namespace) -> int:
    from crmctl.evidence import verify

    report = verify(args.dir)
    if report.ok:
        print(
            f"{args.dir}: evidence pack intact ({report.files} files, every hash matches; journal "
            f"{report.entries} entries, chain verified, head entry {report.head_seq} {report.head_hash})"
        )
        return EXIT_OK
    print(f"{args.dir}: EVIDENCE PACK DOES NOT VERIFY ({len(report.problems)} problems)", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_BREACH


# --------------------------------------------------------------------------------------------
# sign-off and lessons


def cmd_signoff(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    return asyncio.run(_signoff(config, args))


async def _signoff(config: Any, args: argparse.Namespace) -> int:
    from crmctl.identity import current_actor
    from crmctl.model import iso
    from crmctl.scrubber import Scrubber
    from crmctl.signoff import SignoffError, record_signoff
    from crmctl.store import Store

    async with await Store.open(config.state) as store:
        try:
            record = await record_signoff(
                store, current_actor(args.operator), role=args.role, statement=args.statement,
                name=args.name, title=args.title, scrubber=Scrubber.for_config(config),
            )
        except SignoffError as exc:
            return _fail(f"crmctl signoff: {exc}")
    print(
        f"{record.role.capitalize()} sign-off by {record.name} recorded as journal entry {record.seq} at "
        f"{iso(record.ts)} (signed at journal head entry {record.head_seq})."
    )
    return EXIT_OK


def cmd_lesson_add(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    return asyncio.run(_lesson_add(config, args))


async def _lesson_add(config: Any, args: argparse.Namespace) -> int:
    from crmctl.identity import current_actor
    from crmctl.scrubber import Scrubber
    from crmctl.signoff import SignoffError, record_lesson
    from crmctl.store import Store

    async with await Store.open(config.state) as store:
        try:
            lesson = await record_lesson(
                store, current_actor(args.operator), text=args.text, category=args.category,
                action=args.action_item, owner=args.owner, scrubber=Scrubber.for_config(config),
            )
        except SignoffError as exc:
            return _fail(f"crmctl lesson add: {exc}")
    print(f"Lesson recorded as journal entry {lesson.seq}.")
    return EXIT_OK


def cmd_lesson_list(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if not Path(config.state).exists():
        print("No sign-offs or lessons recorded.")
        return EXIT_OK
    return asyncio.run(_lesson_list(config))


async def _lesson_list(config: Any) -> int:
    from crmctl.model import iso
    from crmctl.scrubber import neutralise
    from crmctl.signoff import closure, lessons, signoffs
    from crmctl.store import Store

    async with await Store.open(config.state, readonly=True) as store:
        signed = await signoffs(store)
        learned = await lessons(store)
    for role, record in closure(signed).items():
        state = f"signed by {record.name} at {iso(record.ts)}" if record else "MISSING"
        print(f"{role.capitalize()} sign-off: {neutralise(state, multiline=False)}")
    if not learned:
        print("No lessons recorded.")
    for lesson in learned:
        line = f"#{lesson.seq} [{lesson.category}] {lesson.text}"
        if lesson.action:
            line += f" -> {lesson.action}" + (f" ({lesson.owner})" if lesson.owner else "")
        print(neutralise(line, multiline=False))
    return EXIT_OK
