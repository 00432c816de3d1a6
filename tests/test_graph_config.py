"""`calendar.graph`: what a valid Microsoft Graph configuration is, and the one line each
mistake gives (`syncd check` exits 2 naming the key or the file)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from syncd import logs
from syncd.calendars.graph.auth import credential_for, scope_for
from syncd.commands.cli import main
from syncd.config import load as configload
from syncd.config.certs import load_certificate

TENANT = "8f3c2a51-6f0e-4c55-9a61-0d2b7e1c4a90"
CLIENT = "1d7f0c4e-2b9a-4e8d-8c3f-5a6b7c8d9e0f"
SECRET = "graph-secret-Zr82~kQ"

VALID: dict[str, Any] = {
    "ultimo": {"base_url": "https://customer.ultimo.com/api/V1", "api_key": "ultimo-key-Vx81Zq"},
    "calendar": {"backend": "graph", "graph": {"tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET}},
    "rooms": [{"mailbox": "room.c25@example.com", "space_id": "C-25"}],
    "applicants": {"default": "ULTIMO"},
}


def make_pair(folder: Path, name: str = "syncd") -> tuple[Path, Path, str]:
    """A self-signed certificate and its key as PEM files; gives their paths and the SHA-1 thumbprint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.fingerprint(hashes.SHA1()).hex().upper()


def write(folder: Path, content: dict[str, Any]) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def graph(**changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(VALID)
    for k, v in changes.items():
        if v is None:
            c["calendar"]["graph"].pop(k, None)
        else:
            c["calendar"]["graph"][k] = v
    return c


def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: dict[str, Any]) -> tuple[int, str]:
    status = main(["--config", str(write(tmp_path, content)), "check"])
    out, err = capsys.readouterr()
    return status, out + err


def test_secret_configuration_loads_with_the_defaults(tmp_path: Path) -> None:
    cfg, _ = configload.load_config(str(write(tmp_path, graph())))
    g = cfg.calendar.graph
    assert g is not None and cfg.calendar.backend == "graph"
    assert g.authority == "https://login.microsoftonline.com"
    assert g.graph_url == "https://graph.microsoft.com/v1.0"
    assert g.max_concurrent_requests == 4
    assert scope_for(g.graph_url) == "https://graph.microsoft.com/.default"
    assert credential_for(g) == SECRET


def test_secret_from_a_file_next_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "graph.secret").write_text(SECRET + "\n")
    cfg, _ = configload.load_config(str(write(tmp_path, graph(client_secret=None, client_secret_file="graph.secret"))))
    assert cfg.calendar.graph is not None and cfg.calendar.graph.client_secret is not None
    assert cfg.calendar.graph.client_secret.get_secret_value() == SECRET


def test_certificate_gives_its_thumbprint_and_the_key_is_a_secret(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    cert, key, thumbprint = make_pair(tmp_path / "pki")
    content = graph(client_secret=None, certificate_file="pki/syncd.crt", private_key_file="pki/syncd.key")
    cfg, _ = configload.load_config(str(write(tmp_path, content)))
    g = cfg.calendar.graph
    assert g is not None and g.certificate_file == str(cert) and g.private_key_file == str(key)
    credential = credential_for(g)
    assert isinstance(credential, dict) and credential["thumbprint"] == thumbprint
    key_text = key.read_text().strip()
    assert logs.scrub_text(f"oops {key_text} oops") == "oops *** oops"
    assert key_text not in repr(load_certificate(str(cert), str(key)))


@pytest.mark.parametrize("changes, expected", [
    ({"client_secret": None}, "calendar.graph: needs client_secret (or client_secret_file), or certificate_file"),
    ({"certificate_file": "a.crt", "private_key_file": "a.key"},
     "calendar.graph: give client_secret or certificate_file + private_key_file, not both"),
    ({"client_secret": None, "certificate_file": "pki/syncd.crt"},
     "calendar.graph: a certificate needs private_key_file too"),
    ({"client_secret": None, "certificate_file": "missing.crt", "private_key_file": "pki/syncd.key"},
     "missing.crt: cannot read: No such file or directory"),
    ({"client_secret": None, "certificate_file": "pki/syncd.key", "private_key_file": "pki/syncd.key"},
     "pki/syncd.key: not a PEM certificate"),
    ({"client_secret": None, "certificate_file": "pki/syncd.crt", "private_key_file": "pki/other.key"},
     "pki/other.key: does not belong to certificate_file"),
    ({"client_id": "syncd"}, "calendar.graph.client_id: string should match pattern"),
    ({"tenant_id": "not a tenant"}, "calendar.graph.tenant_id: string should match pattern"),
    ({"authority": "http://login.example.com"}, "calendar.graph.authority: string should match pattern"),
    ({"max_concurrent_requests": 8}, "calendar.graph.max_concurrent_requests: input should be less than or equal to 4"),
    ({"ca_file": "nowhere.pem"}, "nowhere.pem: no such file"),
    ({"client_secret": ""}, "calendar.graph.client_secret: is empty"),
    ({"clientsecret": "x"}, "calendar.graph.clientsecret: unknown key (did you mean client_secret?)"),
], ids=["no credential", "secret and certificate", "certificate without key", "unreadable certificate",
        "not a certificate", "key of another certificate", "bad client_id", "bad tenant", "http authority",
        "too many in flight", "missing ca_file", "empty secret", "typo"])
def test_mistakes_exit_2_with_one_line_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   changes: dict[str, Any], expected: str) -> None:
    (tmp_path / "pki").mkdir()
    make_pair(tmp_path / "pki")
    other_cert, other_key, _ = make_pair(tmp_path / "pki", "other")
    status, text = validate(tmp_path, capsys, graph(**changes))
    assert status == 2, text
    assert expected in text, text
    assert SECRET not in text
    assert "PRIVATE KEY" not in text and "Traceback" not in text

