"""End to end: a token from the real OIDC provider, through MSAL, to the Dataverse client and the emulator.

The emulator checks each bearer token with a `token_validator` that verifies the JWT against the
provider's published keys (signature, issuer, audience, expiry), so a request succeeds only if
the exact token MSAL obtained was sent, and a token for another audience is refused with 401.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import AsyncIterator

import pytest

from crmctl.config import load_config
from crmctl.connectors.auth import MsalTokenProvider
from crmctl.connectors.dataverse import DataverseClient
from crmctl.connectors.errors import AuthError
from crmctl.connectors.limits import TargetLimiter
from crmctl.connectors.querylog import QueryLog
from crmctl.emulator.server import Emulator
from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef
from crmctl.runtime import open_runtime
from tests.peers.oidc_peer import JwtValidator, OidcPeer

pytestmark = pytest.mark.usefixtures("trust_ca")
ACCOUNTS = 7


@pytest.fixture(scope="module")
def dataverse_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emu") / "dataverse.db"
    data = EmulatorData(path)
    try:
        data.define_entity(EntityDef(
            "account", "accounts", "accountid", "name", (Attribute("accountid", "guid"), Attribute("name", "string")),
        ))
        data.insert_rows("account", (
            {"accountid": str(uuid.UUID(int=i + 1)), "name": f"Account {i}"} for i in range(ACCOUNTS)
        ))
    finally:
        data.close()
    return path


@pytest.fixture
async def emulator(dataverse_db: Path, oidc: OidcPeer) -> AsyncIterator[tuple[Emulator, JwtValidator]]:
    validator = JwtValidator(oidc)
    async with Emulator(dataverse_db, token_validator=validator) as emu:
        yield emu, validator


def provider_for(oidc: OidcPeer) -> MsalTokenProvider:
    return MsalTokenProvider(
        "client_secret", "tenant-1", oidc.secret_client, authority=oidc.issuer,
        scope=f"{oidc.resource}/.default", secret_value=oidc.client_secret,
    )


async def test_dataverse_client_carries_the_msal_token(
    emulator: tuple[Emulator, JwtValidator], oidc: OidcPeer
) -> None:
    emu, validator = emulator
    tokens = provider_for(oidc)
    log = QueryLog("dynamics")
    async with DataverseClient(emu.api_url, tokens, TargetLimiter(4, 1000, 300.0), page_size=3) as dv:
        me = await dv.whoami(log=log)
        rows = [row async for page in dv.pages("accounts", select=["name"], orderby="accountid", log=log)
                for row in page]
    assert me["UserId"]
    assert len(rows) == ACCOUNTS
    requests = len(emu.request_log)
    assert requests == log.requests == 4  # WhoAmI + three pages of 3, 3, 1
    assert all(r.status == 200 for r in emu.request_log)
    assert len(validator.accepted) == requests, "every request carried a token the provider signed"
    assert {c["client_id"] for c in validator.accepted} == {oidc.secret_client}
    assert tokens.acquisitions == requests, "MSAL was asked before every request"


async def test_token_for_another_audience_is_refused_then_reported(
    dataverse_db: Path, oidc: OidcPeer
) -> None:
    """The emulator expects another org: 401, one retry with a genuinely new token, then AuthError."""
    strict = JwtValidator(oidc, audience="https://another-org.example")
    tokens = provider_for(oidc)
    grants = oidc.grants().get("client_credentials", 0)
    async with Emulator(dataverse_db, token_validator=strict) as emu:
        async with DataverseClient(emu.api_url, tokens, TargetLimiter(4, 1000, 300.0), retries=0) as dv:
            with pytest.raises(AuthError, match=r"Dynamics refused the token \(401"):
                await dv.whoami()
        assert [r.status for r in emu.request_log] == [401, 401]
    assert strict.refused == 2 and strict.accepted == []
    assert oidc.grants()["client_credentials"] == grants + 2, "the refused token was dropped, a new one fetched"


async def test_runtime_wires_msal_from_the_config(
    emulator: tuple[Emulator, JwtValidator], oidc: OidcPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """crmctl.yaml -> open_runtime -> MSAL (authority and scope overridden) -> Dataverse client."""
    emu, validator = emulator
    monkeypatch.setenv("CRMCTL_TEST_SECRET", oidc.client_secret)
    config_path = tmp_path / "crmctl.yaml"
    config_path.write_text(f"""
project: OIDC end to end
state: .crmctl/state.db
source: {{kind: sql, url: "sqlite:///source.db"}}
target:
  kind: dataverse
  url: {emu.url}
  auth:
    method: client_secret
    client_id: {oidc.secret_client}
    secret: "${{env:CRMCTL_TEST_SECRET}}"
    authority: {oidc.issuer}
    scope: {oidc.resource}/.default
""")
    config = load_config(config_path)
    async with open_runtime(config) as runtime:
        me = await runtime.dynamics.whoami()
    assert me["UserId"] and validator.accepted
    cache = Path(config.state).with_name("msal_cache.json")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert oidc.client_secret not in cache.read_text()
