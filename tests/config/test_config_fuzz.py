"""Property: whatever is done to a valid config, `load_config` returns a Config or raises ConfigError.

Never a traceback for bad input: the CLI prints problems and exits 2, and any other exception
would reach an operator mid-cutover as a stack dump. Two corpora are mutated:

- the **demo config** (data/demo/crmctl.yaml), the richest real config we have, as a tree
  (delete, duplicate, retype keys, inject junk, unicode, huge numbers, anchors) and as text
  (truncate, tabs, duplicated and deleted lines, junk scalars, YAML bombs and aliases, BOMs,
  control and bidi characters, invalid UTF-8) — `scaled(300, 5000)` cases in all;
- the fixture covering every section (tests/config/fixtures/full.yaml), with the test check
  kinds that exercise every parameter type.

Every ConfigError's problems must render as `FILE:LINE:COLUMN: message` with the line inside
the file, and never quote a secret's value. A handful of mutated files also go through
`crmctl validate` as a subprocess: exit code 2, problem lines only, no traceback on stderr.
The number of cases is reported in the session summary (tests/reliability/suite_audit.py).
"""

from __future__ import annotations

import copy
import os
import random
import re
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from checks.registry import check_kinds
from crmctl.config import CheckKindSpec, Config, ConfigError, Secret, load_config
from tests.reliability.scale import scaled
from tests.reliability.suite_audit import record_figure

REPO = Path(__file__).resolve().parents[2]
FULL = Path(__file__).parent / "fixtures" / "full.yaml"
FULL_TEXT = FULL.read_text()
FULL_DATA = yaml.safe_load(FULL_TEXT)
DEMO = REPO / "data" / "demo" / "crmctl.yaml"
DEMO_TEXT = DEMO.read_text()
DEMO_DATA = yaml.safe_load(DEMO_TEXT)
DEMO_KINDS = check_kinds()

CANARY = "cnry-fuzz-secret-7Qx9"
"""Set in the environment the configs load with: `${env:CRMCTL_SECRET}` may be injected anywhere,
and a problem message must never quote its value."""
ENV = {"CRMCTL_SECRET": CANARY, "TEAMS_WEBHOOK": "https://hook.example/cnry-fuzz-hook-3Wd1"}
KINDS = {
    "write_freeze": CheckKindSpec(params={"window": timedelta}),
    "whoami": CheckKindSpec(),
    "row_count": CheckKindSpec(needs_entity=True, params={"hint": bool}),
    "reconcile": CheckKindSpec(needs_entity=True, params={"sample": int, "columns": list}),
    "nulls": CheckKindSpec(needs_entity=True, params={"since": datetime, "day": date, "file": Path}),
    "duplicates": CheckKindSpec(needs_entity=True, params={"ratio": (float, type(None))}),
    "orphans": CheckKindSpec(needs_entity=True, params={"token": Secret, "extra": dict}),
    "integration": CheckKindSpec(params={"integration": str}),
}

