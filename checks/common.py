"""Small helpers the data checks share: their parameters, key lists, sentences and thresholds."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Iterable, Mapping, Sequence

from crmctl.checking import CheckContext
from crmctl.config import EntityConfig
from crmctl.connectors.errors import ConnectorError, MalformedResponse
from crmctl.exports import exports_folder
from crmctl.model import CheckResult, iso
from checks.keys import attribute, column, odata_string

DEFAULT_FIRST = 20
"""How many keys a result lists by default (the full lists go to CSV exports)."""


class CheckProblem(Exception):
    """The check cannot run as configured (a missing parameter, an unknown lookup, a bad name).

    Raised before any figure exists and turned into an ERROR result whose explanation is the
    message: it is the operator's sentence, so it says what to change.
    """


async def guarded(ctx: CheckContext, work: Awaitable[CheckResult], failed: str) -> CheckResult:
    """The result of a data check's `work`, or ERROR with the sentence of what stopped it.

    Every data check kind ends the same three ways short of a figure: a `CheckProblem` is
    already the operator's sentence; a connector's failure is said after what could not be
    done (`failed`: "Could not reconcile contact"); a `ValueError` is a name in the config
    that cannot be a column or an attribute.
    """
    try:
        return await work
    except CheckProblem as exc:
        return ctx.error(str(exc))
    except ConnectorError as exc:
        return ctx.error(f"{failed}: {exc}")
    except ValueError as exc:
        return ctx.error(f"Check {ctx.check.id} is misconfigured: {exc}.")


def first_n(ctx: CheckContext) -> int:
    """The `first` parameter: how many keys to show in the result (0 shows none)."""
    return max(0, int(ctx.check.params.get("first", DEFAULT_FIRST)))


def column_map(ctx: CheckContext, defaults: Sequence[str], what: str) -> dict[str, str]:
    """Dynamics attribute -> source column, from the `columns` parameter or the entity's list.

    `columns` may be a list (same name on both sides) or a mapping; without it every name in
    `defaults` (the entity's `required:` or `unique:`) is used on both sides.
    """
    given = ctx.check.params.get("columns")
    if given is None:
        pairs = [(name, name) for name in defaults]
    elif isinstance(given, Mapping):
        pairs = [(str(t), str(s)) for t, s in given.items()]
    else:
        pairs = [(str(name), str(name)) for name in given]
    if not pairs:
        raise CheckProblem(
            f"Check {ctx.check.id} has no columns to check: give columns: or list them under the entity's {what}:."
        )
    try:
        return {attribute(t): _plain_column(s) for t, s in pairs}
    except ValueError as exc:
        raise CheckProblem(f"Check {ctx.check.id}: {exc}.") from None


def _plain_column(name: str) -> str:
    column(name)  # validates
    return name


async def primary_id(ctx: CheckContext, entity: EntityConfig) -> str:
    """The entity's primary id attribute (`accountid`): `target.id`, else asked of the metadata."""
    if entity.target.id:
        return attribute(entity.target.id)
    body = await ctx.dynamics.get_json(
        "EntityDefinitions",
        [("$select", "PrimaryIdAttribute"), ("$filter", f"EntitySetName eq {odata_string(entity.target.entity_set)}")],
        log=ctx.dynamics_log,
    )
    rows = body.get("value") or []
    name = rows[0].get("PrimaryIdAttribute") if rows and isinstance(rows[0], dict) else None
    if not isinstance(name, str):
        raise MalformedResponse(200, "", f"no primary id for '{entity.target.entity_set}'", what="EntityDefinitions")
    return attribute(name)


def exports_dir(ctx: CheckContext) -> Path:
    """Where this cutover's CSV exports go (beside the state file)."""
    return exports_folder(ctx.config.state)


def key_list(keys: Iterable[str], total: int, limit: int = 5) -> str:
    """"ACC-1, ACC-2 and 35 more" for explanations."""
    shown = list(keys)[:limit]
    if not shown:
        return ""
    text = ", ".join(shown)
    if total > len(shown):
        text += f" and {total - len(shown):,} more"
    return text


def plural(count: int, word: str, many: str | None = None) -> str:
    """"1 key", "37 keys"."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def pct(part: int | float, whole: int | float) -> float:
    """`part` as a percentage of `whole`, rounded for display (0 when `whole` is 0)."""
    return round(100.0 * part / whole, 4) if whole else 0.0


def stamp(value: Any) -> str | None:
    """A timestamp value as the ISO text results carry (None stays None)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return iso(value).replace(".000000Z", "Z")
    return str(value)
