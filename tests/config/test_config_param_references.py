"""Check parameters that name an integration (or entity, check, SLO) are checked at load time.

A kind declares them in `CheckKindSpec.references`; a dangling one is reported like every other
dangling reference, at FILE:LINE:COLUMN with a did-you-mean, so a typo in `integration:` stops
the config from loading instead of turning into an ERROR result on cutover night.
"""

from __future__ import annotations

from typing import Callable

import pytest

from crmctl.config import CheckKindSpec, Config

BASE = """\
project: Test cutover
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator}
integrations:
  - {id: erp-sync, jobs: {name_like: 'ERP%'}}
  - {id: web-shop, probe: {url: 'https://shop.example/health'}}
entities:
  - {name: account, source: {table: a, key: k, modified: m}, target: {entity_set: a, key: k}}
"""
"""Eight lines; the checks under test start on line 9 (`checks:`), their items on line 10."""


def registry_kinds() -> dict[str, CheckKindSpec]:
    from checks.registry import check_kinds

    return check_kinds()


def test_an_unknown_integration_is_reported_where_it_is_written(problems: Callable[..., list[str]]) -> None:
    text = BASE + "checks:\n  - {id: erp.jobs, kind: system_jobs, integration: erp-sink}\n" \
        "  - {id: shop.probe, kind: http_probe, integration: webshop}\n"
    assert problems(text, check_kinds=registry_kinds()) == [
        "crmctl.yaml:10:52: checks[0].integration: unknown integration 'erp-sink' (did you mean 'erp-sync'?); "
        "expected the id of an integration defined under integrations:",
        "crmctl.yaml:11:53: checks[1].integration: unknown integration 'webshop' (did you mean 'web-shop'?); "
        "expected the id of an integration defined under integrations:",
    ]


def test_known_integrations_and_entities_load(load: Callable[..., Config]) -> None:
    config = load(BASE + "checks:\n  - {id: erp.jobs, kind: system_jobs, integration: erp-sync}\n"
                  "  - {id: freeze, kind: write_freeze, since: 2026-11-28T18:00:00Z, entities: [account]}\n",
                  check_kinds=registry_kinds())
    assert config.check("erp.jobs").params["integration"] == "erp-sync"
    assert config.check("freeze").params["entities"] == ("account",)


def test_a_list_of_entities_is_checked_item_by_item(problems: Callable[..., list[str]]) -> None:
    text = BASE + "checks:\n  - {id: freeze, kind: write_freeze, since: 2026-11-28T18:00:00Z, entities: [account, acount]}\n"
    assert problems(text, check_kinds=registry_kinds()) == [
        "crmctl.yaml:10:87: checks[0].entities[1]: unknown entity 'acount' (did you mean 'account'?); "
        "expected the name of an entity defined under entities:"
    ]


def test_without_the_kinds_nothing_is_guessed(load: Callable[..., Config]) -> None:
    """Tools that load only the runbook pass no kinds: parameters are kept as written."""
    config = load(BASE + "checks:\n  - {id: erp.jobs, kind: system_jobs, integration: erp-sink}\n")
    assert config.check("erp.jobs").params["integration"] == "erp-sink"


def test_a_spec_may_only_reference_its_own_params_and_known_sections() -> None:
    with pytest.raises(ValueError, match="integration"):
        CheckKindSpec(params={"samples": int}, references={"integration": "integrations"})
    with pytest.raises(ValueError, match="pipelines"):
        CheckKindSpec(params={"pipeline": str}, references={"pipeline": "pipelines"})


def test_an_unknown_slo_is_reported_where_it_is_written(problems: Callable[..., list[str]]) -> None:
    text = BASE.replace("entities:\n", "slos:\n  - {id: account-lookup, query: 'accounts?$top=1', p95_ms: 800}\nentities:\n") \
        + "checks:\n  - {id: lat, kind: api_latency, slo: acount-lookup}\n"
    found = problems(text, check_kinds=registry_kinds())
    assert len(found) == 1 and "checks[0].slo: unknown SLO 'acount-lookup' (did you mean 'account-lookup'?)" in found[0]
    assert found[0].startswith("crmctl.yaml:12:")
