"""A small typed schema layer over the positioned YAML tree: field tables, converters, problems.

Each config section is described by a table of `Field`s (key, converter, required or default)
and read by one generic function, `read_fields`, which reports unknown keys (with a
did-you-mean), missing keys (at the enclosing mapping), empty values and wrong types. The
converters report bad values at the value's own position. Nothing here raises for bad input:
problems are collected on the `Reader` and reading carries on, so one run reports them all.
"""

from __future__ import annotations

import difflib
import math
import sys
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from crmctl.config.problems import Problem
from crmctl.config.sections import CheckKindSpec
from crmctl.config.values import (
    DATE_EXAMPLE,
    DURATION_EXAMPLES,
    TIMESTAMP_EXAMPLE,
    Secret,
    has_env_syntax,
    mask_url,
    parse_date,
    parse_duration,
    parse_timestamp,
    substitute_env,
    whole_env_ref,
)
from crmctl.config.yamltree import Broken, Map, Node, Scalar, Seq, describe


class _Failed:
    """The result of a converter that has reported a problem."""

    def __repr__(self) -> str:
        return "FAILED"


FAILED: Any = _Failed()

SECRET_KEY = re.compile(r"(secret|passphrase|password|passwd|pwd|api_?key|access_?key|webhook|token)$", re.I)
"""Key names that hold credentials wherever they appear, declared or not (check params,
unknown keys): a literal value under one of them is refused like one in `auth.secret`."""

NOT_SUBSTITUTED = "${env:…} is only substituted in secrets and in source, target and probe URLs"

ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")
ID_EXPECT = "an id of letters, digits and . _ - : / (no blanks)"


class Reader:
    """The state of one `load_config` run: where relative paths start, the env, the problems."""

    def __init__(
        self,
        file: str,
        base_dir: Path,
        env: Mapping[str, str],
        check_kinds: Mapping[str, CheckKindSpec] | None,
    ) -> None:
        self.file = file
        self.base_dir = base_dir
        self.env = env
        self.check_kinds = check_kinds
        self.problems: list[Problem] = []
        self.substitutions: dict[str, str] = {}
        """Env values substituted into URLs, by variable: what `Config.redact` hides."""
        self.plain_cache: dict[int, Any] = {}
        """Check parameters already converted, by node identity (see `loader._plain`)."""

    def report(self, at: Node, message: str, expected: str = "") -> None:
        self.problems.append(Problem(self.file, at.line, at.column, message, expected))

    def resolve(self, text: str) -> Path:
        """A path from the file, made absolute against the config's folder (``~`` expanded).

        Not `Path.resolve()`: symlinks are left alone, so paths read like what was written.
        """
        path = Path(os.path.expanduser(text))
        return Path(os.path.normpath(self.base_dir / path))


@dataclass(frozen=True)
class Conv:
    """Turns one YAML node into a typed value, or reports why it cannot and returns FAILED."""

    expect: str
    """What a good value looks like, for "expected …" texts: ``an integer >= 1``."""
    parse: Callable[[Reader, Node, str], Any]
    """``parse(reader, node, where)``; `where` is the dotted key path for messages."""
    secret: bool = False
    """Never echo what was written (it may be the secret)."""


@dataclass(frozen=True)
class Field:
    """One key of a section's table."""

    key: str
    conv: Conv
    required: bool = False
    default: Any = None
    factory: Callable[[Reader], Any] | None = None
    """Computes the default when it depends on the run (a path beside the config file)."""

    def default_value(self, reader: Reader) -> Any:
        return self.factory(reader) if self.factory is not None else self.default


