"""The shape of the demo world: source tables, Dataverse tables and how their columns map.

One description serves the generator (what to write), the ground-truth derivation (what to
compare) and the tests (what to query), so the three can never disagree about a column name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from crmctl.demo.words import INDUSTRIES
from crmctl.emulator.storage import Attribute, EntityDef

STAGES: tuple[str, ...] = ("Qualify", "Develop", "Propose", "Close")
"""Source CRM opportunity stages, in pipeline order."""
STEPNAMES: dict[str, str] = {s: f"{i}-{s}" for i, s in enumerate(STAGES, start=1)}
"""Dataverse `stepname` for a source stage ('Qualify' -> '1-Qualify'), as the sales process writes it."""
STATECODES: dict[str, int] = {"open": 0, "won": 1, "lost": 2}
"""Dataverse opportunity `statecode` for a source status."""
INDUSTRY_CODES: dict[str, int] = {label: code for label, code, _ in INDUSTRIES}
"""Dataverse account `industrycode` option value for a source industry label."""


@dataclass(frozen=True)
class FieldMap:
    """One column compared between source and Dynamics in the field-level sample compare.

    `expect` turns the source value into the value Dynamics should hold (None stays None), so
    mapped columns (stage -> stepname, status -> statecode) compare like plain ones.
    """

    source: str
    target: str
    kind: str = "string"
    """"string", "number" or "code" (mapped values: any difference is a plain value mismatch)."""
    expect: Callable[[Any], Any] | None = None

    def expected(self, value: Any) -> Any:
        if value is None or self.expect is None:
            return value
        return self.expect(value)


@dataclass(frozen=True)
class LookupMap:
    """A parent reference: the source column holding the parent's key and the Dataverse lookup."""

    source: str
    """Source column with the parent's source key, e.g. contacts.account_id."""
    target: str
    """Dataverse lookup attribute (logical name), e.g. parentcustomerid."""
    parent: str
    """Logical name of the parent entity."""

    @property
    def web_name(self) -> str:
        """The Web API property, `_parentcustomerid_value`, as configs and checks name it."""
        return f"_{self.target}_value"


@dataclass(frozen=True)
class DemoEntity:
    """Everything the demo knows about one migrated entity."""

    name: str
    source_table: str
    source_key: str
    key_prefix: str
    source_columns: tuple[str, ...]
    source_ddl: str
    source_indexes: tuple[str, ...]
    target: EntityDef
    fields: tuple[FieldMap, ...]
    lookups: tuple[LookupMap, ...]
    required: tuple[str, ...]
    """Dataverse columns that must not be null (null checks)."""
    unique: tuple[str, ...]
    """Dataverse columns that must not repeat (duplicate checks)."""
    target_key: str = "new_legacyid"

    def field(self, target_column: str) -> FieldMap:
        """The compared column mapped to a Dataverse column."""
        for f in self.fields:
            if f.target == target_column:
                return f
        raise KeyError(f"{self.name}: no field maps to {target_column!r}")

    def source_column(self, target_column: str) -> str:
        """The source column mapped to a Dataverse column (for required/unique checks)."""
        for f in self.fields:
            if f.target == target_column:
                return f.source
        raise KeyError(f"{self.name}: no source column maps to {target_column!r}")


def _iso_date(value: str) -> str:
    return f"{value}T00:00:00Z"


_A = Attribute

ACCOUNT = DemoEntity(
    name="account",
    source_table="accounts",
    source_key="account_id",
    key_prefix="ACC",
    source_columns=(
        "account_id", "name", "accountnumber", "industry", "city", "revenue", "owner",
        "primary_contact_id", "created_at", "updated_at", "updated_by",
    ),
    source_ddl="""
        CREATE TABLE accounts (
            account_id         TEXT PRIMARY KEY NOT NULL,
            name               TEXT,
            accountnumber      TEXT,
            industry           TEXT,
            city               TEXT,
            revenue            REAL,
            owner              TEXT,
            primary_contact_id TEXT,
            created_at         TEXT NOT NULL,
            updated_at         TEXT NOT NULL,
            updated_by         TEXT
        )""",
    source_indexes=(
        "CREATE INDEX ix_accounts_updated_at ON accounts (updated_at)",
        "CREATE INDEX ix_accounts_accountnumber ON accounts (accountnumber)",
        "CREATE INDEX ix_accounts_primary_contact_id ON accounts (primary_contact_id)",
    ),
    target=EntityDef(
        logical_name="account",
        entity_set="accounts",
        primary_id="accountid",
        primary_name="name",
        attributes=(
            _A("accountid", "guid"),
            _A("new_legacyid", "string"),
            _A("name", "string"),
            _A("accountnumber", "string"),
            _A("industrycode", "int"),
            _A("address1_city", "string"),
            _A("revenue", "decimal"),
            _A("primarycontactid", "lookup", "contact"),
            _A("statecode", "int"),
            _A("createdon", "datetime"),
            _A("modifiedon", "datetime"),
        ),
    ),
    fields=(
        FieldMap("name", "name"),
        FieldMap("accountnumber", "accountnumber"),
        FieldMap("industry", "industrycode", "code", INDUSTRY_CODES.__getitem__),
        FieldMap("city", "address1_city"),
        FieldMap("revenue", "revenue", "number"),
    ),
    lookups=(LookupMap("primary_contact_id", "primarycontactid", "contact"),),
    required=("name",),
    unique=("accountnumber",),
)

