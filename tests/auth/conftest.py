"""Fixtures for the MSAL tests: a throwaway PKI and the real OIDC provider, started once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import require_tool
from tests.peers.oidc_peer import OidcPeer, require_node_peer, start_oidc_peer
from tests.peers.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(require_tool("openssl"), tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def oidc(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcPeer]:
    peer = start_oidc_peer(require_node_peer(), pki, tmp_path_factory.mktemp("oidc"))
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def trust_ca(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Trusts the test CA the way an operator would on a jump host: REQUESTS_CA_BUNDLE, which MSAL's
    `requests` reads."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_cert))
    return pki.ca_cert
