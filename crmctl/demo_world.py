"""The demo world (facade): `generate`, `ensure_world`, `GroundTruth`.

Kept as the import path the rest of crmctl uses (docs/architecture.md, "Demo world"); the
implementation lives in the `crmctl.demo` package because it is several modules long.
"""

from __future__ import annotations

from crmctl.demo import (
    BASE_VOLUMES,
    DATAVERSE_DB,
    DEFAULT_SEED,
    DEFECTS,
    DEMO_NOW,
    GENERATOR_VERSION,
    GROUND_TRUTH,
    POINT_OF_NO_RETURN,
    SOURCE_DB,
    CountSnapshot,
    DuplicateGroup,
    EntityTruth,
    FieldMismatch,
    GroundTruth,
    JobSummary,
    LookupTruth,
    PluginTruth,
    Timeline,
    WrongParent,
    ensure_world,
    generate,
)

__all__ = [
    "BASE_VOLUMES",
    "DATAVERSE_DB",
    "DEFAULT_SEED",
    "DEFECTS",
    "DEMO_NOW",
    "GENERATOR_VERSION",
    "GROUND_TRUTH",
    "POINT_OF_NO_RETURN",
    "SOURCE_DB",
    "CountSnapshot",
    "DuplicateGroup",
    "EntityTruth",
    "FieldMismatch",
    "GroundTruth",
    "JobSummary",
    "LookupTruth",
    "PluginTruth",
    "Timeline",
    "WrongParent",
    "ensure_world",
    "generate",
]
