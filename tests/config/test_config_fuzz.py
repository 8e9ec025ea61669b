"""Property: whatever is done to a valid config, `load_config` returns a Config or raises ConfigError.

Never a traceback for bad input: the CLI prints problems and exits 2, and any other exception
would reach an operator mid-cutover as a stack dump.
"""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmctl.config import CheckKindSpec, Config, ConfigError, Secret, load_config

FULL = Path(__file__).parent / "fixtures" / "full.yaml"
FULL_TEXT = FULL.read_text()
FULL_DATA = yaml.safe_load(FULL_TEXT)
ENV = {"CRMCTL_SECRET": "s3cr3t-client-value", "TEAMS_WEBHOOK": "https://hook/value"}
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

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

junk_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from([
        "${env:CRMCTL_SECRET}", "${env:UNSET_VARIABLE}", "${env:}", "${ENV:X}", "${", "30s", "1h30m", "-5m",
        "0s", "sqlite:///", "sqlite://x", "https://", "http://x:99999", "https://contoso.crm.dynamics.com",
        "account", "account.count", "freeze", "~", "yes", "2026-11-28", "2026-11-28T23:00:00",
        "2026-11-28T23:00:00Z", "client_secret", "certificate", "device_code", "emulator", "dataverse", "odata",
    ]),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(timezone.utc))),
)
junk = st.recursive(
    junk_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(
            ["id", "kind", "name", "url", "auth", "secret", "password", "after", "gate", "entity", "<<"])),
            children, max_size=4),
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _load(path: Path, kinds: bool) -> None:
    try:
        result = load_config(path, env=ENV, check_kinds=KINDS if kinds else None)
    except ConfigError as error:
        assert error.problems, "a ConfigError always carries at least one problem"
        for problem in error.problems:
            assert problem.line >= 1 and problem.column >= 1
            assert ENV["CRMCTL_SECRET"] not in str(problem)
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


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(FULL_DATA)
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        containers = _containers(data)
        if not containers:
            break
        target = _at(data, draw(st.sampled_from(containers)))
        keys = list(target.keys()) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["delete", "replace", "insert", "duplicate"]))
        if action == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(junk)
        elif action == "duplicate" and keys:
            key = draw(st.sampled_from(keys))
            if isinstance(target, list):
                target.append(copy.deepcopy(target[key]))
            else:
                target[key + "_"] = copy.deepcopy(target[key])
        elif isinstance(target, dict):
            target[draw(st.text(min_size=1, max_size=12))] = draw(junk)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(junk))
    return data


@SETTINGS
@given(document=mutated_documents(), kinds=st.booleans())
def test_mutated_documents_only_ever_raise_config_error(folder: Path, document: Any, kinds: bool) -> None:
    path = folder / "crmctl.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    _load(path, kinds)


@SETTINGS
@given(
    offset=st.integers(min_value=0, max_value=len(FULL_TEXT)),
    cut=st.integers(min_value=0, max_value=40),
    insert=st.one_of(
        st.text(max_size=20),
        st.sampled_from(["\t", ":", "- ", "{", "[", "&a ", "*a", "<<: *a\n", "!!python/name:os.system", "\x07",
                         "\n  x: 1\n", "'", '"', "%YAML 1.1\n", "---\n", "? [a]\n: b\n", "&a [*a]", "\ufeff"]),
    ),
)
def test_edited_text_only_ever_raises_config_error(folder: Path, offset: int, cut: int, insert: str) -> None:
    path = folder / "crmctl.yaml"
    path.write_text(FULL_TEXT[:offset] + insert + FULL_TEXT[offset + cut:], encoding="utf-8", errors="surrogatepass")
    _load(path, kinds=True)


@SETTINGS
@given(document=junk, raw=st.binary(max_size=64))
def test_arbitrary_documents_and_bytes_only_ever_raise_config_error(folder: Path, document: Any, raw: bytes) -> None:
    path = folder / "crmctl.yaml"
    path.write_text(yaml.safe_dump(document))
    _load(path, kinds=False)
    path.write_bytes(raw)
    _load(path, kinds=False)


def test_alias_bomb_stays_fast(folder: Path) -> None:
    lines = ["project: x", 'source: {kind: sql, url: "sqlite:///s.db"}', "target: {kind: emulator}",
             "x-0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x-{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines.append("checks: [{id: c, kind: bomb, payload: *a8}]")
    path = folder / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    config = load_config(path, env=ENV)
    assert len(config.check("c").params["payload"]) == 10
