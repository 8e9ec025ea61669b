"""system_jobs: an integration's Dataverse system jobs (asyncoperation) failed, retried and waiting.

Counts come from two `$apply` aggregates grouped by job name, status and retry count, so a
busy integration costs two requests however many jobs it ran:

* open jobs (statecode 0-2: waiting, in progress), whatever their age: a job parked for two
  days is still backlog. When Dataverse refuses this aggregate with 0x8004e023 (more than
  50,000 rows), that refusal *is* the finding: a backlog of 50,000+ jobs, reported as BREACH,
  not as a failure to measure (dataverse.md §8);
* jobs completed within the window (`completedon`), split into halves of the window while
  Dataverse refuses an aggregate over 50,000 of them, as row_count does with `createdon`.

A third, small query fetches the newest failures for the explanation (message and job ids).
The job-name pattern is the integration's `jobs.name_like` (SQL LIKE). OData has no LIKE, so
the pattern is sent as startswith/contains/endswith conditions that select a superset, and
the grouped names are then matched exactly here: the counts stay exact for any pattern.

The error rate is failed / (succeeded + failed); canceled jobs are neither.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, ClassVar, Iterable, Mapping

from crmctl.checking import CheckContext, judge
from crmctl.config import CheckKindSpec, IntegrationConfig
from crmctl.config.values import format_duration
from crmctl.connectors.errors import AggregateLimitExceeded, ConnectorError, MalformedResponse, scrub
from crmctl.model import CheckResult, Status

ENTITY_SET = "asyncoperations"
AGGREGATE_LIMIT = 50_000
DEFAULT_WINDOW = timedelta(hours=24)
WAITING = frozenset({0, 10})
"""statuscode of statecode 0/1: Waiting For Resources, Waiting (how a job is parked between retries)."""
SUCCEEDED, FAILED, CANCELED = 30, 31, 32
GROUPING = "groupby((name,statuscode,retrycount),aggregate($count as n))"


class IntegrationNotFound(Exception):
    """The check names an integration the config does not define (or one without what it needs)."""


def integration_for(ctx: CheckContext) -> IntegrationConfig:
    """The integration named by the check's `integration:` parameter.

    Raises:
        IntegrationNotFound: no parameter, or no such integration.
    """
    wanted = ctx.check.params.get("integration")
    if not wanted:
        raise IntegrationNotFound(f"Check {ctx.check.id} names no integration; add integration: <id>.")
    try:
        return ctx.config.integration(str(wanted))
    except KeyError:
        known = ", ".join(i.id for i in ctx.config.integrations) or "none"
        raise IntegrationNotFound(f"No integration {wanted!r} in the config (known: {known}).") from None


# -- LIKE patterns ----------------------------------------------------------------------------


def like_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE as a regex: `%` any run, `_` one character, case-insensitive like Dataverse."""
    parts = (".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def like_filter(pattern: str, column: str = "name") -> str | None:
    """An OData condition selecting a superset of the names `pattern` matches (None: all names).

    Exact for the usual shapes (`ERP%`, `%Sync%`, `%upsert`, no wildcard at all); otherwise
    the literal pieces are required without their order, and `like_regex` makes the final cut.
    """
    wild = [i for i, ch in enumerate(pattern) if ch in "%_"]
    if not wild:
        return f"{column} eq {_literal(pattern)}"
    conditions: list[str] = []
    prefix, suffix = pattern[: wild[0]], pattern[wild[-1] + 1 :]
    if prefix:
        conditions.append(f"startswith({column},{_literal(prefix)})")
    if suffix:
        conditions.append(f"endswith({column},{_literal(suffix)})")
    for piece in re.split("[%_]", pattern[wild[0] : wild[-1] + 1]):
        if piece:
            conditions.append(f"contains({column},{_literal(piece)})")
    return " and ".join(conditions) or None


def span_text(window: timedelta) -> str:
    """A window as people say it: "24 h", "90 min", "2 d" (the config form when nothing fits)."""
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0 and seconds <= 72 * 3600:
        return f"{seconds // 3600} h"
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return format_duration(window)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _odata_time(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the check --------------------------------------------------------------------------------


class _Counts:
    """Job counts per name, filled from grouped aggregate rows."""

    def __init__(self) -> None:
        self.by_name: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, rows: Iterable[Mapping[str, Any]], names: re.Pattern[str], what: str) -> None:
        for row in rows:
            name = row.get("name")
            n = row.get("n")
            status = row.get("statuscode")
            retries = row.get("retrycount") or 0
            if not isinstance(n, int) or isinstance(n, bool) or not isinstance(retries, int):
                raise MalformedResponse(200, "", "a group has no whole-number count", what=what)
            if not isinstance(name, str) or not names.fullmatch(name):
                continue
            bucket = self.by_name[name]
            bucket[_bucket(status)] += n
            if retries > 0:
                bucket["retried"] += n
                bucket["retries"] += n * retries

    def total(self, key: str) -> int:
        return sum(b.get(key, 0) for b in self.by_name.values())


def _bucket(status: Any) -> str:
    if status == SUCCEEDED:
        return "succeeded"
    if status == FAILED:
        return "failed"
    if status == CANCELED:
        return "canceled"
    if status in WAITING:
        return "waiting"
    return "in_progress"


class SystemJobs:
    """Failed / retried / waiting system jobs of one integration, against its error-rate SLO."""

    kind: ClassVar[str] = "system_jobs"
    spec: ClassVar[CheckKindSpec] = CheckKindSpec(
        needs_entity=False,
        params={"integration": str, "name_like": str, "window": timedelta, "failures_shown": int},
        references={"integration": "integrations"},
        description="System jobs of an integration (asyncoperation): failed, retried, waiting, error rate vs SLO.",
    )

    async def run(self, ctx: CheckContext) -> CheckResult:
        try:
            integration, pattern = _target(ctx)
        except IntegrationNotFound as exc:
            return ctx.error(str(exc))
        window = ctx.check.params.get("window") or DEFAULT_WINDOW
        now = ctx.clock.now()
        since = (now - window).replace(microsecond=0)  # OData literals have whole seconds
        names = like_regex(pattern)
        base = like_filter(pattern)
        counts = _Counts()
        backlog_exceeded = False
        try:
            try:
                rows = await _aggregate(ctx, _and(base, "statecode ne 3"))
                counts.add(rows, names, "the open system jobs")
            except AggregateLimitExceeded:
                backlog_exceeded = True
            splits = await _completed(ctx, base, since, now, counts, names)
            failures = await _newest_failures(ctx, base, since, names) if counts.total("failed") else []
        except ConnectorError as exc:
            return ctx.error(f"Could not read the system jobs of {_label(integration, pattern)}: {exc}")
        return _judge(ctx, integration, pattern, window, counts, backlog_exceeded, failures, splits)


def _target(ctx: CheckContext) -> tuple[IntegrationConfig | None, str]:
    """(integration or None, name pattern): from `integration:` or, failing that, `name_like:`."""
    if ctx.check.params.get("integration"):
        integration = integration_for(ctx)
        if integration.jobs is None:
            raise IntegrationNotFound(f"Integration {integration.id!r} has no jobs: {{name_like: …}} to watch.")
        return integration, integration.jobs.name_like
    pattern = ctx.check.params.get("name_like")
    if not pattern:
        raise IntegrationNotFound(f"Check {ctx.check.id} needs integration: <id> (or name_like: <pattern>).")
    return None, str(pattern)


def _and(*conditions: str | None) -> str:
    return " and ".join(f"({c})" if " or " in c else c for c in conditions if c)


async def _aggregate(ctx: CheckContext, filter_: str) -> list[dict[str, Any]]:
    return await ctx.dynamics.aggregate(ENTITY_SET, f"filter({filter_})/{GROUPING}", log=ctx.dynamics_log)


async def _completed(
    ctx: CheckContext, base: str | None, since: datetime, now: datetime, counts: _Counts, names: re.Pattern[str]
) -> int:
    """Adds the jobs completed since `since`; returns how many aggregates that took.

    The newest range has no upper bound, so a job completing while the check runs (or a
    clock a little behind Dynamics) is not lost between two ranges.
    """
    pending: list[tuple[datetime, datetime | None]] = [(since, None)]
    used = 0
    while pending:
        low, high = pending.pop()
        condition = f"statecode eq 3 and completedon ge {_odata_time(low)}"
        if high is not None:
            condition += f" and completedon lt {_odata_time(high)}"
        try:
            rows = await _aggregate(ctx, _and(base, condition))
        except AggregateLimitExceeded:
            seconds = int(((high or now) - low).total_seconds())
            if seconds < 2:
                raise  # 50,000 completions within a second: nothing left to split
            middle = low + timedelta(seconds=seconds // 2)
            pending += [(low, middle), (middle, high)]
            continue
        counts.add(rows, names, "the completed system jobs")
        used += 1
    return used


async def _newest_failures(
    ctx: CheckContext, base: str | None, since: datetime, names: re.Pattern[str]
) -> list[dict[str, Any]]:
    """The newest failed jobs in the window, for the explanation: ids, time and messages."""
    shown = max(1, int(ctx.check.params.get("failures_shown", 5)))
    body = await ctx.dynamics.get_json(
        ENTITY_SET,
        {
            "$select": "asyncoperationid,name,errorcode,message,friendlymessage,completedon,retrycount",
            "$filter": _and(base, f"statuscode eq {FAILED} and completedon ge {_odata_time(since)}"),
            "$orderby": "completedon desc",
            "$top": str(shown * 2),
        },
        log=ctx.dynamics_log,
    )
    rows = body.get("value")
    if not isinstance(rows, list):
        raise MalformedResponse(200, "", "the answer has no 'value' list of rows", what="the failed system jobs")
    return [r for r in rows if isinstance(r, dict) and names.fullmatch(str(r.get("name", "")))][:shown]


def _label(integration: IntegrationConfig | None, pattern: str) -> str:
    return integration.id if integration is not None else f"jobs like {pattern!r}"


def _judge(
    ctx: CheckContext,
    integration: IntegrationConfig | None,
    pattern: str,
    window: timedelta,
    counts: _Counts,
    backlog_exceeded: bool,
    failures: list[dict[str, Any]],
    splits: int,
) -> CheckResult:
    label = _label(integration, pattern)
    succeeded, failed = counts.total("succeeded"), counts.total("failed")
    completed = succeeded + failed
    rate = failed / completed if completed else 0.0
    slo_rate = integration.slo.error_rate if integration and integration.slo else None
    breach = ctx.check.breach if ctx.check.breach is not None else slo_rate
    warn = ctx.check.warn if ctx.check.warn is not None else (0.0 if breach is None or breach > 0 else None)
    waiting = None if backlog_exceeded else counts.total("waiting")
    in_progress = None if backlog_exceeded else counts.total("in_progress")
    newest = failures[0] if failures else {}
    last_error = scrub(ctx.config.redact(str(newest.get("friendlymessage") or newest.get("message") or "")))
    values: dict[str, Any] = {
        "integration": integration.id if integration else None,
        "name_like": pattern,
        "window": format_duration(window),
        "failed_jobs": failed,
        "retried_jobs": None if backlog_exceeded else counts.total("retried"),
        "retries": None if backlog_exceeded else counts.total("retries"),
        "waiting_jobs": waiting,
        "in_progress_jobs": in_progress,
        "succeeded_jobs": succeeded,
        "canceled_jobs": counts.total("canceled"),
        "completed_jobs": completed,
        "backlog": AGGREGATE_LIMIT if backlog_exceeded else (waiting or 0) + (in_progress or 0),
        "backlog_exceeded": backlog_exceeded,
        "error_rate": round(rate, 6),
        "error_rate_pct": round(rate * 100, 2),
        "by_name": {name: dict(sorted(b.items())) for name, b in sorted(counts.by_name.items())},
        "last_error": last_error or None,
        "last_error_code": newest.get("errorcode"),
        "last_error_at": newest.get("completedon"),
        "failing_job_ids": [str(f.get("asyncoperationid")) for f in failures],
        "failing_job_count": failed,
        "completed_partitions": splits,
    }
    threshold = {k: v for k, v in (("warn", warn), ("breach", breach)) if v is not None}
    span = span_text(window)
    if backlog_exceeded:
        text = (
            f"{label}: backlog of 50,000+ system jobs (Dataverse refused to count the open jobs: "
            f"aggregate limit 0x8004e023); {failed:,} failed in the last {span}."
        )
        return ctx.finish(Status.BREACH, text, values, threshold)
    if not counts.by_name:
        text = f"{label}: no system jobs in the last {span} and none waiting; is the integration running?"
        return ctx.finish(Status.WARN, text, values, threshold)
    status = judge(rate, warn, breach)
    text = (
        f"{label}: {failed:,} of {completed:,} completed jobs failed in the last {span} "
        f"({rate * 100:.1f} %{'' if breach is None else f' vs SLO {breach * 100:g} %'}); "
        f"{values['retried_jobs']:,} retried, {waiting:,} waiting, {in_progress:,} in progress"
    )
    if failures:
        text += f"; last error: {last_error[:160].rstrip(' .')}" if last_error else ""
        text += f"; first failing jobs: {', '.join(values['failing_job_ids'][:3])}"
    return ctx.finish(status, text + ".", values, threshold)
