"""The identity side of the Graph sandbox: app registrations, the Microsoft identity platform
endpoints MSAL calls for an authority ``https://127.0.0.1:PORT/<tenant>``, and access tokens.

Endpoints (all under the sandbox's own https origin):

- ``GET /common/discovery/instance?authorization_endpoint=…`` (instance discovery, for an MSAL
  given ``instance_discovery=<that url>``);
- ``GET /<tenant>/v2.0/.well-known/openid-configuration`` (tenant discovery; MSAL always asks);
- ``POST /<tenant>/oauth2/v2.0/token`` with ``grant_type=client_credentials`` and either
  ``client_secret`` or a ``client_assertion`` JWT (RS256 with ``x5t``, or PS256 with ``x5t#S256``)
  that must be signed by the app's registered certificate, addressed to this token endpoint,
  issued by and about the app, and not expired.

Errors follow Entra's shape: ``{"error", "error_description": "AADSTS…", "error_codes"}``.
Tokens are opaque to clients, expire after `lifetime` seconds, and can be revoked by tests.
The token text is never logged nor kept anywhere but in the table that validates it.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..httpbase import Request, Response, json_response
from .tls import thumbprint_sha1, thumbprint_sha256

__all__ = ["App", "Identity", "Token", "GRAPH_RESOURCE"]

GRAPH_RESOURCE = "https://graph.microsoft.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class App:
    """An app registration: its client id, a secret and/or a certificate, and the mailboxes
    RBAC for Applications lets it reach (None: every mailbox, as a tenant-wide consent does)."""

    client_id: str
    secret: str | None = field(default=None, repr=False)
    certificate: x509.Certificate | None = None
    scope: set[str] | None = None

    def in_scope(self, mailbox: str) -> bool:
        return self.scope is None or mailbox.lower() in self.scope


@dataclass(frozen=True)
class Token:
    """An issued access token (without its text)."""

    client_id: str
    tenant: str
    expires_at: float


@dataclass
class Identity:
    """The tenant's directory and token service. `base_url` is set when the server starts."""

    tenant_id: str
    lifetime: float = 3599.0
    base_url: str = ""
    apps: dict[str, App] = field(default_factory=dict)
    _tokens: dict[str, Token] = field(default_factory=dict, repr=False)   # token text -> token
    _lock: threading.Lock = field(default_factory=threading.Lock)
    issued: int = 0

    # --- registrations and tokens ---------------------------------------------------------

    def register(self, app: App) -> App:
        self.apps[app.client_id] = app
        return app

    def revoke_all(self) -> None:
        """Every token issued so far is expired from now on (what an expiry looks like to a client
        whose cache still thinks the token good)."""
        now = time.time()
        with self._lock:
            for text, token in list(self._tokens.items()):
                self._tokens[text] = Token(token.client_id, token.tenant, min(token.expires_at, now - 1))

    def validate(self, request: Request) -> tuple[App | None, Response | None]:
        """The app behind the request's bearer token, or the 401 to answer."""
        header = request.header("Authorization") or ""
        scheme, _, text = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not text.strip():
            return None, _graph_401("Access token is empty.")
        with self._lock:
            token = self._tokens.get(text.strip())
        if token is None:
            return None, _graph_401("IDX14100: JWT is not well formed, there are no dots (.).")
        if token.expires_at <= time.time():
            return None, _graph_401("Lifetime validation failed, the token is expired.")
        app = self.apps.get(token.client_id)
        if app is None:
            return None, _graph_401("The application of this token no longer exists.")
        return app, None

    # --- endpoints -------------------------------------------------------------------------

    def handle(self, request: Request, parts: list[str]) -> Response | None:
        """Answer an identity request, or None when the path is not one."""
        if parts[:3] == ["common", "discovery", "instance"] and request.method == "GET":
            return self._instance_discovery(request)
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._openid_configuration(parts[0])
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and request.method == "POST":
            return self._token(request, parts[0])
        return None

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id.lower(), "organizations")

    def _instance_discovery(self, request: Request) -> Response:
        endpoint = (request.query.get("authorization_endpoint") or [""])[0]
        path = [p for p in urlsplit(endpoint).path.split("/") if p]
        tenant = path[0] if path else self.tenant_id
        return json_response(200, {
            "tenant_discovery_endpoint": f"{self.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [],
        })

    def _openid_configuration(self, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{self.base_url}/{self.tenant_id}"
        return json_response(200, {
            "issuer": f"{self.base_url}/{self.tenant_id}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
        })

    def _token(self, request: Request, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003,
                              "The app requested an unsupported grant type; the sandbox serves client_credentials.")
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            return _aad_error(400, "unauthorized_client", 700016,
                              f"Application with identifier '{client_id}' was not found in the directory.")
        scope = form.get("scope", "")
        if scope.split() not in ([f"{GRAPH_RESOURCE}/.default"], [f"{self.base_url}/.default"]):
            return _aad_error(400, "invalid_scope", 1002012,
                              f"The provided value for scope {scope} is not valid. Client credential flows must "
                              "have a scope value with /.default suffixed to the resource identifier.")
        if "client_assertion" in form:
            problem = self._check_assertion(app, form)
        elif "client_secret" in form:
            problem = None if app.secret is not None and secrets.compare_digest(
                form["client_secret"], app.secret) else "AADSTS7000215: Invalid client secret provided."
        else:
            problem = "AADSTS7000218: The request body must contain client_assertion or client_secret."
        if problem is not None:
            code = int(problem.split(":")[0].removeprefix("AADSTS"))
            return _aad_error(401, "invalid_client", code, problem.split(": ", 1)[1])
        text = _token_text(app.client_id, self.tenant_id, self.lifetime)
        with self._lock:
            self._tokens[text] = Token(app.client_id, self.tenant_id, time.time() + self.lifetime)
            self.issued += 1
        seconds = int(self.lifetime)
        return json_response(200, {"token_type": "Bearer", "expires_in": seconds, "ext_expires_in": seconds,
                                   "access_token": text})

    def _check_assertion(self, app: App, form: dict[str, str]) -> str | None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return "AADSTS50027: The client_assertion_type is not jwt-bearer."
        if app.certificate is None:
            return "AADSTS700027: The app has no certificate registered."
        try:
            header, claims, signed, signature = _split_jwt(form["client_assertion"])
        except ValueError:
            return "AADSTS50027: JWT token is invalid or malformed."
        cert = app.certificate
        sha1 = _b64url_encode(bytes.fromhex(thumbprint_sha1(cert)))
        sha256 = _b64url_encode(bytes.fromhex(thumbprint_sha256(cert)))
        sent256, sent1 = header.get("x5t#S256"), header.get("x5t")
        sent256 = sent256.rstrip("=") if isinstance(sent256, str) else sent256
        sent1 = sent1.rstrip("=") if isinstance(sent1, str) else sent1
        if sent256 not in (None, sha256) or sent1 not in (None, sha1) or not (sent256 or sent1):
            return "AADSTS700027: The certificate with identifier used to sign the client assertion is not " \
                   "registered on application."
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return "AADSTS700027: Only RSA certificates are supported."
        alg = header.get("alg")
        try:
            if alg == "RS256":
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            elif alg == "PS256":
                key.verify(signature, signed, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                          salt_length=padding.PSS.AUTO), hashes.SHA256())
            else:
                return f"AADSTS5002730: The signing algorithm {alg!r} is not supported."
        except InvalidSignature:
            return "AADSTS700027: Client assertion contains an invalid signature."
        now = time.time()
        token_endpoint = f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"
        if claims.get("aud") != token_endpoint:
            return f"AADSTS700016: The audience of the client assertion must be {token_endpoint}."
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return "AADSTS700021: The client assertion's issuer and subject must be the client id."
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now:
            return "AADSTS700024: Client assertion is not within its valid time range."
        if isinstance(claims.get("nbf"), int | float) and claims["nbf"] > now + 300:
            return "AADSTS700024: Client assertion is not within its valid time range."
        return None


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _split_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    try:
        head, body, sig = token.split(".")
        header = json.loads(_b64url_decode(head))
        claims = json.loads(_b64url_decode(body))
        signature = _b64url_decode(sig)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("malformed JWT") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("malformed JWT")
    return header, claims, f"{head}.{body}".encode(), signature


def _token_text(client_id: str, tenant: str, lifetime: float) -> str:
    """A JWT-shaped opaque token; its signature part is random, so it proves nothing by itself."""
    now = int(time.time())
    header = _b64url_encode(json.dumps({"typ": "JWT", "alg": "none"}).encode())
    claims = _b64url_encode(json.dumps({
        "aud": GRAPH_RESOURCE, "appid": client_id, "tid": tenant, "roles": ["Calendars.ReadWrite"],
        "iat": now, "exp": now + int(lifetime), "uti": uuid.uuid4().hex,
    }).encode())
    return f"{header}.{claims}.{secrets.token_urlsafe(32)}"


def _aad_error(status: int, error: str, code: int, description: str) -> Response:
    return json_response(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    })


def _graph_401(message: str) -> Response:
    response = json_response(401, {"error": {"code": "InvalidAuthenticationToken", "message": message}})
    response.headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
    return response
