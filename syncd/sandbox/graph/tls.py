"""A throwaway certificate authority for the Graph sandbox, and client certificates for apps.

`SandboxCA()` makes a fresh CA (EC P-256, valid for a day) and a server certificate it signs
for 127.0.0.1, ::1 and localhost. `server_context()` is the TLS context the loopback server
serves with; `ca_pem` is what a client trusts (written to a file by `write_ca`, because MSAL
and httpx take a CA bundle path). Nothing here is persisted: every sandbox has its own CA.

`client_certificate()` makes a self-signed RSA certificate and key for an app registration,
as `az ad app credential reset --create-cert` would, with its SHA-1 thumbprint.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientCertificate", "SandboxCA", "client_certificate", "thumbprint_sha1", "thumbprint_sha256"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "syncd sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class SandboxCA:
    """A fresh CA and a loopback server certificate signed by it."""

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")) -> None:
        now = datetime.now(UTC)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name(f"syncd Graph sandbox CA {os.getpid()}-{id(self):x}")
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name).issuer_name(ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self._server_key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        self.server_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0])).issuer_name(ca_name)
            .public_key(self._server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                           critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM) a client must trust."""
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def write_ca(self, path: str) -> str:
        """Write the CA certificate to `path`; gives `path`."""
        with open(path, "wb") as fh:
            fh.write(self.ca_pem)
        return path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context presenting the loopback certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # ssl loads keys from files only: write them to a private temp dir and remove it at once.
        with tempfile.TemporaryDirectory(prefix="syncd-graph-tls-") as tmp:
            cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            with open(cert_path, "wb") as fh:
                fh.write(self.server_cert.public_bytes(serialization.Encoding.PEM))
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_pem_key(self._server_key))
            context.load_cert_chain(cert_path, key_path)
        return context


def thumbprint_sha1(cert: x509.Certificate) -> str:
    """The certificate's SHA-1 thumbprint in upper-case hex, as Entra shows it."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def thumbprint_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


@dataclass(frozen=True)
class ClientCertificate:
    """An app's certificate credential: PEM certificate and private key, and its thumbprint."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    thumbprint: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def client_certificate(common_name: str = "syncd", key_size: int = 2048) -> ClientCertificate:
    """A new self-signed RSA certificate and key for an app registration."""
    now = datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return ClientCertificate(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), thumbprint_sha1(cert))
