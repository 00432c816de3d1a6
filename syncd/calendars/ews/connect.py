"""How syncd connects to EWS: credentials, retry policy, TLS and timeout, one Protocol per calendar.

exchangelib keeps settings that syncd wants per connection in global places (the Protocol
cache keyed by endpoint and credentials, `BaseProtocol.TIMEOUT`, `HTTP_ADAPTER_CLS`); this
module keeps them per `EwsCalendar` instead:

- the credentials compare by identity, so each EwsCalendar gets its own cached Protocol
  (and its own retry policy and settings) even against the same endpoint and account;
- `SyncdProtocol` carries the timeout and the TLS choice on the instance;
- `SyncdProtocol`'s sessions hand exchangelib each answer's body in one piece: exchangelib
  parses an answer through `iter_content()` at its default of one byte per chunk, although
  requests has already read the whole body (about a million Python steps per megabyte,
  half the CPU of reading a room of 300 events);
- `BoundedBackOff` honours ErrorServerBusy's BackOffMilliseconds, but bounds the *total*
  wait of one syncd operation, sleeps through an injectable function, and treats HTTP 401
  as bad credentials at once (exchangelib's FaultTolerance retries a 401 as throttling,
  which turns a wrong password into minutes of waiting). A 503 or a closed connection in
  answer to a write (CreateItem, UpdateItem, DeleteItem) is not sent again blind, as
  exchangelib would: a gateway's 503 may come after Exchange made the item. It surfaces as
  a lost answer, and EwsCalendar's next attempt first looks for what the write did.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import requests
import requests.adapters
import urllib3
from exchangelib import (
    BASIC,
    NTLM,
    Build,
    Configuration,
    Credentials,
    FaultTolerance,
    OAuth2Credentials,
    Version,
)
from exchangelib.errors import (
    ErrorInternalServerTransientError,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    MalformedResponseError,
    RateLimitError,
    UnauthorizedError,
)
from exchangelib.protocol import NoVerifyHTTPAdapter, Protocol

from syncd.calendars.base import ThrottleStats
from syncd.config.schema import EwsConfig
from syncd.logs import get_logger

log = get_logger("syncd.ews")


class HttpStatusError(MalformedResponseError):
    """A non-SOAP HTTP answer exchangelib has no meaning for (403, 404, 502, ...)."""

    def __init__(self, status: int):
        self.status = status
        super().__init__(f"HTTP {status}")


class _Unshared:
    """Credentials equal only to themselves: exchangelib caches one Protocol per
    (endpoint, credentials), and syncd wants one per EwsCalendar."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class PasswordCredentials(_Unshared, Credentials):
    pass


