"""Starts the real OpenID Connect provider (tests/peers/oidc/server.mjs) on 127.0.0.1 over HTTPS.

The provider is `oidc-provider` from the npm registry, installed by `make node-deps`
(`npm ci --prefix tests/peers/oidc`, versions pinned by package-lock.json). Locally a missing Node
or missing install skips the tests with the reason; under CI=true it fails them, because then
`make test` should have installed it.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.peers.pki import Pki

PEER_DIR = Path(__file__).resolve().parent / "oidc"
RESOURCE = "https://org.example"
"""The Dataverse-style org origin the provider issues tokens for (scope `<RESOURCE>/.default`)."""
TENANT = "tenant-1"
SECRET_CLIENT = "5ec2e7c1-0000-4000-8000-000000000001"
"""Client ids are GUIDs, as Entra app registrations are (the config refuses anything else)."""
CLIENT_SECRET = "Sup3r~Secret.Value-never-shown_9f2c"
CERT_CLIENT = "ce27c1e7-0000-4000-8000-000000000002"
DEVICE_CLIENT = "de71ce00-0000-4000-8000-000000000003"
ACCESS_TOKEN_TTL = 3600
DEVICE_ACCESS_TOKEN_TTL = 60
"""Under MSAL's five-minute margin: every silent call of the device client refreshes."""


def require_node_peer() -> str:
    """The node binary, once the pinned packages are installed (skip locally / fail under CI otherwise)."""
    node = require_tool("node")
    if not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        message = "the OIDC peer's npm packages are not installed (run: make node-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return node


@dataclass
class OidcPeer:
    """A running provider: its issuer (the MSAL `oidc_authority`) and the clients registered in it."""

    issuer: str
    port: int
    pki: Pki
    process: subprocess.Popen[bytes]
    log_path: Path
    resource: str = RESOURCE
    secret_client: str = SECRET_CLIENT
    client_secret: str = field(default=CLIENT_SECRET, repr=False)
    cert_client: str = CERT_CLIENT
    device_client: str = DEVICE_CLIENT

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _get(self, url: str) -> Any:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        with urllib.request.urlopen(url, context=context, timeout=10) as response:  # noqa: S310 - https to loopback
            return json.load(response)

    def grants(self) -> dict[str, int]:
        """Token grants the provider issued so far, by grant type (from the server's own events)."""
        return dict(self._get(f"{self.base}/_stats")["grants"])

    def jwks(self) -> dict[str, Any]:
        """The provider's published signing keys (discovery's jwks_uri)."""
        discovery = self._get(f"{self.issuer}/.well-known/openid-configuration")
        return dict(self._get(discovery["jwks_uri"]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdin is not None:
            self.process.stdin.close()


def start_oidc_peer(node: str, pki: Pki, folder: Path, *, timeout: float = 30.0) -> OidcPeer:
    """Starts server.mjs with a fresh config and waits until it listens (its ready file appears)."""
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / "ready.json"
    config = {
        "tls": {"key": str(pki.server_key), "cert": str(pki.server_cert)},
        "tenant": TENANT,
        "resources": [RESOURCE],
        "secretClient": {"id": SECRET_CLIENT, "secret": CLIENT_SECRET},
        "certClient": {"id": CERT_CLIENT, "certificate": pki.client_cert.read_text()},
        "deviceClient": {"id": DEVICE_CLIENT},
        "accessTokenTTL": ACCESS_TOKEN_TTL,
        "deviceAccessTokenTTL": DEVICE_ACCESS_TOKEN_TTL,
        "pollInterval": 1,
        "readyFile": str(ready),
    }
    config_path = folder / "oidc.json"
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)
    log_path = folder / "oidc.log"
    with log_path.open("wb") as log:
        # stdin stays open: the server exits when it closes, so a killed test run leaves no orphan.
        process = subprocess.Popen(
            [node, str(PEER_DIR / "server.mjs"), str(config_path)],
            cwd=PEER_DIR, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
        )
    give_up = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > give_up:
            process.kill()
            process.wait()
            raise RuntimeError(f"the OIDC provider did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return OidcPeer(info["issuer"], int(info["port"]), pki, process, log_path)


class JwtValidator:
    """Verifies access tokens as a resource server would: RS256 signature against the provider's
    published keys, issuer, audience and expiry (PyJWT, which MSAL itself depends on).

    Usable as the emulator's `token_validator`; it remembers the claims of every token it accepted.
    """

    def __init__(self, peer: OidcPeer, audience: str = RESOURCE) -> None:
        import jwt

        self._jwt = jwt
        self.keys = jwt.PyJWKSet.from_dict(peer.jwks())  # fetched once, before any event loop needs it
        self.issuer = peer.issuer
        self.audience = audience
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims; raises jwt.InvalidTokenError when anything does not hold."""
        kid = self._jwt.get_unverified_header(token).get("kid")
        key = self.keys[kid]
        return dict(self._jwt.decode(
            token, key.key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer,
            options={"require": ["exp", "iat", "iss", "aud"]},
        ))

    def __call__(self, token: str) -> bool:
        try:
            claims = self.claims(token)
        except (self._jwt.InvalidTokenError, KeyError):
            self.refused += 1
            return False
        self.accepted.append(claims)
        return True
