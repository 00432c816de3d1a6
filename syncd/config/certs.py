"""The certificate credential of an app registration: a PEM certificate and its private key.

    load_certificate(cert_path, key_path) -> Certificate      raises ValueError naming the file

The thumbprint Microsoft's token endpoint wants (`x5t`) is the SHA-1 of the certificate's
DER bytes; it is computed here, so the configuration holds only the two file paths. The
private key is registered with `syncd.logs` as a secret the moment it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from syncd import logs


@dataclass(frozen=True)
class Certificate:
    private_key: str          # PEM, as MSAL takes it
    thumbprint: str           # SHA-1 of the DER certificate, hex
    public_certificate: str   # PEM; sent as x5c so the certificate can be rolled over

    def __repr__(self) -> str:   # never the key, even in a traceback's locals
        return f"Certificate(thumbprint={self.thumbprint!r})"


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot read: {e.strerror or e}") from None


def load_certificate(cert_path: str, key_path: str) -> Certificate:
    """Read and check the pair; the key must belong to the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert_bytes = _read(cert_path, "certificate_file")
    key_bytes = _read(key_path, "private_key_file")
    text = key_bytes.decode("utf-8", errors="replace").strip()
    logs.register_secret(text)
    for line in text.splitlines():
        if len(line) >= 16 and not line.startswith("-----"):
            logs.register_secret(line)       # each base64 line of the key, should one ever be printed alone
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError:
        raise ValueError(f"certificate_file {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as e:
        reason = "encrypted; give an unencrypted key" if "encrypted" in str(e).lower() else "not a PEM private key"
        raise ValueError(f"private_key_file {key_path}: {reason}") from None
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, raw) != cert.public_key().public_bytes(
            serialization.Encoding.DER, raw):
        raise ValueError(f"private_key_file {key_path}: does not belong to certificate_file {cert_path}")
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the x5t Microsoft defines
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return Certificate(private_key=text, thumbprint=thumbprint, public_certificate=pem)
