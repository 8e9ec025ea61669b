"""YAML with positions: safe-loader semantics, but every value keeps the line and column it came from.

`yaml.safe_load` throws positions away, and without them a problem report can only say *what*
is wrong, not *where*. So the file is composed with the `SafeLoader` (same resolver, same
accepted tags, no arbitrary objects) and the node graph is converted here into a small tree
whose nodes remember their 1-based line and column. Duplicate keys, which PyYAML silently lets
the last one win, are reported instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node as YamlNode, ScalarNode, SequenceNode

from crmctl.config.problems import Problem

MAX_DEPTH = 64
"""No config needs more nesting; deeper means a generated or hostile file."""

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_MERGE_TAG = _TAG + "merge"


@dataclass(frozen=True, eq=False)
class Node:
    """A YAML value with the position it starts at (1-based, as editors count)."""

    line: int
    column: int


@dataclass(frozen=True, eq=False)
class Scalar(Node):
    """A plain value: str, int, float, bool, None, date or (aware or naive) datetime."""

    value: Any
    text: str
    """The value as written in the file, for problem messages (``1:30`` rather than ``90``)."""


@dataclass(frozen=True, eq=False)
class Broken(Scalar):
    """A value that could not be read at all (bad tag, bad date, recursive alias).

    The problem is already reported; schema readers skip it silently so that one mistake does
    not also surface as "is empty" or "got nothing".
    """


@dataclass(frozen=True, eq=False)
class Seq(Node):
    """A YAML sequence."""

    items: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class Map(Node):
    """A YAML mapping with string keys, in file order, merge keys (``<<``) already applied."""

    entries: tuple[tuple[Scalar, Node], ...]

    def get(self, key: str) -> Node | None:
        """The value node under `key`, or None."""
        for k, v in self.entries:
            if k.value == key:
                return v
        return None

    def keys(self) -> tuple[str, ...]:
        return tuple(k.value for k, _ in self.entries)

    def __contains__(self, key: object) -> bool:
        return any(k.value == key for k, _ in self.entries)


def describe(node: Node, *, show_value: bool = True) -> str:
    """Names what a node holds, for "got …" messages: ``a string ('eight')``, ``a list``.

    `show_value=False` is used for secret fields: whatever was written there may be the secret.
    """
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    assert isinstance(node, Scalar)
    value = node.value
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, int):
        kind = "an integer"
    elif isinstance(value, float):
        kind = "a number"
    elif isinstance(value, datetime):
        kind = "a timestamp"
    elif isinstance(value, date):
        kind = "a date"
    elif isinstance(value, str):
        kind = "a string"
    else:
        kind = f"a {type(value).__name__}"
    if not show_value:
        return kind
    text = node.text if len(node.text) <= 40 else node.text[:37] + "..."
    return f"{kind} ({text!r})" if isinstance(value, str) else f"{kind} ({text})"


def parse_yaml(text: str, file: str) -> tuple[Node | None, list[Problem]]:
    """Composes `text` with the safe loader into a positioned tree.

    Returns the root (None for an empty document) and the problems found on the way: YAML syntax
    errors (then the root is None), duplicate keys, non-string keys, unsupported tags, recursive
    aliases. Never raises for bad input.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(exc, file)]
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return None, [Problem(file, line, column, f"YAML cannot read this file: {exc.reason} (#x{char:02x})",
                              "expected printable UTF-8 text")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 1, 1, f"YAML syntax error: {exc}", "expected valid YAML")]
    except RecursionError:
        return None, [Problem(file, 1, 1, "YAML is nested too deeply to read", "expected a config file")]
    if root is None:
        return None, []
    converter = _Converter(file)
    return converter.convert(root, "", 0), converter.problems


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    """Turns PyYAML's exception into one problem line, without the source snippet PyYAML adds.

    The snippet is dropped on purpose: it may quote a line holding a credential.
    """
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    what = exc.problem or "invalid YAML"
    if exc.context:
        what = f"{exc.context}, {what}"
    return Problem(file, line, column, f"YAML syntax error: {what}",
                   "expected valid YAML (check indentation, colons and quotes)")


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _tag(tag: str) -> str:
    """A tag the way it was probably written: ``!!set`` rather than ``tag:yaml.org,2002:set``."""
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _where(path: str) -> str:
    return path or "top level"


