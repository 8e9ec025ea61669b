"""`load_config`: reads crmctl.yaml section by section, then checks that every id it names exists."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from crmctl.config.problems import ConfigError, Problem
from crmctl.config.reading import Reader, read_fields, report_unknown_key
from crmctl.config.references import cross_check
from crmctl.config.sections import CheckKindSpec, Config
from crmctl.config.tables import TOP, TOP_EXPECT
from crmctl.config.yamltree import Broken, Map, describe, parse_yaml


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] = os.environ,
    check_kinds: Mapping[str, CheckKindSpec] | None = None,
) -> Config:
    """Reads and validates a cutover config.

    Args:
        path: the YAML file. Relative paths inside it are resolved against its folder.
        env: where `${env:NAME}` references are looked up (every one must be set).
        check_kinds: the registered check kinds; when given, each check's kind, entity and
            parameters are validated against its spec.

    Returns:
        The immutable `Config`.

    Raises:
        ConfigError: with every problem found, each ``FILE:LINE:COLUMN: what; expected``.
            Bad input of any kind (unreadable, binary, not YAML, not a mapping) ends here and
            never in another exception.
    """
    file = os.fspath(path)
    config_path = Path(os.path.abspath(file))
    try:
        data = config_path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([Problem(file, 1, 1, f"cannot read the config file: {reason}",
                                   "expected a readable YAML file")]) from None
    text_or_problem = _decode(data, file)
    if isinstance(text_or_problem, Problem):
        raise ConfigError([text_or_problem])
    root, problems = parse_yaml(text_or_problem, file)
    if root is None and not problems:
        raise ConfigError([Problem(file, 1, 1, "the config file is empty", f"expected {TOP_EXPECT}")])
    if isinstance(root, Broken):
        raise ConfigError(_in_file_order(problems))
    if root is not None and not isinstance(root, Map):
        raise ConfigError(problems + [Problem(file, 1, 1, f"the config file holds {describe(root)}",
                                              f"expected {TOP_EXPECT}")])
    reader = Reader(file, config_path.parent, env, check_kinds)
    reader.problems.extend(problems)
    config = None
    if isinstance(root, Map):
        config = _read_config(reader, root, config_path)
        cross_check(reader, root)
    if reader.problems or config is None:
        raise ConfigError(_in_file_order(reader.problems))
    return config


def _decode(data: bytes, file: str) -> str | Problem:
    """The file as text, or the reason it is not text at all (reported at 1:1)."""
    if b"\x00" in data:
        return Problem(file, 1, 1, "the config file is binary, not text (it contains NUL bytes)",
                       "expected a UTF-8 YAML text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return Problem(file, 1, 1, f"the config file is not UTF-8 text (invalid byte at line {line}, "
                       f"column {column})", "expected a UTF-8 YAML text file")


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Sorted by position, duplicates dropped (a value shared through an alias reports once)."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line, p.column))


def _read_config(reader: Reader, root: Map, config_path: Path) -> Config:
    """Reads every section (cross-references come after, when all ids are known)."""
    got = read_fields(reader, root, "", TOP, expect=TOP_EXPECT, keep_extra=True)
    assert got is not None
    values, extra = got
    for key_node, value_node in extra:
        # x- keys are free: the place for YAML anchors shared by several sections.
        if not key_node.value.startswith("x-"):
            report_unknown_key(reader, key_node, value_node, "", [f.key for f in TOP])
    return Config(path=config_path, substitutions=MappingProxyType(dict(reader.substitutions)), **values)
