"""The field tables of every config section, and the readers of the sections that need logic."""

from __future__ import annotations

import re
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from crmctl.config.params import CHECK_EXPECT, read_check
from crmctl.config.reading import (
    FAILED,
    IDENT,
    NOT_SUBSTITUTED,
    Conv,
    Field,
    Reader,
    UrlText,
    calendar_date,
    choice,
    duration,
    env_text,
    integer,
    join,
    number,
    path,
    read_fields,
    secret,
    section,
    seq_of,
    templated,
    text,
    timestamp,
    wrong,
)
from crmctl.config.sections import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_SEVERITIES,
    AuthConfig,
    AutoRaiseRule,
    CertificateConfig,
    DriftTolerance,
    EntityConfig,
    EntitySource,
    EntityTarget,
    HypercareConfig,
    IncidentsConfig,
    IntegrationConfig,
    IntegrationSlo,
    JobsConfig,
    Limits,
    LookupConfig,
    NotifyConfig,
    PfxConfig,
    ProbeConfig,
    RollbackConfig,
    RollbackCriterion,
    RunbookStep,
    SeverityConfig,
    SloConfig,
    SourceConfig,
    TargetConfig,
)
from crmctl.config.values import LOCAL_HOSTS, has_env_syntax, mask_url, split_url, url_password_is_literal
from crmctl.config.yamltree import Map, Node, Scalar

# Building blocks.


def record(cls: type, table: Sequence[Field], expect: str,
           post: Callable[[Reader, Map, str, dict[str, Any]], Any] | None = None) -> Conv:
    """A section that maps one-to-one onto a dataclass (`post` may adjust or veto the values)."""

    def read(reader: Reader, node: Node, where: str) -> Any:
        got = read_fields(reader, node, where, table, expect=expect)
        if got is None:
            return FAILED
        values, _ = got
        if post is not None:
            assert isinstance(node, Map)
            values = post(reader, node, where, values)
            if values is FAILED:
                return FAILED
        return cls(**values)

    return section(read, expect)


def url(*, schemes: tuple[str, ...] = ("https", "http"), https_unless_local: bool = False,
        origin_only: bool = False, example: str = "https://host/path", env: bool = True) -> Conv:
    """An absolute http(s) URL in which `${env:NAME}` is substituted (unless `env` is False);
    returns `UrlText`.

    `https_unless_local` is for anything that receives a bearer token: plain http would hand
    the token to the network, so it is allowed only towards this machine (the emulator).
    """
    expect = f"a URL such as {example}"

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not env and isinstance(node, Scalar) and isinstance(node.value, str) and has_env_syntax(node.value):
            reader.report(node, f"{where}: {NOT_SUBSTITUTED}", f"expected {expect} written out")
            return FAILED
        value = env_text(reader, node, where, conv)
        if value is FAILED:
            return FAILED
        shown = mask_url(value.template)
        try:
            parts = split_url(value.value)
        except ValueError as exc:
            reader.report(node, f"{where}: {shown!r} {exc}", f"expected {expect}")
            return FAILED
        if parts.scheme not in schemes:
            reader.report(node, f"{where}: scheme {parts.scheme!r} is not supported",
                          f"expected {expect}")
            return FAILED
        if https_unless_local and parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
            reader.report(node, f"{where}: plain http is only allowed for localhost",
                          f"expected an https:// URL such as {example}")
            return FAILED
        if url_password_is_literal(parts, value.template):
            reader.report(node, f"{where}: literal secret in config (a password in the URL)", "use ${env:NAME}")
            return FAILED
        if origin_only:
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                reader.report(node, f"{where}: the organization URL must not have a path or query",
                              f"expected just scheme and host, such as {example}")
                return FAILED
            return UrlText(value.value.rstrip("/"), value.template.rstrip("/"), value.env_names)
        return value

    conv = Conv(expect, parse)
    return conv


def raw(expect: str) -> Conv:
    """Hands the node itself back, for sections read later with context (auth needs the org URL)."""
    return Conv(expect, lambda reader, node, where: node)


def peek(node: Node, key: str, options: Sequence[str]) -> str | None:
    """The value of a discriminating key (`kind`, `method`) if it is valid, without reporting."""
    if isinstance(node, Map):
        value = node.get(key)
        if isinstance(value, Scalar) and value.value in options:
            return str(value.value)
    return None


