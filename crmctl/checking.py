"""What a check is handed when it runs, and the helpers every check kind uses to judge and report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol

from crmctl.clock import Clock
from crmctl.connectors.querylog import QueryLog
from crmctl.identity import Actor
from crmctl.model import CheckResult, QueryRecord, Status
from crmctl.safetext import safe_text, safe_value

if TYPE_CHECKING:
    from crmctl.config import CheckConfig, CheckKindSpec, Config, EntityConfig
    from crmctl.connectors.dataverse import DataverseClient
    from crmctl.connectors.sql import SourceConnector


@dataclass(frozen=True)
class CheckProgress:
    """How far one running check has got: what long work (a reconcile of millions of rows) shows.

    Kept in memory only (`ControlRoom.progress`), never journalled: a page of a scan is not an
    event worth a hash-chained entry, and the result that follows says everything that counts.
    """

    check_id: str
    started_at: datetime
    """Wall-clock start of the run (the room's clock)."""
    started: float
    """Monotonic start, for the elapsed time and the ETA."""
    updated: float
    """Monotonic time of the newest report."""
    rows: int = 0
    """Rows (records, keys) handled so far."""
    pages: int = 0
    """Pages (or partitions, batches) handled so far."""
    total: int | None = None
    """The number of rows expected in all, when the check can estimate it; None when unknown."""
    done: bool = False
    """True in the last report of a run: the run has ended (result, error or cancellation)."""

    @property
    def fraction(self) -> float | None:
        """0..1 of the expected total, or None without an estimate."""
        if not self.total or self.total <= 0:
            return None
        return max(0.0, min(1.0, self.rows / self.total))

    def eta_s(self, at: float | None = None) -> float | None:
        """Seconds left at the rate so far, or None while there is nothing to extrapolate from."""
        fraction = self.fraction
        elapsed = (self.updated if at is None else at) - self.started
        if fraction is None or fraction <= 0 or elapsed <= 0:
            return None
        return max(0.0, elapsed * (1 - fraction) / fraction)


ProgressListener = Callable[[CheckProgress], None]
"""Called (on the event loop) with every progress report; the engine forwards to the room."""


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
    progress: ProgressListener | None = None
    """Where `report_progress` goes (the engine sets it); None means nobody is watching."""
    actor: Actor | None = None
    """Who runs the checks (the engine's operator): entries a check journals itself (plug-in
    trace copies) carry the session's operator, not the OS account of the process."""
    _progress: CheckProgress | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.dynamics_log = QueryLog("dynamics", deadline=self.deadline)
        self.source_log = QueryLog("source", deadline=self.deadline)

    def report_progress(self, *, rows: int, pages: int = 0, total: int | None = None) -> None:
        """Tells whoever watches how far a long check has got (rows, pages, expected total).

        Cheap enough to call once per page: it only replaces an in-memory record. `total` may
        be left out after the first report that gave it.
        """
        if self.progress is None:
            return
        now = time.monotonic()
        held = self._progress
        self._progress = CheckProgress(
            check_id=self.check.id,
            started_at=self.started,
            started=held.started if held is not None else now,
            updated=now,
            rows=rows,
            pages=pages,
            total=total if total is not None else (held.total if held is not None else None),
        )
        self.progress(self._progress)

    def end_progress(self) -> None:
        """Tells the watcher this run has ended (the engine calls it, whatever the outcome)."""
        if self.progress is not None and self._progress is not None:
            self.progress(replace(self._progress, updated=time.monotonic(), done=True))

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
        queries = tuple(_safe_query(q) for q in (*self.source_log.records, *self.dynamics_log.records))
        # Outside text (record names, server messages) enters the model here: made safe once.
        return CheckResult(
            check_id=self.check.id,
            kind=self.check.kind,
            status=status,
            started=self.started,
            finished=self.clock.now(),
            explanation=safe_text(explanation),
            values=safe_value(dict(values or {})),
            threshold=dict(self.threshold() if threshold is None else threshold),
            requests=len(queries),
            queries=queries,
        )

    def error(self, reason: str, values: Mapping[str, Any] | None = None) -> CheckResult:
        """An ERROR result: the check could not produce a trustworthy figure."""
        return self.finish(Status.ERROR, reason, values)


def _safe_query(query: QueryRecord) -> QueryRecord:
    """A query record whose URL and error text (server words, record keys) are safe to show."""
    url = safe_text(query.url, limit=None, multiline=False)
    error = safe_text(query.error) if query.error else query.error
    return query if (url, error) == (query.url, query.error) else replace(query, url=url, error=error)


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
