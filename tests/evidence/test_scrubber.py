"""The scrubber: secrets by value and by shape, control characters made visible, leaks found."""

from __future__ import annotations

from pathlib import Path

from crmctl.config.sections import (
    AuthConfig,
    Config,
    IncidentsConfig,
    NotifyConfig,
    SourceConfig,
    TargetConfig,
)
from crmctl.config.values import Secret
from crmctl.scrubber import MASK, Scrubber, config_secrets, neutralise

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVl"


def config(tmp_path: Path) -> Config:
    return Config(
        path=tmp_path / "crmctl.yaml",
        project="P",
        state=tmp_path / "state.db",
        source=SourceConfig("sql", "sqlite:///db-host-9f2e.example/source.db", "sqlite:///${env:DB_HOST}/source.db", ("DB_HOST",)),
        target=TargetConfig("dataverse", url="https://contoso.crm.dynamics.com", auth=AuthConfig(
            "client_secret", "tenant", "client", "https://login", "scope", secret=Secret("CRMCTL_SECRET"))),
        incidents=IncidentsConfig(notify=NotifyConfig(teams_webhook=Secret("HOOK"))),
        substitutions={"DB_HOST": "db-host-9f2e.example"},
    )


def test_config_secrets_are_found_wherever_they_live(tmp_path: Path) -> None:
    env = {"CRMCTL_SECRET": "s3cr3t-value-123", "HOOK": "https://x.webhook.office.com/webhookb2/abc"}
    found = config_secrets(config(tmp_path), env)
    assert found == {
        "s3cr3t-value-123": "${env:CRMCTL_SECRET}",
        "https://x.webhook.office.com/webhookb2/abc": "${env:HOOK}",
        "db-host-9f2e.example": "${env:DB_HOST}",
    }
    assert config_secrets(config(tmp_path), {}) == {"db-host-9f2e.example": "${env:DB_HOST}"}  # unset secrets: nothing to hide


def test_text_scrubs_values_and_shapes(tmp_path: Path) -> None:
    scrub = Scrubber.for_config(config(tmp_path), extra=["live-token-abcdef"], env={"CRMCTL_SECRET": "s3cr3t-value-123"})
    text = scrub.text(
        "secret s3cr3t-value-123 at db-host-9f2e.example, token live-token-abcdef,\n"
        f"Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123\nid_token={JWT}&x=1 sent Bearer ZYXWVUTSRQPONMLKJIHG9876 on "
        "https://user:pw@api.example.com/h?code=XYZ&$select=name client_secret=hunter2hunter2 "
        "https://contoso.webhook.office.com/webhookb2/0000-1111/IncomingWebhook/abc"
    )
    for gone in ("s3cr3t-value-123", "db-host-9f2e", "live-token-abcdef", "abcdefghijklmnopqrstuvwxyz0123", JWT[:20],
                 "ZYXWVUTSRQ",
                 "user:pw", "XYZ", "hunter2", "0000-1111"):
        assert gone not in text, gone
    assert "${env:CRMCTL_SECRET}" in text and "${env:DB_HOST}" in text and MASK in text
    assert "$select=name" in text  # OData options are evidence, never secrets
    assert "sent Bearer *** on" in text
    assert text.count("\n") == 2


def test_ordinary_prose_survives(tmp_path: Path) -> None:
    scrub = Scrubber.for_config(config(tmp_path), env={})
    prose = "A basic query for 20 accounts; the bearer of bad news was ERP Sync. p95 120 ms."
    assert scrub.text(prose) == prose


def test_control_characters_become_visible_text() -> None:
    assert neutralise("a\x1b[31mb\x07c\x9bd\u202ee\r\nf\tg") == "a\\x1b[31mb\\x07c\\x9bd\\u202ee\nf\tg"
    assert neutralise("one\ntwo", multiline=False) == "one\\x0atwo"
    assert neutralise("\x00\x7f") == "\\x00\\x7f"
    assert neutralise("Zürich — ✔ 日本") == "Zürich — ✔ 日本"


def test_value_scrubs_nested_structures_keys_included(tmp_path: Path) -> None:
    scrub = Scrubber(["topsecret-1"])
    assert scrub.value({"k topsecret-1": ["x topsecret-1", {"n": 1, "t": "\x1b"}]}) == {
        "k ***": ["x ***", {"n": 1, "t": "\\x1b"}]
    }


def test_leaks_name_what_they_found_never_the_value() -> None:
    scrub = Scrubber({"value-of-secret-9": "${env:S}"})
    assert scrub.leaks(b"nothing here, Bearer ***") == []
    assert scrub.leaks(b"...value-of-secret-9...") == ["the value of ${env:S}"]
    assert scrub.leaks(b"url?x=value-of-secret-9") == ["the value of ${env:S}"]
    assert scrub.leaks(b"Authorization: Bearer abcdefghijklmnopqrstuv") == ["a bearer credential"]
    assert scrub.leaks(JWT.encode()) == ["a JSON web token"]
    assert all("value-of-secret-9" not in found for found in scrub.leaks(b"value-of-secret-9"))


def test_leaks_are_found_encoded_as_they_travel() -> None:
    scrub = Scrubber({'p@ss word"!xyz': "${env:P}"})
    assert scrub.leaks(b"https://h/x?q=p%40ss%20word%22%21xyz") == ["the value of ${env:P}"]
    assert scrub.leaks(b"https://h/x?q=p%40ss+word%22%21xyz") == ["the value of ${env:P}"]
    assert scrub.leaks(b'{"note": "p@ss word\\"!xyz"}') == ["the value of ${env:P}"]
