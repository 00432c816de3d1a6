"""App-only tokens for Microsoft Graph: one MSAL ConfidentialClientApplication per app
registration per process, tokens from its in-memory cache.

MSAL refreshes a cached token five minutes before it expires; `drop()` forgets the cached
tokens after Graph refused one (401 after earlier successes: revoked, or the clocks
disagree), so the next `token()` asks the identity platform again. Every token obtained is
registered with `syncd.logs` as a secret, and the previous ones are forgotten once replaced.

Errors: CalendarAuthError when the identity platform refuses the app (bad secret, unknown
client, a certificate it does not know), CalendarUnreachable when it cannot be reached.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from syncd import logs
from syncd.config.schema import GraphConfig
from syncd.errors import CalendarAuthError, CalendarUnreachable
from syncd.logs import get_logger

log = get_logger("syncd.graph")

# The errors of the identity platform that mean "these credentials are wrong", not "try later".
_REFUSED = frozenset({"invalid_client", "unauthorized_client", "invalid_request", "invalid_grant",
                      "invalid_scope", "access_denied"})

_APPS: dict[tuple[str, str, str, str], Any] = {}
_APPS_LOCK = threading.Lock()


def scope_for(graph_url: str) -> str:
    """`https://graph.microsoft.com/.default` for `https://graph.microsoft.com/v1.0`."""
    scheme, _, rest = graph_url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/.default"


def credential_for(cfg: GraphConfig) -> str | dict[str, str]:
    """What MSAL takes as `client_credential`: the secret, or the certificate's key and thumbprint."""
    if cfg.client_secret is not None:
        return cfg.client_secret.get_secret_value()
    from syncd.config.certs import load_certificate

    cert = load_certificate(cfg.certificate_file or "", cfg.private_key_file or "")
    return {"private_key": cert.private_key, "thumbprint": cert.thumbprint,
            "public_certificate": cert.public_certificate}


class TokenSource:
    """Bearer tokens for one app registration (`cfg`)."""

    def __init__(self, cfg: GraphConfig) -> None:
        self._cfg = cfg
        self._scope = scope_for(cfg.graph_url)
        self._authority = f"{cfg.authority}/{cfg.tenant_id}"
        self._key = (self._authority, cfg.client_id, cfg.graph_url, _credential_id(cfg))
        self._lock = threading.Lock()
        self._current: str | None = None
        self._previous: str | None = None
        self.acquired = 0          # tokens obtained from the identity platform (not the cache)

    @property
    def who(self) -> str:
        return f"app {self._cfg.client_id} in tenant {self._cfg.tenant_id}"

    def token(self) -> str:
        """A valid access token, from the cache when it has one. Raises CalendarAuthError,
        CalendarUnreachable."""
        app = self._app()
        try:
            result = app.acquire_token_for_client(scopes=[self._scope])
        except ValueError as e:      # MSAL: the authority's discovery document could not be had
            raise CalendarUnreachable(f"Microsoft identity platform at {self._authority}: {_brief(e)}") from None
        except Exception as e:       # requests' connection errors, TLS failures
            raise CalendarUnreachable(f"Microsoft identity platform at {self._authority} unreachable: "
                                      f"{_brief(e)}") from None
        if not isinstance(result, dict) or "access_token" not in result:
            error = (result or {}).get("error", "no token") if isinstance(result, dict) else "no token"
            text = (result or {}).get("error_description", "") if isinstance(result, dict) else ""
            first = logs.scrub_text(str(text).splitlines()[0] if text else "")
            if error in _REFUSED or str(error).startswith("invalid"):
                raise CalendarAuthError(f"Microsoft identity platform at {self._authority} refused {self.who}: "
                                        f"{error}{': ' + first if first else ''}")
            raise CalendarUnreachable(f"Microsoft identity platform at {self._authority} gave no token for "
                                      f"{self.who}: {error}{': ' + first if first else ''}")
        token = str(result["access_token"])
        with self._lock:
            if token != self._current:
                logs.register_secret(token)
                if self._previous is not None and self._previous != token:
                    logs.forget_secret(self._previous)
                self._previous, self._current = self._current, token
                if result.get("token_source") != "cache":
                    self.acquired += 1
                    log.debug("graph_token_obtained", expires_in=result.get("expires_in"))
        return token

    def drop(self) -> None:
        """Forget the cached tokens: the next `token()` asks the identity platform."""
        app = self._app()
        app.remove_tokens_for_client()
        log.info("graph_token_dropped", client_id=self._cfg.client_id)

    def _app(self) -> Any:
        """The process's MSAL application for this registration (created on first use:
        MSAL reads the authority's discovery document when it is built)."""
        with _APPS_LOCK:
            app = _APPS.get(self._key)
            if app is not None:
                return app
            import msal

            try:
                app = msal.ConfidentialClientApplication(
                    self._cfg.client_id, client_credential=credential_for(self._cfg), authority=self._authority,
                    http_client=_session(self._cfg),
                    # Instance discovery asks Microsoft's public cloud about the authority's host;
                    # the configured authority (a national cloud, the sandbox) is trusted as given.
                    instance_discovery=self._cfg.authority == "https://login.microsoftonline.com",
                )
            except ValueError as e:
                raise CalendarUnreachable(f"Microsoft identity platform at {self._authority}: {_brief(e)}") from None
            except Exception as e:
                raise CalendarUnreachable(f"Microsoft identity platform at {self._authority} unreachable: "
                                          f"{_brief(e)}") from None
            _APPS[self._key] = app
            return app


def _session(cfg: GraphConfig) -> Any:
    """MSAL's HTTP client: requests with the timeout, one retry, and `ca_file` given on every
    request (a session-wide `verify` loses to $REQUESTS_CA_BUNDLE in requests)."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    options: dict[str, Any] = {"timeout": cfg.timeout_seconds}
    if cfg.ca_file:
        options["verify"] = session.verify = cfg.ca_file
    session.request = functools.partial(session.request, **options)  # type: ignore[method-assign]
    return session


def forget_apps() -> None:
    """Drop every MSAL application of this process (tests: a sandbox restarted with a new CA)."""
    with _APPS_LOCK:
        _APPS.clear()


def _credential_id(cfg: GraphConfig) -> str:
    """Which credential an app uses, without holding the secret itself in the key."""
    if cfg.client_secret is not None:
        from syncd.core.model import short_hash

        return "secret:" + short_hash(cfg.client_secret.get_secret_value())
    return f"cert:{cfg.certificate_file}:{cfg.private_key_file}"


def _brief(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    for marker in ("Connection refused", "CERTIFICATE_VERIFY_FAILED", "timed out", "Name or service not known"):
        if marker.lower() in text.lower():
            return marker
    text = logs.scrub_text(text)
    return text if len(text) <= 200 else text[:200] + "…"
