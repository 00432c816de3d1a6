"""Requests to Microsoft Graph: one httpx client, the bearer token, throttling and retries.

Every request of the process to one app registration passes one semaphore of
`max_concurrent_requests` (4: Outlook's limit per app). Within one syncd *operation*
(`start_operation()` per public backend method, per thread):

- 429, 503 and 504 wait for `Retry-After` (else 2, 4, 8 ... seconds, capped) as long as the
  waits add up to at most `throttle_max_wait_seconds`; then GraphThrottled;
- a dropped connection or a timeout is retried `reconnect_attempts` times after short
  pauses; then GraphUnreachable;
- a 401 drops the cached token once and sends the request again; a second 401 is
  CalendarAuthError.

Links in answers (`@odata.nextLink`, `@odata.deltaLink`) are followed only when they point
at the configured Graph service: the token goes nowhere else.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from syncd.calendars.base import ThrottleStats
from syncd.calendars.graph.auth import TokenSource
from syncd.config.schema import GraphConfig
from syncd.errors import CalendarAuthError, CalendarProtocolError
from syncd.logs import get_logger

log = get_logger("syncd.graph")

RECONNECT_FIRST_WAIT = 0.5     # seconds before the first resend after a dropped connection; doubles
BACKOFF_FIRST = 2.0            # a throttled answer without Retry-After: 2, 4, 8 ... seconds
BACKOFF_CAP = 60.0
_THROTTLED = frozenset({429, 503, 504})
PREFER = 'outlook.timezone="UTC", IdType="ImmutableId"'

_GATES: dict[str, threading.BoundedSemaphore] = {}
_GATES_LOCK = threading.Lock()


def _gate(client_id: str, size: int) -> threading.BoundedSemaphore:
    """The process-wide in-flight limit of one app registration."""
    with _GATES_LOCK:
        gate = _GATES.get(client_id)
        if gate is None:
            gate = _GATES[client_id] = threading.BoundedSemaphore(size)
        return gate


class GraphError(Exception):
    """An HTTP answer Graph gave with an error body: status, `error.code`, `error.message`."""

    def __init__(self, status: int, code: str, message: str, method: str = "", path: str = "") -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(f"HTTP {status} {code}: {message}" if code else f"HTTP {status}")
        self.method, self.path = method, path


class GraphThrottled(Exception):
    def __init__(self, waited: float) -> None:
        self.waited = waited
        super().__init__(f"throttled after waiting {waited:.1f}s")


class GraphUnreachable(Exception):
    pass


class GraphHttp:
    """The transport of one GraphCalendar."""

    def __init__(self, cfg: GraphConfig, tokens: TokenSource, *, sleep: Callable[[float], None] = time.sleep,
                 reconnect_attempts: int = 3, backoff_first: float = BACKOFF_FIRST) -> None:
        self._cfg = cfg
        self._tokens = tokens
        self._sleep = sleep
        self._reconnect_attempts = reconnect_attempts
        self._backoff_first = backoff_first
        self._base = cfg.graph_url
        parts = urlsplit(cfg.graph_url)
        self._origin = f"{parts.scheme}://{parts.netloc}".lower()
        self._gate = _gate(cfg.client_id, cfg.max_concurrent_requests)
        self._local = threading.local()
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self.requests = 0
        self.throttling = ThrottleStats()     # read by the service's metrics

    # --- operations -------------------------------------------------------------------------

    def start_operation(self) -> None:
        """A fresh throttling budget for the calling thread's next operation."""
        self._local.waited = 0.0

    @property
    def waited(self) -> float:
        return float(getattr(self._local, "waited", 0.0))

    @property
    def page_size(self) -> int:
        return self._cfg.page_size

    @property
    def resent(self) -> bool:
        """Whether the calling thread's last `send` sent its request more than once after a
        lost answer (so a write may already have taken effect)."""
        return bool(getattr(self._local, "resent", False))

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- requests ---------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"

    def send(self, method: str, url: str, *, params: dict[str, str] | None = None, json: Any = None,
             headers: dict[str, str] | None = None, page_size: int | None = None) -> httpx.Response:
        """One request (resent as the module docstring says); the answer when it is 2xx.

        Raises GraphError (any other status with Graph's error), GraphThrottled,
        GraphUnreachable, CalendarAuthError (a second 401), CalendarProtocolError."""
        self._check_origin(url)
        self._local.resent = False
        attempt = 0
        token_dropped = False
        backoff = self._backoff_first
        while True:
            try:
                response = self._once(method, url, params=params, json=json, headers=headers, page_size=page_size)
            except (httpx.TransportError, ConnectionError, TimeoutError) as e:
                if attempt >= self._reconnect_attempts:
                    raise GraphUnreachable(_root_cause(e)) from None
                wait = RECONNECT_FIRST_WAIT * 2**attempt
                log.warning("graph_reconnect", method=method, path=_path(url), attempt=attempt + 1, wait=wait,
                            error=_root_cause(e))
                self._sleep(wait)
                attempt += 1
                self._local.resent = True
                continue
            status = response.status_code
            if status == 502 and attempt < self._reconnect_attempts:   # a gateway lost the answer: as a drop
                log.warning("graph_bad_gateway", method=method, path=_path(url), attempt=attempt + 1)
                self._sleep(RECONNECT_FIRST_WAIT * 2**attempt)
                attempt += 1
                self._local.resent = True
                continue
            if status < 300:
                return response
            if status == 401:
                if not token_dropped:
                    token_dropped = True
                    self._tokens.drop()
                    continue
                raise CalendarAuthError(f"Microsoft Graph at {self._base} refused the token of {self._tokens.who} "
                                        f"(HTTP 401 {_error(response)[0]})")
            if status in _THROTTLED:
                wait = _retry_after(response)
                if wait is None:
                    wait, backoff = backoff, min(backoff * 2, BACKOFF_CAP)
                if self.waited + wait > self._cfg.throttle_max_wait_seconds:
                    raise GraphThrottled(self.waited)
                self._local.waited = self.waited + wait
                log.warning("graph_back_off", status=status, seconds=round(wait, 3), waited=round(self.waited, 3),
                            method=method, path=_path(url))
                self.throttling.add(wait)
                self._sleep(wait)
                continue
            code, message = _error(response)
            raise GraphError(status, code, message, method, _path(url))

    def get_json(self, url: str, *, params: dict[str, str] | None = None,
                 page_size: int | None = None) -> dict[str, Any]:
        return _body(self.send("GET", url, params=params, page_size=page_size))

    def pages(self, url: str, *, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Each page of a collection, following `@odata.nextLink` to the end; a failed page
        raises (the caller never sees a partial collection as a whole one)."""
        page = self.get_json(url, params=params, page_size=self._cfg.page_size)
        seen: set[str] = set()
        while True:
            yield page
            link = page.get("@odata.nextLink")
            if not link:
                return
            page = self.get_json(self.next_link(link, seen), page_size=self._cfg.page_size)

    def next_link(self, link: Any, seen: set[str]) -> str:
        """`link` from an answer, checked before it is followed or kept: a string, to the
        configured Graph service, not a page of this collection already read (`seen`, which
        it joins). Raises CalendarProtocolError."""
        if not isinstance(link, str):
            raise CalendarProtocolError(f"Microsoft Graph at {self._base} sent a link that is a "
                                        f"{type(link).__name__}, not a URL")
        self._check_origin(link)
        if link in seen:
            raise CalendarProtocolError(f"Microsoft Graph at {self._base} sent a link back to a page already read "
                                        f"({_path(link)}); not followed")
        seen.add(link)
        return link

    # --- internals --------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                verify: bool | ssl.SSLContext = True
                if self._cfg.ca_file:
                    verify = ssl.create_default_context(cafile=self._cfg.ca_file)
                self._client = httpx.Client(verify=verify, timeout=self._cfg.timeout_seconds,
                                            limits=httpx.Limits(max_connections=self._cfg.max_concurrent_requests),
                                            follow_redirects=False)
            return self._client

    def _once(self, method: str, url: str, *, params: dict[str, str] | None, json: Any,
              headers: dict[str, str] | None, page_size: int | None) -> httpx.Response:
        token = self._tokens.token()
        prefer = PREFER + (f", odata.maxpagesize={page_size}" if page_size else "")
        sent = {"Authorization": f"Bearer {token}", "Prefer": prefer, "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()), **(headers or {})}
        with self._gate:
            self.requests += 1
            response = self._http().request(method, url, params=params, json=json, headers=sent)
            response.read()
        log.debug("graph_request", method=method, path=_path(url), status=response.status_code,
                  client_request_id=sent["client-request-id"], request_id=response.headers.get("request-id"))
        return response

    def _check_origin(self, url: str) -> None:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}".lower() != self._origin:
            raise CalendarProtocolError(f"Microsoft Graph at {self._base} sent a link to another host "
                                        f"({parts.scheme}://{parts.netloc}); not followed")


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise CalendarProtocolError(f"Microsoft Graph answered {response.request.method} {_path(str(response.url))} "
                                    f"with something that is not JSON (HTTP {response.status_code})") from None
    if not isinstance(data, dict):
        raise CalendarProtocolError(f"Microsoft Graph answered {_path(str(response.url))} with a JSON "
                                    f"{type(data).__name__}, not an object")
    return data


def _error(response: httpx.Response) -> tuple[str, str]:
    """Graph's `{"error": {"code", "message"}}`, or ("", a short text)."""
    try:
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return str(error.get("code") or ""), " ".join(str(error.get("message") or "").split())[:300]
    except ValueError:
        pass
    return "", " ".join(response.text.split())[:120]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _path(url: str) -> str:
    """The path of `url` without its query (which may hold opaque state tokens)."""
    return urlsplit(url).path


def _root_cause(e: BaseException) -> str:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        cur = cur.__cause__ or cur.__context__
    text = " ".join(str(e).split()) or type(e).__name__
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                   "CERTIFICATE_VERIFY_FAILED", "Server disconnected"):
        if marker.lower() in text.lower():
            return marker
    return text if len(text) <= 200 else text[:200] + "…"