def join(where: str, key: str | int) -> str:
    """The dotted path of a child: ``target.limits`` + ``timeout``, or ``checks`` + ``[2]``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def label(where: str) -> str:
    return where or "top level"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a close candidate, else the empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def one_of(options: Iterable[str]) -> str:
    return "expected one of: " + ", ".join(options)


def wrong(reader: Reader, node: Node, where: str, conv: Conv) -> Any:
    """Reports a value of the wrong type and returns FAILED."""
    reader.report(node, f"{where}: got {describe(node, show_value=not conv.secret)}", f"expected {conv.expect}")
    return FAILED


def read_fields(
    reader: Reader,
    node: Node,
    where: str,
    table: Sequence[Field],
    *,
    expect: str,
    keep_extra: bool = False,
    hints: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[tuple[Scalar, Node]]] | None:
    """Reads a mapping against its field table.

    Args:
        expect: what the whole mapping should be, for when `node` is not a mapping at all.
        keep_extra: return keys not in the table instead of reporting them (check params).
        hints: why some unknown keys are wrong here (``is only used with kind: emulator``),
            used instead of a did-you-mean.

    Returns:
        The values by key (the default for a missing, empty or bad value) and the extra
        entries, or None when `node` is not a mapping.
    """
    if not isinstance(node, Map):
        reader.report(node, f"{label(where)}: got {describe(node)}", f"expected {expect}")
        return None
    known = {f.key: f for f in table}
    values: dict[str, Any] = {}
    extra: list[tuple[Scalar, Node]] = []
    for key_node, value_node in node.entries:
        key = key_node.value
        spec = known.get(key)
        if spec is None:
            extra.append((key_node, value_node))
            continue
        child = join(where, key)
        if isinstance(value_node, Broken):
            values[key] = spec.default_value(reader)
            continue
        if isinstance(value_node, Scalar) and value_node.value is None:
            if spec.required:
                reader.report(value_node, f"{child}: is empty", f"expected {spec.conv.expect}")
            values[key] = spec.default_value(reader)
            continue
        value = spec.conv.parse(reader, value_node, child)
        values[key] = spec.default_value(reader) if value is FAILED else value
    for spec in table:
        if spec.key in values:
            continue
        if spec.required:
            reader.report(node, f"{label(where)}: missing required key {spec.key!r}",
                          f"expected {spec.key}: {spec.conv.expect}")
        values[spec.key] = spec.default_value(reader)
    if not keep_extra:
        for key_node, value_node in extra:
            report_unknown_key(reader, key_node, value_node, where, known, hints)
        extra = []
    return values, extra


def report_unknown_key(
    reader: Reader,
    key_node: Scalar,
    value_node: Node,
    where: str,
    allowed: Iterable[str],
    hints: Mapping[str, str] | None = None,
    context: str = "",
) -> None:
    """Reports a key that does not belong, and a literal secret under it if its name says credential."""
    key = key_node.value
    allowed = list(allowed)
    if hints and key in hints:
        why = f" ({hints[key]})"
    else:
        why = did_you_mean(key, allowed)
    reader.report(key_node, f"{label(where)}: unknown key {key!r}{context}{why}", one_of(allowed))
    check_secret_name(reader, key, value_node, join(where, key))


def check_secret_name(reader: Reader, key: str, node: Node, where: str) -> bool:
    """Refuses a literal under a credential-looking key; True when it did."""
    if not SECRET_KEY.search(key) or not isinstance(node, Scalar) or node.value is None:
        return False
    if isinstance(node.value, str) and whole_env_ref(node.value) is not None:
        return False
    reader.report(node, f"{where}: literal secret in config", "use ${env:NAME}")
    return True


# Converters. Each takes (reader, node, where) and returns a value or FAILED.


def _string(reader: Reader, node: Node, where: str, conv: Conv) -> Any:
    if not isinstance(node, Scalar) or not isinstance(node.value, str):
        return wrong(reader, node, where, conv)
    if not node.value.strip():
        reader.report(node, f"{where}: is blank", f"expected {conv.expect}")
        return FAILED
    if has_env_syntax(node.value):
        reader.report(node, f"{where}: {NOT_SUBSTITUTED}",
                      f"expected {conv.expect} written out")
        return FAILED
    return node.value


def text(expect: str = "a string", pattern: re.Pattern[str] | None = None, what: str = "") -> Conv:
    """A non-blank string, optionally matching `pattern`; `what` names it when it does not
    (``a GUID``), `expect` says what would do."""

    def parse(reader: Reader, node: Node, where: str) -> Any:
        value = _string(reader, node, where, conv)
        if value is FAILED:
            return FAILED
        if pattern is not None and not pattern.fullmatch(value):
            reader.report(node, f"{where}: {value!r} is not {what or 'valid'}", f"expected {expect}")
            return FAILED
        return value

    conv = Conv(expect, parse)
    return conv


IDENT = text(ID_EXPECT, ID_PATTERN, "a valid id")


def choice(options: Sequence[str], what: str) -> Conv:
    """One of a fixed set of words (`what` names them in messages: ``source kind``)."""

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            return wrong(reader, node, where, conv)
        if node.value not in options:
            reader.report(node, f"{where}: unknown {what} {node.value!r}{did_you_mean(node.value, options)}",
                          one_of(options))
            return FAILED
        return node.value

    conv = Conv("one of " + ", ".join(options), parse)
    return conv


def integer(minimum: int | None = None, maximum: int | None = None) -> Conv:
    """An integer (not a boolean: YAML reads ``yes`` as true, and true is not 1 here)."""
    expect = "an integer" + _range_text(minimum, maximum)

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar) or isinstance(node.value, bool) or not isinstance(node.value, int):
            return wrong(reader, node, where, conv)
        return _in_range(reader, node, where, node.value, minimum, maximum, expect)

    conv = Conv(expect, parse)
    return conv


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None) -> Conv:
    """A finite int or float; `above` is an exclusive lower bound."""
    expect = "a number" + (f" above {above:g}" if above is not None else _range_text(minimum, maximum))

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar) or isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            return wrong(reader, node, where, conv)
        value = node.value
        # An int past float range would raise OverflowError in isfinite: report it, never crash.
        if (isinstance(value, int) and abs(value) > sys.float_info.max) or not math.isfinite(value):
            reader.report(node, f"{where}: {node.text} is not a finite number", f"expected {expect}")
            return FAILED
        if above is not None and not value > above:
            reader.report(node, f"{where}: {node.text} is out of range", f"expected {expect}")
            return FAILED
        return _in_range(reader, node, where, value, minimum, maximum, expect)

    conv = Conv(expect, parse)
    return conv


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def _in_range(reader: Reader, node: Scalar, where: str, value: Any, minimum: float | None,
              maximum: float | None, expect: str) -> Any:
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        reader.report(node, f"{where}: {node.text} is out of range", f"expected {expect}")
        return FAILED
    return value


def duration(*, positive: bool = False) -> Conv:
    """A duration; `positive` refuses ``0s`` (a cadence or an SLA of no time means a typo)."""
    expect = DURATION_EXAMPLES + (" (more than 0s)" if positive else "")

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar) or node.value is None:
            return wrong(reader, node, where, conv)
        return _duration_value(reader, node, where, positive, expect)

    conv = Conv(expect, parse)
    return conv


def _duration_value(reader: Reader, node: Scalar, where: str, positive: bool, expect: str) -> Any:
    try:
        value = parse_duration(node.value)
    except ValueError:
        reader.report(node, f"{where}: {node.text!r} is not a duration", f"expected {expect}")
        return FAILED
    if positive and value <= timedelta(0):
        reader.report(node, f"{where}: must be longer than 0s", f"expected {expect}")
        return FAILED
    return value


def timestamp() -> Conv:
    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar):
            return wrong(reader, node, where, conv)
        try:
            return parse_timestamp(node.value)
        except ValueError as exc:
            reason = str(exc) if str(exc).startswith("timezone required") else f"{node.text!r} is not a timestamp"
            reader.report(node, f"{where}: {reason}", f"expected {TIMESTAMP_EXAMPLE}")
            return FAILED

    conv = Conv(TIMESTAMP_EXAMPLE, parse)
    return conv


def calendar_date() -> Conv:
    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar):
            return wrong(reader, node, where, conv)
        try:
            return parse_date(node.value)
        except ValueError:
            reader.report(node, f"{where}: {node.text!r} is not a date", f"expected {DATE_EXAMPLE}")
            return FAILED

    conv = Conv(DATE_EXAMPLE, parse)
    return conv


def path(expect: str = "a file path (relative to this config file, or absolute)") -> Conv:
    def parse(reader: Reader, node: Node, where: str) -> Any:
        value = _string(reader, node, where, conv)
        if value is FAILED:
            return FAILED
        if "\x00" in value:
            reader.report(node, f"{where}: contains a NUL character", f"expected {expect}")
            return FAILED
        return reader.resolve(value)

    conv = Conv(expect, parse)
    return conv


def secret() -> Conv:
    """A `${env:NAME}` reference, and only that: a secret never appears in the file itself."""

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Scalar):
            return wrong(reader, node, where, conv)
        value = node.value
        name = whole_env_ref(value) if isinstance(value, str) else None
        if name is not None:
            if not reader.env.get(name):
                reader.report(node, f"{where}: environment variable {name} is not set",
                              f"expected {name} to be exported before crmctl starts")
                return FAILED
            return Secret(name)
        if isinstance(value, str) and has_env_syntax(value):
            reader.report(node, f"{where}: a secret must be exactly one ${{env:NAME}} reference",
                          "expected ${env:NAME} and nothing around it")
            return FAILED
        reader.report(node, f"{where}: literal secret in config", "use ${env:NAME}")
        return FAILED

    conv = Conv("${env:NAME}", parse, secret=True)
    return conv


@dataclass(frozen=True)
class UrlText:
    """A URL after `${env:NAME}` substitution, with the text as written kept for printing."""

    value: str
    template: str
    env_names: tuple[str, ...]


def env_text(reader: Reader, node: Node, where: str, conv: Conv) -> Any:
    """Reads a string in which `${env:NAME}` is substituted (URLs only); returns `UrlText`."""
    if not isinstance(node, Scalar) or not isinstance(node.value, str):
        return wrong(reader, node, where, conv)
    template = node.value.strip()
    if not template:
        reader.report(node, f"{where}: is blank", f"expected {conv.expect}")
        return FAILED
    sub = substitute_env(template, reader.env)
    if sub.malformed:
        reader.report(node, f"{where}: malformed environment reference in {mask_url(template)!r}",
                      "expected ${env:NAME} with NAME made of letters, digits and _")
        return FAILED
    for name in sub.missing:
        reader.report(node, f"{where}: environment variable {name} is not set",
                      f"expected {name} to be exported before crmctl starts")
    if sub.missing:
        return FAILED
    for name in sub.names:
        reader.substitutions[name] = reader.env[name]
    return UrlText(sub.value, template, sub.names)


def templated(expect: str) -> Conv:
    """A string with `${env:NAME}` substituted, returned as `UrlText` for the caller to check."""

    def parse(reader: Reader, node: Node, where: str) -> Any:
        return env_text(reader, node, where, conv)

    conv = Conv(expect, parse)
    return conv


def section(read: Callable[[Reader, Node, str], Any], expect: str) -> Conv:
    """A nested mapping read by its own section reader (which returns an object or FAILED)."""
    return Conv(expect, read)


def seq_of(item: Conv, expect: str, *, nonempty: bool = False) -> Conv:
    """A YAML list of `item`s, returned as a tuple; bad items are reported and left out."""

    def parse(reader: Reader, node: Node, where: str) -> Any:
        if not isinstance(node, Seq):
            return wrong(reader, node, where, conv)
        if nonempty and not node.items:
            reader.report(node, f"{where}: is empty", f"expected {expect}")
            return FAILED
        values = (item.parse(reader, child, join(where, i)) for i, child in enumerate(node.items)
                  if not isinstance(child, Broken))
        return tuple(v for v in values if v is not FAILED)

    conv = Conv(expect, parse)
    return conv