CONTACT = DemoEntity(
    name="contact",
    source_table="contacts",
    source_key="contact_id",
    key_prefix="CON",
    source_columns=(
        "contact_id", "first_name", "last_name", "email", "phone", "account_id", "created_at",
        "updated_at", "updated_by",
    ),
    source_ddl="""
        CREATE TABLE contacts (
            contact_id TEXT PRIMARY KEY NOT NULL,
            first_name TEXT,
            last_name  TEXT,
            email      TEXT,
            phone      TEXT,
            account_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT
        )""",
    source_indexes=(
        "CREATE INDEX ix_contacts_updated_at ON contacts (updated_at)",
        "CREATE INDEX ix_contacts_account_id ON contacts (account_id)",
        "CREATE INDEX ix_contacts_email ON contacts (email)",
    ),
    target=EntityDef(
        logical_name="contact",
        entity_set="contacts",
        primary_id="contactid",
        primary_name="fullname",
        attributes=(
            _A("contactid", "guid"),
            _A("new_legacyid", "string"),
            _A("firstname", "string"),
            _A("lastname", "string"),
            _A("fullname", "string"),
            _A("emailaddress1", "string"),
            _A("telephone1", "string"),
            _A("parentcustomerid", "lookup", "account"),
            _A("statecode", "int"),
            _A("createdon", "datetime"),
            _A("modifiedon", "datetime"),
        ),
    ),
    fields=(
        FieldMap("first_name", "firstname"),
        FieldMap("last_name", "lastname"),
        FieldMap("email", "emailaddress1"),
        FieldMap("phone", "telephone1"),
    ),
    lookups=(LookupMap("account_id", "parentcustomerid", "account"),),
    required=("lastname",),
    unique=("emailaddress1",),
)

OPPORTUNITY = DemoEntity(
    name="opportunity",
    source_table="opportunities",
    source_key="opportunity_id",
    key_prefix="OPP",
    source_columns=(
        "opportunity_id", "name", "account_id", "stage", "status", "estimated_value",
        "close_date", "created_at", "updated_at", "updated_by",
    ),
    source_ddl="""
        CREATE TABLE opportunities (
            opportunity_id  TEXT PRIMARY KEY NOT NULL,
            name            TEXT,
            account_id      TEXT,
            stage           TEXT,
            status          TEXT,
            estimated_value REAL,
            close_date      TEXT,
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL,
            updated_by      TEXT
        )""",
    source_indexes=(
        "CREATE INDEX ix_opportunities_updated_at ON opportunities (updated_at)",
        "CREATE INDEX ix_opportunities_account_id ON opportunities (account_id)",
    ),
    target=EntityDef(
        logical_name="opportunity",
        entity_set="opportunities",
        primary_id="opportunityid",
        primary_name="name",
        attributes=(
            _A("opportunityid", "guid"),
            _A("new_legacyid", "string"),
            _A("name", "string"),
            _A("parentaccountid", "lookup", "account"),
            _A("stepname", "string"),
            _A("statecode", "int"),
            _A("estimatedvalue", "decimal"),
            _A("estimatedclosedate", "datetime"),
            _A("createdon", "datetime"),
            _A("modifiedon", "datetime"),
        ),
    ),
    fields=(
        FieldMap("name", "name"),
        FieldMap("stage", "stepname", "code", STEPNAMES.__getitem__),
        FieldMap("status", "statecode", "code", STATECODES.__getitem__),
        FieldMap("estimated_value", "estimatedvalue", "number"),
        FieldMap("close_date", "estimatedclosedate", "code", _iso_date),
    ),
    lookups=(LookupMap("account_id", "parentaccountid", "account"),),
    required=("name",),
    unique=(),
)


ENTITIES: tuple[DemoEntity, ...] = (ACCOUNT, CONTACT, OPPORTUNITY)
"""The migrated entities, parents first (the order they are generated and loaded in)."""
BY_NAME: dict[str, DemoEntity] = {e.name: e for e in ENTITIES}

WATERMARK_DDL = """
    CREATE TABLE migration_watermarks (
        table_name      TEXT PRIMARY KEY NOT NULL,
        last_watermark  TEXT NOT NULL,
        last_run_start  TEXT,
        last_run_end    TEXT,
        rows_applied    INTEGER
    )"""
"""The ETL control table: where the delta loader keeps its high-water mark per source table."""