class _Converter:
    """Walks PyYAML's node graph once, memoising shared (aliased) nodes.

    Memoising keeps a "billion laughs" document linear; the in-progress set catches an alias
    that refers to its own ancestor, which would otherwise be an infinite tree.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._done: dict[int, Node] = {}
        self._active: set[int] = set()
        self._constructor = SafeConstructor()

    def report(self, node: YamlNode, message: str, expected: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, message, expected))

    def convert(self, node: YamlNode, path: str, depth: int) -> Node:
        key = id(node)
        if key in self._done:
            return self._done[key]
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if key in self._active:
            self.report(node, f"{_where(path)}: a YAML alias refers to a value that contains it",
                        "expected no recursive aliases")
            return Broken(line, column, None, "")
        if depth > MAX_DEPTH:
            self.report(node, f"{_where(path)}: nested too deeply", f"expected at most {MAX_DEPTH} levels")
            return Broken(line, column, None, "")
        self._active.add(key)
        try:
            if isinstance(node, ScalarNode):
                result: Node = self._scalar(node, path)
            elif isinstance(node, SequenceNode):
                result = self._sequence(node, path, depth)
            else:
                assert isinstance(node, MappingNode)
                result = self._mapping(node, path, depth)
        finally:
            self._active.discard(key)
        self._done[key] = result
        return result

    def _scalar(self, node: ScalarNode, path: str) -> Scalar:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if node.tag not in _SCALAR_TAGS:
            self.report(node, f"{_where(path)}: unsupported YAML tag {_tag(node.tag)!r}",
                        "expected a plain string, number, boolean, date or timestamp")
            return Broken(line, column, None, node.value)
        try:
            value = self._constructor.construct_object(node)
        except Exception as exc:  # noqa: BLE001 - PyYAML raises assorted errors for odd scalars
            reason = getattr(exc, "problem", None) or str(exc)
            self.report(node, f"{_where(path)}: cannot read {node.value!r}: {reason}",
                        "expected a valid value (quote it to keep it as text)")
            return Broken(line, column, None, node.value)
        return Scalar(line, column, value, node.value)

    def _sequence(self, node: SequenceNode, path: str, depth: int) -> Node:
        if node.tag != _TAG + "seq":
            self.report(node, f"{_where(path)}: unsupported YAML tag {_tag(node.tag)!r}", "expected a plain list")
            return Broken(node.start_mark.line + 1, node.start_mark.column + 1, None, "")
        items = tuple(self.convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value))
        return Seq(node.start_mark.line + 1, node.start_mark.column + 1, items)

    def _mapping(self, node: MappingNode, path: str, depth: int) -> Node:
        if node.tag != _TAG + "map":
            self.report(node, f"{_where(path)}: unsupported YAML tag {_tag(node.tag)!r}", "expected a plain mapping")
            return Broken(node.start_mark.line + 1, node.start_mark.column + 1, None, "")
        own: dict[str, tuple[Scalar, Node]] = {}
        merged: dict[str, tuple[Scalar, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(value_node, path, depth, merged)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child_path = f"{path}.{key.value}" if path else key.value
            if key.value in own:
                first = own[key.value][0]
                self.report(key_node, f"{_where(path)}: duplicate key {key.value!r} "
                            f"(first at line {first.line})", "expected each key once per mapping")
                continue
            own[key.value] = (key, self.convert(value_node, child_path, depth + 1))
        # Explicit keys win over merged ones, as YAML's merge-key spec says.
        entries = [entry for name, entry in merged.items() if name not in own] + list(own.values())
        return Map(node.start_mark.line + 1, node.start_mark.column + 1, tuple(entries))

    def _merge(self, value: YamlNode, path: str, depth: int, into: dict[str, tuple[Scalar, Node]]) -> None:
        """Applies a ``<<: *anchor`` (or ``<<: [*a, *b]``); earlier sources win, as the spec says."""
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            converted = self.convert(source, path, depth + 1)
            if isinstance(converted, Broken):
                continue
            if not isinstance(converted, Map):
                self.report(source, f"{_where(path)}: '<<' must name a mapping",
                            "expected <<: *anchor of a mapping, or a list of them")
                continue
            for key, child in converted.entries:
                into.setdefault(key.value, (key, child))

    def _key(self, node: YamlNode, path: str) -> Scalar | None:
        """Mapping keys must be strings: `on:`/`yes:`/`1:` are read by YAML as other types."""
        if not isinstance(node, ScalarNode):
            self.report(node, f"{_where(path)}: a mapping key must be a plain string",
                        "expected key: value")
            return None
        converted = self._scalar(node, path)
        if isinstance(converted, Broken):
            return None
        if not isinstance(converted.value, str):
            shown = describe(converted, show_value=False)
            self.report(node, f"{_where(path)}: key {node.value!r} is read by YAML as {shown}",
                        "expected a string key (put it in quotes)")
            return None
        return converted
