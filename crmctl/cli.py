"""The `crmctl` command line: the composition root that wires config, checks, engine, store and app.

Headless commands (`check`, `validate`, `verify`, `emulator`) must never import Textual: they run
from cron on hypercare hosts, and a test proves it. The app is imported only by `tui` and `demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from crmctl import __version__

EXIT_OK = 0
EXIT_BREACH = 1
EXIT_USAGE = 2
EXIT_ERROR = 3

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "demo" / "crmctl.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `crmctl` console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crmctl", description="Cutover control room for CRM -> Dynamics 365.")
    parser.add_argument("--version", action="version", version=f"crmctl {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("validate", help="check a config file; exit 0 when valid, 2 otherwise")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("check", help="run every check once and print the results")
    config_arg(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these check ids")
    operator_arg(p)
    wall_clock_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("verify", help="prove the journal's hash chain; name the first broken entry")
    p.add_argument("--state", type=Path, help="state file (default: the config's state)")
    config_arg(p, required=False)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("emulator", help="run the rehearsal Dataverse emulator standalone")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = ephemeral)")
    p.add_argument("--data", type=Path, required=True, help="folder holding dataverse.db (seeded with the demo if missing)")
    p.add_argument("--scenario", type=Path, help="fault scenario YAML (see data/scenarios/)")
    p.add_argument("--token", help="bearer token to accept (default: random, printed)")
    p.set_defaults(func=cmd_emulator)

    p = sub.add_parser("tui", help="open the control room")
    config_arg(p)
    operator_arg(p)
    p.add_argument("--read-only", action="store_true", help="observe only: run no checks, take no actions")
    wall_clock_arg(p)
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("demo", help="seed the demo world, start the emulator and open the control room")
    operator_arg(p)
    p.add_argument("--config", type=Path, default=DEMO_CONFIG, help=argparse.SUPPRESS)
    p.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)
    wall_clock_arg(p)
    p.set_defaults(func=cmd_tui)

    import importlib

    from crmctl.commands import MODULES

    for name in MODULES:
        importlib.import_module(name).register(sub)
    return parser


def config_arg(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Adds the shared `--config/-c` option (default `$CRMCTL_CONFIG`)."""
    default = os.environ.get("CRMCTL_CONFIG")
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path(default) if default else None,
        required=required and not default,
        help="cutover config (crmctl.yaml); default $CRMCTL_CONFIG",
    )


def operator_arg(p: argparse.ArgumentParser) -> None:
    """Adds the shared `--operator` option."""
    p.add_argument("--operator", help="your name in the journal (default: OS user and SSH client)")


def wall_clock_arg(p: argparse.ArgumentParser) -> None:
    """Adds `--wall-clock`: ignore the config's rehearsal `clock_start` and use the real time."""
    p.add_argument("--wall-clock", action="store_true", help="ignore the config's clock_start (rehearsal clock)")


def _clock(args: argparse.Namespace):
    """The wall clock when asked for; otherwise None, meaning "the config's clock"."""
    from crmctl.clock import SystemClock

    return SystemClock() if getattr(args, "wall_clock", False) else None


