"""The demo's evidence pack, built once: real checks on the demo world, canary secrets in play.

The canaries are live, not decorative: the canary secret is substituted into a health-probe URL
that an `http_probe` check really requests (the probe server below records it) and into the
Teams webhook; the canary bearer token is the token the embedded emulator issues, so every
Dataverse request of the run carries it. Operators also paste both into a sign-off and a
lesson. None of it may reach the pack.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from aiohttp import web

CANARY_SECRET = "canary-secret-7f3a9c2e51d84b06"
CANARY_WEBHOOK = "https://contoso.webhook.office.com/webhookb2/canary-webhook-3b8e1f0a"
CANARY_BEARER = "canaryBearerTokenZq81mP0xW4vT7nK2"
HOSTILE = "<script>alert(1)</script> \x1b[2J\x1b]0;owned\x07 | *bold* [x](javascript:alert(1)) \u202egnp.exe"
"""Text an operator (or a server message) could put into the journal; it must do nothing anywhere."""


@dataclass
class DemoPack:
    path: Path
    config: Any
    state: Path
    probe_queries: list[str] = field(default_factory=list)
    emulator_token: str = ""
    head_seq: int = 0


def demo_yaml(demo_dir: Path, folder: Path, probe_port: int) -> Path:
    """The demo config with absolute world paths, a probe carrying the canary, and a webhook."""
    doc = yaml.safe_load((demo_dir / "crmctl.yaml").read_text())
    doc["source"]["url"] = f"sqlite:///{demo_dir}/world/source.db"
    doc["target"]["data"] = f"{demo_dir}/world/dataverse.db"
    doc["state"] = str(folder / "state" / "state.db")
    erp = next(i for i in doc["integrations"] if i["id"] == "erp-sync")
    erp["probe"] = {"url": f"http://127.0.0.1:{probe_port}/health?code=${{env:CRMCTL_CANARY_SECRET}}"}
    doc["checks"].append({"id": "erp-sync.probe", "kind": "http_probe", "integration": "erp-sync", "every": "60s",
                          "title": "ERP health endpoint"})
    doc.setdefault("incidents", {})["notify"] = {"teams_webhook": "${env:CRMCTL_CANARY_WEBHOOK}"}
    path = folder / "crmctl.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


async def build_pack(demo_dir: Path, folder: Path) -> DemoPack:
    from checks.registry import REGISTRY, check_kinds
    from crmctl import baseline as bl
    from crmctl.clock import SystemClock
    from crmctl.config import load_config
    from crmctl.control import ControlRoom
    from crmctl.engine import Engine
    from crmctl.identity import Actor
    from crmctl.runtime import open_runtime
    from crmctl.store import Store
    from screens.screenshots import render_screens

    queries: list[str] = []

    async def health(request: web.Request) -> web.Response:
        queries.append(request.query_string)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = load_config(demo_yaml(demo_dir, folder, port), check_kinds=check_kinds())
        actor = Actor("alice", "ssh:10.0.0.7")
        async with open_runtime(config) as rt:
            store = await Store.open(config.state)
            try:
                engine = Engine(config, REGISTRY, store, rt.targets, actor=actor, clock=SystemClock())
                room = ControlRoom(config, store, engine, actor=actor, emulator=rt.emulator)
                await room.run_checks()
                await _journal_the_night(store, actor)
                for name in ("pre-tuning", "post-tuning"):
                    await bl.record(store, await bl.capture(config, rt.dynamics, name=name, store=store, samples=6), actor=actor)
                await bl.record_comparison(store, bl.compare(await bl.find(store, "pre-tuning"), await bl.find(store, "post-tuning")), actor=actor)
                await room.record_signoff("business", f"Accepted; the ERP key {CANARY_SECRET} was shared with us. {HOSTILE}",
                                          name="Jane Doe", title="Business Owner")
                await room.record_signoff("technical", "Data, integrations and monitoring verified against the evidence.",
                                          name="Raj Patel", title="Migration Lead")
                await room.record_lesson(f"Pasted by mistake: Authorization: Bearer {CANARY_BEARER}", action="Pause ERP Sync at the freeze",
                                         owner="Integration Team")
                result = await room.export_evidence(folder / "pack", screenshots=render_screens)
                token = rt.emulator.token  # type: ignore[union-attr]
            finally:
                await store.close()
    finally:
        await runner.cleanup()
    return DemoPack(result.path, config, Path(config.state), queries, token, result.head_seq)


async def _journal_the_night(store: Any, actor: Any) -> None:
    """Entries of the other modules' kinds (and one nobody knows), as they would journal them."""
    started = await store.append("run.started", {"run": "production"}, actor=actor)
    await store.append("runbook.step.started", {"run": "production", "step": "freeze", "runbook": "cutover"}, actor=actor)
    await store.append("runbook.step.done", {"run": "production", "step": "freeze", "runbook": "cutover",
                                             "reason": "freeze announced"}, actor=actor)
    await store.append("decision.recorded", {
        "run": "production", "decision": "hold", "authority": "Cutover Lead", "rationale": "Accounts still missing.",
        "matrix": {"overall": "HOLD", "reason": "data-loss-accounts holds",
                   "criteria": [{"id": "data-loss-accounts", "check": "account.reconcile", "outcome": "HOLD",
                                 "reason": "missing > 0", "status": "BREACH", "values": {"missing": 37}}]},
    }, actor=actor)
    raised = await store.append("incident.raised", {"severity": "sev2", "title": "ERP Sync throttled"}, actor=actor)
    await store.append("incident.acknowledged", {"incident": raised.seq, "owner": "Integration Team"}, actor=actor)
    await store.append("hypercare.status", {"day": 1, "status": "amber"}, actor=actor)
    await store.append("vendor.custom", {"note": HOSTILE, "after": started.seq}, actor=actor)


@pytest.fixture(scope="session")
def demo_pack(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoPack:
    """The demo's evidence pack (read-only for tests: copy it before changing anything)."""
    import crmctl.emulator.server as server

    folder = tmp_path_factory.mktemp("evidence-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRMCTL_CANARY_SECRET", CANARY_SECRET)
        mp.setenv("CRMCTL_CANARY_WEBHOOK", CANARY_WEBHOOK)
        mp.setattr(server, "secrets", SimpleNamespace(token_urlsafe=lambda n=32: CANARY_BEARER))
        return asyncio.run(build_pack(demo_dir, folder))


@pytest.fixture
def pack_copy(demo_pack: DemoPack, tmp_path: Path) -> Path:
    """A private copy of the demo pack, free to tamper with."""
    dest = tmp_path / "pack"
    shutil.copytree(demo_pack.path, dest)
    return dest
