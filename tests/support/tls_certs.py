"""Test certificates: a private CA and server certificates for loopback, made with trustme."""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TlsMaterial:
    ca: trustme.CA
    server_cert: trustme.LeafCert

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (hostname checking stays on)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ca.configure_trust(context)
        return context

    def write_ca_bundle(self, path: Path) -> Path:
        """Write the CA in PEM, e.g. for SSL_CERT_FILE in a subprocess."""
        self.ca.cert_pem.write_to_path(str(path))
        return path


@functools.cache
def loopback_tls() -> TlsMaterial:
    """A CA and a certificate valid for 127.0.0.1, localhost and ::1 (cached per process)."""
    ca = trustme.CA()
    return TlsMaterial(ca, ca.issue_cert(*LOOPBACK_NAMES))


@functools.cache
def wrong_host_tls() -> TlsMaterial:
    """Signed by the trusted loopback CA, but for a different host name."""
    ca = loopback_tls().ca
    return TlsMaterial(ca, ca.issue_cert("wrong-host.example"))


@functools.cache
def untrusted_tls() -> TlsMaterial:
    """A correct loopback certificate from a CA that clients do not trust."""
    ca = trustme.CA()
    return TlsMaterial(ca, ca.issue_cert(*LOOPBACK_NAMES))
