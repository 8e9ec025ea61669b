"""Secrets enter only as `${env:NAME}` and are never shown: not in reprs, problems or redacted text."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import pytest

from crmctl.config import Config, ConfigError, Secret, SecretUnavailable, load_config

BASE = """\
project: Test cutover
source: {kind: sql, url: "sqlite:///source.db"}
target: {kind: emulator}
"""

DATAVERSE = """\
project: Test cutover
source: {{kind: sql, url: "sqlite:///source.db"}}
target:
  kind: dataverse
  url: https://contoso.crm.dynamics.com
  auth:
    tenant_id: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
{auth}
"""

LITERAL = "Xy9-literal-credential-Qz"
"""A credential someone pasted into the file; it must never come back out in a message."""

Problems = Callable[..., list[str]]


def test_secret_shows_its_variable_never_its_value() -> None:
    secret = Secret("CRMCTL_SECRET")
    env = {"CRMCTL_SECRET": "value-123"}
    assert secret.reveal(env) == "value-123"
    assert repr(secret) == "Secret(env_name='CRMCTL_SECRET')"
    assert str(secret) == "${env:CRMCTL_SECRET}"
    assert f"{secret}" == "${env:CRMCTL_SECRET}"


def test_reveal_reads_the_environment_at_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMCTL_TEST_LATE", "late-value")
    assert Secret("CRMCTL_TEST_LATE").reveal() == "late-value"
    monkeypatch.delenv("CRMCTL_TEST_LATE")
    with pytest.raises(SecretUnavailable, match="CRMCTL_TEST_LATE is not set"):
        Secret("CRMCTL_TEST_LATE").reveal()
    with pytest.raises(SecretUnavailable):
        Secret("EMPTY").reveal({"EMPTY": ""})


def test_loaded_config_never_prints_secret_values(full: Path, env: Mapping[str, str]) -> None:
    config = load_config(full, env=env)
    for text in (repr(config), str(config), config.redacted(), repr(config.target.auth)):
        for value in env.values():
            assert value not in text
    assert "${env:CRMCTL_SECRET}" in config.redacted()


@pytest.mark.parametrize(
    ("auth", "line"),
    [
        (f"    method: client_secret\n    secret: {LITERAL}",
         "crmctl.yaml:10:13: target.auth.secret: literal secret in config; use ${env:NAME}"),
        ("    method: client_secret\n    secret: 1234567",
         "crmctl.yaml:10:13: target.auth.secret: literal secret in config; use ${env:NAME}"),
        (f"    method: certificate\n    pfx: {{path: a.pfx, passphrase: {LITERAL}}}",
         "crmctl.yaml:10:36: target.auth.pfx.passphrase: literal secret in config; use ${env:NAME}"),
        (f"    method: certificate\n    certificate: {{path: a.pem, thumbprint: {'A' * 40}, passphrase: '{LITERAL}'}}",
         "crmctl.yaml:10:98: target.auth.certificate.passphrase: literal secret in config; use ${env:NAME}"),
    ],
    ids=["secret", "secret-number", "pfx-passphrase", "certificate-passphrase"],
)
def test_literal_secret_in_auth(problems: Problems, auth: str, line: str) -> None:
    assert problems(DATAVERSE.format(auth=auth)) == [line]


def test_credential_under_a_misspelt_key_is_refused_too(problems: Problems) -> None:
    lines = problems(DATAVERSE.format(auth=f"    method: client_secret\n    client_secret: {LITERAL}"))
    assert lines == [
        "crmctl.yaml:7:5: target.auth: missing required key 'secret'; expected secret: ${env:NAME}",
        "crmctl.yaml:10:5: target.auth: unknown key 'client_secret' (did you mean 'secret'?); "
        "expected one of: method, tenant_id, client_id, authority, scope, secret",
        "crmctl.yaml:10:20: target.auth.client_secret: literal secret in config; use ${env:NAME}",
    ]


@pytest.mark.parametrize("key", ["teams_webhook", "webhook"])
def test_literal_webhook(problems: Problems, key: str) -> None:
    text = BASE + f"incidents:\n  notify:\n    {key}: https://contoso.webhook.office.com/{LITERAL}\n"
    assert problems(text) == [
        f"crmctl.yaml:6:{7 + len(key)}: incidents.notify.{key}: literal secret in config; use ${{env:NAME}}"
    ]


def test_literal_password_in_check_params(problems: Problems) -> None:
    text = BASE + f"checks:\n  - {{id: c, kind: custom, password: {LITERAL}, api_token: abc}}\n"
    assert problems(text) == [
        "crmctl.yaml:5:37: checks[0].password: literal secret in config; use ${env:NAME}",
        "crmctl.yaml:5:75: checks[0].api_token: literal secret in config; use ${env:NAME}",
    ]


def test_literal_password_in_a_database_url(problems: Problems) -> None:
    text = BASE.replace('"sqlite:///source.db"', f'"postgresql://crm:{LITERAL}@db.corp.local/crm"')
    assert problems(text) == [
        "crmctl.yaml:2:26: source.url: literal secret in config (a password in the URL); use ${env:NAME}"
    ]


def test_secret_must_be_exactly_one_reference(problems: Problems) -> None:
    text = BASE + "incidents: {notify: {webhook: 'https://hooks/${env:HOOK_TOKEN}'}}\n"
    assert problems(text, env={"HOOK_TOKEN": "t"}) == [
        "crmctl.yaml:4:31: incidents.notify.webhook: a secret must be exactly one ${env:NAME} reference; "
        "expected ${env:NAME} and nothing around it"
    ]


def test_unset_secret_variable(problems: Problems) -> None:
    text = DATAVERSE.format(auth="    method: client_secret\n    secret: ${env:CRMCTL_SECRET}")
    assert problems(text, env={}) == [
        "crmctl.yaml:10:13: target.auth.secret: environment variable CRMCTL_SECRET is not set; "
        "expected CRMCTL_SECRET to be exported before crmctl starts"
    ]


def test_empty_variable_counts_as_unset(problems: Problems) -> None:
    text = DATAVERSE.format(auth="    method: client_secret\n    secret: ${env:CRMCTL_SECRET}")
    assert "environment variable CRMCTL_SECRET is not set" in problems(text, env={"CRMCTL_SECRET": ""})[0]


def test_no_problem_line_ever_contains_a_literal(write: Callable[[str], Path]) -> None:
    text = DATAVERSE.format(auth=f"    method: client_secret\n    secret: [{LITERAL}]\n    password: {LITERAL}") \
        + f"incidents: {{notify: {{webhook: {LITERAL}}}}}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(text), env={})
    assert len(info.value.problems) >= 3
    assert LITERAL not in str(info.value)


def test_yaml_syntax_error_does_not_quote_the_line(write: Callable[[str], Path]) -> None:
    text = DATAVERSE.format(auth=f"    method: client_secret\n    secret: '{LITERAL}\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(text), env={})
    assert LITERAL not in str(info.value)
    assert str(info.value).startswith("crmctl.yaml:")


def test_env_in_a_url_is_substituted_and_kept_out_of_print(load: Callable[..., Config]) -> None:
    env = {"DB_PASSWORD": "pw-Secret-42", "DB_HOST": "db7.corp.local"}
    text = BASE.replace('"sqlite:///source.db"', '"postgresql://crm:${env:DB_PASSWORD}@${env:DB_HOST}/crm"')
    config = load(text, env=env)
    source = config.source
    assert source.url == "postgresql://crm:pw-Secret-42@db7.corp.local/crm"
    assert source.sensitive and source.env_names == ("DB_PASSWORD", "DB_HOST")
    assert source.redacted() == "postgresql://crm:${env:DB_PASSWORD}@${env:DB_HOST}/crm"
    for text in (repr(config), repr(source), config.redacted()):
        assert "pw-Secret-42" not in text and "db7.corp.local" not in text
    message = "could not connect to postgresql://crm:pw-Secret-42@db7.corp.local/crm"
    assert config.redact(message) == "could not connect to postgresql://crm:${env:DB_PASSWORD}@${env:DB_HOST}/crm"


def test_problem_with_a_substituted_url_shows_the_template(problems: Problems) -> None:
    text = BASE + "integrations: [{id: erp, probe: {url: 'ftp://${env:ERP_HOST}/health'}}]\n"
    assert problems(text, env={"ERP_HOST": "erp-internal.corp"}) == [
        "crmctl.yaml:4:39: integrations[0].probe.url: scheme 'ftp' is not supported; "
        "expected a URL such as https://erp.contoso.com/health"
    ]
    text = BASE + "integrations: [{id: erp, probe: {url: 'https://${env:ERP_HOST}:x/health'}}]\n"
    (line,) = problems(text, env={"ERP_HOST": "erp-internal.corp"})
    assert "erp-internal.corp" not in line and "${env:ERP_HOST}" in line


def test_malformed_env_reference(problems: Problems) -> None:
    text = BASE.replace('"sqlite:///source.db"', '"sqlite:///${ENV:DB}.db"')
    assert problems(text) == [
        "crmctl.yaml:2:26: source.url: malformed environment reference in 'sqlite:///${ENV:DB}.db'; "
        "expected ${env:NAME} with NAME made of letters, digits and _"
    ]


def test_env_reference_outside_secrets_and_urls_is_refused(problems: Problems) -> None:
    assert problems(BASE.replace("project: Test cutover", "project: ${env:PROJECT}")) == [
        "crmctl.yaml:1:10: project: ${env:…} is only substituted in secrets and in source, target and probe "
        "URLs; "
        "expected the project name written out"
    ]
