"""The rehearsal Dataverse Web API: a real aiohttp server on 127.0.0.1 backed by the SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Callable, Mapping

from aiohttp import web

from crmctl.clock import Clock, SystemClock
from crmctl.emulator import metadata as md
from crmctl.emulator.apply import parse_apply
from crmctl.emulator.drift import DriftEvent, apply_drift
from crmctl.emulator.errors import (
    CODE_CONCURRENCY,
    CODE_EXECUTION,
    CODE_INVALID_ARGUMENT,
    CODE_NONE,
    CODE_NOT_FOUND,
    CODE_REQUESTS,
    CODE_SYNTAX,
    ApiError,
    no_resource,
    syntax,
    unknown_property,
    unknown_segment,
)
from crmctl.emulator.fetchxml import parse_fetch, parse_fetch_entity_name
from crmctl.emulator.odata_filter import SqlExpr, compile_filter
from crmctl.emulator.paging import (
    MAX_PAGE_SIZE,
    OrderKey,
    decode_skiptoken,
    encode_skiptoken,
)
from crmctl.emulator.prefer import Preferences, parse_prefer
from crmctl.emulator.queries import (
    Database,
    ListQuery,
    exact_count,
    get_one,
    run_apply,
    run_count,
    run_fetch,
    run_list,
)
from crmctl.emulator.scenario import Decision, FaultInjector, Scenario, load_scenario
from crmctl.emulator.audit import AuditTrail
from crmctl.emulator.storage import (
    Attribute,
    EmulatorData,
    EntityDef,
    connect,
    load_entities,
    load_snapshots,
)
from crmctl.emulator.throttle import Throttle, ThrottleLimits, throttle_message
from crmctl.model import iso

log = logging.getLogger(__name__)

API_VERSION = "v9.2"
COUNT_CAP = 5000
"""`$count=true` and `/$count` never report more than this (dataverse.md §4)."""
AGGREGATE_LIMIT = 50_000
MAX_URL_LENGTH = 32_768
TENANT_ID = "00000000-0000-4000-8000-00000000c0de"
"""The fake tenant named in 401 `WWW-Authenticate` headers."""

_JSON = "application/json; odata.metadata=minimal"
_PATH_RE = re.compile(r"^/api/data/v9\.[0-2]/(.*)$", re.DOTALL)
_SET_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\(([^)]*)\))?(?:/(.*))?$", re.DOTALL)
_ORDER_RE = re.compile(r"^\s*([A-Za-z_]\w*)(?:\s+(asc|desc))?\s*$")
_ENTITYDEF_RE = re.compile(
    r"^EntityDefinitions(?:\(LogicalName='([^']*)'\))?(?:/(Attributes|ManyToOneRelationships))?$"
)
_GUID_RE = re.compile(
    r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$"
)
_FUNCTIONS = ("WhoAmI", "RetrieveTotalRecordCount", "RetrieveCurrentOrganization")
_SYSTEM_OPTIONS = {
    "$select",
    "$filter",
    "$orderby",
    "$top",
    "$count",
    "$skip",
    "$skiptoken",
    "$apply",
    "$expand",
    "$format",
    "$search",
    "$deltatoken",
}
_TOTAL = "Microsoft.Dynamics.CRM.totalrecordcount"
_EXCEEDED = "Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"
_GLOBAL_MD = "Microsoft.Dynamics.CRM.globalmetadataversion"
_FORMATTED = "OData.Community.Display.V1.FormattedValue"
_MORE = "Microsoft.Dynamics.CRM.morerecords"
_LOOKUP_ANNOTATIONS = (
    "Microsoft.Dynamics.CRM.lookuplogicalname",
    "Microsoft.Dynamics.CRM.associatednavigationproperty",
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it: the evidence behind "crmctl honoured Retry-After".

    `retry_after_until` is set when a Retry-After given to this client was still running when
    the request arrived; `early` says so. `retry_after` is the value this response carried.
    """

    seq: int
    ts: datetime
    method: str
    path: str
    status: int | None
    duration_ms: float
    client: str
    retry_after: int | None = None
    retry_after_until: datetime | None = None
    early: bool = False
    faults: tuple[str, ...] = ()
    error_code: str | None = None

    @property
    def mutating(self) -> bool:
        """True for any method other than GET: crmctl must never send one."""
        return self.method != "GET"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": iso(self.ts),
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "client": self.client,
            "retry_after": self.retry_after,
            "retry_after_until": iso(self.retry_after_until) if self.retry_after_until else None,
            "early": self.early,
            "faults": list(self.faults),
            "error_code": self.error_code,
        }


class _Ctx:
    """Per-request bookkeeping filled in while the request is processed."""

    __slots__ = ("faults", "error_code", "client")

    def __init__(self, client: str) -> None:
        self.client = client
        self.faults: list[str] = []
        self.error_code: str | None = None