def other_kind_hints(tables: Mapping[str, Sequence[Field]], chosen: str, key: str) -> dict[str, str]:
    """``'auth' is only used with kind: dataverse``-style hints for keys of the other variants."""
    own = {f.key for f in tables[chosen]}
    hints: dict[str, str] = {}
    for variant, table in tables.items():
        for f in table:
            if f.key not in own and f.key not in hints:
                hints[f.key] = f"only used with {key}: {variant}"
    return hints


LIST_OF_NAMES = "a list of column names, such as [name, email]"
ID_LIST = "a list of ids, such as [freeze, delta]"

# Source.

SOURCE_KINDS = ("sql", "odata")
SOURCE_EXAMPLE = "sqlite:///source.db (relative to this file), or https://legacy-crm/odata for kind odata"
_SQL_SCHEME = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9_]+)?")


def _source(reader: Reader, node: Node, where: str) -> Any:
    table = (
        Field("kind", choice(SOURCE_KINDS, "source kind"), required=True),
        Field("url", templated(f"a connection URL such as {SOURCE_EXAMPLE}"), required=True),
    )
    got = read_fields(reader, node, where, table, expect="a mapping with kind and url")
    if got is None:
        return FAILED
    values, _ = got
    kind, value = values["kind"], values["url"]
    assert isinstance(node, Map)
    url_node = node.get("url")
    if not isinstance(value, UrlText) or kind is None or url_node is None:
        return FAILED
    where_url = join(where, "url")
    resolved = _sql_url(reader, url_node, where_url, value) if kind == "sql" else _odata_url(
        reader, url_node, where_url, value)
    if resolved is FAILED:
        return FAILED
    return SourceConfig(kind=kind, url=resolved, url_template=value.template, env_names=value.env_names)