DEMO_CASES = scaled(150, 2500)
"""Per demo property (two of them): 300 cases in `make test`, 5,000 in `make reliability`."""
FULL_CASES = scaled(40, 500)
CLI_FILES = scaled(4, 24)

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
"""Shrinking a whole demo config takes minutes per failure on a loaded machine; the unshrunk
failing example is printed, and it names the mutation."""
DEMO_SETTINGS = settings(max_examples=DEMO_CASES, deadline=None, database=None, phases=NO_SHRINK,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SETTINGS = settings(max_examples=FULL_CASES, deadline=None, database=None, phases=NO_SHRINK,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CASES: dict[str, int] = {}
"""Examples run per property, for the summary (hypothesis may stop early when it runs out)."""

HUGE = ["9" * 400, "9" * 5000, "1e999", "-1e999", "1" + "0" * 30, "0x" + "F" * 40, "0o777777777777777777777777", ".inf", "-.inf",
        ".nan", "1_000_000_000_000_000_000", "-0", "2e-400"]
HOSTILE_TEXT = [
    "\u202egnp.exe", "\u2066x\u2069", "\x1b[2J\x1b[31mred", "\x07", "\x00", "\ufeff", "\u2028", "😀" * 3,
    "Ω≈ç√∫", "ｆｕｌｌｗｉｄｔｈ", "a\tb", "line\nbreak", "x" * 5000, "'", '"', "\\", "%", "@", "`",
]
junk_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10**40, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(HOSTILE_TEXT),
    st.sampled_from([
        "${env:CRMCTL_SECRET}", "${env:UNSET_VARIABLE}", "${env:}", "${ENV:X}", "${", "30s", "1h30m", "-5m",
        "0s", "99999999999d", "sqlite:///", "sqlite://x", "https://", "http://x:99999",
        "https://contoso.crm.dynamics.com", "account", "account.count", "freeze", "~", "yes", "2026-11-28",
        "2026-11-28T23:00:00", "2026-11-28T23:00:00Z", "2026-02-30T25:61:00Z", "client_secret", "certificate",
        "device_code", "emulator", "dataverse", "odata", "missing_pct > 0.5", "missing >", "*.count", "**", "[",
    ]),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(timezone.utc))),
)
junk = st.recursive(
    junk_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(
            ["id", "kind", "name", "url", "auth", "secret", "password", "after", "gate", "entity", "<<", "check",
             "warn", "breach", "every", "source", "target", "table", "key", "fields", "map", "type"])),
            children, max_size=4),
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def report_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
    record_figure(request.config, "config fuzz cases", f"{total} ({detail})")


def _count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


def _load(path: Path, kinds: Any) -> None:
    """Loads `path`: a Config, or a ConfigError whose every problem is FILE:LINE:COLUMN inside the file."""
    try:
        result = load_config(path, env=ENV, check_kinds=kinds)
    except ConfigError as error:
        assert error.problems, "a ConfigError always carries at least one problem"
        lines = path.read_bytes().count(b"\n") + 1
        shape = re.compile(re.escape(str(path)) + r":(\d+):(\d+): \S")
        for problem in error.problems:
            text = str(problem)
            assert shape.match(text), f"not FILE:LINE:COLUMN: {text!r}"
            assert 1 <= problem.line <= lines and problem.column >= 1, f"outside the file ({lines} lines): {text!r}"
            assert CANARY not in text and ENV["TEAMS_WEBHOOK"] not in text, "a problem quotes a secret's value"
    else:
        assert isinstance(result, Config)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every mapping and list in the document, the root included."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, (dict, list)):
        found.append(path)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            found.extend(_containers(child, path + (key,)))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _retype(value: Any) -> Any:
    """The same content in another YAML type: scalar -> list, list -> mapping, mapping -> string."""
    if isinstance(value, dict):
        return str(value)
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return [value]


