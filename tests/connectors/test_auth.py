"""Authority/scope derivation, the 0600 token cache, and MsalTokenProvider around fake MSAL apps.

The fakes stand in for MSAL's application classes only (the token cache is MSAL's real
SerializableTokenCache); talking to a real OIDC provider is a later, separate test suite.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import msal
import pytest

from crmctl.connectors.auth import (
    MsalTokenProvider,
    StaticTokenProvider,
    TokenProvider,
    derive_authority_and_scope,
    write_private_file,
)
from crmctl.connectors.errors import AuthError

ORG = "https://contoso.crm.dynamics.com"
SECRET = "s3cr3t-Value~that.must.never.show"
AUTHORITY = "https://login.microsoftonline.com/tenant-1"
TOKEN_ENDPOINT = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"


# -- derive_authority_and_scope -------------------------------------------------------------


@pytest.mark.parametrize(
    ("org_url", "method", "scope"),
    [
        (ORG, "client_secret", f"{ORG}/.default"),
        (ORG + "/", "certificate", f"{ORG}/.default"),
        (ORG + "/api/data/v9.2/", "client_secret", f"{ORG}/.default"),
        (ORG, "device_code", f"{ORG}/user_impersonation"),
    ],
)
def test_derived_authority_and_scope(org_url: str, method: str, scope: str) -> None:
    assert derive_authority_and_scope(org_url, method, "tenant-1") == (AUTHORITY, scope)


def test_overrides_win_for_sovereign_clouds() -> None:
    authority, scope = derive_authority_and_scope(
        "https://contoso.crm9.dynamics.com",
        "client_secret",
        "tenant-1",
        authority="https://login.microsoftonline.us/tenant-1/",
        scope="https://contoso.crm9.dynamics.com/.default",
    )
    assert authority == "https://login.microsoftonline.us/tenant-1"
    assert scope == "https://contoso.crm9.dynamics.com/.default"


def test_derivation_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown auth method"):
        derive_authority_and_scope(ORG, "password", "t")
    with pytest.raises(ValueError, match="tenant_id"):
        derive_authority_and_scope(ORG, "client_secret", "")
    with pytest.raises(ValueError, match="absolute"):
        derive_authority_and_scope("contoso", "client_secret", "t")


# -- the private cache file ------------------------------------------------------------------


def test_private_file_is_0600_even_over_a_0644_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "msal_cache.json"
    path.parent.mkdir()
    path.write_text("old")
    os.chmod(path, 0o644)
    old_umask = os.umask(0)
    try:
        write_private_file(path, "{}")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["msal_cache.json"]  # no temp file left


def test_private_file_creates_its_folder_0700(tmp_path: Path) -> None:
    path = tmp_path / "new" / "cache.json"
    write_private_file(path, "x")
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- fake MSAL applications ----------------------------------------------------------------


class FakeConfidentialApp:
    """Mimics ConfidentialClientApplication.acquire_token_for_client: cache first, else "the IdP"."""

    instances: list[FakeConfidentialApp] = []
    error: dict[str, Any] | None = None

    def __init__(self, client_id: str, client_credential: Any = None, token_cache: Any = None, **kwargs: Any) -> None:
        self.client_id, self.credential, self.cache, self.kwargs = client_id, client_credential, token_cache, kwargs
        self.calls = 0
        self.issued = 0
        self.threads: set[str] = set()
        FakeConfidentialApp.instances.append(self)

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if FakeConfidentialApp.error:
            return dict(FakeConfidentialApp.error)
        for at in self.cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=scopes):
            return {"access_token": at["secret"], "token_type": "Bearer", "token_source": "cache"}
        self.issued += 1
        token = f"tok-{self.issued}"
        self.cache.add(
            {
                "client_id": self.client_id,
                "scope": scopes,
                "token_endpoint": TOKEN_ENDPOINT,
                "response": {"access_token": token, "expires_in": 3600, "token_type": "Bearer"},
            }
        )
        return {"access_token": token, "token_type": "Bearer", "token_source": "identity_provider"}


class FakePublicApp:
    """Mimics the device-code dance of PublicClientApplication."""

    instances: list[FakePublicApp] = []

    def __init__(self, client_id: str, token_cache: Any = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.flows = 0
        self.approve = threading.Event()
        self.signed_in = False
        FakePublicApp.instances.append(self)

    def get_accounts(self) -> list[dict[str, Any]]:
        return [{"username": "ops@contoso.com"}] if self.signed_in else []

    def acquire_token_silent_with_error(self, scopes: list[str], account: Any) -> dict[str, Any]:
        return {"access_token": "device-token", "token_source": "cache"}

    def initiate_device_flow(self, scopes: list[str]) -> dict[str, Any]:
        self.flows += 1
        return {
            "user_code": "ABCD-1234",
            "device_code": "secret-device-code",
            "verification_uri": "https://microsoft.com/devicelogin",
            "message": "To sign in, use a web browser to open https://microsoft.com/devicelogin and enter the code ABCD-1234.",
            "expires_in": 900,
            "interval": 1,
            "expires_at": time.time() + 900,
        }

    def acquire_token_by_device_flow(self, flow: dict[str, Any]) -> dict[str, Any]:
        while flow["expires_at"] >= time.time():  # MSAL's exit condition
            if self.approve.wait(0.02):
                self.signed_in = True
                return {"access_token": "device-token", "token_source": "identity_provider"}
        return {"error": "authorization_pending", "error_description": "AADSTS70016: pending"}


@pytest.fixture
def fake_msal(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeConfidentialApp.instances = []
    FakeConfidentialApp.error = None
    FakePublicApp.instances = []
    monkeypatch.setattr(msal, "ConfidentialClientApplication", FakeConfidentialApp)
    monkeypatch.setattr(msal, "PublicClientApplication", FakePublicApp)


def secret_provider(tmp_path: Path | None = None, **kwargs: Any) -> MsalTokenProvider:
    return MsalTokenProvider(
        "client_secret",
        "tenant-1",
        "client-1",
        authority=AUTHORITY,
        scope=f"{ORG}/.default",
        secret_value=SECRET,
        cache_path=(tmp_path / "msal_cache.json") if tmp_path else None,
        **kwargs,
    )


def test_providers_satisfy_the_protocol() -> None:
    assert isinstance(StaticTokenProvider("x"), TokenProvider)
    assert isinstance(secret_provider(), TokenProvider)
    assert SECRET not in repr(secret_provider())


async def test_msal_is_asked_before_every_request_in_a_thread(fake_msal: None, tmp_path: Path) -> None:
    provider = secret_provider(tmp_path)
    assert [await provider.token() for _ in range(3)] == ["tok-1"] * 3
    (app,) = FakeConfidentialApp.instances
    assert app.calls == 3 and app.issued == 1  # asked every time, answered from the cache
    assert threading.main_thread().name not in app.threads
    assert app.credential == SECRET
    assert app.kwargs["authority"] == AUTHORITY and app.kwargs["validate_authority"] is True
    assert "oidc_authority" not in app.kwargs


async def test_cache_is_persisted_0600_only_when_changed(fake_msal: None, tmp_path: Path) -> None:
    provider = secret_provider(tmp_path)
    cache_file = tmp_path / "msal_cache.json"
    await provider.token()
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert "tok-1" in cache_file.read_text()
    before = cache_file.stat().st_mtime_ns
    os.utime(cache_file, ns=(before - 10**9, before - 10**9))
    await provider.token()  # a cache hit changes nothing: no write
    assert cache_file.stat().st_mtime_ns == before - 10**9
    # a new process starts from the persisted cache and needs no new token
    again = secret_provider(tmp_path)
    assert await again.token() == "tok-1"
    assert FakeConfidentialApp.instances[-1].issued == 0


async def test_invalidate_drops_the_refused_token(fake_msal: None) -> None:
    provider = secret_provider()
    assert await provider.token() == "tok-1"
    provider.invalidate()
    assert await provider.token() == "tok-2"
    assert await provider.token() == "tok-2"


async def test_concurrent_callers_share_one_refresh(fake_msal: None) -> None:
    provider = secret_provider()
    tokens = await asyncio.gather(*(provider.token() for _ in range(8)))
    assert set(tokens) == {"tok-1"}
    assert FakeConfidentialApp.instances[0].issued == 1


async def test_msal_error_becomes_auth_error_without_the_secret(fake_msal: None) -> None:
    FakeConfidentialApp.error = {
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2",
    }
    with pytest.raises(AuthError) as info:
        await secret_provider().token()
    text = str(info.value)
    assert text == "Sign-in failed (invalid_client): AADSTS7000215: Invalid client secret provided."
    assert SECRET not in text and "Trace ID" not in text


async def test_unreachable_authority_is_an_auth_error() -> None:
    provider = MsalTokenProvider(
        "client_secret", "t", "c", authority="https://127.0.0.1:9/tenant", scope=f"{ORG}/.default",
        secret_value=SECRET, app_options={"timeout": 2},
    )
    with pytest.raises(AuthError, match="could not reach the sign-in authority") as info:
        await provider.token()
    assert SECRET not in str(info.value)


async def test_non_entra_authority_is_plain_oidc(fake_msal: None) -> None:
    provider = MsalTokenProvider(
        "certificate", "t", "client-1", authority="https://idp.test:8443/realms/crm",
        scope=f"{ORG}/.default", certificate={"private_key": "PEM", "thumbprint": "AB12"},
    )
    await provider.token()
    (app,) = FakeConfidentialApp.instances
    assert app.kwargs["oidc_authority"] == "https://idp.test:8443/realms/crm"
    assert app.kwargs["instance_discovery"] is False and "authority" not in app.kwargs
    assert app.credential == {"private_key": "PEM", "thumbprint": "AB12"}


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        MsalTokenProvider("client_secret", "t", "c", authority=AUTHORITY, scope="s")
    with pytest.raises(ValueError, match="private_key"):
        MsalTokenProvider("certificate", "t", "c", authority=AUTHORITY, scope="s", certificate={"thumbprint": "x"})
    MsalTokenProvider("certificate", "t", "c", authority=AUTHORITY, scope="s",
                      certificate={"private_key_pfx_path": "/x.pfx", "passphrase": "p"})


def device_provider(prompts: list[dict[str, Any]]) -> MsalTokenProvider:
    return MsalTokenProvider(
        "device_code", "tenant-1", "client-1", authority=AUTHORITY, scope=f"{ORG}/user_impersonation",
        device_code_callback=prompts.append,
    )


async def test_device_code_prompts_once_for_many_callers(fake_msal: None) -> None:
    prompts: list[dict[str, Any]] = []
    provider = device_provider(prompts)
    waiting = [asyncio.create_task(provider.token()) for _ in range(3)]
    while not prompts:
        await asyncio.sleep(0.01)
    (app,) = FakePublicApp.instances
    app.approve.set()
    assert await asyncio.gather(*waiting) == ["device-token"] * 3
    assert app.flows == 1
    assert prompts == [
        {
            "message": "To sign in, use a web browser to open https://microsoft.com/devicelogin and enter the code ABCD-1234.",
            "user_code": "ABCD-1234",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
        }
    ]
    assert await provider.token() == "device-token"  # later: silently from the signed-in account
    assert app.flows == 1


async def test_device_code_survives_a_timed_out_caller_and_can_be_cancelled(fake_msal: None) -> None:
    prompts: list[dict[str, Any]] = []
    provider = device_provider(prompts)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await provider.token()  # a check gives up; the sign-in keeps going
    while not prompts:
        await asyncio.sleep(0.01)
    assert provider._flow is not None
    waiter = asyncio.create_task(provider.token())
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    provider.cancel_sign_in()
    with pytest.raises(AuthError, match="cancelled"):
        await waiter
    assert time.monotonic() - t0 < 1.0
    assert FakePublicApp.instances[0].flows == 1