class _Dropped(Exception):
    """The connection was deliberately reset; there is no response to send."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _client_label(token: str | None) -> str:
    if not token:
        return "anonymous"
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:10]


def _parse_string_list(text: str) -> list[str] | None:
    """Reads `["account","contact"]` or `['account']` (both forms appear in public code)."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1].strip()
    if not inner:
        return []
    out: list[str] = []
    for part in inner.split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == part[-1] and part[0] in "'\"":
            out.append(part[1:-1])
        else:
            return None
    return out


class Emulator:
    """A local Dataverse Web API for rehearsals, with scenario-driven faults.

    It keeps the documented caps, paging, error shapes and service protection limits so that
    crmctl meets them before cutover night. Read-only: other methods are answered and logged.

    `workers` SQL threads serve requests at once (Dataverse serves up to 52 per user). Fewer
    than the client's concurrent requests would queue them inside the emulator, a wait no real
    server adds: the default matches the demo's 8 connections (a sweep at 200 ms latency: median
    1.27x its ideal bound with 2 workers, 1.20x with 4, 1.18x with 8; docs/benchmarks.md).
    """

    def __init__(
        self,
        data_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        limits: ThrottleLimits = ThrottleLimits(),
        scenario: Scenario | str | Path | None = None,
        clock: Clock | None = None,
        log_path: str | Path | None = None,
        aggregate_limit: int = AGGREGATE_LIMIT,
        workers: int = 8,
        token_validator: Callable[[str], bool] | None = None,
    ) -> None:
        path = Path(data_path)
        self.data_path = path / "dataverse.db" if path.is_dir() else path
        self.host = host
        self.port = port
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self.aggregate_limit = aggregate_limit
        self.log_path = Path(log_path) if log_path else None
        self.request_log: list[RequestRecord] = []
        self.drift_log: list[DriftEvent] = []
        self._workers = workers
        self._token = token or secrets.token_urlsafe(32)
        self._tokens: dict[str, datetime] = {}
        self._token_validator = token_validator
        """Also accepts bearer tokens this callable approves (e.g. a JWT from a real OIDC provider,
        checked against its keys), so MSAL's tokens can be carried end to end; it runs on every
        request, so an expired token is refused the moment the validator says so."""
        self._throttle = Throttle(limits)
        self._scenario: Scenario | None = (
            load_scenario(scenario) if isinstance(scenario, (str, Path)) else scenario
        )
        self._injector: FaultInjector | None = None
        self._epoch: datetime = self.clock.now()
        self._drift_rounds: dict[int, int] = {}
        self._drift_task: asyncio.Task[None] | None = None
        self._drift_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._db: Database | None = None
        self._meta: md.MetadataIndex | None = None
        self._entities: dict[str, EntityDef] = {}
        self._by_set: dict[str, EntityDef] = {}
        self._initial_counts: dict[str, int] = {}
        self._log_file: IO[str] | None = None
        self._audit = AuditTrail("")  # opened by start(): see crmctl/emulator/audit.py
        self._seq = 0
        self._url = ""
        self._ids = {
            "UserId": md.metadata_id("whoami", "user"),
            "BusinessUnitId": md.metadata_id("whoami", "businessunit"),
            "OrganizationId": md.metadata_id("whoami", "organization"),
        }

    # --- public API ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, known once started."""
        return self._url

    @property
    def api_url(self) -> str:
        """`{url}/api/data/v9.2/`: what a Dataverse client is configured with."""
        return f"{self._url}/api/data/{API_VERSION}/"

    @property
    def token(self) -> str:
        """The bearer token requests must carry (the newest one issued)."""
        return self._token

    @property
    def scenario(self) -> Scenario | None:
        return self._scenario

    @property
    def entities(self) -> list[EntityDef]:
        return [self._entities[k] for k in sorted(self._entities)]

    def issue_token(self) -> str:
        """Issues a fresh token (e.g. after a scenario expired the old one) and returns it."""
        self._token = secrets.token_urlsafe(32)
        self._tokens[self._token] = self.clock.now()
        self._audit.token(self._token)
        return self._token

    def set_scenario(self, scenario: Scenario | str | Path | None) -> None:
        """Switches fault scenario live; its times count from this moment."""
        loaded = load_scenario(scenario) if isinstance(scenario, (str, Path)) else scenario
        if loaded is not None and self._entities:
            self._check_drift_entities(loaded)
        self._scenario = loaded
        self._injector = FaultInjector(loaded) if loaded else None
        self._epoch = self.clock.now()
        self._drift_rounds = {}

    async def start(self) -> str:
        """Opens the data file, binds the socket and returns the base URL."""
        if self._runner is not None:
            return self._url
        entities, self._initial_counts = await asyncio.to_thread(self._open_data)
        self._entities = {e.logical_name: e for e in entities}
        self._by_set = {e.entity_set: e for e in entities}
        self._meta = md.MetadataIndex(entities)
        self._db = Database(self.data_path, workers=self._workers)
        if self._scenario is not None:
            self._check_drift_entities(self._scenario)
        self._tokens[self._token] = self.clock.now()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("a", encoding="utf-8")

        app = web.Application(client_max_size=1024**2)
        app.router.add_route("*", "/{tail:.*}", self._entry)
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=0.5,
            access_log=None,
            max_line_size=70_000,
            max_field_size=70_000,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        bound = int(runner.addresses[0][1])  # the real port when 0 (ephemeral) was asked
        self.port = bound
        self._url = f"http://{self.host}:{bound}"
        self._audit = AuditTrail()
        self._audit.started(self._url)
        for issued in self._tokens:
            self._audit.token(issued)
        self.set_scenario(self._scenario)
        self._drift_task = asyncio.create_task(self._drift_loop(), name="emulator-drift")
        return self._url

    async def stop(self) -> None:
        """Stops serving, cancels hanging requests and closes the database."""
        if self._drift_task is not None:
            self._drift_task.cancel()
            try:
                await self._drift_task
            except asyncio.CancelledError:
                pass
            self._drift_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._audit.close()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def apply_due_drift(self) -> list[DriftEvent]:
        """Applies every drift round that is due by the emulator clock; returns what changed."""
        async with self._drift_lock:
            scenario = self._scenario
            if scenario is None or self._db is None:
                return []
            elapsed = self._elapsed()
            events: list[DriftEvent] = []
            for fault in scenario.of_kind("drift"):
                start = fault.window.start_s
                if elapsed < start:
                    continue
                due = int((elapsed - start) // fault.interval_s)
                if fault.window.end_s is not None:
                    last = int((fault.window.end_s - start - 1e-9) // fault.interval_s)
                    due = min(due, last)
                done = self._drift_rounds.get(fault.index, 0)
                entity = self._entities[fault.entity]
                for round_no in range(done + 1, due + 1):
                    event = await self._db.write(
                        apply_drift, entity, fault, scenario.seed, round_no, self.clock.now()
                    )
                    events.append(event)
                    self.drift_log.append(event)
                self._drift_rounds[fault.index] = max(done, due)
            return events

    # --- internals -----------------------------------------------------------------------
    def _open_data(self) -> tuple[list[EntityDef], dict[str, int]]:
        """Creates the file (or adds the built-in tables to an older one) and reads its schema.

        The row counts taken here are the RetrieveTotalRecordCount answer for entities without
        an explicit snapshot: frozen at start, so they go stale as drift changes the data.
        """
        EmulatorData(self.data_path).close()
        conn = connect(self.data_path)
        try:
            entities = load_entities(conn)
            return entities, {e.logical_name: exact_count(conn, e) for e in entities}
        finally:
            conn.close()

    def _check_drift_entities(self, scenario: Scenario) -> None:
        for fault in scenario.of_kind("drift"):
            if fault.entity not in self._entities:
                raise ValueError(
                    f"{scenario.source}: faults[{fault.index}] drifts entity {fault.entity!r}, "
                    f"which the data file does not define; known: {sorted(self._entities)}"
                )

    def _elapsed(self, at: datetime | None = None) -> float:
        return ((at or self.clock.now()) - self._epoch).total_seconds()

    async def _drift_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                await self.apply_due_drift()
            except asyncio.CancelledError:
                raise
            except Exception:  # a drift failure must not kill the server; it is logged
                log.exception("drift round failed")

    def _record(self, rec: RequestRecord) -> None:
        self.request_log.append(rec)
        if self._log_file is not None:
            self._log_file.write(_dumps(rec.to_json()) + "\n")
            self._log_file.flush()

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        """Every request passes here: it is timed, checked against Retry-After, and logged."""
        t0 = time.perf_counter()
        arrival = self.clock.now()
        token = self._bearer(request)
        client = _client_label(token)
        ctx = _Ctx(client)
        given = self._throttle.retry_after(client)
        in_force = given if given is not None and given.issued <= arrival < given.until else None
        status: int | None = None
        retry_after: int | None = None
        try:
            response = await self._process(request, ctx, token)
            status = response.status
            ra = response.headers.get("Retry-After")
            retry_after = int(ra) if ra and ra.isdigit() else None
            return response
        except _Dropped:
            raise web.HTTPException() from None  # never sent: the transport is gone
        finally:
            self._seq += 1
            self._record(
                RequestRecord(
                    seq=self._seq,
                    ts=arrival,
                    method=request.method,
                    path=request.path_qs,
                    status=status,
                    duration_ms=(time.perf_counter() - t0) * 1000.0,
                    client=client,
                    retry_after=retry_after,
                    retry_after_until=in_force.until if in_force else None,
                    early=in_force is not None,
                    faults=tuple(ctx.faults),
                    error_code=ctx.error_code,
                )
            )
            self._audit.request(request.method, request.path, status, request.headers.get("User-Agent", ""))

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        rid = str(uuid.uuid4())
        headers = {"OData-Version": "4.0", "REQ_ID": rid, "x-ms-service-request-id": rid}
        if extra:
            headers.update(extra)
        return headers

    def _json(
        self,
        status: int,
        body: Mapping[str, Any] | str,
        headers: Mapping[str, str] | None = None,
        *,
        malformed: bool = False,
    ) -> web.Response:
        text = body if isinstance(body, str) else _dumps(body)
        data = text.encode("utf-8")
        if malformed:
            data = data[: max(1, len(data) // 2)]
        h = self._headers(headers)
        h["Content-Type"] = _JSON
        return web.Response(status=status, body=data, headers=h)

    def _error(self, err: ApiError, ctx: _Ctx) -> web.Response:
        ctx.error_code = err.code or None
        return self._json(err.status, err.body(), err.headers)

    def _reset(self, request: web.Request) -> None:
        """Drops the TCP connection with a RST, as a flaky network or load balancer would."""
        abort_with_rst(request)
        raise _Dropped()

    def _unauthorized(self, name: str, description: str | None, ctx: _Ctx) -> web.Response:
        challenge = (
            f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT_ID}"
            f"/oauth2/authorize, resource_id={self._url}/"
        )
        if description:
            challenge = (
                f'Bearer error="invalid_token", error_description="{description}", '
                + challenge[len("Bearer ") :]
            )
        ctx.error_code = name
        return self._json(
            401,
            {"error": {"code": CODE_NONE, "message": name}},
            {"WWW-Authenticate": challenge},
        )

    def _authenticate(self, token: str | None, ctx: _Ctx) -> web.Response | None:
        if token is None:
            return self._unauthorized("MissingCrmAuthenticationToken", None, ctx)
        issued = self._tokens.get(token)
        if issued is None and self._token_validator is not None and self._token_validator(token):
            return None
        if issued is None:
            return self._unauthorized("InvalidAuthTicket", "The access token is invalid.", ctx)
        if self._injector is not None and self._injector.token_expired(
            self._elapsed(issued), self._elapsed()
        ):
            return self._unauthorized("ExpiredAuthTicket", "The access token has expired.", ctx)
        return None

    async def _process(
        self, request: web.Request, ctx: _Ctx, token: str | None
    ) -> web.StreamResponse:
        decision = (
            self._injector.decide(request.method, request.path_qs, self._elapsed())
            if self._injector is not None
            else Decision()
        )
        ctx.faults = decision.labels()
        if decision.outage_status is not None:
            return self._error(
                ApiError(
                    decision.outage_status, CODE_NONE, "The service is temporarily unavailable."
                ),
                ctx,
            )
        if decision.reset:
            self._reset(request)
        if decision.hang_s is not None:
            await asyncio.sleep(decision.hang_s)
            self._reset(request)
        denied = self._authenticate(token, ctx)
        if denied is not None:
            return denied
        client = ctx.client
        now = self.clock.now()
        refusal = self._throttle.in_force(client, now)
        if refusal is None and decision.throttle is not None:
            code = {
                "requests": CODE_REQUESTS,
                "execution": CODE_EXECUTION,
                "concurrency": CODE_CONCURRENCY,
            }[decision.throttle.limit]
            refusal = self._throttle.impose(
                client,
                now,
                decision.throttle.retry_after_s,
                code,
                throttle_message(self.limits, code),
            )
        elif refusal is not None and "throttle" in ctx.faults:
            ctx.faults.remove("throttle")  # refused for an earlier Retry-After, not this storm
        if refusal is None:
            refusal = self._throttle.admit(client, now)
            if refusal is None:
                return await self._admitted(request, ctx, decision, client)
        return self._error(refusal, ctx)

    async def _admitted(
        self, request: web.Request, ctx: _Ctx, decision: Decision, client: str
    ) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            if decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            if decision.error is not None:
                f = decision.error
                return self._error(
                    ApiError(
                        f.status,
                        f.code,
                        f.message or f"Injected HTTP {f.status} from the rehearsal scenario.",
                    ),
                    ctx,
                )
            try:
                response = await self._route(request, ctx, decision.malformed)
            except ApiError as err:
                response = self._error(err, ctx)
            left, exec_left = self._throttle.remaining(client, self.clock.now())
            response.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] = str(left)
            response.headers["x-ms-ratelimit-time-remaining-xrm-requests"] = (
                f"{exec_left / 1000.0:,.2f}"
            )
            return response
        finally:
            self._throttle.finish(client, self.clock.now(), (time.perf_counter() - t0) * 1000.0)

    # --- routing -------------------------------------------------------------------------
    def _check_headers(self, request: web.Request, resource: str) -> None:
        version = request.headers.get("OData-Version")
        if version is not None and version.strip() not in ("4.0", "4.01"):
            raise ApiError(
                400,
                CODE_SYNTAX,
                f"The OData-Version header value '{version}' is not supported; use 4.0.",
            )
        max_version = request.headers.get("OData-MaxVersion")
        if max_version is not None:
            try:
                too_low = float(max_version.strip()) < 4.0
            except ValueError:
                too_low = True
            if too_low:
                raise ApiError(
                    400,
                    CODE_SYNTAX,
                    f"The OData-MaxVersion header value '{max_version}' is too low; use 4.0.",
                )
        accept = request.headers.get("Accept")
        if not accept:
            return
        allowed = {"*/*", "application/*", "application/json"}
        if resource.endswith("$count"):
            allowed |= {"text/plain", "text/*"}
        if resource == "$metadata":
            allowed |= {"application/xml", "text/xml"}
        ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        if not ranges & allowed:
            raise ApiError(
                406,
                CODE_NONE,
                f"The requested media type '{accept}' is not supported; the Web API only "
                "returns application/json.",
            )

    def _options(self, request: web.Request) -> dict[str, str]:
        opts: dict[str, str] = {}
        for key, value in request.rel_url.query.items():
            if key in opts:
                raise syntax(
                    f"Query option '{key}' was specified more than once, but it must be "
                    "specified at most once."
                )
            if key.startswith("$") and key not in _SYSTEM_OPTIONS:
                raise syntax(f"The query parameter '{key}' is not supported.")
            opts[key] = value
        return opts

    async def _route(self, request: web.Request, ctx: _Ctx, malformed: bool) -> web.StreamResponse:
        if len(str(request.rel_url)) > MAX_URL_LENGTH:
            raise ApiError(414, CODE_NONE, "The request URL is longer than 32,768 characters.")
        m = _PATH_RE.match(request.path)
        if not m:
            raise no_resource(f"{self._url}{request.path}")
        resource = m.group(1)
        if request.method != "GET":
            head = resource.split("(")[0].split("/")[0]
            if head in _FUNCTIONS:
                raise no_resource(f"{self.api_url}{resource}")
            raise ApiError(
                405,
                CODE_NONE,
                f"The requested resource does not support http method '{request.method}'.",
                {"Allow": "GET"},
            )
        self._check_headers(request, resource)
        opts = self._options(request)
        prefs = parse_prefer(request.headers.getall("Prefer", []))
        if resource == "":
            return self._json(
                200, md.service_document(self.api_url, self.entities), malformed=malformed
            )
        if resource == "$metadata":
            h = self._headers({"Content-Type": "application/xml"})
            return web.Response(status=200, text=md.csdl(self.entities), headers=h)
        if resource in ("WhoAmI", "WhoAmI()"):
            return self._json(200, md.whoami(self.api_url, self._ids), malformed=malformed)
        if resource.startswith("RetrieveTotalRecordCount"):
            return await self._total_record_count(request, resource, malformed)
        if resource.startswith("EntityDefinitions"):
            return self._entity_definitions(resource, opts, malformed)
        return await self._entity_set(request, resource, opts, prefs, malformed)

    # --- functions and metadata ----------------------------------------------------------
    async def _total_record_count(
        self, request: web.Request, resource: str, malformed: bool
    ) -> web.Response:
        m = re.match(r"^RetrieveTotalRecordCount\(EntityNames=(.*)\)$", resource, re.DOTALL)
        if not m:
            raise ApiError(
                400,
                CODE_INVALID_ARGUMENT,
                "RetrieveTotalRecordCount needs EntityNames, e.g. "
                'RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account"].',
            )
        arg = m.group(1).strip()
        if arg.startswith("@"):
            value = request.rel_url.query.get(arg)
            if value is None:
                raise ApiError(
                    400, CODE_INVALID_ARGUMENT, f"The parameter alias '{arg}' has no value."
                )
            arg = value
        names = _parse_string_list(arg)
        if names is None:
            raise ApiError(
                400,
                CODE_INVALID_ARGUMENT,
                f'EntityNames must be a collection of strings such as ["account"]; got {arg}.',
            )
        for name in names:
            if name not in self._entities:
                raise ApiError(
                    400,
                    CODE_NOT_FOUND,
                    f"The entity with a name = '{name}' with namemapping = 'Logical' was not "
                    "found in the MetadataCache.",
                )
        assert self._db is not None
        snapshots = await self._db.read(load_snapshots)
        values = [
            snapshots[n][0] if n in snapshots else self._initial_counts.get(n, 0) for n in names
        ]
        body = {
            "@odata.context": f"{self.api_url}$metadata#Microsoft.Dynamics.CRM."
            "RetrieveTotalRecordCountResponse",
            "EntityRecordCountCollection": {
                "Count": len(names),
                "IsReadOnly": False,
                "Keys": names,
                "Values": values,
            },
        }
        return self._json(200, body, malformed=malformed)

    def _entity_definitions(
        self, resource: str, opts: dict[str, str], malformed: bool
    ) -> web.Response:
        assert self._meta is not None
        m = _ENTITYDEF_RE.match(resource)
        if not m:
            raise unknown_segment(resource.split("/")[-1])
        logical, nav = m.group(1), m.group(2)
        select = opts.get("$select")
        base = f"{self.api_url}$metadata#EntityDefinitions"
        if logical is None:
            if nav:
                raise unknown_segment(nav)
            rows = self._meta.query(select, opts.get("$filter"))
            sel = f"({select})" if select else ""
            return self._json(
                200, {"@odata.context": f"{base}{sel}", "value": rows}, malformed=malformed
            )
        if nav == "Attributes":
            rows = self._meta.attributes(logical, select)
            ctx = f"{base}('{logical}')/Attributes"
            return self._json(200, {"@odata.context": ctx, "value": rows}, malformed=malformed)
        if nav == "ManyToOneRelationships":
            rows = self._meta.many_to_one(logical, select)
            ctx = f"{base}('{logical}')/ManyToOneRelationships"
            return self._json(200, {"@odata.context": ctx, "value": rows}, malformed=malformed)
        obj: dict[str, Any] = {"@odata.context": f"{base}({select or ''})/$entity"}
        obj.update(self._meta.one(logical, select))
        expand = opts.get("$expand")
        if expand:
            em = re.match(r"^ManyToOneRelationships(?:\(\$select=([^)]*)\))?$", expand.strip())
            if not em:
                raise syntax(f"The $expand '{expand}' is not supported by the crmctl emulator.")
            obj["ManyToOneRelationships"] = self._meta.many_to_one(logical, em.group(1))
        return self._json(200, obj, malformed=malformed)

    # --- entity sets ---------------------------------------------------------------------
    def _select(self, entity: EntityDef, text: str | None) -> tuple[list[Attribute], str]:
        """Output columns (primary key always included, as Dataverse does) and context suffix."""
        pk = entity.attribute(entity.primary_id)
        assert pk is not None
        if text is None:
            return list(entity.attributes), ""
        names = [n.strip() for n in text.split(",")]
        chosen: list[Attribute] = []
        for name in names:
            if not name:
                raise syntax(f"Syntax error in $select '{text}': empty property name.")
            attr = entity.attribute(name)
            if attr is None:
                raise unknown_property(name, f"Microsoft.Dynamics.CRM.{entity.logical_name}")
            if attr not in chosen:
                chosen.append(attr)
        suffix = f"({','.join(a.column for a in chosen)})"
        if pk not in chosen:
            chosen.append(pk)
        return chosen, suffix

    def _orderby(self, entity: EntityDef, text: str | None) -> list[OrderKey]:
        keys: list[OrderKey] = []
        if text:
            for part in text.split(","):
                m = _ORDER_RE.match(part)
                if not m:
                    raise syntax(f"Syntax error in $orderby '{text}' near '{part.strip()}'.")
                attr = entity.attribute(m.group(1))
                if attr is None:
                    raise unknown_property(
                        m.group(1), f"Microsoft.Dynamics.CRM.{entity.logical_name}"
                    )
                keys.append(OrderKey(attr, m.group(2) == "desc"))
        pk = entity.attribute(entity.primary_id)
        assert pk is not None
        if not any(k.attr == pk for k in keys):
            keys.append(OrderKey(pk))
        return keys

    @staticmethod
    def _top(opts: dict[str, str]) -> int | None:
        raw = opts.get("$top")
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise syntax(
                f"Invalid value '{raw}' for $top query option found. The $top query option "
                "requires a non-negative integer value."
            )
        return int(raw)

    @staticmethod
    def _count_option(opts: dict[str, str]) -> bool:
        raw = opts.get("$count")
        if raw is None:
            return False
        if raw not in ("true", "false"):
            raise syntax(f"'{raw}' is not a valid count option.")
        return raw == "true"

    async def _entity_set(
        self,
        request: web.Request,
        resource: str,
        opts: dict[str, str],
        prefs: Preferences,
        malformed: bool,
    ) -> web.Response:
        m = _SET_RE.match(resource)
        if not m:
            raise unknown_segment(resource.split("/")[0].split("(")[0] or resource)
        name, key, rest = m.group(1), m.group(2), m.group(3)
        entity = self._by_set.get(name)
        if entity is None:
            raise unknown_segment(name)
        if "$skip" in opts:
            raise syntax("The query parameter $skip is not supported")
        if "$expand" in opts:
            raise syntax("The query option $expand is not supported by the crmctl emulator.")
        if key is not None:
            if rest:
                raise unknown_segment(rest.split("/")[0])
            return await self._single(entity, key, opts, malformed)
        if rest == "$count":
            return await self._count_text(entity, opts)
        if rest:
            raise unknown_segment(rest.split("/")[0])
        if "fetchXml" in opts:
            return await self._fetch(entity, opts, prefs, malformed)
        where = compile_filter(opts["$filter"], entity) if "$filter" in opts else None
        if "$apply" in opts:
            return await self._apply(entity, where, opts, prefs, malformed)
        return await self._list(request, entity, where, opts, prefs, malformed)

    async def _single(
        self, entity: EntityDef, key: str, opts: dict[str, str], malformed: bool
    ) -> web.Response:
        if not _GUID_RE.match(key.strip()):
            raise syntax(
                f"Alternate keys and non-guid keys ('{key}') are not supported by the crmctl "
                "emulator."
            )
        guid = key.strip().strip("{}").lower()
        columns, suffix = self._select(entity, opts.get("$select"))
        assert self._db is not None
        row = await self._db.read(get_one, entity, columns, guid)
        if row is None:
            raise ApiError(
                404,
                CODE_NOT_FOUND,
                f"Entity '{entity.logical_name}' With Id = {guid} Does Not Exist",
            )
        context = _dumps(f"{self.api_url}$metadata#{entity.entity_set}{suffix}/$entity")
        body = '{"@odata.context":' + context + "," + row[1:]
        return self._json(200, body, malformed=malformed)

    async def _count_text(self, entity: EntityDef, opts: dict[str, str]) -> web.Response:
        where = compile_filter(opts["$filter"], entity) if "$filter" in opts else None
        assert self._db is not None
        n = await self._db.read(run_count, entity, where, COUNT_CAP)
        h = self._headers({"Content-Type": "text/plain"})
        return web.Response(status=200, body=str(min(n, COUNT_CAP)).encode(), headers=h)

    async def _list(
        self,
        request: web.Request,
        entity: EntityDef,
        where: SqlExpr | None,
        opts: dict[str, str],
        prefs: Preferences,
        malformed: bool,
    ) -> web.Response:
        columns, suffix = self._select(entity, opts.get("$select"))
        keys = self._orderby(entity, opts.get("$orderby"))
        want_count = self._count_option(opts)
        top = self._top(opts)
        page_no, last = 1, None
        if "$skiptoken" in opts:
            cursor = decode_skiptoken(opts["$skiptoken"], keys)
            page_no, last = cursor.page, cursor.last
        top_limited = False
        if prefs.max_page_size is not None:
            page_size = prefs.max_page_size  # $top is ignored with maxpagesize (documented)
        else:
            page_size = MAX_PAGE_SIZE
            if top is not None:
                remaining = max(0, top - (page_no - 1) * MAX_PAGE_SIZE)
                if remaining <= page_size:
                    page_size, top_limited = remaining, True
        query = ListQuery(
            entity=entity,
            columns=columns,
            where=where,
            keys=keys,
            after=last,
            limit=page_size,
            lookup_annotations=any(prefs.wants(a) for a in _LOOKUP_ANNOTATIONS),
        )
        raw_query = "&".join(
            p
            for p in request.rel_url.raw_query_string.split("&")
            if p and not p.startswith(("$skiptoken=", "%24skiptoken="))
        )
        link_base = f"{self.api_url}{entity.entity_set}?{raw_query + '&' if raw_query else ''}"
        context = f"{self.api_url}$metadata#{entity.entity_set}{suffix}"

        def work(conn: Any) -> str:
            page = run_list(conn, query) if page_size > 0 else None
            count = run_count(conn, entity, where, COUNT_CAP) if want_count else 0
            parts = ['{"@odata.context":', _dumps(context)]
            if want_count:
                parts.append(f',"@odata.count":{min(count, COUNT_CAP)}')
            if prefs.wants(_TOTAL):
                total = min(count, COUNT_CAP) if want_count else -1
                parts.append(f',"@{_TOTAL}":{total}')
            if prefs.wants(_EXCEEDED):
                exceeded = "true" if want_count and count > COUNT_CAP else "false"
                parts.append(f',"@{_EXCEEDED}":{exceeded}')
            if prefs.wants(_GLOBAL_MD):
                parts.append(f',"@{_GLOBAL_MD}":"{len(self._entities)}"')
            parts.append(',"value":[')
            if page is not None:
                parts.append(page.body)
            parts.append("]")
            if page is not None and page.more and not top_limited:
                token = encode_skiptoken(keys, page_no, page.last, page.first)
                parts.append(',"@odata.nextLink":' + _dumps(link_base + "$skiptoken=" + token))
            parts.append("}")
            return "".join(parts)

        assert self._db is not None
        body = await self._db.read(work)
        applied = prefs.applied()
        return self._json(
            200, body, {"Preference-Applied": applied} if applied else None, malformed=malformed
        )

    def _annotate(
        self, rows: list[dict[str, Any]], prefs: Preferences, aliases: set[str]
    ) -> list[dict[str, Any]]:
        """Adds FormattedValue annotations ("4,101") to integer aggregate values, before each.

        Group keys get none: their real formatted value is a choice label the emulator lacks.
        """
        if not prefs.wants(_FORMATTED):
            return rows
        out = []
        for row in rows:
            new: dict[str, Any] = {}
            for k, v in row.items():
                if k in aliases and isinstance(v, int) and not isinstance(v, bool):
                    new[f"{k}@{_FORMATTED}"] = f"{v:,}"
                new[k] = v
            out.append(new)
        return out

    async def _apply(
        self,
        entity: EntityDef,
        where: SqlExpr | None,
        opts: dict[str, str],
        prefs: Preferences,
        malformed: bool,
    ) -> web.Response:
        plan = parse_apply(opts["$apply"], entity)
        order: list[tuple[str, bool]] = []
        if "$orderby" in opts:
            group_cols = {a.column for a in plan.groupby}
            for part in opts["$orderby"].split(","):
                om = _ORDER_RE.match(part)
                if not om or om.group(1) not in group_cols:
                    raise ApiError(
                        400,
                        CODE_SYNTAX,
                        "The query node SingleValueOpenPropertyAccess is not supported",
                    )
                order.append((om.group(1), om.group(2) == "desc"))
        assert self._db is not None
        rows = await self._db.read(run_apply, entity, where, plan, self.aggregate_limit)
        for col, desc in reversed(order):
            rows.sort(key=lambda r: (r[col] is not None, r[col]), reverse=desc)
        top = self._top(opts)
        if top is not None:
            rows = rows[:top]
        body = {
            "@odata.context": f"{self.api_url}$metadata#{entity.entity_set}",
            "value": self._annotate(rows, prefs, {a.alias for a in plan.aggregates}),
        }
        applied = prefs.applied() if prefs.annotations_raw else None
        return self._json(
            200, body, {"Preference-Applied": applied} if applied else None, malformed=malformed
        )

    async def _fetch(
        self, entity: EntityDef, opts: dict[str, str], prefs: Preferences, malformed: bool
    ) -> web.Response:
        xml = opts["fetchXml"]
        named = parse_fetch_entity_name(xml)
        if named != entity.logical_name:
            raise ApiError(
                400,
                CODE_INVALID_ARGUMENT,
                f"The entity name '{named}' in the FetchXml does not match the entity set "
                f"'{entity.entity_set}' (entity '{entity.logical_name}').",
            )
        plan = parse_fetch(xml, entity)
        assert self._db is not None
        page_size = prefs.max_page_size or MAX_PAGE_SIZE
        rows, more = await self._db.read(run_fetch, entity, plan, self.aggregate_limit, page_size)
        body: dict[str, Any] = {"@odata.context": f"{self.api_url}$metadata#{entity.entity_set}"}
        aliases = {a.alias for a in plan.aggregates}
        body["value"] = self._annotate(rows, prefs, aliases) if plan.aggregate else rows
        if more and prefs.wants(_MORE):
            body[f"@{_MORE}"] = True
        applied = prefs.applied()
        return self._json(
            200, body, {"Preference-Applied": applied} if applied else None, malformed=malformed
        )


def abort_with_rst(request: web.Request) -> None:
    """Closes the request's connection with a TCP RST (linger 0), not an orderly FIN.

    A reset is what a flaky network or load balancer sends: the client sees "connection reset
    by peer" mid-request, the fault crmctl must turn into a retry or an ERROR.
    """
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def serve_forever(
    data_path: str | Path,
    port: int = 0,
    scenario_path: str | Path | None = None,
    token: str | None = None,
    *,
    host: str = "127.0.0.1",
    log_path: str | Path | None = None,
) -> None:
    """Starts the emulator, prints its URL and token, and serves until cancelled.

    `data_path` may be the SQLite file or the folder holding `dataverse.db` (what
    `crmctl demo` writes). Only loopback addresses are accepted: it is a rehearsal tool.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the emulator only listens on loopback, not {host!r}")
    emu = Emulator(
        data_path, host=host, port=port, token=token, scenario=scenario_path, log_path=log_path
    )
    await emu.start()
    try:
        scenario = emu.scenario.name if emu.scenario else "none"
        print(f"crmctl emulator serving {emu.data_path}", flush=True)
        print(f"  url:      {emu.url}", flush=True)
        print(f"  api:      {emu.api_url}", flush=True)
        print(f"  token:    {emu.token}", flush=True)
        print(f"  scenario: {scenario}", flush=True)
        await asyncio.Event().wait()
    finally:
        await emu.stop()


__all__ = ["Emulator", "RequestRecord", "ThrottleLimits", "serve_forever"]