@st.composite
def mutated_documents(draw: st.DrawFn, base: Any = FULL_DATA) -> Any:
    """`base` with 1-5 tree edits: delete, replace with junk, retype, insert, duplicate."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        containers = _containers(data)
        if not containers:
            break
        target = _at(data, draw(st.sampled_from(containers)))
        keys = list(target.keys()) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["delete", "replace", "retype", "huge", "insert", "duplicate"]))
        if action == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(junk)
        elif action == "retype" and keys:
            key = draw(st.sampled_from(keys))
            target[key] = _retype(target[key])
        elif action == "huge" and keys:
            target[draw(st.sampled_from(keys))] = draw(st.one_of(
                st.integers(min_value=10**18, max_value=10**400), st.just(float("inf")), st.just(-(10**300))))
        elif action == "duplicate" and keys:
            key = draw(st.sampled_from(keys))
            if isinstance(target, list):
                target.append(copy.deepcopy(target[key]))
            else:
                target[f"{key}_"] = copy.deepcopy(target[key])
        elif isinstance(target, dict):
            target[draw(st.text(min_size=1, max_size=12))] = draw(junk)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(junk))
    return data


BOMB = ("x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"x-{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi")))
"""The "billion laughs": nine levels of nine aliases each (387 million leaves if expanded)."""
TEXT_SNIPPETS = [
    "\t", "\t\t", ":", "- ", "{", "[", "}", "]", "&a ", "*a", "*undefined", "<<: *a\n", "!!python/name:os.system",
    "!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "!ruby/object", "\x07", "\x00", "\x1b[2J",
    "\n  x: 1\n", "'", '"', "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "---\n", "...\n", "? [a]\n: b\n", "&a [*a]",
    "\ufeff", "\u202e", "\ud800", "😀", "# comment\n", "|\n", ">-\n", "@", "`", "${env:CRMCTL_SECRET}",
    "${env:NOT_SET}", BOMB, "<<: [*x, *y]\n", "? \n", "!!set {a, b}\n", "!!omap [a: 1]\n",
]


@st.composite
def edited_text(draw: st.DrawFn, base: str = DEMO_TEXT) -> str:
    """`base` with 1-4 text edits: truncate, tabs, duplicate/delete/swap lines, junk scalars, snippets."""
    lines = base.split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(
            ["truncate", "tab", "dup", "delete", "swap", "value", "huge", "snippet", "unicode", "indent", "bomb"]))
        if action == "truncate":
            text = "\n".join(lines)
            lines = text[: draw(st.integers(0, len(text)))].split("\n")
        elif action == "tab":
            stripped = lines[i].lstrip(" ")
            lines[i] = "\t" * max(1, (len(lines[i]) - len(stripped)) // 2) + stripped
        elif action == "dup":
            lines.insert(i, lines[i])  # a duplicated key, list item or flow entry
        elif action == "delete":
            del lines[i]
        elif action == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action in ("value", "huge") and ": " in lines[i]:
            head, _, _tail = lines[i].partition(": ")
            value = draw(st.sampled_from(HUGE)) if action == "huge" else draw(st.one_of(
                st.sampled_from(HOSTILE_TEXT + TEXT_SNIPPETS), st.text(max_size=20)))
            lines[i] = f"{head}: {value}"
        elif action == "snippet":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(TEXT_SNIPPETS)) + lines[i][at:]
        elif action == "unicode":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(min_size=1, max_size=8)) + lines[i][at:]
        elif action == "indent":
            lines[i] = " " * draw(st.integers(1, 7)) + lines[i]
        elif action == "bomb":
            lines[i:i] = BOMB.rstrip("\n").split("\n") + ["x-use: *i"]
    return "\n".join(lines)


# -- the demo config -----------------------------------------------------------------------------


@DEMO_SETTINGS
@given(document=mutated_documents(DEMO_DATA))
def test_mutated_demo_documents_only_ever_raise_config_error(folder: Path, document: Any) -> None:
    _count("demo tree")
    path = folder / "demo-tree.yaml"
    try:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=False)
    _write(path, text)
    _load(path, DEMO_KINDS)


@DEMO_SETTINGS
@given(text=edited_text(DEMO_TEXT))
def test_edited_demo_text_only_ever_raises_config_error(folder: Path, text: str) -> None:
    _count("demo text")
    path = folder / "demo-text.yaml"
    _write(path, text)
    _load(path, DEMO_KINDS)


def _invalid_demo_variants(count: int, folder: Path) -> list[Path]:
    """`count` mutated demo files that do not load (deterministic: seeded), one per mutation family."""
    rng = random.Random(8)
    lines = DEMO_TEXT.split("\n")
    keyed = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
    families = [
        lambda: DEMO_TEXT[: rng.randrange(200, len(DEMO_TEXT))] + "\n  - {id: [",
        lambda: "\n".join(l if i != rng.choice(keyed) else "\t" + l for i, l in enumerate(lines)),
        lambda: DEMO_TEXT.replace("every: 60s", f"every: {rng.choice(HUGE)}", 1),
        lambda: BOMB + "x-use: *i\n" + DEMO_TEXT.replace("breach: 0.001", "breach: *i", 1),
        lambda: DEMO_TEXT.replace("project:", "project: [\u202e, \x1b[2J]\nproject:", 1),
        lambda: DEMO_TEXT.replace("kind: sql", "kind: ${env:CRMCTL_SECRET}", 1),
        lambda: DEMO_TEXT.replace("entities:", "entities: 9" + "9" * 300 + "\nx:", 1),
        lambda: DEMO_TEXT.replace("concurrency: 8", "concurrency: !!python/name:os.system", 1),
    ]
    paths = []
    attempt = 0
    while len(paths) < count and attempt < count * 20:
        text = families[attempt % len(families)]()
        attempt += 1
        path = folder / f"cli-{len(paths)}.yaml"
        _write(path, text)
        try:
            load_config(path, env=ENV, check_kinds=DEMO_KINDS)
        except ConfigError:
            paths.append(path)
    assert len(paths) == count, "could not build enough invalid variants"
    return paths


def test_crmctl_validate_exits_2_with_problem_lines_and_no_traceback(folder: Path) -> None:
    """The operator's view: `crmctl validate` on broken files prints FILE:LINE:COLUMN lines and exits 2."""
    env = {**os.environ, **ENV}
    for path in _invalid_demo_variants(CLI_FILES, folder):
        run = subprocess.run([sys.executable, "-m", "crmctl", "validate", str(path)], capture_output=True,
                             text=True, env=env, cwd=folder, timeout=120)
        _count("crmctl validate subprocess")
        assert run.returncode == 2, (path.name, run.returncode, run.stderr[-2000:])
        assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr[-2000:]
        problem_lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert problem_lines, "exit 2 without saying why"
        for line in problem_lines:
            assert re.match(re.escape(str(path)) + r":\d+:\d+: \S", line), line
        assert CANARY not in run.stderr + run.stdout


