"""The cutover config (crmctl.yaml): `load_config` reads and validates it into immutable objects.

The package is split by concern: `values` (secrets, durations, timestamps), `yamltree` (YAML
with positions), `reading` (the field-table schema layer), `sections` (the dataclasses) and
`loader` (the section tables, cross-references and `load_config`). Import from here.
"""

from __future__ import annotations

from crmctl.config.loader import load_config
from crmctl.config.problems import ConfigError, Problem
from crmctl.config.sections import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_SEVERITIES,
    AuthConfig,
    AutoRaiseRule,
    CertificateConfig,
    CheckConfig,
    CheckKindSpec,
    Config,
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
from crmctl.config.values import Secret, SecretUnavailable, format_duration, parse_duration, parse_timestamp

__all__ = [
    "DEFAULT_CHECKPOINTS",
    "DEFAULT_SEVERITIES",
    "AuthConfig",
    "AutoRaiseRule",
    "CertificateConfig",
    "CheckConfig",
    "CheckKindSpec",
    "Config",
    "ConfigError",
    "DriftTolerance",
    "EntityConfig",
    "EntitySource",
    "EntityTarget",
    "HypercareConfig",
    "IncidentsConfig",
    "IntegrationConfig",
    "IntegrationSlo",
    "JobsConfig",
    "Limits",
    "LookupConfig",
    "NotifyConfig",
    "PfxConfig",
    "Problem",
    "ProbeConfig",
    "RollbackConfig",
    "RollbackCriterion",
    "RunbookStep",
    "Secret",
    "SecretUnavailable",
    "SeverityConfig",
    "SloConfig",
    "SourceConfig",
    "TargetConfig",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_timestamp",
]
