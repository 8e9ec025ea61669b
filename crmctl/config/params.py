"""Checks: the common keys, and the kind-specific parameters typed by each kind's `CheckKindSpec`."""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping, Sequence as AbcSequence
from datetime import date, datetime, timedelta
from pathlib import PurePath
from types import MappingProxyType
from typing import Any

from crmctl.config.reading import (
    FAILED,
    IDENT,
    NOT_SUBSTITUTED,
    Field,
    Reader,
    check_secret_name,
    did_you_mean,
    duration,
    join,
    label,
    number,
    one_of,
    read_fields,
    report_unknown_key,
    secret,
    text,
)
from crmctl.config.sections import CheckConfig, CheckKindSpec
from crmctl.config.values import (
    DATE_EXAMPLE,
    DURATION_EXAMPLES,
    TIMESTAMP_EXAMPLE,
    Secret,
    has_env_syntax,
    parse_date,
    parse_duration,
    parse_timestamp,
    whole_env_ref,
)
from crmctl.config.yamltree import Broken, Map, Node, Scalar, Seq, describe


CHECK_FIELDS = (
    Field("id", IDENT, required=True),
    Field("kind", text("a check kind such as row_count"), required=True),
    Field("entity", text("the name of an entity under entities:")),
    Field("warn", number()),
    Field("breach", number()),
    Field("every", duration(positive=True), default=timedelta(seconds=60)),
    Field("timeout", duration(positive=True)),
    Field("title", text()),
)
CHECK_EXPECT = "a mapping with id and kind"


def read_check(reader: Reader, node: Node, where: str) -> Any:
    """Reads one check; every key outside the common ones is a parameter of its kind.

    With the kinds' specs (as the CLI always passes them) parameters are validated and typed;
    without them they are kept as written, so `load_config` still works for tools that only
    need the runbook.
    """
    got = read_fields(reader, node, where, CHECK_FIELDS, expect=CHECK_EXPECT, keep_extra=True)
    if got is None:
        return FAILED
    values, extra = got
    assert isinstance(node, Map)
    kind = values["kind"]
    spec: CheckKindSpec | None = None
    if reader.check_kinds is not None and isinstance(kind, str):
        spec = reader.check_kinds.get(kind)
        kind_node = node.get("kind")
        if spec is None and kind_node is not None:
            kinds = sorted(reader.check_kinds)
            reader.report(kind_node, f"{join(where, 'kind')}: unknown check kind {kind!r}{did_you_mean(kind, kinds)}",
                          one_of(kinds) if kinds else "expected a registered check kind")
    if spec is not None and spec.needs_entity:
        entity_node = node.get("entity")
        if entity_node is None or (isinstance(entity_node, Scalar) and entity_node.value is None):
            reader.report(entity_node or node, f"{label(where)}: check kind {kind!r} needs an entity",
                          "expected entity: the name of an entity under entities:")
    params: dict[str, Any] = {}
    allowed = [f.key for f in CHECK_FIELDS] + (list(spec.params) if spec is not None else [])
    for key_node, value_node in extra:
        key = key_node.value
        child = join(where, key)
        if spec is not None and key not in spec.params:
            report_unknown_key(reader, key_node, value_node, where, allowed, context=f" for check kind {kind!r}")
            continue
        if spec is not None:
            value = _typed_param(reader, value_node, child, key, spec.params[key])
        else:  # no specs given, or an unknown kind (already reported): keep it as written
            value = _plain(reader, value_node, child, key)
        if value is not FAILED:
            params[key] = value
    return CheckConfig(**values, params=MappingProxyType(params))


