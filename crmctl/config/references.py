"""References between sections: duplicate ids, ids that do not exist, and runbook cycles."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from crmctl.config.reading import Reader, did_you_mean, join
from crmctl.config.sections import REFERENCE_SECTIONS
from crmctl.config.yamltree import Map, Node, Scalar, Seq


@dataclass(frozen=True)
class _Item:
    """One mapping of a list section, with its path for messages."""

    where: str
    node: Map


def _items(node: Node | None, where: str) -> Iterator[_Item]:
    if isinstance(node, Seq):
        for i, item in enumerate(node.items):
            if isinstance(item, Map):
                yield _Item(join(where, i), item)


def _str_at(item: _Item, key: str) -> Scalar | None:
    node = item.node.get(key)
    return node if isinstance(node, Scalar) and isinstance(node.value, str) else None


def _str_list_at(item: _Item, key: str) -> list[tuple[str, Scalar]]:
    node = item.node.get(key)
    if not isinstance(node, Seq):
        return []
    return [(join(join(item.where, key), i), n) for i, n in enumerate(node.items)
            if isinstance(n, Scalar) and isinstance(n.value, str)]


def _unique_ids(reader: Reader, items: list[_Item], key: str, what: str,
                seen: dict[str, Scalar] | None = None) -> dict[str, Scalar]:
    """First definition of each id; later ones are reported as duplicates."""
    seen = {} if seen is None else seen
    for item in items:
        node = _str_at(item, key)
        if node is None:
            continue
        first = seen.get(node.value)
        if first is not None:
            reader.report(node, f"{join(item.where, key)}: duplicate {what} {node.value!r} "
                          f"(first defined at line {first.line})", f"expected each {what} {key} to be unique")
        else:
            seen[node.value] = node
    return seen


def _check_ref(reader: Reader, where: str, node: Scalar, known: Mapping[str, Any], what: str, expect: str) -> None:
    if node.value not in known:
        reader.report(node, f"{where}: unknown {what} {node.value!r}{did_you_mean(node.value, known)}",
                      f"expected {expect}")


def cross_check(reader: Reader, root: Map) -> None:
    """Reports duplicate ids, references to ids that do not exist, and runbook cycles."""
    entities = list(_items(root.get("entities"), "entities"))
    checks = list(_items(root.get("checks"), "checks"))
    runbook = list(_items(root.get("runbook"), "runbook"))
    rollback = root.get("rollback")
    rollback_map = rollback if isinstance(rollback, Map) else None
    back_steps = list(_items(rollback_map.get("runbook"), "rollback.runbook")) if rollback_map else []
    criteria = list(_items(rollback_map.get("criteria"), "rollback.criteria")) if rollback_map else []

    entity_names = _unique_ids(reader, entities, "name", "entity")
    check_ids = _unique_ids(reader, checks, "id", "check")
    _unique_ids(reader, list(_items(root.get("integrations"), "integrations")), "id", "integration")
    _unique_ids(reader, list(_items(root.get("slos"), "slos")), "id", "SLO")
    _unique_ids(reader, criteria, "id", "criterion")
    step_ids = _unique_ids(reader, runbook, "id", "step")
    back_ids = _unique_ids(reader, back_steps, "id", "step", seen={})
    for step_id, node in back_ids.items():
        if step_id in step_ids:
            reader.report(node, f"step id {step_id!r} is used in both runbooks "
                          f"(first at line {step_ids[step_id].line})", "expected each step id to be unique")

    entity_expect = "the name of an entity defined under entities:"
    check_expect = "the id of a check defined under checks:"
    for item in checks:
        ref = _str_at(item, "entity")
        if ref is not None:
            _check_ref(reader, join(item.where, "entity"), ref, entity_names, "entity", entity_expect)
    for item in entities:
        for lookup in _items(item.node.get("lookups"), join(item.where, "lookups")):
            ref = _str_at(lookup, "entity")
            if ref is not None:
                _check_ref(reader, join(lookup.where, "entity"), ref, entity_names, "entity", entity_expect)
    for item in criteria:
        ref = _str_at(item, "check")
        if ref is not None:
            _check_ref(reader, join(item.where, "check"), ref, check_ids, "check", check_expect)
        for key in ("rollback_if", "hold_if"):
            expression = _str_at(item, key)
            if expression is not None:
                _check_expression(reader, join(item.where, key), expression)
    _check_param_refs(reader, root, checks, check_ids)
    _check_auto_rules(reader, root.get("incidents"), check_ids)
    for steps, ids, where in ((runbook, step_ids, "runbook"), (back_steps, back_ids, "rollback.runbook")):
        for item in steps:
            for child, node in _str_list_at(item, "gate"):
                _check_ref(reader, child, node, check_ids, "check", check_expect)
            for child, node in _str_list_at(item, "after"):
                _check_ref(reader, child, node, ids, "step", f"the id of a step in {where}:")
        _report_cycles(reader, steps, ids)


_SINGULAR = {"entities": "entity", "integrations": "integration", "checks": "check", "slos": "SLO"}
_ARTICLE = {"entities": "an", "integrations": "an", "checks": "a", "slos": "an"}


def _check_param_refs(reader: Reader, root: Map, checks: list[_Item], check_ids: Mapping[str, Scalar]) -> None:
    """Check parameters that name an entity, integration, check or SLO (declared by the kind's
    `CheckKindSpec.references`) must name one that exists: a typo in `integration: erp-sink`
    is reported at load time, not as an ERROR on cutover night."""
    if reader.check_kinds is None:
        return
    known: dict[str, Mapping[str, Any]] = {"checks": check_ids}
    for item in checks:
        kind = _str_at(item, "kind")
        spec = reader.check_kinds.get(kind.value) if kind is not None else None
        if spec is None:
            continue
        for param, section in spec.references.items():
            if section not in known:
                key = REFERENCE_SECTIONS[section]
                known[section] = {n.value: n for n in (_str_at(i, key) for i in _items(root.get(section), section))
                                  if n is not None}
            what = _SINGULAR[section]
            expect = f"the {REFERENCE_SECTIONS[section]} of {_ARTICLE[section]} {what} defined under {section}:"
            where = join(item.where, param)
            ref = _str_at(item, param)
            if ref is not None:
                _check_ref(reader, where, ref, known[section], what, expect)
            for child, node in _str_list_at(item, param):
                _check_ref(reader, child, node, known[section], what, expect)


def _check_auto_rules(reader: Reader, incidents: Node | None, check_ids: Mapping[str, Scalar]) -> None:
    """An auto-raise rule whose `check:` (an id or a glob) matches no check would never fire:
    almost always a typo, so it is reported like any other unknown id."""
    if not isinstance(incidents, Map):
        return
    for item in _items(incidents.get("auto"), "incidents.auto"):
        ref = _str_at(item, "check")
        if ref is None or any(fnmatch.fnmatchcase(check_id, ref.value) for check_id in check_ids):
            continue
        reader.report(ref, f"{join(item.where, 'check')}: {ref.value!r} matches no check"
                      f"{did_you_mean(ref.value, check_ids)}",
                      "expected a check id defined under checks:, or a glob such as account.*")


def _check_expression(reader: Reader, where: str, node: Scalar) -> None:
    """A rollback criterion must parse now, not fail on cutover night (crmctl.expressions)."""
    from crmctl.expressions import ExpressionError, parse

    try:
        parse(node.value)
    except ExpressionError as exc:
        reader.report(node, f"{where}: bad expression {node.value!r}: {exc.message} at character {exc.column}",
                      f"expected {exc.expected}")


def _report_cycles(reader: Reader, steps: list[_Item], ids: Mapping[str, Scalar]) -> None:
    """Reports each `after:` cycle once, naming it: ``a -> b -> a`` (each waits for the next).

    Iterative depth-first search, so a long chain of steps cannot exhaust Python's stack.
    """
    edges: dict[str, list[tuple[str, str, Scalar]]] = {}
    for item in steps:
        own = _str_at(item, "id")
        if own is None or own.value in edges or ids.get(own.value) is not own:
            continue
        edges[own.value] = [(node.value, child, node) for child, node in _str_list_at(item, "after")
                            if node.value in ids]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in edges:
        if start in state:
            continue
        path: list[str] = [start]
        cursor: list[int] = [0]
        state[start] = 1
        while path:
            here = path[-1]
            out = edges.get(here, [])
            if cursor[-1] >= len(out):
                state[here] = 2
                path.pop()
                cursor.pop()
                continue
            target, child, node = out[cursor[-1]]
            cursor[-1] += 1
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                reader.report(node, f"{child}: dependency cycle: {' -> '.join(cycle)}",
                              "expected after: to name only steps that do not wait for this one")
            elif target not in state:
                state[target] = 1
                path.append(target)
                cursor.append(0)