class ClientCredentials(_Unshared, OAuth2Credentials):
    """OAuth2 client credentials whose token URL can point elsewhere than Microsoft's."""

    def __init__(self, *args: Any, token_url: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._token_url_override = token_url

    @property
    def token_url(self) -> str:
        return self._token_url_override or super().token_url


class BoundedBackOff(FaultTolerance):
    """FaultTolerance with a total back-off budget per operation and 401 meaning bad credentials."""

    def __init__(self, max_wait: float, sleep: Callable[[float], None], stats: ThrottleStats | None = None):
        super().__init__(max_wait=max_wait)
        self._sleep = sleep
        self.stats = stats if stats is not None else ThrottleStats()
        self._local = threading.local()

    def start_operation(self) -> None:
        """Give the calling thread a fresh back-off budget."""
        self._local.waited = 0.0

    @property
    def waited(self) -> float:
        return getattr(self._local, "waited", 0.0)

    def back_off(self, seconds: float | None) -> None:
        if seconds is None:
            seconds = self.DEFAULT_BACKOFF
        if self.waited + seconds > self.max_wait:
            raise RateLimitError("Max timeout reached", wait=seconds)
        self._local.waited = self.waited + seconds
        log.warning("ews_back_off", seconds=round(seconds, 3), waited=round(self.waited, 3))
        self.stats.add(seconds)
        # The sleep happens here rather than through exchangelib's back_off_until so tests
        # can inject the clock; the request is sent again right after.
        self._sleep(seconds)

    def raise_response_errors(self, response: requests.Response) -> None:
        if response.status_code == 401:
            raise UnauthorizedError(f"HTTP 401 from {response.url}")
        try:
            super().raise_response_errors(response)
        except (ErrorInternalServerTransientError, ErrorServerBusy):
            if _is_write(response):
                # Not "busy, send again": the write may have taken effect behind the gateway.
                raise ErrorTimeoutExpired(f"HTTP {response.status_code} in answer to a write; "
                                          "it may have taken effect") from None
            raise
        except MalformedResponseError as e:
            if type(e) is MalformedResponseError and response.status_code != 200:
                raise HttpStatusError(response.status_code) from None
            raise


_WRITE_OPERATIONS = (b"<m:CreateItem", b"<m:UpdateItem", b"<m:DeleteItem")


def _is_write(response: requests.Response) -> bool:
    """Whether the request answered was a write (exchangelib writes the `m:` prefix)."""
    body = response.request.body if response.request is not None else None
    if isinstance(body, str):
        body = body.encode()
    return isinstance(body, bytes) and any(op in body[:4096] for op in _WRITE_OPERATIONS)


class WholeBody(requests.Response):
    """A response whose body, once read, is iterated in one piece unless a chunk size is asked for."""

    def iter_content(self, chunk_size: int | None = 1, decode_unicode: bool = False) -> Any:
        # exchangelib's to_xml(response.iter_content()) takes the default: one byte per chunk.
        # A body not read yet (a streamed answer) keeps requests' behaviour.
        if chunk_size == 1 and getattr(self, "_content_consumed", False) and isinstance(self._content, bytes):
            chunk_size = None
        return super().iter_content(chunk_size, decode_unicode)


class _WholeBodies:
    """Mixed into an HTTPAdapter: its responses are WholeBody."""

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response: requests.Response = super().build_response(req, resp)  # type: ignore[misc]
        response.__class__ = WholeBody
        return response


class SyncdAdapter(_WholeBodies, requests.adapters.HTTPAdapter):
    """exchangelib's adapter, answering in WholeBody."""


class SyncdNoVerifyAdapter(_WholeBodies, NoVerifyHTTPAdapter):
    """exchangelib's adapter that does not verify TLS, answering in WholeBody."""


class SyncdProtocol(Protocol):
    """An exchangelib Protocol with its own timeout and TLS verification, whose answers
    are parsed from the whole body (WholeBody)."""

    HTTP_ADAPTER_CLS = SyncdAdapter
    verify_tls: bool | str = True

    def raw_session(self, prefix: str, oauth2_client: Any = None, oauth2_session_params: Any = None,
                    oauth2_token_endpoint: Any = None) -> requests.Session:
        session = super().raw_session(prefix, oauth2_client, oauth2_session_params, oauth2_token_endpoint)
        if self.verify_tls is False:
            session.mount(prefix, SyncdNoVerifyAdapter(max_retries=0, pool_connections=1, pool_maxsize=1,
                                                          pool_block=True))
            session.verify = False
        elif isinstance(self.verify_tls, str):
            session.verify = self.verify_tls
        return session


def _version(cfg: EwsConfig) -> Version | None:
    if not cfg.server_version:
        return None
    return Version(build=Build(*(int(p) for p in cfg.server_version.split("."))))


def credentials_for(cfg: EwsConfig) -> PasswordCredentials | ClientCredentials:
    """The exchangelib credentials described by `cfg` (validated by EwsConfig)."""
    if cfg.auth == "oauth2":
        assert cfg.client_id and cfg.client_secret  # checked by EwsConfig
        return ClientCredentials(client_id=cfg.client_id, client_secret=cfg.client_secret.get_secret_value(),
                                 tenant_id=cfg.tenant_id, token_url=cfg.token_url)
    assert cfg.username and cfg.password  # checked by EwsConfig
    return PasswordCredentials(cfg.username, cfg.password.get_secret_value())


def connect(cfg: EwsConfig, sleep: Callable[[float], None], retry_wait: float,
            stats: ThrottleStats | None = None) -> tuple[Configuration, SyncdProtocol, BoundedBackOff]:
    """A Configuration and its own Protocol (no network yet) for `cfg`; throttling waits
    are counted in `stats`."""
    policy = BoundedBackOff(cfg.throttle_max_wait_seconds, sleep, stats)
    auth_type = {"basic": BASIC, "ntlm": NTLM}.get(cfg.auth)  # oauth2: implied by the credentials
    config = Configuration(service_endpoint=cfg.endpoint, credentials=credentials_for(cfg), auth_type=auth_type,
                           version=_version(cfg), retry_policy=policy, max_connections=1)
    # The metaclass caches this instance under (endpoint, credentials); Account(config=...)
    # then finds it there, so every room's Account shares this one connection pool.
    protocol = SyncdProtocol(config=config)
    protocol.TIMEOUT = cfg.timeout_seconds
    protocol.RETRY_WAIT = retry_wait
    protocol.verify_tls = cfg.verify_tls
    if cfg.verify_tls is False:
        log.warning("ews_tls_verification_disabled", endpoint=cfg.endpoint)
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    return config, protocol, policy


def forget(config: Configuration) -> None:
    """Close the Protocol of `config` and drop it from exchangelib's cache."""
    try:
        protocol, _ = Protocol[config]
    except KeyError:
        return
    if not isinstance(protocol, Exception):
        protocol.close()
    try:
        del Protocol[config]
    except KeyError:
        pass
