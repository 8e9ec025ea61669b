"""The deterministic demo world: a legacy source CRM, its imperfect Dynamics copy, the truth.

`generate` writes a world into a folder; `ensure_world` makes sure one exists (atomically,
safe for concurrent callers); `GroundTruth` is the exact answer every check should reach.
See data/demo/README.md for the story and every planted defect.
"""

from __future__ import annotations

from crmctl.demo.ensure import ensure_world
from crmctl.demo.world import (
    BASE_VOLUMES,
    DATAVERSE_DB,
    DEFAULT_SEED,
    DEFECTS,
    GROUND_TRUTH,
    SOURCE_DB,
    generate,
)
from crmctl.demo.timeline import DEMO_NOW, POINT_OF_NO_RETURN, Timeline
from crmctl.demo.truth import (
    GENERATOR_VERSION,
    CountSnapshot,
    DuplicateGroup,
    EntityTruth,
    FieldMismatch,
    GroundTruth,
    JobSummary,
    LookupTruth,
    PluginTruth,
    WrongParent,
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