def _sql_url(reader: Reader, node: Node, where: str, value: UrlText) -> Any:
    """SQLite paths are made absolute against the config's folder; other databases pass through.

    ``sqlite:///rel/path.db`` is relative (three slashes, as SQLAlchemy writes it) and
    ``sqlite:////abs/path.db`` absolute; the result is always the absolute form.
    """
    shown = mask_url(value.template)
    if value.value.startswith("sqlite:"):
        if not value.value.startswith("sqlite:///") or len(value.value) == len("sqlite:///"):
            reader.report(node, f"{where}: {shown!r} is not a SQLite URL with a path",
                          "expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
            return FAILED
        rest = value.value[len("sqlite:///"):]
        file_part, sep, query = rest.partition("?")
        if not file_part.strip():
            reader.report(node, f"{where}: {shown!r} has no database file",
                          "expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
            return FAILED
        absolute = reader.resolve(file_part)
        return f"sqlite:///{absolute}{sep}{query}"
    scheme, sep, _ = value.value.partition("://")
    if not sep or not _SQL_SCHEME.fullmatch(scheme):
        reader.report(node, f"{where}: {shown!r} is not a database URL",
                      f"expected a connection URL such as {SOURCE_EXAMPLE}")
        return FAILED
    try:
        parts = split_url(value.value)
    except ValueError as exc:
        reader.report(node, f"{where}: {shown!r} {exc}", f"expected a connection URL such as {SOURCE_EXAMPLE}")
        return FAILED
    if url_password_is_literal(parts, value.template):
        reader.report(node, f"{where}: literal secret in config (a password in the URL)", "use ${env:NAME}")
        return FAILED
    return value.value


def _odata_url(reader: Reader, node: Node, where: str, value: UrlText) -> Any:
    """An OData source is any http(s) service; plain http is fine inside a corporate network."""
    expect = "expected a URL such as https://legacy-crm.contoso.com/odata"
    shown = mask_url(value.template)
    try:
        parts = split_url(value.value)
    except ValueError as exc:
        reader.report(node, f"{where}: {shown!r} {exc}", expect)
        return FAILED
    if parts.scheme not in ("http", "https"):
        reader.report(node, f"{where}: scheme {parts.scheme!r} is not supported", expect)
        return FAILED
    if url_password_is_literal(parts, value.template):
        reader.report(node, f"{where}: literal secret in config (a password in the URL)", "use ${env:NAME}")
        return FAILED
    return value.value


# Target.

LIMITS = record(Limits, (
    Field("concurrency", integer(1, 64), default=Limits.concurrency),
    Field("requests_per_5min", integer(1), default=Limits.requests_per_5min),
    Field("timeout", duration(positive=True), default=Limits.timeout),
    Field("retries", integer(0, 20), default=Limits.retries),
    Field("page_size", integer(1, 5000), default=Limits.page_size),
    Field("deadline", duration(positive=True), default=Limits.deadline),
), "a mapping of request limits")

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
THUMBPRINT_EXPECT = "a SHA-1 thumbprint of 40 hex digits"


def _thumbprint(reader: Reader, node: Node, where: str) -> Any:
    # An all-digit thumbprint is read by YAML as an integer; its text is still the thumbprint.
    if not isinstance(node, Scalar) or isinstance(node.value, bool) or not isinstance(node.value, (str, int)):
        return wrong(reader, node, where, THUMBPRINT)
    cleaned = re.sub(r"[\s:]", "", node.text).upper()
    if not re.fullmatch(r"[0-9A-F]{40}", cleaned):
        reader.report(node, f"{where}: {node.value!r} is not a certificate thumbprint", f"expected {THUMBPRINT_EXPECT}")
        return FAILED
    return cleaned


THUMBPRINT = Conv(THUMBPRINT_EXPECT, _thumbprint)

CERTIFICATE = record(CertificateConfig, (
    Field("path", path("the PEM private key file"), required=True),
    Field("thumbprint", THUMBPRINT, required=True),
    Field("passphrase", secret()),
), "a mapping with path, thumbprint and optionally passphrase")

PFX = record(PfxConfig, (
    Field("path", path("the .pfx file"), required=True),
    Field("passphrase", secret()),
), "a mapping with path and optionally passphrase")

AUTH_METHODS = ("client_secret", "certificate", "device_code")
_AUTH_COMMON = (
    Field("method", choice(AUTH_METHODS, "auth method"), required=True),
    Field("tenant_id", text("a directory (tenant) id or domain, such as contoso.onmicrosoft.com", TENANT,
                            "a tenant id")),
    Field("client_id", text("an application (client) id, a GUID such as 11111111-2222-3333-4444-555555555555",
                            GUID, "a GUID"), required=True),
    Field("authority", url(schemes=("https",), example="https://login.microsoftonline.us/<tenant_id>", env=False)),
    Field("scope", text("an OAuth scope such as https://contoso.crm.dynamics.com/.default")),
)
AUTH_TABLES: Mapping[str, Sequence[Field]] = {
    "client_secret": _AUTH_COMMON + (Field("secret", secret(), required=True),),
    "certificate": _AUTH_COMMON + (
        Field("certificate", CERTIFICATE),
        Field("pfx", PFX),
    ),
    "device_code": _AUTH_COMMON,
}
AUTH_ALIASES = {"client_secret": "secret", "password": "secret", "client_credential": "secret",
                "tenant": "tenant_id", "app_id": "client_id", "application_id": "client_id"}


def _auth(reader: Reader, node: Node, where: str, org_url: str | None) -> Any:
    """Reads `target.auth` and derives authority and scope from the tenant and the org URL.

    Sovereign clouds (GCC High, China) use other login hosts and org domains; for them both
    are given explicitly, and nothing is derived.
    """
    method = peek(node, "method", AUTH_METHODS)
    if method is None:
        # The method is missing or wrong (reported below): accept every method's keys, so the
        # one mistake does not also show up as a list of "unknown" keys.
        table: Sequence[Field] = _AUTH_COMMON + tuple(
            Field(f.key, f.conv) for m in ("client_secret", "certificate") for f in AUTH_TABLES[m][len(_AUTH_COMMON):])
        hints: dict[str, str] = {}
    else:
        table = AUTH_TABLES[method]
        hints = other_kind_hints(AUTH_TABLES, method, "method")
    hints.update({k: f"did you mean {v!r}?" for k, v in AUTH_ALIASES.items()})
    got = read_fields(reader, node, where, table, expect="a mapping with method, tenant_id and client_id",
                      hints=hints)
    if got is None or method is None:
        return FAILED
    values, _ = got
    assert isinstance(node, Map)
    authority = values["authority"]
    if values["tenant_id"] is None and authority is None and "tenant_id" not in node:
        reader.report(node, f"{where}: missing required key 'tenant_id'",
                      "expected tenant_id: the directory (tenant) id, or an explicit authority")
    if method == "certificate":
        if "certificate" in node and "pfx" in node:
            reader.report(node, f"{where}: both certificate and pfx are given", "expected exactly one of them")
        elif "certificate" not in node and "pfx" not in node:
            reader.report(node, f"{where}: missing required key 'certificate'",
                          "expected certificate: {path, thumbprint} or pfx: {path}")
    tenant = values["tenant_id"] or ""
    if isinstance(authority, UrlText):
        authority_text = authority.value.rstrip("/")
    else:
        authority_text = f"https://login.microsoftonline.com/{tenant}"
    scope = values["scope"]
    if scope is None:
        suffix = "user_impersonation" if method == "device_code" else ".default"
        scope = f"{org_url}/{suffix}" if org_url else ""
    return AuthConfig(
        method=method,
        tenant_id=tenant,
        client_id=values["client_id"],
        authority=authority_text,
        scope=scope,
        secret=values.get("secret"),
        certificate=values.get("certificate"),
        pfx=values.get("pfx"),
    )


def _seed(reader: Reader, node: Node, where: str) -> Any:
    """A seed name (``demo``) or number; numbers are kept as their text."""
    if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return str(node.value)
    return text("a seed name such as demo").parse(reader, node, where)


TARGET_KINDS = ("dataverse", "emulator")
TARGET_TABLES: Mapping[str, Sequence[Field]] = {
    "dataverse": (
        Field("kind", choice(TARGET_KINDS, "target kind"), required=True),
        Field("url", url(https_unless_local=True, origin_only=True, example="https://contoso.crm.dynamics.com"),
              required=True),
        Field("auth", raw("a mapping with method, tenant_id, client_id and the method's credential"),
              required=True),
        Field("limits", LIMITS, factory=lambda r: Limits()),
    ),
    "emulator": (
        Field("kind", choice(TARGET_KINDS, "target kind"), required=True),
        Field("data", path("the emulator's SQLite file"), factory=lambda r: r.resolve("world/dataverse.db")),
        Field("seed", Conv("a seed name such as demo", _seed)),
        Field("scenario", path("a fault scenario file")),
        Field("limits", LIMITS, factory=lambda r: Limits()),
    ),
}


def _target(reader: Reader, node: Node, where: str) -> Any:
    kind = peek(node, "kind", TARGET_KINDS)
    if kind is None:
        merged = {f.key: Field(f.key, f.conv, required=f.key == "kind")
                  for t in TARGET_TABLES.values() for f in t}
        got = read_fields(reader, node, where, tuple(merged.values()), expect="a mapping with kind")
        if got is not None:
            auth_node = got[0].get("auth")
            if isinstance(auth_node, Node):
                _auth(reader, auth_node, join(where, "auth"), None)
        return FAILED
    got = read_fields(reader, node, where, TARGET_TABLES[kind], expect="a mapping with kind",
                      hints=other_kind_hints(TARGET_TABLES, kind, "kind"))
    if got is None:
        return FAILED
    values, _ = got
    if kind == "emulator":
        return TargetConfig(kind=kind, limits=values["limits"], data=values["data"], seed=values["seed"],
                            scenario=values["scenario"])
    org = values["url"]
    org_url = org.value if isinstance(org, UrlText) else None
    auth = _auth(reader, values["auth"], join(where, "auth"), org_url) if values["auth"] is not None else None
    return TargetConfig(
        kind=kind,
        limits=values["limits"],
        url=org_url,
        url_template=org.template if isinstance(org, UrlText) else None,
        auth=None if auth is FAILED else auth,
    )


# Entities.

ENTITY_SOURCE = record(EntitySource, (
    Field("table", text("a table name"), required=True),
    Field("key", text("the key column"), required=True),
    Field("modified", text("the last-modified column")),
), "a mapping with table, key and optionally modified")

ENTITY_TARGET = record(EntityTarget, (
    Field("entity_set", text("the Web API entity set name, such as accounts"), required=True),
    Field("key", text("the column holding the legacy key"), required=True),
    Field("modified", text("the last-modified column, such as modifiedon")),
    Field("id", text("the primary id attribute, such as accountid")),
), "a mapping with entity_set, key and optionally modified and id")

LOOKUP = record(LookupConfig, (
    Field("field", text("the Web API lookup property, such as _primarycontactid_value"), required=True),
    Field("entity", text("the name of an entity under entities:"), required=True),
    Field("source_field", text("the source foreign-key column")),
), "a mapping with field and entity")

ENTITY = record(EntityConfig, (
    Field("name", IDENT, required=True),
    Field("source", ENTITY_SOURCE, required=True),
    Field("target", ENTITY_TARGET, required=True),
    Field("required", seq_of(text("a column name"), LIST_OF_NAMES), default=()),
    Field("unique", seq_of(text("a column name"), LIST_OF_NAMES), default=()),
    Field("lookups", seq_of(LOOKUP, "a list of {field, entity} mappings"), default=()),
), "a mapping with name, source and target")

# Integrations, runbook, rollback, incidents, hypercare, slos.


def _probe_post(reader: Reader, node: Map, where: str, values: dict[str, Any]) -> Any:
    value = values["url"]
    if not isinstance(value, UrlText):
        return FAILED
    return {**values, "url": value.value, "url_template": value.template}


PROBE = record(ProbeConfig, (
    Field("url", url(example="https://erp.contoso.com/health"), required=True),
    Field("expect_status", integer(100, 599), default=200),
    Field("expect_body", text("a substring the response body must contain")),
    Field("timeout", duration(positive=True), default=timedelta(seconds=10)),
), "a mapping with url and optionally expect_status, expect_body, timeout", post=_probe_post)

JOBS = record(JobsConfig, (
    Field("name_like", text("a LIKE pattern on the job name, such as ERP%"), required=True),
), "a mapping with name_like")

INTEGRATION_SLO = record(IntegrationSlo, (
    Field("p95_ms", number(above=0)),
    Field("error_rate", number(0, 1)),
), "a mapping with p95_ms and/or error_rate")


def _integration_post(reader: Reader, node: Map, where: str, values: dict[str, Any]) -> Any:
    if "probe" not in node and "jobs" not in node:
        reader.report(node, f"{where}: nothing to watch", "expected probe: {url: …} and/or jobs: {name_like: …}")
    return values


INTEGRATION = record(IntegrationConfig, (
    Field("id", IDENT, required=True),
    Field("title", text()),
    Field("probe", PROBE),
    Field("jobs", JOBS),
    Field("slo", INTEGRATION_SLO),
), "a mapping with id and probe and/or jobs", post=_integration_post)

STEP = record(RunbookStep, (
    Field("id", IDENT, required=True),
    Field("title", text(), required=True),
    Field("owner", text("a person or team")),
    Field("planned", duration()),
    Field("after", seq_of(IDENT, ID_LIST), default=()),
    Field("gate", seq_of(IDENT, "a list of check ids, such as [source.write_freeze]"), default=()),
    Field("phase", text("a phase name")),
), "a mapping with id and title")

CRITERION = record(RollbackCriterion, (
    Field("id", IDENT, required=True),
    Field("title", text(), required=True),
    Field("check", text("the id of a check under checks:"), required=True),
    Field("rollback_if", text("an expression such as missing > 0"), required=True),
    Field("hold_if", text("an expression such as missing_pct > 0")),
), "a mapping with id, title, check and rollback_if")

ROLLBACK = record(RollbackConfig, (
    Field("authority", seq_of(text("a role or name"), "a list of roles, such as [Cutover Lead]", nonempty=True),
          required=True),
    Field("sla", duration(positive=True), required=True),
    Field("point_of_no_return", timestamp()),
    Field("criteria", seq_of(CRITERION, "a list of criteria"), default=()),
    Field("runbook", seq_of(STEP, "a list of runbook steps"), default=()),
), "a mapping with authority, sla and criteria")

SEVERITY = record(SeverityConfig, (
    Field("respond", duration(positive=True), required=True),
    Field("escalate_to", text("a role or name")),
), "a mapping with respond and optionally escalate_to")


def _severities(reader: Reader, node: Node, where: str) -> Any:
    table = tuple(Field(name, SEVERITY, default=default) for name, default in DEFAULT_SEVERITIES.items())
    got = read_fields(reader, node, where, table, expect="a mapping of sev1..sev4")
    return FAILED if got is None else MappingProxyType(got[0])


NOTIFY = record(NotifyConfig, (
    Field("teams_webhook", secret()),
    Field("webhook", secret()),
), "a mapping with teams_webhook and/or webhook")

AUTO_RAISE = record(AutoRaiseRule, (
    Field("check", text("a check id or a glob such as account.*"), required=True),
    Field("when", seq_of(choice(("BREACH", "ERROR"), "status"), "a list such as [BREACH, ERROR]", nonempty=True),
          default=("BREACH", "ERROR")),
    Field("severity", choice(("sev1", "sev2", "sev3", "sev4", "unknown"), "severity"), default="unknown"),
    Field("after", integer(1, 100), default=1),
    Field("title", text()),
), "a mapping with check and optionally when, severity, after, title")

INCIDENTS = record(IncidentsConfig, (
    Field("severities", section(_severities, "a mapping of sev1..sev4"), default=DEFAULT_SEVERITIES),
    Field("notify", NOTIFY, factory=lambda r: NotifyConfig()),
    Field("auto", seq_of(AUTO_RAISE, "a list of auto-raise rules"), default=()),
), "a mapping with severities, notify and auto")


def _tolerance_post(reader: Reader, node: Map, where: str, values: dict[str, Any]) -> Any:
    if "max_pct" not in node and "max_abs" not in node:  # a bad value there is reported already
        reader.report(node, f"{where}: no limit given", "expected max_pct and/or max_abs")
        return FAILED
    return values


TOLERANCE = record(DriftTolerance, (
    Field("metric", text("a metric name or a glob such as *.count.target"), required=True),
    Field("max_pct", number(minimum=0)),
    Field("max_abs", number(minimum=0)),
), "a mapping with metric and max_pct and/or max_abs", post=_tolerance_post)

HYPERCARE = record(HypercareConfig, (
    Field("go_live", calendar_date(), required=True),
    Field("checkpoints", seq_of(duration(positive=True), "a list of durations, such as [1d, 7d, 30d]"),
          default=DEFAULT_CHECKPOINTS),
    Field("tolerances", seq_of(TOLERANCE, "a list of {metric, max_pct, max_abs} mappings"), default=()),
), "a mapping with go_live, checkpoints and tolerances")


def _slo_query(reader: Reader, node: Node, where: str) -> Any:
    value = text(SLO_QUERY_EXPECT).parse(reader, node, where)
    if value is not FAILED and (value.startswith("/") or "://" in value):
        reader.report(node, f"{where}: {value!r} is not relative to the Web API root", f"expected {SLO_QUERY_EXPECT}")
        return FAILED
    return value


SLO_QUERY_EXPECT = "a Web API path such as accounts?$select=name&$top=50"
SLO = record(SloConfig, (
    Field("id", IDENT, required=True),
    Field("query", Conv(SLO_QUERY_EXPECT, _slo_query), required=True),
    Field("p95_ms", number(above=0), required=True),
    Field("samples", integer(1, 10_000), default=20),
), "a mapping with id, query and p95_ms")

# The whole file.

TOP = (
    Field("project", text("the project name"), required=True),
    Field("state", path("the state (journal) file"), factory=lambda r: r.resolve(".crmctl/state.db")),
    Field("source", section(_source, "a mapping with kind and url"), required=True),
    Field("target", section(_target, "a mapping with kind"), required=True),
    Field("entities", seq_of(ENTITY, "a list of entities"), default=()),
    Field("checks", seq_of(section(read_check, CHECK_EXPECT), "a list of checks"), default=()),
    Field("integrations", seq_of(INTEGRATION, "a list of integrations"), default=()),
    Field("runbook", seq_of(STEP, "a list of runbook steps"), default=()),
    Field("rollback", ROLLBACK),
    Field("incidents", INCIDENTS, factory=lambda r: IncidentsConfig()),
    Field("hypercare", HYPERCARE),
    Field("slos", seq_of(SLO, "a list of SLOs"), default=()),
    Field("clock_start", timestamp()),
)
TOP_EXPECT = "a mapping with project, source, target and the other sections"