def _plain(reader: Reader, node: Node, where: str, key: str) -> Any:
    """A parameter kept as written: lists become tuples and mappings read-only, so the config
    stays immutable all the way down; `${env:NAME}` becomes a `Secret`."""
    if isinstance(node, (Seq, Map)) and id(node) in reader.plain_cache:
        # The same node reached again through an alias: converting it once keeps a document
        # of nested aliases ("billion laughs") linear, and reports its problems once.
        return reader.plain_cache[id(node)]
    if isinstance(node, Seq):
        items = (_plain(reader, item, join(where, i), key) for i, item in enumerate(node.items))
        result: Any = tuple(v for v in items if v is not FAILED)
        reader.plain_cache[id(node)] = result
        return result
    if isinstance(node, Map):
        out = {}
        for k, v in node.entries:
            value = _plain(reader, v, join(where, k.value), k.value)
            if value is not FAILED:
                out[k.value] = value
        result = reader.plain_cache[id(node)] = MappingProxyType(out)
        return result
    assert isinstance(node, Scalar)
    if isinstance(node, Broken):
        return FAILED
    if check_secret_name(reader, key, node, where):
        return FAILED
    if isinstance(node.value, str) and has_env_syntax(node.value):
        if whole_env_ref(node.value) is None:
            reader.report(node, f"{where}: ${{env:…}} must be the whole value",
                          "expected ${env:NAME} and nothing around it")
            return FAILED
        return secret().parse(reader, node, where)
    return node.value


_TYPE_TEXT: dict[Any, str] = {
    bool: "true or false", int: "an integer", float: "a number", str: "a string",
    timedelta: DURATION_EXAMPLES, datetime: TIMESTAMP_EXAMPLE, date: DATE_EXAMPLE,
    Secret: "${env:NAME}", list: "a list", tuple: "a list", dict: "a mapping",
    AbcMapping: "a mapping", AbcSequence: "a list", type(None): "nothing (null)",
}
_NO_MATCH: Any = object()


def _typed_param(reader: Reader, node: Node, where: str, key: str, types: type | tuple[type, ...]) -> Any:
    """A parameter converted to the first of its declared types that the value fits."""
    candidates = types if isinstance(types, tuple) else (types,)
    if isinstance(node, Broken):
        return FAILED
    if check_secret_name(reader, key, node, where):
        return FAILED
    if isinstance(node, Scalar) and isinstance(node.value, str) and has_env_syntax(node.value):
        if Secret in candidates:
            return secret().parse(reader, node, where)
        reader.report(node, f"{where}: {NOT_SUBSTITUTED}",
                      "expected the value written out")
        return FAILED
    for kind in candidates:
        value = _coerce(reader, node, where, key, kind)
        if value is not _NO_MATCH:
            return value
    names = " or ".join(dict.fromkeys(_TYPE_TEXT.get(k, getattr(k, "__name__", str(k))) for k in candidates))
    reader.report(node, f"{where}: got {describe(node)}", f"expected {names}")
    return FAILED


def _coerce(reader: Reader, node: Node, where: str, key: str, kind: Any) -> Any:
    """The value as `kind`, or _NO_MATCH; reports nothing (the caller reports a mismatch)."""
    value = node.value if isinstance(node, Scalar) else None
    scalar = isinstance(node, Scalar)
    if scalar and isinstance(value, str) and has_env_syntax(value):
        return _NO_MATCH  # env references only become Secrets, handled by the caller
    try:
        if kind is type(None):
            return None if scalar and value is None else _NO_MATCH
        if kind is bool:
            return value if scalar and isinstance(value, bool) else _NO_MATCH
        if kind is int:
            return value if scalar and isinstance(value, int) and not isinstance(value, bool) else _NO_MATCH
        if kind is float:
            if scalar and isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            return _NO_MATCH
        if kind is str:
            return value if scalar and isinstance(value, str) else _NO_MATCH
        if kind is timedelta:
            return parse_duration(value) if scalar and value is not None else _NO_MATCH
        if kind is datetime:
            return parse_timestamp(value) if scalar else _NO_MATCH
        if kind is date:
            return parse_date(value) if scalar else _NO_MATCH
        if isinstance(kind, type) and issubclass(kind, PurePath):
            return reader.resolve(value) if scalar and isinstance(value, str) and value.strip() else _NO_MATCH
        if kind is Secret:
            return _NO_MATCH
        if kind in (list, tuple, AbcSequence):
            return _plain(reader, node, where, key) if isinstance(node, Seq) else _NO_MATCH
        if kind in (dict, AbcMapping, MappingProxyType):
            return _plain(reader, node, where, key) if isinstance(node, Map) else _NO_MATCH
        if kind is object or kind is Any:
            return _plain(reader, node, where, key)
        plain = value if scalar else None
        return plain if isinstance(kind, type) and isinstance(plain, kind) else _NO_MATCH
    except (ValueError, OverflowError):  # OverflowError: float() of an int past float range
        return _NO_MATCH
