"""What a check is handed when it runs, and the helpers every check kind uses to judge and report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol

from crmctl.clock import Clock
from crmctl.connectors.querylog import QueryLog
from crmctl.model import CheckResult, Status

if TYPE_CHECKING:
    from crmctl.config import CheckConfig, CheckKindSpec, Config, EntityConfig
    from crmctl.connectors.dataverse import DataverseClient
    from crmctl.connectors.sql import SourceConnector


@dataclass
class CheckContext:
    """Everything one run of one check may use; built fresh by the engine for every run.

    Checks never build clients themselves: the engine hands them the shared, rate-limited
    connectors, so that every check against one target draws on one request budget.
    """

    config: Config
    check: CheckConfig
    dynamics: DataverseClient
    source: SourceConnector
    clock: Clock
    started: datetime
    deadline: float
    """Monotonic time by which the check must have finished (the overall per-check deadline)."""
    dynamics_log: QueryLog = field(init=False)
    source_log: QueryLog = field(init=False)

    def __post_init__(self) -> None:
        self.dynamics_log = QueryLog("dynamics", deadline=self.deadline)
        self.source_log = QueryLog("source", deadline=self.deadline)

    @property
    def entity(self) -> EntityConfig:
        """The entity the check is about (config validation guarantees it exists when needed)."""
        assert self.check.entity is not None, f"check {self.check.id} has no entity"
        return self.config.entity(self.check.entity)

    @property
    def remaining_s(self) -> float:
        """Seconds left before the check's deadline."""
        return self.deadline - time.monotonic()

    def threshold(self) -> dict[str, Any]:
        """The configured thresholds, as they are journalled with the result."""
        return {k: v for k, v in (("warn", self.check.warn), ("breach", self.check.breach)) if v is not None}

    def finish(
        self,
        status: Status,
        explanation: str,
        values: Mapping[str, Any] | None = None,
        threshold: Mapping[str, Any] | None = None,
    ) -> CheckResult:
        """Builds the result, attaching every query both connectors recorded for this run."""
        queries = tuple(self.source_log.records) + tuple(self.dynamics_log.records)
        return CheckResult(
            check_id=self.check.id,
            kind=self.check.kind,
            status=status,
            started=self.started,
            finished=self.clock.now(),
            explanation=explanation,
            values=dict(values or {}),
            threshold=dict(self.threshold() if threshold is None else threshold),
            requests=len(queries),
            queries=queries,
        )

    def error(self, reason: str, values: Mapping[str, Any] | None = None) -> CheckResult:
        """An ERROR result: the check could not produce a trustworthy figure."""
        return self.finish(Status.ERROR, reason, values)


def judge(deviation: float, warn: float | None, breach: float | None) -> Status:
    """Grades a non-negative deviation: above `breach` is BREACH, above `warn` is WARN.

    Thresholds are exclusive upper bounds of the better grade, so `warn: 0` means "any
    deviation at all is worth a look" and `breach: 0.001` means "more than 0.1 % is a breach".
    """
    if breach is not None and deviation > breach:
        return Status.BREACH
    if warn is not None and deviation > warn:
        return Status.WARN
    return Status.OK


class CheckKind(Protocol):
    """A family of checks, registered under `kind` in `checks.registry`."""

    kind: ClassVar[str]
    spec: ClassVar[CheckKindSpec]

    async def run(self, ctx: CheckContext) -> CheckResult: ...
