"""The typed, immutable config: one frozen dataclass per section of crmctl.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, TypeVar

import yaml

from crmctl.config.values import Secret, format_duration

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty_mapping() -> Mapping[str, Any]:
    return _EMPTY


@dataclass(frozen=True)
class CheckKindSpec:
    """What a check kind accepts in its `checks:` entries, so the loader can validate them.

    Each check kind (in `checks/`) declares one; the CLI hands the registry's specs to
    `load_config`, which keeps `crmctl/` free of imports from `checks/`.
    """

    needs_entity: bool = False
    """True when the check judges one entity, so `entity:` is required."""
    params: Mapping[str, type | tuple[type, ...]] = field(default_factory=_empty_mapping)
    """The extra keys the kind accepts, with their types. Besides plain types, `timedelta`
    (read as a duration), `datetime` (aware timestamp), `date`, `Path` (resolved against the
    config's folder), `Secret` (`${env:NAME}`), `list`/`tuple` and `dict`/`Mapping` work."""
    description: str = ""
    """One line for help texts and the docs."""
    references: Mapping[str, str] = field(default_factory=_empty_mapping)
    """Parameters that name something defined elsewhere in the config, and where: the section
    (``entities``, ``integrations``, ``checks`` or ``slos``) whose ids the value (a name or a
    list of names) must be among. The loader reports a dangling one at its FILE:LINE:COLUMN
    with a did-you-mean, like every other dangling reference, instead of leaving it to fail on
    cutover night."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        unknown = set(self.references) - set(self.params)
        if unknown:
            raise ValueError(f"references name parameters the kind does not declare: {', '.join(sorted(unknown))}")
        sections = set(self.references.values()) - set(REFERENCE_SECTIONS)
        if sections:
            raise ValueError(f"references point at unknown sections: {', '.join(sorted(sections))}")
        object.__setattr__(self, "references", MappingProxyType(dict(self.references)))


REFERENCE_SECTIONS = {"entities": "name", "integrations": "id", "checks": "id", "slos": "id"}
"""Sections a check parameter may refer to, and the key that names their items."""


@dataclass(frozen=True)
class Limits:
    """How hard crmctl may lean on a target: shared by every check against it."""

    concurrency: int = 8
    """Requests in flight at once."""
    requests_per_5min: int = 5000
    """Request budget per rolling 5 minutes (Dataverse allows 6000 per user; keep headroom)."""
    timeout: timedelta = timedelta(seconds=30)
    """Per request."""
    retries: int = 4
    """Retries of a transient failure (429, 5xx, reset) before a request gives up."""
    page_size: int = 5000
    """`Prefer: odata.maxpagesize`; Dataverse never returns more than 5000 per page."""
    deadline: timedelta = timedelta(minutes=10)
    """Per check run, all requests included."""


@dataclass(frozen=True)
class SourceConfig:
    """The legacy CRM the data came from: a SQL database or an OData v4 service."""

    kind: str
    """``sql`` or ``odata``."""
    url: str = field(repr=False)
    """The URL to connect to, `${env:NAME}` references substituted and a relative SQLite path
    made absolute (``sqlite:////abs/path.db``). May hold a credential: never print it; print
    `url_template` or `redacted()` instead."""
    url_template: str = ""
    """The URL as written in the file, references left as `${env:NAME}`: safe to print."""
    env_names: tuple[str, ...] = ()
    """Environment variables substituted into `url`; when non-empty, `url` is sensitive."""

    @property
    def sensitive(self) -> bool:
        """True when `url` carries values from the environment and must not be shown."""
        return bool(self.env_names)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a ``sqlite:///`` URL, else None."""
        if self.kind == "sql" and self.url.startswith("sqlite:///"):
            return Path(self.url[len("sqlite:///"):])
        return None

    def redacted(self) -> str:
        """The URL in a form that is safe to print or journal."""
        return self.url_template if self.sensitive else self.url


@dataclass(frozen=True)
class CertificateConfig:
    """A PEM private key plus the thumbprint of its certificate, as registered in Entra."""

    path: Path
    thumbprint: str
    """SHA-1 thumbprint, 40 hex digits, upper case (colons and blanks removed)."""
    passphrase: Secret | None = None


@dataclass(frozen=True)
class PfxConfig:
    """A PKCS#12 (.pfx/.p12) file holding key and certificate."""

    path: Path
    passphrase: Secret | None = None


@dataclass(frozen=True)
class AuthConfig:
    """How crmctl signs in to Entra ID for a real Dataverse org."""

    method: str
    """``client_secret``, ``certificate`` or ``device_code``."""
    tenant_id: str
    client_id: str
    authority: str
    """Given, or derived: ``https://login.microsoftonline.com/<tenant_id>``."""
    scope: str
    """Given, or derived: ``<org url>/.default`` (app) or ``<org url>/user_impersonation`` (device code)."""
    secret: Secret | None = None
    """``client_secret`` only."""
    certificate: CertificateConfig | None = None
    """``certificate`` with a PEM key."""
    pfx: PfxConfig | None = None
    """``certificate`` with a PFX file."""

    def certificate_credential(self, env: Mapping[str, str] = os.environ) -> dict[str, str] | None:
        """The MSAL `client_credential` dict for certificate auth, reading key and passphrase now.

        Done at use rather than at load so that the private key and passphrase live in memory
        only while a token is being acquired.
        """
        if self.certificate is not None:
            credential = {
                "private_key": self.certificate.path.read_text(),
                "thumbprint": self.certificate.thumbprint,
            }
            if self.certificate.passphrase is not None:
                credential["passphrase"] = self.certificate.passphrase.reveal(env)
            return credential
        if self.pfx is not None:
            credential = {"private_key_pfx_path": str(self.pfx.path)}
            if self.pfx.passphrase is not None:
                credential["passphrase"] = self.pfx.passphrase.reveal(env)
            return credential
        return None


@dataclass(frozen=True)
class TargetConfig:
    """The Dynamics 365 side: a real Dataverse org, or the rehearsal emulator.

    One class for both kinds (the fields of the other kind are None) so that callers branch on
    `kind` once instead of on types.
    """

    kind: str
    """``dataverse`` or ``emulator``."""
    limits: Limits = field(default_factory=Limits)
    url: str | None = field(default=None, repr=False)
    """dataverse: the organization URL (``https://contoso.crm.dynamics.com``, no trailing slash)."""
    url_template: str | None = None
    """dataverse: the URL as written (`${env:NAME}` kept); safe to print."""
    auth: AuthConfig | None = None
    """dataverse only."""
    data: Path | None = None
    """emulator: the emulator's SQLite database (default ``world/dataverse.db`` beside the config)."""
    seed: str | None = None
    """emulator: when set (e.g. ``demo``), the demo world is generated if its files are missing."""
    scenario: Path | None = None
    """emulator: a fault scenario file (latency, throttling, outages) to rehearse against."""

    @property
    def is_emulator(self) -> bool:
        return self.kind == "emulator"


@dataclass(frozen=True)
class EntitySource:
    table: str
    key: str
    """The legacy primary key column, carried into Dynamics as `target.key`."""
    modified: str | None = None
    """Last-modified column, for delta loads and drift checks."""


@dataclass(frozen=True)
class EntityTarget:
    entity_set: str
    """The Web API collection name (``accounts``)."""
    key: str
    """The column holding the legacy key (``new_legacyid``)."""
    modified: str | None = None
    id: str | None = None
    """The primary id attribute (``accountid``), when checks need it."""


@dataclass(frozen=True)
class LookupConfig:
    """A reference to another entity, checked for orphans."""

    field: str
    """The Web API lookup property (``_primarycontactid_value``)."""
    entity: str
    """The name of the entity it points at (declared under `entities:`)."""
    source_field: str | None = None
    """The matching foreign-key column in the source, when it differs."""


@dataclass(frozen=True)
class EntityConfig:
    """One migrated entity: where it lives on both sides and what must hold for it."""

    name: str
    source: EntitySource
    target: EntityTarget
    required: tuple[str, ...] = ()
    """Columns that must not be null."""
    unique: tuple[str, ...] = ()
    """Columns that must not hold duplicates."""
    lookups: tuple[LookupConfig, ...] = ()


@dataclass(frozen=True)
class CheckConfig:
    """One configured check: what kind runs, about what, how often, judged how."""

    id: str
    kind: str
    entity: str | None = None
    warn: float | None = None
    breach: float | None = None
    every: timedelta = timedelta(seconds=60)
    """Cadence; a result older than twice this is STALE."""
    timeout: timedelta | None = None
    """Per-run deadline; None means the target's `limits.deadline`."""
    title: str | None = None
    params: Mapping[str, Any] = field(default_factory=_empty_mapping)
    """Every other key of the entry, read-only; lists are tuples, mappings are read-only too."""


@dataclass(frozen=True)
class ProbeConfig:
    """An HTTP health endpoint of an integration."""

    url: str = field(repr=False)
    """`${env:NAME}` substituted: may hold an API key, never print it."""
    url_template: str = ""
    """As written; safe to print."""
    expect_status: int = 200
    expect_body: str | None = None
    """A substring the body must contain."""
    timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class JobsConfig:
    """Which Dataverse system jobs (asyncoperation) belong to an integration."""

    name_like: str
    """A SQL LIKE pattern on the job name (``ERP%``)."""


@dataclass(frozen=True)
class IntegrationSlo:
    p95_ms: float | None = None
    error_rate: float | None = None
    """Fraction of failed calls or jobs, 0..1."""


@dataclass(frozen=True)
class IntegrationConfig:
    """A downstream or upstream system whose health the cutover depends on."""

    id: str
    title: str | None = None
    probe: ProbeConfig | None = None
    jobs: JobsConfig | None = None
    slo: IntegrationSlo | None = None


@dataclass(frozen=True)
class RunbookStep:
    """One step of the cutover (or rollback) runbook."""

    id: str
    title: str
    owner: str | None = None
    planned: timedelta | None = None
    """Planned duration, compared with the actual one in rehearsals."""
    after: tuple[str, ...] = ()
    """Steps that must be done first (same runbook)."""
    gate: tuple[str, ...] = ()
    """Checks that must be OK before this step may start."""
    phase: str | None = None


@dataclass(frozen=True)
class RollbackCriterion:
    """One row of the rollback decision matrix."""

    id: str
    title: str
    check: str
    """The check whose result the expressions read."""
    rollback_if: str
    """An expression over the check's values (``missing > 0``); parsed by the decision module."""
    hold_if: str | None = None


@dataclass(frozen=True)
class RollbackConfig:
    authority: tuple[str, ...]
    """Who may decide (roles or names)."""
    sla: timedelta
    """How long a rollback may take, decision to source back in service."""
    point_of_no_return: datetime | None = None
    """Aware, UTC."""
    criteria: tuple[RollbackCriterion, ...] = ()
    runbook: tuple[RunbookStep, ...] = ()
    """The rollback runbook."""


@dataclass(frozen=True)
class SeverityConfig:
    respond: timedelta
    """Time to first response."""
    escalate_to: str | None = None


@dataclass(frozen=True)
class NotifyConfig:
    teams_webhook: Secret | None = None
    webhook: Secret | None = None


DEFAULT_SEVERITIES: Mapping[str, SeverityConfig] = MappingProxyType({
    "sev1": SeverityConfig(timedelta(minutes=15)),
    "sev2": SeverityConfig(timedelta(hours=1)),
    "sev3": SeverityConfig(timedelta(hours=4)),
    "sev4": SeverityConfig(timedelta(days=1)),
})
"""Used for every severity the file does not define."""


@dataclass(frozen=True)
class AutoRaiseRule:
    """Raise an incident automatically when a matching check turns red (see docs/incidents.md)."""

    check: str
    """A check id or a glob over check ids (``account.*``, ``*``)."""
    when: tuple[str, ...] = ("BREACH", "ERROR")
    """The result statuses that raise."""
    severity: str = "unknown"
    """sev1..sev4 or unknown (timed as sev1: when unsure, the higher)."""
    after: int = 1
    """Consecutive red results needed before raising (2+ rides out one flaky run)."""
    title: str | None = None


@dataclass(frozen=True)
class IncidentsConfig:
    severities: Mapping[str, SeverityConfig] = field(default_factory=lambda: DEFAULT_SEVERITIES)
    """Always sev1..sev4, in that order."""
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    auto: tuple[AutoRaiseRule, ...] = ()
    """Auto-raise rules, first match wins; none means incidents are raised by hand only."""


DEFAULT_CHECKPOINTS: tuple[timedelta, ...] = (timedelta(days=1), timedelta(days=7), timedelta(days=30))


@dataclass(frozen=True)
class DriftTolerance:
    """How far one hypercare metric may drift from the go-live baseline and still pass."""

    metric: str
    """A metric name or a glob over names (``*.count.target``, ``erp-sync.jobs.error_rate``)."""
    max_pct: float | None = None
    """Largest allowed drift in percent of the baseline value."""
    max_abs: float | None = None
    """Largest allowed drift in the metric's own unit; with max_pct, both must hold."""


@dataclass(frozen=True)
class HypercareConfig:
    go_live: date
    checkpoints: tuple[timedelta, ...] = DEFAULT_CHECKPOINTS
    """Offsets from go-live (Day 1 / Day 7 / Day 30)."""
    tolerances: tuple[DriftTolerance, ...] = ()
    """Drift thresholds, first match wins; a metric without one is shown but never fails."""


@dataclass(frozen=True)
class SloConfig:
    """A performance baseline: a Web API query timed against its p95 objective."""

    id: str
    query: str
    """Relative to the Web API root (``accounts?$select=name&$top=50``)."""
    p95_ms: float
    samples: int = 20


@dataclass(frozen=True)
class Config:
    """A validated cutover config. Built only by `load_config`; every field is immutable."""

    path: Path
    """The config file, absolute."""
    project: str
    state: Path
    """The journal (SQLite), absolute; default ``.crmctl/state.db`` beside the config."""
    source: SourceConfig
    target: TargetConfig
    entities: tuple[EntityConfig, ...] = ()
    checks: tuple[CheckConfig, ...] = ()
    integrations: tuple[IntegrationConfig, ...] = ()
    runbook: tuple[RunbookStep, ...] = ()
    rollback: RollbackConfig | None = None
    incidents: IncidentsConfig = field(default_factory=IncidentsConfig)
    hypercare: HypercareConfig | None = None
    slos: tuple[SloConfig, ...] = ()
    clock_start: datetime | None = None
    """Rehearsals and the demo: the moment the clock reads when crmctl starts, after which it ticks
    in real time, so a cutover night fixed in the data replays on any day. None: the wall clock."""
    substitutions: Mapping[str, str] = field(default_factory=_empty_mapping, repr=False, compare=False)
    """Values substituted from the environment into URLs, by variable; what `redact` hides."""

    def entity(self, name: str) -> EntityConfig:
        """The entity called `name`.

        Raises:
            KeyError: no such entity.
        """
        return _find(self.entities, "name", name, "entity")

    def check(self, check_id: str) -> CheckConfig:
        """The check with id `check_id`.

        Raises:
            KeyError: no such check.
        """
        return _find(self.checks, "id", check_id, "check")

    def step(self, step_id: str) -> RunbookStep:
        """The runbook step `step_id`, looked up in the cutover runbook, then the rollback one.

        Step ids are unique across both runbooks, so the journal can name a step by id alone.

        Raises:
            KeyError: no such step.
        """
        steps = self.runbook + (self.rollback.runbook if self.rollback else ())
        return _find(steps, "id", step_id, "runbook step")

    def integration(self, integration_id: str) -> IntegrationConfig:
        """The integration with id `integration_id`.

        Raises:
            KeyError: no such integration.
        """
        return _find(self.integrations, "id", integration_id, "integration")

    @property
    def folder(self) -> Path:
        """The folder relative paths in the file were resolved against."""
        return self.path.parent

    def redact(self, text: str) -> str:
        """`text` with every value substituted from the environment replaced by `${env:NAME}`.

        For error messages from drivers and HTTP libraries, which like to quote the URL they
        were given.
        """
        for name, value in sorted(self.substitutions.items(), key=lambda item: -len(item[1])):
            if value:
                text = text.replace(value, f"${{env:{name}}}")
        return text

    def redacted(self) -> str:
        """The effective config (defaults filled in) as YAML, with no secret or substituted value.

        Secrets show as `${env:NAME}`, URLs as written; safe to print, paste into a ticket or
        put into an evidence pack.
        """
        data = _plain(self)
        data.pop("substitutions", None)
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        return self.redact(text)


_Item = TypeVar("_Item")


def _find(items: tuple[_Item, ...], attribute: str, wanted: str, what: str) -> _Item:
    for item in items:
        if getattr(item, attribute) == wanted:
            return item
    raise KeyError(f"no {what} {wanted!r} in the config")


def _plain(value: Any) -> Any:
    """Plain YAML-able data for `redacted`: `${env:NAME}` for secrets and for URLs that used one.

    Unset optional keys (None) are left out, so the text reads like a config file.
    """
    if isinstance(value, Secret):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        names = {f.name for f in fields(value)}
        for f in fields(value):
            if f.name.endswith("_template") or f.name == "env_names":
                continue
            item = getattr(value, f.name)
            if f.name == "url" and "url_template" in names:
                template = getattr(value, "url_template") or ""
                item = template if "${env:" in template else item
            if item is not None:
                out[f.name] = _plain(item)
        return out
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, type):
        return value.__name__
    return value

