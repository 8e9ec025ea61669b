"""One test per class of config mistake, each asserting the exact FILE:LINE:COLUMN line."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from crmctl.config import ConfigError, load_config

BASE = """\
project: Test cutover
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator}
"""
"""Three valid lines; the sections under test start on line 4."""

Problems = Callable[..., list[str]]


# --- the file itself ---------------------------------------------------------------------------


def test_yaml_syntax_error_is_located_by_the_yaml_mark(problems: Problems) -> None:
    assert problems(BASE + "checks:\n  - {id: a, kind: whoami\n") == [
        "crmctl.yaml:6:1: YAML syntax error: while parsing a flow mapping, expected ',' or '}', "
        "but got '<stream end>'; expected valid YAML (check indentation, colons and quotes)"
    ]


def test_bad_indentation_is_a_syntax_error(problems: Problems) -> None:
    assert problems("project: x\n  source: y\n") == [
        "crmctl.yaml:2:9: YAML syntax error: mapping values are not allowed here; "
        "expected valid YAML (check indentation, colons and quotes)"
    ]


def test_duplicate_key_in_a_mapping(problems: Problems) -> None:
    assert problems(BASE + "project: Again\n") == [
        "crmctl.yaml:4:1: top level: duplicate key 'project' (first at line 1); expected each key once per mapping"
    ]


def test_duplicate_key_in_a_nested_flow_mapping(problems: Problems) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, seed: demo, seed: other}")
    assert problems(text) == [
        "crmctl.yaml:3:38: target: duplicate key 'seed' (first at line 3); expected each key once per mapping"
    ]


def test_empty_file(problems: Problems) -> None:
    assert problems("") == [
        "crmctl.yaml:1:1: the config file is empty; "
        "expected a mapping with project, source, target and the other sections"
    ]


def test_file_of_only_comments_is_empty(problems: Problems) -> None:
    assert problems("# nothing yet\n")[0].startswith("crmctl.yaml:1:1: the config file is empty;")


def test_file_that_is_not_a_mapping(problems: Problems) -> None:
    assert problems("- project\n- source\n") == [
        "crmctl.yaml:1:1: the config file holds a list; "
        "expected a mapping with project, source, target and the other sections"
    ]


def test_binary_garbage(workdir: Path) -> None:
    (workdir / "crmctl.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_config("crmctl.yaml")
    assert [str(p) for p in info.value.problems] == [
        "crmctl.yaml:1:1: the config file is binary, not text (it contains NUL bytes); "
        "expected a UTF-8 YAML text file"
    ]


def test_text_that_is_not_utf8(workdir: Path) -> None:
    (workdir / "crmctl.yaml").write_bytes("project: Café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config("crmctl.yaml")
    assert [str(p) for p in info.value.problems] == [
        "crmctl.yaml:1:1: the config file is not UTF-8 text (invalid byte at line 1, column 13); "
        "expected a UTF-8 YAML text file"
    ]


def test_control_character_is_located(problems: Problems) -> None:
    assert problems("project: a\x07b\n") == [
        "crmctl.yaml:1:11: YAML cannot read this file: special characters are not allowed (#x07); "
        "expected printable UTF-8 text"
    ]


def test_missing_file_reports_the_os_error(workdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nowhere.yaml")
    assert [str(p) for p in info.value.problems] == [
        "nowhere.yaml:1:1: cannot read the config file: No such file or directory; expected a readable YAML file"
    ]


def test_directory_instead_of_file(workdir: Path) -> None:
    (workdir / "conf").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config("conf")
    assert str(info.value) == "conf:1:1: cannot read the config file: Is a directory; expected a readable YAML file"


def test_unsafe_tag_is_refused_not_executed(problems: Problems) -> None:
    text = BASE.replace("project: Test cutover", 'project: !!python/object/apply:os.system ["echo pwned"]')
    assert problems(text) == [
        "crmctl.yaml:1:10: project: unsupported YAML tag '!!python/object/apply:os.system'; expected a plain list"
    ]


def test_key_that_yaml_reads_as_boolean(problems: Problems) -> None:
    assert problems(BASE + "on: true\n") == [
        "crmctl.yaml:4:1: top level: key 'on' is read by YAML as a boolean; expected a string key (put it in quotes)"
    ]


def test_impossible_date(problems: Problems) -> None:
    assert problems(BASE + "hypercare: {go_live: 2026-02-30}\n") == [
        "crmctl.yaml:4:22: hypercare.go_live: cannot read '2026-02-30': day is out of range for month; "
        "expected a valid value (quote it to keep it as text)"
    ]


def test_recursive_alias(problems: Problems) -> None:
    text = BASE + "checks:\n  - &c {id: a, kind: whoami, nested: [*c]}\n"
    assert problems(text) == [
        "crmctl.yaml:5:5: checks[0].nested[0]: a YAML alias refers to a value that contains it; "
        "expected no recursive aliases"
    ]


# --- keys and types ----------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean(problems: Problems) -> None:
    text = BASE + "runbok:\n  - {id: a, title: A}\n"
    assert problems(text) == [
        "crmctl.yaml:4:1: top level: unknown key 'runbok' (did you mean 'runbook'?); expected one of: "
        "project, state, source, target, entities, checks, integrations, runbook, rollback, incidents, "
        "hypercare, slos, clock_start"
    ]


def test_unknown_nested_key_with_did_you_mean(problems: Problems) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, limits: {concurency: 4}}")
    assert problems(text) == [
        "crmctl.yaml:3:35: target.limits: unknown key 'concurency' (did you mean 'concurrency'?); "
        "expected one of: concurrency, requests_per_5min, timeout, retries, page_size, deadline"
    ]


def test_key_of_the_other_target_kind(problems: Problems) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, url: https://contoso.crm.dynamics.com}")
    assert problems(text) == [
        "crmctl.yaml:3:26: target: unknown key 'url' (only used with kind: dataverse); "
        "expected one of: kind, data, seed, scenario, limits"
    ]


def test_x_keys_are_free_for_anchors(load: Callable[..., object]) -> None:
    load(BASE + "x-defaults: &limits {concurrency: 2}\n")


def test_wrong_type(problems: Problems) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, limits: {concurrency: eight}}")
    assert problems(text) == [
        "crmctl.yaml:3:48: target.limits.concurrency: got a string ('eight'); expected an integer from 1 to 64"
    ]


def test_boolean_is_not_an_integer(problems: Problems) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, limits: {retries: yes}}")
    assert problems(text) == [
        "crmctl.yaml:3:44: target.limits.retries: got a boolean (yes); expected an integer from 0 to 20"
    ]


def test_list_where_a_mapping_belongs(problems: Problems) -> None:
    assert problems(BASE + "rollback: [Cutover Lead]\n") == [
        "crmctl.yaml:4:11: rollback: got a list; expected a mapping with authority, sla and criteria"
    ]


def test_string_where_a_list_belongs(problems: Problems) -> None:
    text = BASE + "runbook:\n  - {id: a, title: A}\n  - {id: b, title: B, after: a}\n"
    assert problems(text) == [
        "crmctl.yaml:6:30: runbook[1].after: got a string ('a'); expected a list of ids, such as [freeze, delta]"
    ]


def test_number_out_of_range(problems: Problems) -> None:
    text = BASE.replace("{kind: emulator}", "{kind: emulator, limits: {page_size: 10000}}")
    assert problems(text) == [
        "crmctl.yaml:3:46: target.limits.page_size: 10000 is out of range; expected an integer from 1 to 5000"
    ]


def test_missing_required_key_is_reported_at_the_parent_mapping(problems: Problems) -> None:
    text = BASE + "entities:\n  - name: account\n    source: {table: accounts}\n    target: {entity_set: accounts}\n"
    assert problems(text) == [
        "crmctl.yaml:6:13: entities[0].source: missing required key 'key'; expected key: the key column",
        "crmctl.yaml:7:13: entities[0].target: missing required key 'key'; "
        "expected key: the column holding the legacy key",
    ]


def test_missing_top_level_keys(problems: Problems) -> None:
    assert problems("project: x\n") == [
        "crmctl.yaml:1:1: top level: missing required key 'source'; "
        "expected source: a mapping with kind and url",
        "crmctl.yaml:1:1: top level: missing required key 'target'; expected target: a mapping with kind",
    ]


def test_empty_required_value(problems: Problems) -> None:
    assert problems(BASE.replace("project: Test cutover", "project:")) == [
        "crmctl.yaml:1:9: project: is empty; expected the project name"
    ]


def test_unknown_choice_with_did_you_mean(problems: Problems) -> None:
    assert problems(BASE.replace("kind: emulator", "kind: emulater")) == [
        "crmctl.yaml:3:16: target.kind: unknown target kind 'emulater' (did you mean 'emulator'?); "
        "expected one of: dataverse, emulator"
    ]


# --- values ------------------------------------------------------------------------------------


def test_bad_duration(problems: Problems) -> None:
    text = BASE + "checks:\n  - {id: a, kind: whoami, every: 5 minutes}\n"
    assert problems(text) == [
        "crmctl.yaml:5:34: checks[0].every: '5 minutes' is not a duration; expected a duration such as "
        "30s, 15m, 2h, 1d, 1h30m, 250ms or a number of seconds (more than 0s)"
    ]


def test_zero_cadence(problems: Problems) -> None:
    text = BASE + "checks:\n  - {id: a, kind: whoami, every: 0s}\n"
    assert problems(text) == [
        "crmctl.yaml:5:34: checks[0].every: must be longer than 0s; expected a duration such as "
        "30s, 15m, 2h, 1d, 1h30m, 250ms or a number of seconds (more than 0s)"
    ]


def test_naive_timestamp_needs_a_timezone(problems: Problems) -> None:
    text = BASE + "rollback:\n  authority: [Cutover Lead]\n  sla: 2h\n  point_of_no_return: 2026-11-28T23:00:00\n"
    assert problems(text) == [
        "crmctl.yaml:7:23: rollback.point_of_no_return: timezone required; "
        "expected an ISO-8601 timestamp with a timezone, such as 2026-11-28T23:00:00Z"
    ]


def test_date_is_not_a_timestamp(problems: Problems) -> None:
    text = BASE + "rollback: {authority: [Lead], sla: 2h, point_of_no_return: 2026-11-28}\n"
    assert problems(text) == [
        "crmctl.yaml:4:60: rollback.point_of_no_return: timezone required (a date alone has no time or "
        "timezone); expected an ISO-8601 timestamp with a timezone, such as 2026-11-28T23:00:00Z"
    ]


def test_unparseable_timestamp(problems: Problems) -> None:
    text = BASE + "rollback: {authority: [Lead], sla: 2h, point_of_no_return: 'Friday 11pm'}\n"
    assert problems(text) == [
        "crmctl.yaml:4:60: rollback.point_of_no_return: 'Friday 11pm' is not a timestamp; "
        "expected an ISO-8601 timestamp with a timezone, such as 2026-11-28T23:00:00Z"
    ]


DATAVERSE = """\
project: Test cutover
source: {{kind: sql, url: "sqlite:///source.db"}}
target:
  kind: dataverse
  url: {url}
  auth: {{method: device_code, tenant_id: contoso.onmicrosoft.com, client_id: 11111111-2222-3333-4444-555555555555}}