def load_or_report(path: Path):
    """Loads and validates a config, printing every problem; returns None when it is invalid."""
    from checks.registry import check_kinds
    from crmctl.config import ConfigError, load_config

    try:
        return load_config(path, check_kinds=check_kinds())
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_or_report(args.file)
    if config is None:
        return EXIT_USAGE
    print(f"{args.file}: valid ({len(config.checks)} checks, {len(config.runbook)} runbook steps)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    unknown = [check_id for check_id in args.only or () if check_id not in {c.id for c in config.checks}]
    if unknown:
        print(f"crmctl check: unknown check id(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    results = asyncio.run(_run_checks(config, args.only, args.operator, _clock(args)))
    code = exit_code(results)
    if args.format == "json":
        print(json.dumps(check_report(config, results, code), indent=2))
    else:
        print(format_table(results))
    return code


async def _run_checks(config, only, operator, clock=None):
    from checks.registry import REGISTRY
    from crmctl.control import ControlRoom
    from crmctl.identity import current_actor

    actor = current_actor(operator)
    async with ControlRoom.open(
        config, REGISTRY, actor=actor, clock=clock, device_code_callback=_print_device_code
    ) as room:
        return await room.run_checks(only)


def _print_device_code(flow: dict) -> None:
    print(flow.get("message") or f"Sign in at {flow.get('verification_uri')} with code {flow.get('user_code')}", file=sys.stderr)


def exit_code(results) -> int:
    """0 when all are OK/WARN, 1 on any BREACH, 3 on any ERROR (or STALE/PENDING) without BREACH."""
    statuses = {r.status.value for r in results}
    if "BREACH" in statuses:
        return EXIT_BREACH
    if statuses & {"ERROR", "STALE", "PENDING"}:
        return EXIT_ERROR
    return EXIT_OK


def check_report(config, results, code: int) -> dict:
    """The documented JSON shape of `crmctl check --format json` (docs/cli.md)."""
    from crmctl.model import iso

    counts = Counter(r.status.value for r in results)
    return {
        "project": config.project,
        "config": str(config.path),
        "generated_at": iso(max((r.finished for r in results), default=None) or _now()),
        "exit_code": code,
        "summary": dict(sorted(counts.items())),
        "results": [r.to_json() for r in results],
    }


def _now():
    from crmctl.clock import SystemClock

    return SystemClock().now()


def format_table(results) -> str:
    """A plain, colour-free table that reads well in cron mail and 80 columns."""
    lines = [f"{'STATUS':<8} {'CHECK':<24} {'TIME':>6}  EXPLANATION"]
    for r in results:
        lines.append(f"{r.status.value:<8} {r.check_id:<24.24} {_duration(r.duration_s):>6}  {r.explanation}")
    counts = Counter(r.status.value for r in results)
    lines.append("")
    lines.append("  ".join(f"{status} {n}" for status, n in sorted(counts.items())))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.1f}s"


def cmd_verify(args: argparse.Namespace) -> int:
    from crmctl.store import verify_file

    state = args.state
    if state is None:
        if args.config is None:
            print("crmctl verify: give --state PATH or --config FILE", file=sys.stderr)
            return EXIT_USAGE
        config = load_or_report(args.config)
        if config is None:
            return EXIT_USAGE
        state = config.state
    if not Path(state).exists():
        print(f"crmctl verify: no state file at {state}", file=sys.stderr)
        return EXIT_USAGE
    report = verify_file(state)
    if report.ok:
        print(f"{state}: journal intact ({report.entries} entries, chain verified)")
        return EXIT_OK
    print(f"{state}: JOURNAL BROKEN at entry {report.first_bad_seq}: {report.reason}", file=sys.stderr)
    return EXIT_BREACH


def screen_renderer():
    """The SVG renderer of the control room's screens, for the evidence pack.

    The composition root hands it to `crmctl.evidence.export`, so the core never imports
    Textual; the import happens only when a pack with screenshots is actually exported.
    """
    from screens.screenshots import render_screens

    return render_screens


def cmd_emulator(args: argparse.Namespace) -> int:
    from crmctl.demo_world import ensure_world
    from crmctl.emulator.server import serve_forever

    data = args.data / "dataverse.db" if args.data.is_dir() or not args.data.suffix else args.data
    if not data.exists():
        print(f"seeding the demo world in {data.parent} ...", file=sys.stderr)
        ensure_world(data.parent)
    asyncio.run(serve_forever(data, args.port, args.scenario, args.token))
    return EXIT_OK


def cmd_tui(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    return asyncio.run(_run_tui(config, args.operator, args.read_only, _clock(args)))


async def _run_tui(config, operator, read_only: bool, clock=None) -> int:
    from checks.registry import REGISTRY
    from crmctl.control import ControlRoom
    from crmctl.identity import current_actor
    from screens.app import CrmctlApp

    actor = current_actor(operator)
    # The engine (and the demo's emulator) runs on a thread of its own: keys are answered while checks run.
    async with ControlRoom.open(
        config, REGISTRY, actor=actor, read_only=read_only, clock=clock, engine_thread=True
    ) as room:
        app = CrmctlApp(room, auto_run=not read_only)
        await app.run_async()
    return EXIT_OK
