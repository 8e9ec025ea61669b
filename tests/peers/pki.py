"""A throwaway PKI made with the real `openssl` tool: a CA, a TLS server certificate, a client certificate.

Why openssl and not `cryptography`: this is how an operator makes (or receives) these files, so the
tests exercise the same PEM and PKCS#12 shapes MSAL will meet on a jump host, including a PFX with
a passphrase produced by `openssl pkcs12 -export`.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

PFX_PASSPHRASE = "pfx-Passphrase!42"
"""The test PFX's passphrase; never a real secret, but still never expected in any message."""


@dataclass(frozen=True)
class Pki:
    """Paths of the files `make_pki` wrote, and the client certificate's SHA-1 thumbprint."""

    folder: Path
    ca_cert: Path
    server_key: Path
    server_cert: Path
    client_key: Path
    client_cert: Path
    client_pfx: Path
    client_thumbprint: str
    """SHA-1, 40 upper-case hex digits: what Entra shows for an uploaded certificate."""
    other_key: Path
    """A key that belongs to no registered certificate (a wrong credential)."""


def _openssl(openssl: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def make_pki(openssl: str, folder: Path) -> Pki:
    """Creates the CA, a server certificate for 127.0.0.1/localhost, and a client key + cert (PEM, PFX)."""
    folder.mkdir(parents=True, exist_ok=True)
    run = lambda *a: _openssl(openssl, *a, cwd=folder)  # noqa: E731 - a local shorthand
    subj = ("-subj",)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", *subj, "/CN=crmctl test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        *subj, "/CN=127.0.0.1")
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.crt",
        "-days", "2", *subj, "/CN=crmctl-cert-app")
    run("pkcs12", "-export", "-inkey", "client.key", "-in", "client.crt", "-out", "client.pfx",
        "-passout", f"pass:{PFX_PASSPHRASE}")
    run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "other.key")
    fingerprint = run("x509", "-in", "client.crt", "-noout", "-fingerprint", "-sha1")
    thumbprint = fingerprint.strip().partition("=")[2].replace(":", "").upper()
    for key in ("ca.key", "server.key", "client.key", "other.key", "client.pfx"):
        (folder / key).chmod(0o600)
    return Pki(
        folder=folder,
        ca_cert=folder / "ca.crt",
        server_key=folder / "server.key",
        server_cert=folder / "server.crt",
        client_key=folder / "client.key",
        client_cert=folder / "client.crt",
        client_pfx=folder / "client.pfx",
        client_thumbprint=thumbprint,
        other_key=folder / "other.key",
    )