"""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://contoso.crm.dynamics.com", "target.url: plain http is only allowed for localhost; "
         "expected an https:// URL such as https://contoso.crm.dynamics.com"),
        ("contoso.crm.dynamics.com", "target.url: 'contoso.crm.dynamics.com' is not an absolute URL with a scheme "
         "and a host; expected a URL such as https://contoso.crm.dynamics.com"),
        ("ftp://contoso.crm.dynamics.com", "target.url: scheme 'ftp' is not supported; "
         "expected a URL such as https://contoso.crm.dynamics.com"),
        ("https://contoso.crm.dynamics.com/api/data/v9.2", "target.url: the organization URL must not have a path "
         "or query; expected just scheme and host, such as https://contoso.crm.dynamics.com"),
        ("https://contoso.crm.dynamics.com:99999", "target.url: 'https://contoso.crm.dynamics.com:99999' has a port "
         "that is not a number from 0 to 65535; expected a URL such as https://contoso.crm.dynamics.com"),
    ],
)
def test_bad_url(problems: Problems, url: str, message: str) -> None:
    assert problems(DATAVERSE.format(url=url)) == [f"crmctl.yaml:5:8: {message}"]


def test_plain_http_to_localhost_is_allowed(load: Callable[..., object]) -> None:
    load(DATAVERSE.format(url="http://127.0.0.1:5555"))
    load(DATAVERSE.format(url="http://localhost:5555"))


def test_bad_source_url(problems: Problems) -> None:
    assert problems(BASE.replace('"sqlite:///source.db"', '"sqlite://source.db"')) == [
        "crmctl.yaml:2:26: source.url: 'sqlite://source.db' is not a SQLite URL with a path; "
        "expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
    ]


# --- ids and references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("checks:\n  - {id: a.count, kind: whoami}\n  - {id: a.count, kind: whoami}\n",
         "crmctl.yaml:6:10: checks[1].id: duplicate check 'a.count' (first defined at line 5); "
         "expected each check id to be unique"),
        ("runbook:\n  - {id: freeze, title: A}\n  - {id: freeze, title: B}\n",
         "crmctl.yaml:6:10: runbook[1].id: duplicate step 'freeze' (first defined at line 5); "
         "expected each step id to be unique"),
        ("entities:\n  - {name: account, source: {table: a, key: k}, target: {entity_set: a, key: k}}\n"
         "  - {name: account, source: {table: b, key: k}, target: {entity_set: b, key: k}}\n",
         "crmctl.yaml:6:12: entities[1].name: duplicate entity 'account' (first defined at line 5); "
         "expected each entity name to be unique"),
        ("integrations:\n  - {id: erp, jobs: {name_like: 'ERP%'}}\n  - {id: erp, jobs: {name_like: 'X%'}}\n",
         "crmctl.yaml:6:10: integrations[1].id: duplicate integration 'erp' (first defined at line 5); "
         "expected each integration id to be unique"),
        ("slos:\n  - {id: view, query: accounts, p95_ms: 500}\n  - {id: view, query: contacts, p95_ms: 500}\n",
         "crmctl.yaml:6:10: slos[1].id: duplicate SLO 'view' (first defined at line 5); "
         "expected each SLO id to be unique"),
        ("checks: [{id: c, kind: whoami}]\nrollback:\n  authority: [Lead]\n  sla: 2h\n  criteria:\n"
         "    - {id: down, title: A, check: c, rollback_if: 'x > 0'}\n"
         "    - {id: down, title: B, check: c, rollback_if: 'y > 0'}\n",
         "crmctl.yaml:10:12: rollback.criteria[1].id: duplicate criterion 'down' (first defined at line 9); "
         "expected each criterion id to be unique"),
    ],
    ids=["checks", "steps", "entities", "integrations", "slos", "criteria"],
)
def test_duplicate_ids(problems: Problems, section: str, expected: str) -> None:
    assert problems(BASE + section) == [expected]


def test_step_id_shared_between_runbooks(problems: Problems) -> None:
    text = BASE + "runbook: [{id: stop, title: A}]\nrollback:\n  authority: [Lead]\n  sla: 1h\n" \
        "  runbook: [{id: stop, title: B}]\n"
    assert problems(text) == [
        "crmctl.yaml:8:18: step id 'stop' is used in both runbooks (first at line 4); "
        "expected each step id to be unique"
    ]


def test_gate_naming_an_unknown_check(problems: Problems) -> None:
    text = BASE + "checks: [{id: source.write_freeze, kind: whoami}]\n" \
        "runbook:\n  - {id: freeze, title: Freeze, gate: [source.write_frezee]}\n"
    assert problems(text) == [
        "crmctl.yaml:6:40: runbook[0].gate[0]: unknown check 'source.write_frezee' "
        "(did you mean 'source.write_freeze'?); expected the id of a check defined under checks:"
    ]


def test_criterion_naming_an_unknown_check(problems: Problems) -> None:
    text = BASE + "rollback:\n  authority: [Lead]\n  sla: 2h\n  criteria:\n" \
        "    - {id: loss, title: Loss, check: account.reconcile, rollback_if: 'missing > 0'}\n"
    assert problems(text) == [
        "crmctl.yaml:8:38: rollback.criteria[0].check: unknown check 'account.reconcile'; "
        "expected the id of a check defined under checks:"
    ]


def test_after_naming_an_unknown_step(problems: Problems) -> None:
    text = BASE + "runbook:\n  - {id: freeze, title: A}\n  - {id: delta, title: B, after: [freez]}\n"
    assert problems(text) == [
        "crmctl.yaml:6:35: runbook[1].after[0]: unknown step 'freez' (did you mean 'freeze'?); "
        "expected the id of a step in runbook:"
    ]


def test_rollback_step_cannot_wait_for_a_cutover_step(problems: Problems) -> None:
    text = BASE + "runbook: [{id: freeze, title: A}]\n" \
        "rollback: {authority: [Lead], sla: 1h, runbook: [{id: undo, title: U, after: [freeze]}]}\n"
    assert problems(text) == [
        "crmctl.yaml:5:79: rollback.runbook[0].after[0]: unknown step 'freeze'; "
        "expected the id of a step in rollback.runbook:"
    ]


def test_check_naming_an_unknown_entity(problems: Problems) -> None:
    text = BASE + "entities:\n  - {name: account, source: {table: a, key: k}, target: {entity_set: a, key: k}}\n" \
        "checks:\n  - {id: c, kind: row_count, entity: acount}\n"
    assert problems(text) == [
        "crmctl.yaml:7:38: checks[0].entity: unknown entity 'acount' (did you mean 'account'?); "
        "expected the name of an entity defined under entities:"
    ]


def test_lookup_naming_an_unknown_entity(problems: Problems) -> None:
    text = BASE + "entities:\n  - name: account\n    source: {table: a, key: k}\n" \
        "    target: {entity_set: a, key: k}\n    lookups: [{field: _primarycontactid_value, entity: contact}]\n"
    assert problems(text) == [
        "crmctl.yaml:8:56: entities[0].lookups[0].entity: unknown entity 'contact'; "
        "expected the name of an entity defined under entities:"
    ]


def test_runbook_cycle_is_named(problems: Problems) -> None:
    text = BASE + "runbook:\n" \
        "  - {id: a, title: A, after: [c]}\n" \
        "  - {id: b, title: B, after: [a]}\n" \
        "  - {id: c, title: C, after: [b]}\n" \
        "  - {id: d, title: D, after: [a]}\n"
    assert problems(text) == [
        "crmctl.yaml:6:31: runbook[1].after[0]: dependency cycle: a -> c -> b -> a; "
        "expected after: to name only steps that do not wait for this one"
    ]


def test_step_waiting_for_itself(problems: Problems) -> None:
    assert problems(BASE + "runbook: [{id: a, title: A, after: [a]}]\n") == [
        "crmctl.yaml:4:37: runbook[0].after[0]: dependency cycle: a -> a; "
        "expected after: to name only steps that do not wait for this one"
    ]


def test_long_runbook_chain_is_not_a_cycle_and_does_not_recurse(load: Callable[..., object]) -> None:
    steps = "".join(f"  - {{id: s{i}, title: S, after: [s{i + 1}]}}\n" for i in range(3000))
    load(BASE + "runbook:\n" + steps + "  - {id: s3000, title: Last}\n")


# --- secrets (see test_config_secrets for the never-shown guarantees) ---------------------------


def test_literal_secret_is_refused(problems: Problems) -> None:
    text = DATAVERSE.format(url="https://contoso.crm.dynamics.com").replace(
        "method: device_code", "method: client_secret, secret: hunter2"
    )
    assert problems(text) == [
        "crmctl.yaml:6:41: target.auth.secret: literal secret in config; use ${env:NAME}"
    ]


def test_unset_environment_variable(problems: Problems) -> None:
    text = BASE + "incidents: {notify: {teams_webhook: '${env:TEAMS_WEBHOOK_URL}'}}\n"
    assert problems(text) == [
        "crmctl.yaml:4:37: incidents.notify.teams_webhook: environment variable TEAMS_WEBHOOK_URL is not set; "
        "expected TEAMS_WEBHOOK_URL to be exported before crmctl starts"
    ]


# --- check kinds -------------------------------------------------------------------------------


def test_unknown_check_kind_with_did_you_mean(problems: Problems, check_kinds: dict) -> None:
    assert problems(BASE + "checks: [{id: c, kind: who_am_i}]\n", check_kinds=check_kinds) == [
        "crmctl.yaml:4:24: checks[0].kind: unknown check kind 'who_am_i' (did you mean 'whoami'?); "
        "expected one of: http, nulls, row_count, whoami, write_freeze"
    ]


def test_check_kind_that_needs_an_entity(problems: Problems, check_kinds: dict) -> None:
    assert problems(BASE + "checks:\n  - {id: c, kind: row_count}\n", check_kinds=check_kinds) == [
        "crmctl.yaml:5:5: checks[0]: check kind 'row_count' needs an entity; "
        "expected entity: the name of an entity under entities:"
    ]


def test_unknown_check_param(problems: Problems, check_kinds: dict) -> None:
    text = BASE + "checks:\n  - {id: c, kind: write_freeze, windw: 15m}\n"
    assert problems(text, check_kinds=check_kinds) == [
        "crmctl.yaml:5:33: checks[0]: unknown key 'windw' for check kind 'write_freeze' (did you mean 'window'?); "
        "expected one of: id, kind, entity, warn, breach, every, timeout, title, window, since"
    ]


def test_wrong_check_param_type(problems: Problems, check_kinds: dict) -> None:
    text = BASE + "checks:\n  - {id: c, kind: write_freeze, window: soon, since: 2026-11-28T20:00:00}\n"
    assert problems(text, check_kinds=check_kinds) == [
        "crmctl.yaml:5:41: checks[0].window: got a string ('soon'); expected a duration such as "
        "30s, 15m, 2h, 1d, 1h30m, 250ms or a number of seconds",
        "crmctl.yaml:5:54: checks[0].since: got a timestamp (2026-11-28T20:00:00); "
        "expected an ISO-8601 timestamp with a timezone, such as 2026-11-28T23:00:00Z",
    ]


# --- all at once -------------------------------------------------------------------------------


def test_every_problem_in_one_run_in_file_order(problems: Problems, check_kinds: dict) -> None:
    text = """\
        project: Test cutover
        source: {kind: sql, url: "sqlite:///source.db"}
        target:
          kind: dataverse
          url: http://contoso.crm.dynamics.com
          auth: {method: client_secret, tenant_id: contoso.onmicrosoft.com, client_id: nope, secret: hunter2}
          limits: {concurency: 8, timeout: 30 seconds}
        checks:
          - {id: a.count, kind: row_cont, every: 0s}
          - {id: a.count, kind: whoami}
        runbook:
          - {id: a, title: A, gate: [a.cnt]}
        rollback: {authority: [Lead], sla: 2h, point_of_no_return: 2026-11-28T23:00:00}
        projct: x
    """
    assert problems(text, check_kinds=check_kinds) == [
        "crmctl.yaml:5:8: target.url: plain http is only allowed for localhost; "
        "expected an https:// URL such as https://contoso.crm.dynamics.com",
        "crmctl.yaml:6:80: target.auth.client_id: 'nope' is not a GUID; "
        "expected an application (client) id, a GUID such as 11111111-2222-3333-4444-555555555555",
        "crmctl.yaml:6:94: target.auth.secret: literal secret in config; use ${env:NAME}",
        "crmctl.yaml:7:12: target.limits: unknown key 'concurency' (did you mean 'concurrency'?); "
        "expected one of: concurrency, requests_per_5min, timeout, retries, page_size, deadline",
        "crmctl.yaml:7:36: target.limits.timeout: '30 seconds' is not a duration; expected a duration such as "
        "30s, 15m, 2h, 1d, 1h30m, 250ms or a number of seconds (more than 0s)",
        "crmctl.yaml:9:25: checks[0].kind: unknown check kind 'row_cont' (did you mean 'row_count'?); "
        "expected one of: http, nulls, row_count, whoami, write_freeze",
        "crmctl.yaml:9:42: checks[0].every: must be longer than 0s; expected a duration such as "
        "30s, 15m, 2h, 1d, 1h30m, 250ms or a number of seconds (more than 0s)",
        "crmctl.yaml:10:10: checks[1].id: duplicate check 'a.count' (first defined at line 9); "
        "expected each check id to be unique",
        "crmctl.yaml:12:30: runbook[0].gate[0]: unknown check 'a.cnt' (did you mean 'a.count'?); "
        "expected the id of a check defined under checks:",
        "crmctl.yaml:13:60: rollback.point_of_no_return: timezone required; "
        "expected an ISO-8601 timestamp with a timezone, such as 2026-11-28T23:00:00Z",
        "crmctl.yaml:14:1: top level: unknown key 'projct' (did you mean 'project'?); expected one of: "
        "project, state, source, target, entities, checks, integrations, runbook, rollback, incidents, "
        "hypercare, slos, clock_start",
    ]


def test_config_error_str_joins_the_problem_lines(write: Callable[[str], Path]) -> None:
    path = write(BASE + "projct: x\nrunbok: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert len(error.problems) == 2
    assert str(error) == "\n".join(str(p) for p in error.problems)
    first = error.problems[0]
    assert (first.file, first.line, first.column) == ("crmctl.yaml", 4, 1)
    assert first.message == "top level: unknown key 'projct' (did you mean 'project'?)"
    assert first.expected.startswith("expected one of: project, state,")


# --- auth and integrations ---------------------------------------------------------------------

AUTH = """\
project: Test cutover
source: {{kind: sql, url: "sqlite:///source.db"}}
target:
  kind: dataverse
  url: https://contoso.crm.dynamics.com
  auth:
    client_id: 11111111-2222-3333-4444-555555555555
{auth}
"""


def test_certificate_method_needs_certificate_or_pfx(problems: Problems) -> None:
    assert problems(AUTH.format(auth="    method: certificate\n    tenant_id: contoso.onmicrosoft.com")) == [
        "crmctl.yaml:7:5: target.auth: missing required key 'certificate'; "
        "expected certificate: {path, thumbprint} or pfx: {path}"
    ]


def test_certificate_and_pfx_are_exclusive(problems: Problems) -> None:
    auth = "    method: certificate\n    tenant_id: t\n    pfx: {path: a.pfx}\n" \
        f"    certificate: {{path: a.pem, thumbprint: {'0' * 40}}}"
    assert problems(AUTH.format(auth=auth)) == [
        "crmctl.yaml:7:5: target.auth: both certificate and pfx are given; expected exactly one of them"
    ]


def test_tenant_is_needed_unless_authority_is_given(problems: Problems) -> None:
    assert problems(AUTH.format(auth="    method: device_code")) == [
        "crmctl.yaml:7:5: target.auth: missing required key 'tenant_id'; "
        "expected tenant_id: the directory (tenant) id, or an explicit authority"
    ]


def test_key_of_another_auth_method(problems: Problems) -> None:
    auth = "    method: device_code\n    tenant_id: t\n    secret: ${env:CRMCTL_SECRET}"
    assert problems(AUTH.format(auth=auth)) == [
        "crmctl.yaml:10:5: target.auth: unknown key 'secret' (only used with method: client_secret); "
        "expected one of: method, tenant_id, client_id, authority, scope"
    ]


def test_bad_thumbprint(problems: Problems) -> None:
    auth = "    method: certificate\n    tenant_id: t\n    certificate: {path: a.pem, thumbprint: ABC}"
    assert problems(AUTH.format(auth=auth)) == [
        "crmctl.yaml:10:44: target.auth.certificate.thumbprint: 'ABC' is not a certificate thumbprint; "
        "expected a SHA-1 thumbprint of 40 hex digits"
    ]


def test_integration_with_nothing_to_watch(problems: Problems) -> None:
    assert problems(BASE + "integrations:\n  - {id: erp, title: ERP}\n") == [
        "crmctl.yaml:5:5: integrations[0]: nothing to watch; expected probe: {url: …} and/or jobs: {name_like: …}"
    ]
