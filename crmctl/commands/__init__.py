"""Sub-command groups of the `crmctl` CLI, one module per area, each with `register(subparsers)`.

`crmctl/cli.py` owns the core commands and the shared helpers (`load_or_report`, exit codes);
the modules listed in `MODULES` add their own sub-commands, so areas grow without touching
one another's code. Every module must keep Textual out of its imports.
"""

from __future__ import annotations

MODULES: tuple[str, ...] = ("crmctl.commands.runbook", "crmctl.commands.evidence", "crmctl.commands.incidents", "crmctl.commands.serve")
"""Dotted names of command modules; each exposes `register(subparsers) -> None`."""
