"""MsalTokenProvider against a real OpenID Connect provider over HTTPS: no fakes on these paths.

The provider is `oidc-provider` (npm) run by tests/peers/oidc/server.mjs on 127.0.0.1 with a
certificate from a CA the session made with openssl; MSAL trusts it through REQUESTS_CA_BUNDLE
and treats it as a generic OIDC authority (instance discovery off), exactly as crmctl does for
any non-Entra authority. Every token is verified as a resource server would verify it.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from crmctl.config.sections import AuthConfig, CertificateConfig, PfxConfig
from crmctl.config.values import Secret
from crmctl.connectors.auth import MsalTokenProvider
from crmctl.connectors.errors import AuthError
from tests.peers.browser import approve_device_code
from tests.peers.oidc_peer import DEVICE_ACCESS_TOKEN_TTL, JwtValidator, OidcPeer
from tests.peers.pki import PFX_PASSPHRASE, Pki

pytestmark = pytest.mark.usefixtures("trust_ca")


def app_scope(peer: OidcPeer) -> str:
    return f"{peer.resource}/.default"


def secret_provider(peer: OidcPeer, secret: str | None = None, **kwargs: Any) -> MsalTokenProvider:
    return MsalTokenProvider(
        "client_secret", "tenant-1", peer.secret_client, authority=peer.issuer, scope=app_scope(peer),
        secret_value=secret or peer.client_secret, **kwargs,
    )


class Heartbeat:
    """Ticks on the event loop while MSAL works. MSAL sleeps a whole second between device-code polls,
    so a gap under 0.75 s proves those sleeps (and every MSAL call) ran off the loop."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


class Person:
    """Whoever reads the device-code prompt: records it, then signs in at the provider's pages."""

    def __init__(self, peer: OidcPeer, login: str = "alice") -> None:
        self.peer = peer
        self.login = login
        self.prompts: list[dict[str, Any]] = []
        self.sign_ins: list[asyncio.Task[str]] = []

    def __call__(self, prompt: dict[str, Any]) -> None:
        self.prompts.append(prompt)
        self.sign_ins.append(asyncio.ensure_future(approve_device_code(
            str(self.peer.pki.ca_cert), prompt["verification_uri"], prompt["user_code"], self.login,
        )))

    async def done(self) -> None:
        await asyncio.gather(*self.sign_ins)


def device_provider(peer: OidcPeer, callback: Callable[[dict[str, Any]], Any], **kwargs: Any) -> MsalTokenProvider:
    return MsalTokenProvider(
        "device_code", "tenant-1", peer.device_client, authority=peer.issuer,
        scope=f"{peer.resource}/user_impersonation", device_code_callback=callback, **kwargs,
    )


# -- client credentials ----------------------------------------------------------------------


async def test_client_secret_token_is_issued_for_the_org_and_then_served_from_the_cache(oidc: OidcPeer) -> None:
    provider = secret_provider(oidc)
    assert provider.oidc, "a non-Entra host is a generic OIDC authority"
    before = oidc.grants().get("client_credentials", 0)
    token = await provider.token()
    claims = JwtValidator(oidc).claims(token)
    assert claims["aud"] == "https://org.example"
    assert claims["scope"] == "https://org.example/.default"
    assert claims["client_id"] == oidc.secret_client
    again = await provider.token()
    assert again == token
    assert provider.acquisitions == 2, "MSAL is asked for every request"
    assert oidc.grants()["client_credentials"] == before + 1, "the second answer came from MSAL's cache"