def test_the_demo_config_itself_loads() -> None:
    """The corpus is valid to start with: every failure above comes from a mutation."""
    assert load_config(DEMO, env=ENV, check_kinds=DEMO_KINDS).checks


# -- the fixture covering every section --------------------------------------------------------------


@SETTINGS
@given(document=mutated_documents(), kinds=st.booleans())
def test_mutated_documents_only_ever_raise_config_error(folder: Path, document: Any, kinds: bool) -> None:
    _count("full tree")
    path = folder / "crmctl.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    _load(path, KINDS if kinds else None)


@SETTINGS
@given(
    offset=st.integers(min_value=0, max_value=len(FULL_TEXT)),
    cut=st.integers(min_value=0, max_value=40),
    insert=st.one_of(st.text(max_size=20), st.sampled_from(TEXT_SNIPPETS)),
)
def test_edited_text_only_ever_raises_config_error(folder: Path, offset: int, cut: int, insert: str) -> None:
    _count("full text")
    path = folder / "crmctl.yaml"
    _write(path, FULL_TEXT[:offset] + insert + FULL_TEXT[offset + cut:])
    _load(path, KINDS)


@SETTINGS
@given(document=junk, raw=st.binary(max_size=64))
def test_arbitrary_documents_and_bytes_only_ever_raise_config_error(folder: Path, document: Any, raw: bytes) -> None:
    _count("arbitrary")
    path = folder / "crmctl.yaml"
    path.write_text(yaml.safe_dump(document))
    _load(path, None)
    path.write_bytes(raw)
    _load(path, None)


def test_alias_bomb_stays_fast(folder: Path) -> None:
    lines = ["project: x", 'source: {kind: sql, url: "sqlite:///s.db"}', "target: {kind: emulator}",
             "x-0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x-{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines.append("checks: [{id: c, kind: bomb, payload: *a8}]")
    path = folder / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    config = load_config(path, env=ENV)
    assert len(config.check("c").params["payload"]) == 10
