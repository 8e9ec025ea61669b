"""Canary secrets: one end-to-end run through every writer, then every file it wrote is scanned.

The run signs in to a real OpenID Connect provider with a canary **client secret** (through MSAL,
the way a real org is reached), carries the provider's **bearer tokens** to the emulator through a
hostile proxy, and notifies two **webhooks** whose URLs carry a canary path and a canary
signature. The proxy makes some checks fail the way a bad day does, echoing the whole request
(Authorization header included) into the error body: 401 on every other WhoAmI, 500 on contacts,
429 storms on system jobs, malformed JSON on opportunities. One webhook accepts, the other
answers 500 echoing the secret URL it was called on.

Writers exercised: the CLI (`validate`, `check` table and JSON, `incident raise/ack/resolve/show`,
`step`, `verify`, `evidence export` with its screenshots of every screen, `evidence verify`), with
stdout and stderr captured to files; in process, the control room's checks, incidents and
notifications and runbook actions with Python logging at DEBUG captured to a file; exceptions
from the connectors (str, repr and full chained tracebacks written to a file); the journal,
the query log inside it, the emulator's request log and the evidence pack.

Then every file under the run's folder is scanned for each canary — plain, URL-encoded, base64
and JSON-escaped — and none may hold one. The MSAL token cache is the one file that must hold
tokens: it is checked for mode 0600 and for the absence of the client secret instead. The state
file and the token cache are created 0600 (their folder 0700).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Awaitable, Iterator, TypeVar

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import REPO, require_tool
from tests.peers.oidc_peer import OidcPeer, JwtValidator, require_node_peer, start_oidc_peer
from tests.peers.pki import Pki, make_pki
from tests.reliability.suite_audit import CANARY_PEER_CLIENT_SECRET, Scanner, forms, record_figure

T = TypeVar("T")

CANARY_TEAMS_PATH = "cnry-teams-path-5e1f9a27c3"
CANARY_TEAMS_SIG = "cnry-teams-sig-b84d20e6f1"
CANARY_HOOK_PATH = "cnry-hook-path-0c7e3b9d42"
CANARY_HOOK_SIG = "cnry-hook-sig~Q9/x+y=z"
"""With characters that URL-encoding and JSON escaping change, so those forms differ from plain."""
CANARY_OPAQUE_TOKEN = "cnry-opaque-token_Xq81Zr5Tn0Wb"
"""An opaque (non-JWT) bearer token, as the emulator and other identity providers hand out: no
shape betrays it, so only knowing the value can keep it out of messages."""
ONLY = [
    "dynamics.whoami", "account.count", "contact.count", "opportunity.count", "account.nulls",
    "contact.duplicates", "erp-sync.jobs", "plugin.traces",
]
"""Checks that meet every fault the proxy injects (and accounts, which pass through clean)."""


class Loop:
    """An event loop on a thread of its own, serving while the test runs CLI subprocesses."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="canary-servers")
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _site(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


def _echo(request: web.Request) -> str:
    """The whole request as a careless proxy or identity provider would quote it back."""
    lines = [f"{request.method} {request.url}"] + [f"{k}: {v}" for k, v in request.headers.items()]
    return "\n".join(lines)


class HostileProxy:
    """Forwards to the emulator, except where a bad day is scripted; every fault echoes the request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.tokens: set[str] = set()
        self.faults: dict[str, int] = {}
        self._whoami = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> HostileProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, port = await _site(app)
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=True)
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _fault(self, name: str, status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
        self.faults[name] = self.faults.get(name, 0) + 1
        return web.Response(status=status, text=body, content_type="application/json", headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            self.tokens.add(auth[7:].strip())
        path = request.path.lower()
        echo = _echo(request)
        token = auth[7:].strip()
        # The raw token first, without its "Bearer" scheme, then the whole request.
        error = json.dumps({"error": {"code": "0x80040216",
                                      "message": f"Request failed for token {token}: {echo}"}})
        if path.endswith("/whoami"):
            self._whoami += 1
            if self._whoami % 2 == 1:  # the client must drop the token, fetch a new one and retry once
                one_line = echo.replace("\n", " | ").replace('"', "'")
                return self._fault("401 echo", 401, error, {
                    "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{one_line}"'})
        elif "/contacts" in path:
            return self._fault("500 echo", 500, error)
        elif "/asyncoperations" in path:
            return self._fault("429 echo", 429, error, {"Retry-After": "0"})
        elif "/opportunities" in path:
            return self._fault("malformed JSON echo", 200, '{"value": [{"name": ' + json.dumps(echo) + ", ")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         allow_redirects=False) as upstream:
            body = (await upstream.read()).replace(self.upstream.encode(), self.url.encode())
            keep = {k: v for k, v in upstream.headers.items()
                    if k.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection")}
            return web.Response(status=upstream.status, body=body, headers=keep)


class Webhook:
    """A local webhook: `ok` accepts (202); otherwise 500 with the secret URL echoed in the body."""

    def __init__(self, path: str, sig: str, *, ok: bool) -> None:
        self.path, self.sig, self.ok = path, sig, ok
        self.url = ""
        self.received = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner, port = await _site(app)
        self.url = f"http://127.0.0.1:{port}/workflows/{self.path}/triggers/manual/paths/invoke?api-version=1&sig={self.sig}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        if self.ok:
            return web.Response(status=202)
        # 400, not 500: the notifier gives up at once (a 5xx would be retried with back-off for
        # seconds per event); the body still echoes the secret URL it was called on.
        return web.Response(status=400, text=f"workflow failed for {request.url}: {_echo(request)}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(require_tool("openssl"), tmp_path_factory.mktemp("canary-pki"))


@pytest.fixture(scope="module")
def oidc(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcPeer]:
    peer = start_oidc_peer(require_node_peer(), pki, tmp_path_factory.mktemp("canary-oidc"))
    try:
        yield peer
    finally:
        peer.stop()


def _config_text(demo_dir: Path, proxy: HostileProxy, oidc: OidcPeer) -> str:
    """The demo cutover, pointed at a real org behind the proxy, signing in with the canary secret."""
    text = (demo_dir / "crmctl.yaml").read_text()
    start = text.index("target:\n")
    end = text.index("\nentities:")
    target = f"""target:
  kind: dataverse
  url: {proxy.url}
  auth:
    method: client_secret
    client_id: {oidc.secret_client}
    secret: "${{env:CNRY_CLIENT_SECRET}}"
    authority: {oidc.issuer}
    scope: {oidc.resource}/.default
  limits: {{concurrency: 4, requests_per_5min: 5000, timeout: 30s, retries: 1}}
"""
    text = text[:start] + target + text[end:]
    text = text.replace("sqlite:///world/", f"sqlite:///{demo_dir}/world/")
    notify = ('incidents:\n  notify: {teams_webhook: "${env:CNRY_TEAMS}", webhook: "${env:CNRY_HOOK}"}\n')
    assert "\nincidents:\n" in text
    return text.replace("\nincidents:\n", "\n" + notify, 1)


def _cli(run: Path, env: dict[str, str], name: str, *argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Runs `python -m crmctl ARGV`, keeping stdout and stderr as files of the run (they are scanned)."""
    done = subprocess.run([sys.executable, "-m", "crmctl", *argv], capture_output=True, text=True, env=env,
                          cwd=run, timeout=timeout)
    out = run / "cli"
    out.mkdir(exist_ok=True)
    (out / f"{name}.stdout").write_text(done.stdout)
    (out / f"{name}.stderr").write_text(done.stderr)
    assert "Traceback" not in done.stderr, f"crmctl {name} crashed:\n{done.stderr[-3000:]}"
    return done


def _cli_all(run: Path, env: dict[str, str], commands: dict[str, tuple[str, ...]],
             timeout: float = 600.0) -> dict[str, subprocess.CompletedProcess[str]]:
    """Runs independent `crmctl` commands at the same time (several sessions on one journal, as in
    a war room); each one's output is kept and checked like `_cli`'s."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "crmctl", *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=run)
             for name, argv in commands.items()}
    done = {}
    out = run / "cli"
    out.mkdir(exist_ok=True)
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=timeout)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        (out / f"{name}.stdout").write_text(stdout)
        (out / f"{name}.stderr").write_text(stderr)
    for name, result in done.items():
        assert "Traceback" not in result.stderr, f"crmctl {name} crashed:\n{result.stderr[-3000:]}"
    return done


async def _in_process(config_path: Path, run: Path, env: dict[str, str], proxy_url: str) -> dict[str, Any]:
    """The control room in process: checks, incidents with notifications, runbook, exceptions."""
    from checks.registry import REGISTRY
    from crmctl.config import load_config
    from crmctl.control import ControlRoom
    from crmctl.identity import Actor
    from crmctl.runtime import open_runtime
    from checks.registry import check_kinds

    config = load_config(config_path, env=env, check_kinds=check_kinds())
    figures: dict[str, Any] = {}
    async with ControlRoom.open(config, REGISTRY, actor=Actor("canary-inproc", "test")) as room:
        results = await room.run_checks(ONLY)
        figures["statuses"] = {r.check_id: r.status.name for r in results}
        async with room.notifier.running():
            incident = await room.raise_incident("Canary incident in process", severity="sev1")
            await room.incident_action("ack", incident.number, note="looking")
            try:
                await room.raise_incident_from_check("contact.count", severity="sev2")
            except Exception as exc:  # noqa: BLE001 - refused is fine; the text is scanned
                figures["refusal"] = str(exc)
            assert await room.notifier.flush(60), "notifications did not finish"
        figures["outcomes"] = [(o.channel, o.ok, o.reason) for o in room.notifier.outcomes]
        figures["step refusals"] = []
        for action, step in (("start", "freeze"), ("done", "freeze"), ("start", "delta")):
            try:  # the CLI started freeze already, and its gate is red: refusals are texts to scan too
                await room.step_action(action, step, reason="canary run")
            except Exception as exc:  # noqa: BLE001
                figures["step refusals"].append(str(exc))

    # Exceptions straight from the connectors, as any caller would print or log them.
    written: list[str] = []
    async with open_runtime(config) as runtime:
        for path in ("contacts?$top=1", "opportunities?$top=1", "asyncoperations?$top=1", "accounts(not-a-guid)"):
            try:
                await runtime.dynamics.get_json(path)
            except Exception as exc:  # noqa: BLE001 - every kind is wanted here
                logging.getLogger("crmctl.canary").exception("request %s failed", path)
                written += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        try:
            await runtime.dynamics.whoami()
        except Exception as exc:  # noqa: BLE001
            written += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        written.append(repr(runtime.dynamics) + repr(runtime.targets))

    # An opaque token, with the query log of each failed request.
    from crmctl.connectors.auth import StaticTokenProvider
    from crmctl.connectors.dataverse import DataverseClient
    from crmctl.connectors.limits import TargetLimiter
    from crmctl.connectors.querylog import QueryLog

    api = proxy_url + "/api/data/v9.2/"
    async with DataverseClient(api, StaticTokenProvider(CANARY_OPAQUE_TOKEN), TargetLimiter(2, 1000, 300.0),
                               retries=1) as client:
        for path in ("contacts?$top=1", "opportunities?$top=1", "asyncoperations?$top=1", "WhoAmI"):
            log = QueryLog("dynamics")
            try:
                await client.get_json(path, log=log)
            except Exception as exc:  # noqa: BLE001
                logging.getLogger("crmctl.canary").warning("opaque %s failed: %s", path, exc, exc_info=True)
                written += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
            written.append(json.dumps([record.to_json() for record in log.records]))
    (run / "exceptions.txt").write_text("\n\n".join(written))
    figures["exceptions"] = len(written)
    return figures


def test_no_canary_secret_reaches_any_file(demo_dir: Path, oidc: OidcPeer, pki: Pki, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    from crmctl.emulator.server import Emulator

    run = tmp_path / "run"
    run.mkdir()
    servers = Loop()
    validator = JwtValidator(oidc)
    seen: set[str] = set()

    def validate(token: str) -> bool:
        seen.add(token)
        return token == CANARY_OPAQUE_TOKEN or validator(token)

    emulator = Emulator(demo_dir / "world" / "dataverse.db", token_validator=validate, log_path=run / "emulator.jsonl")
    try:
        servers.run(emulator.start())
        proxy = servers.run(HostileProxy(emulator.url).start())
        teams = servers.run(Webhook(CANARY_TEAMS_PATH, CANARY_TEAMS_SIG, ok=True).start())
        hook = servers.run(Webhook(CANARY_HOOK_PATH, CANARY_HOOK_SIG, ok=False).start())
        config_path = run / "crmctl.yaml"
        config_path.write_text(_config_text(demo_dir, proxy, oidc))
        env = {**os.environ, "CNRY_CLIENT_SECRET": oidc.client_secret, "CNRY_TEAMS": teams.url,
               "CNRY_HOOK": hook.url, "REQUESTS_CA_BUNDLE": str(pki.ca_cert)}
        cfg = ("-c", str(config_path), "--operator", "canary-cli")

        # -- the CLI --------------------------------------------------------------------------
        # One check at a time: the proxy's "401 on every other WhoAmI" needs the requests in order.
        first = _cli_all(run, env, {
            "validate": ("validate", str(config_path)),
            "check": ("check", *cfg, "--only", *ONLY),
        })
        first.update(_cli_all(run, env, {"check-json": ("check", *cfg, "--format", "json", "--only", *ONLY)}))
        assert first["validate"].returncode == 0, first["validate"].stderr
        assert "ERROR" in first["check"].stdout and "OK" in first["check"].stdout, first["check"].stdout
        raised = _cli(run, env, "incident-raise", "incident", "raise", "Canary: contacts failing", "--severity",
                      "sev1", "--check", "contact.count", *cfg)
        assert raised.returncode == 0, raised.stderr
        number = raised.stdout.split()[0]
        _cli_all(run, env, {
            "incident-ack": ("incident", "ack", number, *cfg),
            "step-start": ("step", "start", "freeze", *cfg),
        })
        _cli_all(run, env, {
            "incident-resolve": ("incident", "resolve", number, "--note", "retried", *cfg),
            "step-block": ("step", "block", "delta", "--reason", "waiting on the freeze", *cfg),
        })
        _cli_all(run, env, {
            "incident-show": ("incident", "show", number, "-c", str(config_path)),
            "incident-list": ("incident", "list", "--all", "--format", "json", "-c", str(config_path)),
        })

        # -- in process, logging at DEBUG to a file ----------------------------------------
        handler = logging.FileHandler(run / "debug.log", encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        saved = {k: os.environ.get(k) for k in ("CNRY_CLIENT_SECRET", "CNRY_TEAMS", "CNRY_HOOK", "REQUESTS_CA_BUNDLE")}
        os.environ.update({k: env[k] for k in saved})
        try:
            figures = asyncio.run(_in_process(config_path, run, env, proxy.url))
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
            handler.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        assert figures["exceptions"] >= 10
        assert any(ok for _, ok, _ in figures["outcomes"]) and any(not ok for _, ok, _ in figures["outcomes"])

        # -- the journal and the evidence pack (screenshots of every screen included) -------------
        last = _cli_all(run, env, {
            "verify": ("verify", "-c", str(config_path)),
            "evidence-export": ("evidence", "export", "--out", str(run / "pack"), *cfg),
        })
        assert last["verify"].returncode == 0, last["verify"].stdout + last["verify"].stderr
        assert last["evidence-export"].returncode == 0, last["evidence-export"].stderr[-3000:]
        assert _cli(run, env, "evidence-verify", "evidence", "verify", str(run / "pack")).returncode == 0
    finally:
        for server in ("hook", "teams", "proxy"):
            if server in locals():
                servers.run(locals()[server].stop())
        servers.run(emulator.stop())
        servers.close()

    # The run really met every fault and really used every secret.
    assert set(proxy.faults) == {"401 echo", "500 echo", "429 echo", "malformed JSON echo"}, proxy.faults
    assert teams.received >= 2 and hook.received >= 2, (teams.received, hook.received)
    assert validator.accepted and validator.refused == 0
    tokens = (seen | proxy.tokens) - {"", CANARY_OPAQUE_TOKEN}
    assert tokens and all(t.startswith("eyJ") for t in tokens)
    assert CANARY_OPAQUE_TOKEN in proxy.tokens
    from screens.app import SCREENS

    shots = sorted(p.stem for p in (run / "pack").rglob("*.svg"))
    assert len(shots) >= len(SCREENS), f"screenshots of every screen expected, got {shots}"

    # -- permissions ---------------------------------------------------------------------------
    state = run / ".crmctl" / "state.db"
    cache = run / ".crmctl" / "msal_cache.json"
    pack_journal = run / "pack" / "journal" / "state.db"
    for path, mode in ((state, 0o600), (cache, 0o600), (state.parent, 0o700), (run / "pack", 0o700),
                       (pack_journal, 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, f"{path.name} is {oct(stat.S_IMODE(path.stat().st_mode))}"
    cache_text = cache.read_text()
    assert all(form.decode() not in cache_text for form in forms(CANARY_PEER_CLIENT_SECRET)), \
        "the token cache holds the client secret"

    # -- the scan --------------------------------------------------------------------------------
    canaries = {
        "client secret": oidc.client_secret,
        "opaque bearer token": CANARY_OPAQUE_TOKEN,
        "teams webhook URL": teams.url,
        "teams webhook path": CANARY_TEAMS_PATH,
        "teams webhook signature": CANARY_TEAMS_SIG,
        "webhook URL": hook.url,
        "webhook path": CANARY_HOOK_PATH,
        "webhook signature": CANARY_HOOK_SIG,
    }
    for i, token in enumerate(sorted(tokens)):
        canaries[f"bearer token {i + 1}"] = token
        canaries[f"bearer token {i + 1} signature"] = token.rsplit(".", 1)[-1]
    scanner = Scanner(canaries)
    report = scanner.scan_tree([run], skip=[cache])
    # Positive control: the one file allowed to hold tokens does hold them, and the scanner sees it.
    assert any(what.startswith("bearer token") for what in scanner.scan_file(cache)[1])
    assert report.files >= 20 and report.bytes > 100_000, (report.files, report.bytes)
    shown = [f"{hit.what} in {hit.path.relative_to(run)}" for hit in report.hits]
    form_count = len(scanner.patterns)
    record_figure(request.config, "secrets canary run",
                  f"{len(canaries)} canaries ({len(tokens)} bearer tokens) in {form_count} forms; "
                  f"{report.files} files, {report.bytes:,} bytes scanned; faults {proxy.faults}")
    assert not shown, "canary secrets leaked:\n" + "\n".join(shown)


def test_a_certificate_passphrase_or_client_secret_quoted_by_the_provider_is_scrubbed() -> None:
    """An identity provider's error may quote what it was sent; the provider's secrets never show."""
    from crmctl.connectors.auth import MsalTokenProvider
    from crmctl.connectors.errors import AuthError

    passphrase, secret = "cnry-pfx-passphrase-71ad", "cnry-client-secret-2b9e"
    MsalTokenProvider("certificate", "t", "c", authority="https://login.example/t", scope="s/.default",
                      certificate={"private_key_pfx_path": "/nonexistent.pfx", "passphrase": passphrase})
    MsalTokenProvider("client_secret", "t", "c", authority="https://login.example/t", scope="s/.default",
                      secret_value=secret)
    error = AuthError(400, "invalid_client", f"bad passphrase {passphrase} or secret {secret}")
    for text in (str(error), repr(error), error.message, "".join(traceback.format_exception(error))):
        assert not any(form.decode() in text for value in (passphrase, secret) for form in forms(value)), text