@pytest.mark.parametrize("form", ["pem", "pfx"])
async def test_certificate_credential_from_the_config(
    oidc: OidcPeer, pki: Pki, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEM (RS256, x5t) and PFX (PS256, x5t#S256) client assertions, built from AuthConfig as the runtime does."""
    if form == "pem":
        auth = AuthConfig("certificate", "tenant-1", oidc.cert_client, oidc.issuer, app_scope(oidc),
                          certificate=CertificateConfig(pki.client_key, pki.client_thumbprint))
        credential = auth.certificate_credential(env={})
    else:
        auth = AuthConfig("certificate", "tenant-1", oidc.cert_client, oidc.issuer, app_scope(oidc),
                          pfx=PfxConfig(pki.client_pfx, Secret("CRMCTL_PFX_PASSPHRASE")))
        credential = auth.certificate_credential(env={"CRMCTL_PFX_PASSPHRASE": PFX_PASSPHRASE})
    provider = MsalTokenProvider("certificate", "tenant-1", oidc.cert_client, authority=oidc.issuer,
                                 scope=auth.scope, certificate=credential)
    claims = JwtValidator(oidc).claims(await provider.token())
    assert claims["client_id"] == oidc.cert_client
    assert claims["aud"] == "https://org.example"


async def test_wrong_secret_is_a_clean_auth_error_without_the_secret(oidc: OidcPeer) -> None:
    wrong = "Wr0ng~Secret.Value-that_must-not-leak"
    provider = secret_provider(oidc, secret=wrong)
    with pytest.raises(AuthError) as caught:
        await provider.token()
    text = str(caught.value)
    assert caught.value.code == "invalid_client"
    assert text.startswith("Sign-in failed (invalid_client)")
    for secret in (wrong, oidc.client_secret):
        assert secret not in text and secret not in repr(caught.value) and secret not in repr(provider)


async def test_wrong_certificate_key_and_wrong_pfx_passphrase_are_auth_errors(oidc: OidcPeer, pki: Pki) -> None:
    stranger = MsalTokenProvider(
        "certificate", "tenant-1", oidc.cert_client, authority=oidc.issuer, scope=app_scope(oidc),
        certificate={"private_key": pki.other_key.read_text(), "thumbprint": pki.client_thumbprint},
    )
    with pytest.raises(AuthError, match=r"invalid_client"):
        await stranger.token()
    wrong_pass = "not-the-pfx-passphrase"
    locked = MsalTokenProvider(
        "certificate", "tenant-1", oidc.cert_client, authority=oidc.issuer, scope=app_scope(oidc),
        certificate={"private_key_pfx_path": str(pki.client_pfx), "passphrase": wrong_pass},
    )
    with pytest.raises(AuthError) as caught:
        await locked.token()
    assert wrong_pass not in str(caught.value) and PFX_PASSPHRASE not in str(caught.value)


async def test_missing_pfx_file_says_so(oidc: OidcPeer, tmp_path: Path) -> None:
    provider = MsalTokenProvider(
        "certificate", "tenant-1", oidc.cert_client, authority=oidc.issuer, scope=app_scope(oidc),
        certificate={"private_key_pfx_path": str(tmp_path / "gone.pfx"), "passphrase": "x"},
    )
    with pytest.raises(AuthError, match=r"could not read the certificate file .*gone\.pfx"):
        await provider.token()


async def test_refused_token_is_dropped_from_the_cache_and_replaced(oidc: OidcPeer) -> None:
    provider = secret_provider(oidc)
    first = await provider.token()
    provider.invalidate()  # what DataverseClient does after a 401
    second = await provider.token()
    assert second != first
    JwtValidator(oidc).claims(second)


# -- what MSAL refuses or cannot reach ---------------------------------------------------------


async def test_http_authority_is_refused(oidc: OidcPeer) -> None:
    provider = secret_provider(oidc)
    provider.authority = oidc.issuer.replace("https://", "http://")
    with pytest.raises(AuthError, match="https"):
        await provider.token()


async def test_untrusted_certificate_is_an_auth_error(oidc: OidcPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(AuthError, match=r"could not reach the sign-in authority .*SSLError"):
        await secret_provider(oidc).token()


# -- device code -----------------------------------------------------------------------------


async def test_device_code_prompt_then_sign_in_without_blocking_the_loop(oidc: OidcPeer) -> None:
    person = Person(oidc, login="alice")
    provider = device_provider(oidc, person)
    with Heartbeat() as beat:
        token = await provider.token()
    await person.done()
    (prompt,) = person.prompts
    assert prompt["verification_uri"] == f"{oidc.issuer}/device"
    assert prompt["user_code"] in prompt["message"] and prompt["verification_uri"] in prompt["message"]
    assert prompt["expires_in"] == 600
    claims = JwtValidator(oidc).claims(token)
    assert claims["sub"] == "alice"
    assert claims["scope"] == "https://org.example/user_impersonation"
    assert beat.longest < 0.75, f"the event loop stalled {beat.longest:.2f} s while MSAL polled"


async def test_device_code_sign_in_can_be_cancelled(oidc: OidcPeer) -> None:
    provider: MsalTokenProvider

    def nobody_signs_in(prompt: dict[str, Any]) -> None:
        asyncio.get_running_loop().call_later(0.3, provider.cancel_sign_in)

    provider = device_provider(oidc, nobody_signs_in)
    started = time.monotonic()
    with pytest.raises(AuthError) as caught:
        await provider.token()
    assert caught.value.code == "cancelled"
    assert str(caught.value) == "Sign-in failed (cancelled): the device-code sign-in was cancelled."
    assert time.monotonic() - started < 5


async def test_silent_refresh_uses_the_refresh_token_not_the_person(oidc: OidcPeer) -> None:
    assert DEVICE_ACCESS_TOKEN_TTL < 300, "shorter than MSAL's 5-minute margin, so every call refreshes"
    person = Person(oidc)
    provider = device_provider(oidc, person)
    first = await provider.token()
    await person.done()
    refreshes = oidc.grants().get("refresh_token", 0)
    second = await provider.token()
    assert len(person.prompts) == 1, "no second sign-in"
    assert second != first
    assert oidc.grants()["refresh_token"] == refreshes + 1
    assert JwtValidator(oidc).claims(second)["sub"] == "alice"


async def test_token_cache_file_is_0600_and_shared_by_the_next_start(oidc: OidcPeer, tmp_path: Path) -> None:
    cache = tmp_path / "state" / "msal_cache.json"
    person = Person(oidc, login="bob")
    old_umask = os.umask(0o000)  # even a permissive umask must not widen the cache file
    try:
        await device_provider(oidc, person, cache_path=cache).token()
        await person.done()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    text = cache.read_text()
    assert '"RefreshToken"' in text

    # The next start of crmctl (a new provider, same file) needs nobody at the keyboard.
    nobody = Person(oidc)
    token = await device_provider(oidc, nobody, cache_path=cache).token()
    assert nobody.prompts == []
    assert JwtValidator(oidc).claims(token)["sub"] == "bob"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600

    # App-only tokens are reused from the file too: no new grant at the provider.
    app_cache = tmp_path / "app_cache.json"
    first = await secret_provider(oidc, cache_path=app_cache).token()
    grants = oidc.grants()["client_credentials"]
    assert await secret_provider(oidc, cache_path=app_cache).token() == first
    assert oidc.grants()["client_credentials"] == grants
    assert stat.S_IMODE(app_cache.stat().st_mode) == 0o600
