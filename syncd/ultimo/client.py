"""The Ultimo Reservations REST connector, spoken with httpx.

    client = UltimoClient.from_config(cfg.ultimo, engine)
    ultimo_id = client.create_reservation(new)          # -> "00000006712"
    client.update_reservation(ultimo_id, start, end)
    client.cancel_reservation(ultimo_id)
    client.get_reservations("C-25", window)             # complete, or raises

Every HTTP attempt, retries included, waits for the rate limiter, then is spent from the
daily budget just before it is sent (so the ledger's last count is never older than the
last call: a restarting service's hold-off relies on it); it holds its place in the rate
limiter's window until its answer is in (Ultimo counts it on arrival). How answers map to syncd.errors:

    400 code 1015 ............ RoomUnavailable      (never retried)
    400 code 1166 ............ ReservationInPast    (never retried)
    other 400 / 4xx .......... UltimoRejected
    401 / 403 ................ UltimoAuthError
    404 ...................... UltimoNotFound
    429 / 413 ................ retried, then UltimoQuotaExceeded
    5xx, timeout, dropped .... retried, then UltimoTransient
    refused, DNS ............. retried, then UltimoUnreachable
    certificate refused ...... UltimoUnreachable at once
    not JSON / wrong shape ... UltimoProtocolError
    create sent, no answer ... UltimoOutcomeUnknown (not retried: see below)

A create is not idempotent: Ultimo returns no ExternalId to look for, so a create
repeated after a timeout or a 5xx could book the room twice (or clash with itself as
1015 and be recorded as a false conflict). A create is therefore retried only when it
provably did not reach Ultimo (connection refused, 429/413); any 5xx, 503 included, may
come from a gateway after Ultimo performed the create, so it is as ambiguous as a
timeout: UltimoOutcomeUnknown tells the caller to settle it by reading the room
(syncd.engine.settle) before anything is sent again.

Update and cancel are retried after a 5xx, a timeout or a lost answer. Both are safe to
repeat: an update carries the absolute times, so a second one leaves the reservation as
the first did (Ultimo's clash check does not count the reservation against itself), and a
cancel repeated after one that took effect is refused as "nothing to cancel", which the
executor takes as done. Neither can create anything.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from syncd import __version__
from syncd.config.schema import UltimoConfig
from syncd.core.model import NewReservation, Reservation, TimeWindow
from syncd.errors import (
    ConfigError,
    ReservationInPast,
    RoomUnavailable,
    UltimoAuthError,
    UltimoNotFound,
    UltimoProtocolError,
    UltimoQuotaExceeded,
    UltimoRejected,
    UltimoTransient,
    UltimoUnreachable,
)
from syncd.ultimo import wire as wire
from syncd.ultimo.budget import CallBudget, DailyBudget, RateLimiter
from syncd.ultimo.paging import ReadProfiles, split_full_page

log = structlog.get_logger("syncd.ultimo")

MIN_SPLIT_WINDOW = timedelta(minutes=1)


class UltimoOutcomeUnknown(UltimoTransient):
    """A create reached Ultimo (or may have) but no answer came back: the reservation may
    exist. Read the room and match before creating again."""


class _Retry(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, error: UltimoTransient, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent            # the request may have reached Ultimo


class UltimoClient:
    """One connection pool to one Ultimo environment. Thread-safe as httpx.Client is;
    `calls` counts the HTTP attempts it made, `calls_here()` those made in the calling
    thread (a room's sync counts its own while other rooms' run beside it)."""

    def __init__(
        self,
        cfg: UltimoConfig,
        *,
        budget: CallBudget | None = None,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg = cfg
        self.budget: CallBudget = budget if budget is not None else DailyBudget(None, cfg.daily_call_budget)
        self.limiter = limiter if limiter is not None else RateLimiter(cfg.calls_per_10s, 10.0)
        self.calls = 0
        self.profiles = ReadProfiles(cfg.page_limit)
        self._calls_lock = threading.Lock()
        self._here = threading.local()
        self._sleep = sleep
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self._now = now
        self._key = cfg.api_key.get_secret_value()
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(cfg.timeout_seconds),
            verify=_tls_context(cfg),
            headers={
                "Accept": "application/json",
                "User-Agent": f"syncd/{__version__}",
                **({"Accept-Language": cfg.accept_language} if cfg.accept_language else {}),
            },
            follow_redirects=False,
        )

    @classmethod
    def from_config(cls, cfg: UltimoConfig, engine: Any = None) -> UltimoClient:
        """A client whose daily budget is kept in `engine`'s database (in memory without one)."""
        return cls(cfg, budget=DailyBudget(engine, cfg.daily_call_budget))

    # --- workflows ----------------------------------------------------------------------

    def create_reservation(self, new: NewReservation) -> str:
        """Book `new` in Ultimo; gives the new UltimoId. Raises RoomUnavailable (1015),
        ReservationInPast (1166), UltimoOutcomeUnknown, or another UltimoError.

        An answer syncd cannot read (not JSON, no UltimoId) says nothing about whether
        Ultimo made the reservation: that is UltimoOutcomeUnknown too, settled by reading."""
        try:
            payload = self._call(wire.CREATE, wire.create_body(new, self.cfg.applicant_field), idempotent=False)
            ultimo_id = wire.parse_create(payload)
        except UltimoProtocolError as e:
            raise UltimoOutcomeUnknown(f"{e}; the reservation may have been created in Ultimo") from None
        self.profiles.add(new.space_id, new.start, new.end)
        return ultimo_id

    def update_reservation(self, ultimo_id: str, start: datetime, end: datetime) -> None:
        """Move reservation `ultimo_id` to [start, end). Raises RoomUnavailable (1015),
        ReservationInPast (1166) or another UltimoError."""
        payload = self._call(wire.UPDATE, wire.update_body(ultimo_id, start, end))
        wire.check_empty_ok(payload, wire.UPDATE)

    def cancel_reservation(self, ultimo_id: str) -> None:
        """Cancel reservation `ultimo_id`. Raises ReservationInPast (1166), UltimoRejected
        (unknown or already cancelled, as Ultimo answers it) or another UltimoError."""
        payload = self._call(wire.CANCEL, wire.cancel_body(ultimo_id))
        wire.check_empty_ok(payload, wire.CANCEL)

    def calls_here(self) -> int:
        """The HTTP attempts this client has made in the calling thread."""
        return int(getattr(self._here, "calls", 0))

    def get_reservations(self, space_id: str, window: TimeWindow) -> list[Reservation]:
        """Every live reservation of `space_id` Ultimo returns for `window`, de-duplicated.

        A page of `page_limit` rows may be truncated. A space read before is read in the
        windows its previous rows suggest (`syncd.ultimo.paging`), each expected to hold
        fewer rows than a page; a first read halves a window whose page came back full.
        A full page is split around the rows it returned, until every page is short.
        Raises UltimoProtocolError when even a one-minute window is full, or any
        UltimoError of the calls."""
        found: dict[str, Reservation] = {}
        parts = self.profiles.windows(space_id, window)
        for part in parts or [window]:
            self._get_complete(space_id, part.start, part.end, found, known=parts is not None)
        self.profiles.record(space_id, window, found.values())
        return sorted(found.values(), key=lambda r: (r.start, r.end, r.ultimo_id))

    def _get_complete(self, space_id: str, start: datetime, end: datetime, found: dict[str, Reservation], *,
                      known: bool) -> None:
        payload = self._call(wire.GET, wire.get_body(space_id, start, end))
        rows, raw_count = wire.parse_reservations(payload, space_id, self.cfg.timezone)
        for row in rows:
            found.setdefault(row.ultimo_id, row)
        if raw_count < self.cfg.page_limit:
            return
        if end - start <= MIN_SPLIT_WINDOW:
            raise UltimoProtocolError(
                f"Ultimo returned a full page of {raw_count} reservations for {space_id} in one minute "
                f"from {wire.format_time(start)}; cannot read the room completely"
            )
        # The page's rows are kept (they are live reservations), but the page may be cut
        # anywhere: its window is read again in parts. Where the density was known, the
        # parts are cut around the rows it returned (about `ROWS_PER_GET` each of at
        # least a page); a first read halves the window on whole seconds.
        if known:
            parts = split_full_page(TimeWindow(start, end), rows, math.ceil(1.2 * raw_count / self.profiles.per))
        else:
            middle = start + timedelta(seconds=int((end - start).total_seconds() // 2))
            parts = [TimeWindow(start, middle), TimeWindow(middle, end)]
        log.debug("ultimo.get.split", space_id=space_id, rows=raw_count, start=start.isoformat(),
                  end=end.isoformat(), parts=len(parts))
        for part in parts:
            self._get_complete(space_id, part.start, part.end, found, known=known)

    # --- transport ------------------------------------------------------------------------

    def _call(self, workflow: str, body: dict[str, str], *, idempotent: bool = True) -> Any:
        """POST `body` to `workflow` with retries; gives the parsed JSON of a 200."""
        url = f"{self.cfg.base_url}/Action/{workflow}"
        element = getattr(self.cfg.application_element_ids, wire.ELEMENT_KEYS[workflow])
        content = json.dumps(body).encode("utf-8")
        attempts = self.cfg.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(workflow, url, element, content, attempt)
            except _Retry as retry:
                error = retry.error
                if not idempotent and retry.sent:
                    raise UltimoOutcomeUnknown(
                        f"{error}; the reservation may have been created in Ultimo", error.retry_after
                    ) from None
                wait = self._backoff(attempt, error.retry_after)
                if attempt == attempts or wait is None:
                    raise error from None
                # Unreachable: the detail is for debugging, the one line comes with the error
                # raised after the last attempt. A refusal worth a retry (5xx, 429) is news.
                level = log.debug if isinstance(error, UltimoUnreachable) else log.warning
                level("ultimo.retry", workflow=workflow, attempt=attempt, error=str(error), wait=round(wait, 3))
                self._sleep(wait)
        raise AssertionError("unreachable")   # pragma: no cover

    def _attempt(self, workflow: str, url: str, element: str, content: bytes, attempt: int) -> Any:
        headers = {"ApiKey": self._key, "ApplicationElementId": element, "Content-Type": "application/json"}
        # The call counts against the rate limit from its start until its answer is in:
        # Ultimo counts it on arrival, somewhere in between. It is counted in the ledger
        # once the limiter lets it go, not before its wait: a restart's hold-off is
        # measured from the ledger's last count.
        with self.limiter.call():
            self.budget.spend(1)
            with self._calls_lock:
                self.calls += 1
            self._here.calls = self.calls_here() + 1
            started = time.monotonic()
            try:
                response = self._http.post(url, content=content, headers=headers)
            except httpx.HTTPError as exc:
                self._log(workflow, None, started, attempt, error=type(exc).__name__)
                raise self._transport_error(workflow, url, exc) from None
        self._log(workflow, response.status_code, started, attempt)
        return self._interpret(workflow, url, response)

    def _log(self, workflow: str, status: int | None, started: float, attempt: int, **extra: Any) -> None:
        log.debug(
            "ultimo.call", workflow=workflow, status=status, attempt=attempt,
            duration_ms=round((time.monotonic() - started) * 1000, 1), **extra,
        )

    def _transport_error(self, workflow: str, url: str, exc: httpx.HTTPError) -> Exception:
        where = self.cfg.base_url
        reason = self._scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, httpx.TransportError) and "certificate" in reason.casefold():
            # Either side refused the other's certificate: retrying will not fix that.
            return UltimoUnreachable(
                f"TLS with Ultimo at {where} failed: {reason} (check ultimo.verify_tls, client_cert, client_key)"
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return _Retry(UltimoUnreachable(f"cannot reach Ultimo at {where}: {reason}"), sent=False)
        if isinstance(exc, httpx.PoolTimeout):
            return _Retry(UltimoTransient(f"no free connection to Ultimo for {workflow}"), sent=False)
        if isinstance(exc, httpx.TimeoutException):
            return _Retry(
                UltimoTransient(f"Ultimo did not answer {workflow} within {self.cfg.timeout_seconds:g} s"), sent=True
            )
        if isinstance(exc, httpx.TransportError):
            return _Retry(UltimoTransient(f"connection to Ultimo lost during {workflow}: {reason}"), sent=True)
        return UltimoProtocolError(f"Ultimo call {workflow} failed: {type(exc).__name__}")

    def _interpret(self, workflow: str, url: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 200:
            return self._json(workflow, response)
        payload = self._json_or_none(response)
        code, message = wire.parse_error(payload)
        message = self._scrub(message)
        if status in (429, 413):
            text = message or "quota exceeded"
            error: UltimoTransient = UltimoQuotaExceeded(f"Ultimo quota exceeded ({status}) on {workflow}: {text}", self._retry_after(response))
            raise _Retry(error, sent=False)
        if status >= 500:
            text = message or code or _snippet(response)
            error = UltimoTransient(f"Ultimo failed {workflow} with HTTP {status}: {text}", self._retry_after(response))
            # Even a 503 may be a gateway's page sent after Ultimo did the work.
            raise _Retry(error, sent=True)
        if status in (401, 403):
            raise UltimoAuthError(
                f"Ultimo refused the API key for {workflow} (HTTP {status}"
                f"{', ' + code if code else ''}): {message or 'no reason given'}"
                + (" (IP allow-list or client certificate?)" if status == 403 else "")
            )
        if status == 404:
            raise UltimoNotFound(
                f"Ultimo has no {workflow} at {url} (HTTP 404): check ultimo.base_url and that the "
                "workflow is enabled for the API key"
            )
        if 300 <= status < 400:
            raise UltimoProtocolError(
                f"Ultimo redirected {workflow} (HTTP {status}) to {response.headers.get('location', '?')}: "
                "check ultimo.base_url"
            )
        if payload is None:
            raise UltimoProtocolError(f"Ultimo answered {workflow} with HTTP {status} and no JSON: {_snippet(response)}")
        if code == "1015":
            raise RoomUnavailable(message, code, status)
        if code == "1166":
            raise ReservationInPast(message, code, status)
        raise UltimoRejected(message or f"HTTP {status}", code, status)

    def _json(self, workflow: str, response: httpx.Response) -> Any:
        try:
            return json.loads(response.content.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise UltimoProtocolError(
                f"Ultimo answered {workflow} with something that is not JSON (HTTP {response.status_code}, "
                f"{kind}): {self._scrub(_snippet(response))}"
            ) from None

    @staticmethod
    def _json_or_none(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            return None

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Seconds from a Retry-After header (seconds or an HTTP date); None without one."""
        value = response.headers.get("retry-after")
        if not value:
            return None
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - self._now()).total_seconds())

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`: what Retry-After asks, else capped
        exponential backoff with full jitter. None when Retry-After asks more than the cap
        (better to give up now and let the next cycle try)."""
        if retry_after is not None:
            return retry_after if retry_after <= self._backoff_cap else None
        ceiling = min(self._backoff_cap, self._backoff_base * (2 ** (attempt - 1)))
        return self._rng.uniform(0, ceiling)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    # --- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> UltimoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _snippet(response: httpx.Response, limit: int = 80) -> str:
    text = " ".join(response.content[:400].decode("utf-8", "replace").split())
    if "<html" in text.casefold() or "<!doctype" in text.casefold():
        title = text.casefold().find("<title>")
        if title >= 0:
            end = text.casefold().find("</title>", title)
            return f"an HTML page ({text[title + 7:end if end > 0 else title + 67].strip()})"
        return "an HTML page"
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _tls_context(cfg: UltimoConfig) -> ssl.SSLContext | bool:
    """What httpx gets as `verify`: a bool when nothing special is configured, else an
    SSLContext with the CA bundle and the client certificate (mTLS). Raises ConfigError
    when a certificate file cannot be loaded."""
    if cfg.client_cert is None and isinstance(cfg.verify_tls, bool):
        return cfg.verify_tls
    try:
        if isinstance(cfg.verify_tls, str):
            context = ssl.create_default_context(cafile=cfg.verify_tls)
        else:
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
            if not cfg.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        if cfg.client_cert:
            context.load_cert_chain(cfg.client_cert, cfg.client_key)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(str(f) for f in (cfg.client_cert, cfg.client_key, cfg.verify_tls) if isinstance(f, str))
        raise ConfigError(
            f"ultimo: cannot load the TLS files ({files}): {exc.strerror or exc.__class__.__name__}"
        ) from None
    return context


__all__ = ["UltimoClient", "UltimoOutcomeUnknown"]
