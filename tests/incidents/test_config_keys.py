"""The config keys this feature adds: incidents.auto and hypercare.tolerances, valid and invalid,
with the FILE:LINE:COLUMN problem lines every config error has."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from crmctl.config import AutoRaiseRule, ConfigError, DriftTolerance, load_config

BASE = """\
project: Test cutover
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator}
checks:
  - {id: account.count, kind: whoami}
  - {id: dynamics.whoami, kind: whoami}
"""
"""Six valid lines; the sections under test start on line 7."""


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.chdir(tmp_path)

    def load(text: str):  # noqa: ANN202
        Path("crmctl.yaml").write_text(BASE + textwrap.dedent(text))
        return load_config("crmctl.yaml", env={})

    return load


def problems(load, text: str) -> list[str]:  # noqa: ANN001
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [str(p) for p in caught.value.problems]


def test_auto_rules_and_tolerances_are_read(load) -> None:  # noqa: ANN001
    config = load("""\
        incidents:
          auto:
            - {check: dynamics.whoami, when: [ERROR], severity: sev1, after: 2, title: Dynamics down}
            - {check: "*.count"}
        hypercare:
          go_live: 2026-11-29
          tolerances:
            - {metric: "*.count.target", max_pct: 1}
            - {metric: erp.error_rate, max_abs: 0.02, max_pct: 50}
        """)
    assert config.incidents.auto == (
        AutoRaiseRule("dynamics.whoami", ("ERROR",), "sev1", 2, "Dynamics down"),
        AutoRaiseRule("*.count", ("BREACH", "ERROR"), "unknown", 1, None),
    )
    assert config.hypercare.tolerances == (
        DriftTolerance("*.count.target", 1, None), DriftTolerance("erp.error_rate", 50, 0.02))
    assert "auto:" in config.redacted() and "tolerances:" in config.redacted()


def test_defaults_leave_both_empty(load) -> None:  # noqa: ANN001
    config = load("hypercare: {go_live: 2026-11-29}\n")
    assert config.incidents.auto == () and config.hypercare.tolerances == ()


def test_bad_rules_are_reported_where_they_are(load) -> None:  # noqa: ANN001
    assert problems(load, """\
        incidents:
          auto:
            - {check: dynamics.whoami, when: [WARN], severity: sev5, after: 0}
            - {check: acount.*}
            - {severity: sev1}
        """) == [
        "crmctl.yaml:9:39: incidents.auto[0].when[0]: unknown status 'WARN'; expected one of: BREACH, ERROR",
        "crmctl.yaml:9:56: incidents.auto[0].severity: unknown severity 'sev5' (did you mean 'sev4'?); "
        "expected one of: sev1, sev2, sev3, sev4, unknown",
        "crmctl.yaml:9:69: incidents.auto[0].after: 0 is out of range; expected an integer from 1 to 100",
        "crmctl.yaml:10:15: incidents.auto[1].check: 'acount.*' matches no check (did you mean 'account.count'?); "
        "expected a check id defined under checks:, or a glob such as account.*",
        "crmctl.yaml:11:7: incidents.auto[2]: missing required key 'check'; "
        "expected check: a check id or a glob such as account.*",
    ]


def test_a_tolerance_needs_a_limit(load) -> None:  # noqa: ANN001
    assert problems(load, """\
        hypercare:
          go_live: 2026-11-29
          tolerances:
            - {metric: "*.count.target"}
            - {metric: x, max_pct: -1}
        """) == [
        "crmctl.yaml:10:7: hypercare.tolerances[0]: no limit given; expected max_pct and/or max_abs",
        "crmctl.yaml:11:28: hypercare.tolerances[1].max_pct: -1 is out of range; expected a number >= 0",
    ]
