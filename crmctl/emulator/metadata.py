"""Metadata the emulator serves: service document, CSDL, EntityDefinitions and their Attributes."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any, Mapping
from xml.sax.saxutils import quoteattr

from crmctl.emulator.errors import CODE_NOT_FOUND, ApiError, unknown_property
from crmctl.emulator.odata_filter import compile_filter
from crmctl.emulator.storage import Attribute, EntityDef, quote

_NS = uuid.UUID("5b2f7b0e-4b7e-4a57-9e0b-9d6c7a2f1e11")

ATTRIBUTE_TYPE_NAMES = {
    "guid": "Uniqueidentifier",
    "lookup": "Lookup",
    "string": "String",
    "int": "Integer",
    "decimal": "Decimal",
    "datetime": "DateTime",
    "bool": "Boolean",
}
_CSDL_TYPES = {
    "guid": "Edm.Guid",
    "lookup": "Edm.Guid",
    "string": "Edm.String",
    "int": "Edm.Int32",
    "decimal": "Edm.Decimal",
    "datetime": "Edm.DateTimeOffset",
    "bool": "Edm.Boolean",
}

METADATA_ENTITY = EntityDef(
    logical_name="EntityMetadata",
    entity_set="EntityDefinitions",
    primary_id="MetadataId",
    primary_name="LogicalName",
    attributes=(
        Attribute("MetadataId", "guid"),
        Attribute("LogicalName", "string"),
        Attribute("SchemaName", "string"),
        Attribute("EntitySetName", "string"),
        Attribute("LogicalCollectionName", "string"),
        Attribute("PrimaryIdAttribute", "string"),
        Attribute("PrimaryNameAttribute", "string"),
        Attribute("IsCustomEntity", "bool"),
        Attribute("ChangeTrackingEnabled", "bool"),
    ),
)
METADATA_TYPE = "Microsoft.Dynamics.CRM.EntityMetadata"
ATTRIBUTE_TYPE = "Microsoft.Dynamics.CRM.AttributeMetadata"
_ATTRIBUTE_PROPS = ("LogicalName", "SchemaName", "AttributeType", "EntityLogicalName", "MetadataId")
_RELATIONSHIP_PROPS = (
    "SchemaName",
    "ReferencingEntity",
    "ReferencingAttribute",
    "ReferencedEntity",
    "ReferencedAttribute",
    "ReferencingEntityNavigationPropertyName",
    "MetadataId",
)


def metadata_id(*parts: str) -> str:
    """A stable MetadataId, so repeated runs (and tests) see the same identifiers."""
    return str(uuid.uuid5(_NS, "/".join(parts)))


def _schema_name(name: str) -> str:
    return name[:1].upper() + name[1:]


def entity_row(entity: EntityDef) -> dict[str, Any]:
    return {
        "MetadataId": metadata_id(entity.logical_name),
        "LogicalName": entity.logical_name,
        "SchemaName": _schema_name(entity.logical_name),
        "EntitySetName": entity.entity_set,
        "LogicalCollectionName": entity.entity_set,
        "PrimaryIdAttribute": entity.primary_id,
        "PrimaryNameAttribute": entity.primary_name,
        "IsCustomEntity": "_" in entity.logical_name,
        "ChangeTrackingEnabled": False,
    }


class MetadataIndex:
    """Answers EntityDefinitions queries from an in-memory table, reusing the $filter compiler."""

    def __init__(self, entities: list[EntityDef]) -> None:
        self.entities = {e.logical_name: e for e in entities}
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        cols = [a.column for a in METADATA_ENTITY.attributes]
        self._conn.execute(
            f"CREATE TABLE {quote(METADATA_ENTITY.table)} "
            f"({', '.join(quote(c) + ' COLLATE NOCASE' for c in cols)})"
        )
        rows = []
        for e in entities:
            r = entity_row(e)
            rows.append(tuple(int(v) if isinstance(v, bool) else v for v in (r[c] for c in cols)))
        self._conn.executemany(
            f"INSERT INTO {quote(METADATA_ENTITY.table)} VALUES ({', '.join('?' * len(cols))})",
            rows,
        )

    def close(self) -> None:
        self._conn.close()

    def select(self, select: str | None) -> list[str]:
        """Validates `$select` on EntityDefinitions; MetadataId is always returned."""
        if not select:
            return [a.column for a in METADATA_ENTITY.attributes]
        names = [s.strip() for s in select.split(",") if s.strip()]
        for name in names:
            if METADATA_ENTITY.attribute(name) is None:
                raise unknown_property(name, METADATA_TYPE)
        if "MetadataId" not in names:
            names.append("MetadataId")
        return names

    def query(self, select: str | None, filter_text: str | None) -> list[dict[str, Any]]:
        names = self.select(select)
        where, params = "", ()
        if filter_text:
            expr = compile_filter(filter_text, METADATA_ENTITY, type_name=METADATA_TYPE)
            where, params = f" WHERE {expr.sql}", expr.params
        sql = f"SELECT LogicalName FROM {quote(METADATA_ENTITY.table)}{where} ORDER BY LogicalName"
        out = []
        for (logical,) in self._conn.execute(sql, params):
            row = entity_row(self.entities[logical])
            out.append({k: row[k] for k in names})
        return out

    def one(self, logical_name: str, select: str | None) -> dict[str, Any]:
        entity = self.get(logical_name)
        row = entity_row(entity)
        return {k: row[k] for k in self.select(select)}

    def get(self, logical_name: str) -> EntityDef:
        entity = self.entities.get(logical_name)
        if entity is None:
            raise ApiError(
                404,
                CODE_NOT_FOUND,
                f"The entity with a name = '{logical_name}' with namemapping = 'Logical' was "
                "not found in the MetadataCache.",
            )
        return entity

    def attributes(self, logical_name: str, select: str | None) -> list[dict[str, Any]]:
        entity = self.get(logical_name)
        names = _pick_props(select, _ATTRIBUTE_PROPS, ATTRIBUTE_TYPE)
        out = []
        for attr in entity.attributes:
            row = {
                "LogicalName": attr.name,
                "SchemaName": _schema_name(attr.name),
                "AttributeType": ATTRIBUTE_TYPE_NAMES[attr.type],
                "EntityLogicalName": entity.logical_name,
                "MetadataId": metadata_id(entity.logical_name, attr.name),
            }
            out.append({k: row[k] for k in names})
        return out

    def many_to_one(self, logical_name: str, select: str | None) -> list[dict[str, Any]]:
        """Relationships for each lookup: what an orphan check enumerates."""
        entity = self.get(logical_name)
        names = _pick_props(
            select, _RELATIONSHIP_PROPS, "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata"
        )
        out = []
        for attr in entity.attributes:
            if attr.type != "lookup" or not attr.target:
                continue
            target = self.entities.get(attr.target)
            row = {
                "SchemaName": f"{attr.target}_{entity.logical_name}_{attr.name}",
                "ReferencingEntity": entity.logical_name,
                "ReferencingAttribute": attr.name,
                "ReferencedEntity": attr.target,
                "ReferencedAttribute": target.primary_id if target else f"{attr.target}id",
                "ReferencingEntityNavigationPropertyName": attr.name,
                "MetadataId": metadata_id(entity.logical_name, attr.name, "rel"),
            }
            out.append({k: row[k] for k in names})
        return out


def _pick_props(select: str | None, allowed: tuple[str, ...], type_name: str) -> list[str]:
    if not select:
        return list(allowed)
    names = [s.strip() for s in select.split(",") if s.strip()]
    for name in names:
        if name not in allowed:
            raise unknown_property(name, type_name)
    if "MetadataId" not in names:
        names.append("MetadataId")
    return names


def service_document(api_url: str, entities: list[EntityDef]) -> dict[str, Any]:
    sets = sorted([e.entity_set for e in entities] + ["EntityDefinitions"])
    return {
        "@odata.context": f"{api_url}$metadata",
        "value": [{"name": s, "kind": "EntitySet", "url": s} for s in sets],
    }


def csdl(entities: list[EntityDef]) -> str:
    """A small but valid CSDL document describing the emulated tables."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        '<Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" '
        'xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    for e in entities:
        lines.append(f"<EntityType Name={quoteattr(e.logical_name)}>")
        lines.append(f"<Key><PropertyRef Name={quoteattr(e.primary_id)}/></Key>")
        for a in e.attributes:
            lines.append(
                f"<Property Name={quoteattr(a.column)} Type={quoteattr(_CSDL_TYPES[a.type])}/>"
            )
        lines.append("</EntityType>")
    lines.append('<EntityContainer Name="System">')
    for e in entities:
        lines.append(
            f"<EntitySet Name={quoteattr(e.entity_set)} "
            f"EntityType={quoteattr('Microsoft.Dynamics.CRM.' + e.logical_name)}/>"
        )
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines)


def whoami(api_url: str, ids: Mapping[str, str]) -> dict[str, Any]:
    return {
        "@odata.context": f"{api_url}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
        "BusinessUnitId": ids["BusinessUnitId"],
        "UserId": ids["UserId"],
        "OrganizationId": ids["OrganizationId"],
    }
