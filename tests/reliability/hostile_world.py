"""Hostile text planted where Dynamics hands crmctl outside words: record names, job names, job
error messages, plug-in trace messages, server error bodies, and an incident title.

Every payload goes in through the real path: rows in the emulator's data file, read by the real
checks over HTTP; a server error message injected by a scenario fault; an incident raised through
the control room. What each payload is meant to break is in its name.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from crmctl.emulator.storage import EmulatorData
from tests.checks.datachecks import entities_block

HUGE = "N" * 1_000_000
"""A one-megabyte record name."""

PAYLOADS: dict[str, str] = {
    "clear-screen": "Acme\x1b[2J\x1b[HCorp",
    "osc52-clipboard": "\x1b]52;c;cm0gLXJmIH4K\x07copied",
    "osc52-st": "\x1b]52;c;cm0gLXJmIH4K\x1b\\copied-st",
    "osc8-link": "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\",
    "bel": "ding\x07\x07dong",
    "c1-csi": "eight\x9b2Jbit",
    "markup": "[bold red]x[/]",
    "click-markup": "[@click=app.quit]quit now[/]",
    "broken-markup": "[/] [not closed",
    "bidi": "invoice\u202egnp.exe",
    "csv-formula": "=cmd|' /C calc'!A0",
    "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "markdown": "[click](javascript:alert(1)) **bold** `code`",
    "newlines": "line1\nline2\r\nline3\ttabbed",
    "huge": HUGE,
}
"""Name -> hostile text. Each is also the marker a test looks for (in a neutralised form)."""

MARKUP = ("[bold red]x[/]", "[@click=app.quit]quit now[/]")
"""Payloads that must appear literally on screen (markup shown as text, never acted on)."""

JOB_PREFIX = "ERP Sync "
"""System jobs must match the integration's `name_like: "ERP Sync%"` to be read."""


def copy_world(src: Path, dst: Path) -> Path:
    """A private copy of a generated demo world (its files are shared by other tests)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("source.db", "dataverse.db", "ground_truth.json"):
        shutil.copy(src / name, dst / name)
    return dst


def plant(world: Path, now: datetime) -> dict[str, int]:
    """Writes the payloads into the world's Dynamics data; returns how many rows of each entity."""
    jobs, traces, contacts = [], [], []
    for i, (name, text) in enumerate(PAYLOADS.items()):
        at = now - timedelta(hours=1, minutes=i)
        jobs.append({
            "asyncoperationid": str(uuid.uuid4()), "name": JOB_PREFIX + text, "operationtype": 1,
            "messagename": "Update", "statecode": 3, "statuscode": 31, "errorcode": -2147220891,
            "message": f"{name}: {text}", "friendlymessage": text, "retrycount": 1,
            "createdon": at, "startedon": at, "completedon": at + timedelta(seconds=2), "modifiedon": at,
        })
        traces.append({
            "plugintracelogid": str(uuid.uuid4()), "typename": f"Contoso.Plugins.{name}{text}",
            "messagename": "Update", "primaryentity": "account", "mode": 0, "operationtype": 1, "depth": 1,
            "exceptiondetails": f"System.InvalidOperationException: {text}", "messageblock": text,
            "performanceexecutionduration": 12, "createdon": now - timedelta(minutes=i + 1),
        })
        # Two contacts share each hostile e-mail: the duplicates check reports the value.
        for n in range(2):
            contacts.append({"contactid": str(uuid.uuid4()), "lastname": text, "emailaddress1": f"{text}@x{i}",
                             "new_legacyid": f"HOSTILE-{i}-{n}"})
    with EmulatorData(world / "dataverse.db") as data:
        data.insert_rows("asyncoperation", jobs)
        data.insert_rows("plugintracelog", traces)
        data.insert_rows("contact", contacts)
    return {"asyncoperation": len(jobs), "plugintracelog": len(traces), "contact": len(contacts)}


def _yaml_escape(text: str) -> str:
    """A YAML double-quoted scalar for any text (JSON's escapes are valid YAML escapes)."""
    return json.dumps(text)


CHECK_IDS = ("erp-sync.jobs", "plugin.traces", "contact.duplicates", "contact.nulls", "dynamics.whoami")


def write_config(folder: Path, world: Path, now: datetime) -> Path:
    """A cutover config over the hostile world; WhoAmI answers with a hostile error body."""
    scenario = folder / "hostile-scenario.yaml"
    message = " | ".join(f"{k}={v}" for k, v in PAYLOADS.items() if k != "huge") + " | " + HUGE
    scenario.write_text(
        "name: hostile-errors\nseed: 1\nfaults:\n"
        f"  - {{kind: error, status: 400, code: '0x80040220', path: WhoAmI, message: {_yaml_escape(message)}}}\n"
    )
    text = (
        "project: hostile payloads\n"
        f"state: {folder / 'state.db'}\n"
        f"clock_start: {now.strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
        f"source: {{kind: sql, url: \"sqlite:///{world / 'source.db'}\"}}\n"
        "target:\n"
        "  kind: emulator\n"
        f"  data: {world / 'dataverse.db'}\n"
        f"  scenario: {scenario}\n"
        "  limits: {concurrency: 4, requests_per_5min: 5000, timeout: 10s, retries: 0}\n"
        f"{entities_block()}"
        "checks:\n"
        "  - {id: erp-sync.jobs, kind: system_jobs, integration: erp-sync, window: 24h, title: ERP Sync jobs}\n"
        "  - {id: plugin.traces, kind: plugin_traces, window: 24h, warn: 0, breach: 5, title: Plug-in exceptions}\n"
        "  - {id: contact.duplicates, kind: duplicates, entity: contact, columns: {emailaddress1: email}, "
        "warn: 0, breach: 10, export: false, title: Contact emails unique}\n"
        "  - {id: contact.nulls, kind: nulls, entity: contact, columns: {lastname: last_name}, warn: 0, breach: 10, "
        "export: false, title: Contact last names}\n"
        "  - {id: dynamics.whoami, kind: whoami, warn: 60000, breach: 120000, title: Dynamics reachable}\n"
        "integrations:\n"
        "  - id: erp-sync\n"
        "    title: ERP Sync\n"
        "    jobs: {name_like: \"ERP Sync%\"}\n"
        "    slo: {p95_ms: 800, error_rate: 0.02}\n"
    )
    path = folder / "crmctl.yaml"
    path.write_text(text)
    return path
