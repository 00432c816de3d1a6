"""A stateful fake Microsoft Graph (calendar part) and Microsoft identity platform on loopback
over TLS, for the real MSAL and httpx clients.

    with GraphSandbox() as graph:
        graph.add_mailbox("room1@example.com")
        graph.register_app("app-id", secret="s3cret", scope={"room1@example.com"})
        graph.book("room1@example.com", subject="Standup", start=..., end=...)
        msal.ConfidentialClientApplication("app-id", client_credential="s3cret",
            authority=graph.authority, http_client=session, instance_discovery=False)
        httpx.Client(verify=graph.client_ssl_context()).get(f"{graph.graph_url}/v1.0/users/room1@example.com/calendar/...")

`authority` is ``https://127.0.0.1:PORT/<tenant_id>``; `graph_url` the same origin (requests go
to ``/v1.0/...``); `ca_file` a PEM file with the sandbox's own throwaway CA (`client_ssl_context()`
for httpx). Two things a client must know, true of real MSAL against any private authority:
MSAL needs ``instance_discovery=False`` (given a discovery URL instead, it still asks
login.microsoftonline.com for authority aliases at every token request), and MSAL's default
requests session lets ``REQUESTS_CA_BUNDLE`` override its `verify`, so pass
``http_client=`` a ``requests.Session`` with ``trust_env = False`` and ``verify = ca_file``.
The mailboxes live in a `Store`
that an `EwsSandbox(store=graph.store)` can serve at the same time, so a meeting booked through
one protocol is seen through the other. See `api.GraphOptions` for the answers to Graph's open
questions, `limits` for faults, and `people.People` for acting as people.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from cryptography import x509

from ..ews.store import Store, StoreError
from ..httpbase import Hold, LoopbackServer, Request, Response, drop_connection
from .api import Api, GraphError, GraphOptions, error
from .auth import App, Identity
from .limits import AFTER_WORK, RESPONSE_FAULTS, Budget, Call, Faults, fault_response, throttled
from .people import People
from .query import BadQuery, prefer
from .read import calendar, calendar_view, delta, get_event, instances, list_events, translate_ids
from .tls import SandboxCA
from .write import create_event, delete_event, respond, update_event

__all__ = ["GraphOptions", "GraphSandbox"]

DEFAULT_TENANT = "8d3c1f7e-5b2a-4c6d-9e0f-1a2b3c4d5e6f"
_Handler = Callable[[Api, Request, str], Response]


class GraphSandbox(People):
    """A fake Graph server holding room calendars; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = DEFAULT_TENANT,
        timezone: str = "Europe/Amsterdam",
        store: Store | None = None,
        token_lifetime: float = 3599.0,
        options: GraphOptions | None = None,
    ) -> None:
        self.store = store if store is not None else Store(ZoneInfo(timezone))
        self.zone = self.store.zone
        self._lock = self.store.lock
        self.tenant_id = tenant_id
        self.identity = Identity(tenant_id, token_lifetime)
        self.options = options or GraphOptions()
        self.faults = Faults()
        self.api = Api(self.store, self.options, faults=self.faults)
        self.budget = Budget()
        self.log: list[Call] = []
        self._log_lock = threading.Lock()
        self.ca = SandboxCA()
        self._ca_dir: str | None = None
        self._server = LoopbackServer(self._handle, host=host, port=port, ssl_context=self.ca.server_context())

    # --- lifecycle and addresses --------------------------------------------------------------

    def start(self) -> GraphSandbox:
        self._server.start()
        self.identity.base_url = self.api.base_url = self._server.url
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._ca_dir is not None:
            for name in os.listdir(self._ca_dir):
                os.unlink(os.path.join(self._ca_dir, name))
            os.rmdir(self._ca_dir)
            self._ca_dir = None

    def __enter__(self) -> GraphSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The sandbox's origin, https://127.0.0.1:PORT."""
        return self._server.url

    @property
    def graph_url(self) -> str:
        """Where Graph requests go (followed by /v1.0/...)."""
        return self._server.url

    @property
    def authority(self) -> str:
        return f"{self._server.url}/{self.tenant_id}"

    @property
    def ca_file(self) -> str:
        """A PEM file holding the sandbox's CA certificate (removed by stop())."""
        if self._ca_dir is None:
            self._ca_dir = tempfile.mkdtemp(prefix="syncd-graph-ca-")
        path = os.path.join(self._ca_dir, "ca.pem")
        if not os.path.exists(path):
            self.ca.write_ca(path)
        return path

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client-side TLS context trusting the sandbox's CA (for httpx's `verify`)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def calendar_config(self, client_id: str, secret: str) -> dict[str, str]:
        """The `calendar.graph` section of a syncd configuration for the app `client_id`."""
        return {"tenant_id": self.tenant_id, "client_id": client_id, "client_secret": secret,
                "authority": self.url, "graph_url": f"{self.graph_url}/v1.0", "ca_file": self.ca_file}

    # --- the directory --------------------------------------------------------------------

    def add_mailbox(self, smtp: str) -> None:
        with self._lock:
            self.store.add_mailbox(smtp)

    def register_app(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate: bytes | x509.Certificate | None = None,
        scope: Iterable[str] | None = None,
    ) -> App:
        """Register an app with a secret and/or a certificate (PEM or loaded); `scope` lists the
        mailboxes RBAC for Applications lets it reach (None: all of them)."""
        cert = x509.load_pem_x509_certificate(certificate) if isinstance(certificate, bytes) else certificate
        return self.identity.register(App(client_id, secret, cert, _scope(scope)))

    def set_scope(self, client_id: str, mailboxes: Iterable[str] | None) -> None:
        self.identity.apps[client_id].scope = _scope(mailboxes)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired (clients' caches still hold them)."""
        self.identity.revoke_all()

    @property
    def tokens_issued(self) -> int:
        return self.identity.issued

    def forget_sync_states(self) -> None:
        """Every delta and skip token is unknown from now on: the next use answers 410."""
        with self._lock:
            self.api.tokens.forget_all()

    # --- faults and the request log ------------------------------------------------------------

    def inject(self, kind: str, *, count: int = 1, op: str | None = None, mailbox: str | None = None,
               retry_after: float | None = 1.0, delay: float = 5.0, hold: Hold | None = None,
               answer: Response | None = None) -> None:
        """Queue a fault (see `limits` for the kinds and operation names); `delay` is for `slow`,
        `hold` for `hold`, `answer` for `answer_after`."""
        self.faults.add(kind, count, op, mailbox, retry_after, delay, hold, answer)

    def set_budget(self, limit: int | None, window: float = 600.0) -> None:
        """At most `limit` requests per `window` seconds per app and mailbox (None: no limit)."""
        self.options.mailbox_budget = limit
        self.options.budget_window = window
        self.budget.reset()

    def calls(self, mailbox: str | None = None, op: str | None = None) -> int:
        return len(self.requests(mailbox, op))

    def requests(self, mailbox: str | None = None, op: str | None = None) -> list[Call]:
        with self._log_lock:
            return [c for c in self.log if (mailbox is None or c.mailbox == mailbox.lower())
                    and (op is None or c.op == op)]

    def clear_log(self) -> None:
        with self._log_lock:
            self.log.clear()

    def invitations(self, mailbox: str | None = None) -> list[dict[str, Any]]:
        """Invitations the sandbox would have sent (events written with attendees)."""
        with self._lock:
            return [dict(i) for i in self.api.invitations if mailbox is None or i["mailbox"] == mailbox.lower()]

    # --- HTTP ---------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        parts = [unquote(p) for p in request.path.split("/") if p]
        info: dict[str, Any] = {"op": "unknown", "mailbox": None, "app": None}
        response = self._dispatch(request, parts, info)
        self._record(request, info, response)
        if not response.drop:
            # As Graph does: an id for each answer, and the client's own id echoed back.
            response.headers.setdefault("request-id", str(uuid.uuid4()))
            client_id = request.header("client-request-id")
            if client_id:
                response.headers.setdefault("client-request-id", client_id)
        return response

    def _dispatch(self, request: Request, parts: list[str], info: dict[str, Any]) -> Response:
        identity = self.identity.handle(request, parts)
        if identity is not None:
            info["op"] = "token" if parts[-1] == "token" else "discovery"
            return self._faulted(info["op"], None) or identity
        if parts[:1] != ["v1.0"] or len(parts) < 3 or parts[1].lower() != "users":
            return error(400, "BadRequest", f"Resource not found for the segment '{'/'.join(parts[:2])}'.")
        mailbox = info["mailbox"] = parts[2].lower()
        route = _route(request.method, parts[3:])
        if route is None:
            return error(405 if _known_path(parts[3:]) else 400, "BadRequest",
                         f"Unsupported request {request.method} {request.path}.")
        op, handler = route
        info["op"] = op
        app, denied = self.identity.validate(request)
        if app is None:
            return denied or error(401, "InvalidAuthenticationToken", "Access token is empty.")
        info["app"] = app.client_id
        return self._serve(request, op, mailbox, app, handler)

    def _faulted(self, op: str, mailbox: str | None) -> Response | None:
        fault = self.faults.take(op, mailbox, tuple(k for k in RESPONSE_FAULTS if k not in AFTER_WORK))
        return fault_response(fault) if fault is not None else None

    def _serve(self, request: Request, op: str, mailbox: str, app: App, handler: _Handler) -> Response:
        injected = self._faulted(op, mailbox)
        if injected is not None:
            return injected
        opts = self.options
        key = (app.client_id,) if opts.concurrency_scope == "app" else (app.client_id, mailbox)
        if not self.budget.enter(key, opts.concurrency_limit):
            return throttled(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", 1)
        try:
            wait = self.budget.spend(app.client_id, mailbox, opts.mailbox_budget, opts.budget_window)
            if wait is not None:
                return throttled(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                                 wait)
            if not app.in_scope(mailbox):
                if opts.out_of_scope == "404":
                    return error(404, "ErrorInvalidUser", f"The requested user '{mailbox}' is invalid.")
                return error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            with self._lock:
                if mailbox not in self.store.mailboxes:
                    return error(404, "ErrorInvalidUser", f"The requested user '{mailbox}' is invalid.")
                self.api.base_url = self._server.url
                try:
                    response = handler(self.api, request, mailbox)
                except GraphError as err:
                    return error(err.status, err.code, err.message)
                except BadQuery as err:
                    return error(400, err.code, str(err))
                except StoreError as err:
                    return error(400, err.code, err.message)
            after = self.faults.take(op, mailbox, AFTER_WORK)
            if after is not None and after.kind == "lost_answer":
                return drop_connection()
            if after is not None and after.answer is not None:
                return after.answer.canned()
            if after is not None and after.kind == "hold":
                response.hold = after.hold
            elif after is not None:
                response.delay = after.delay
            return response
        finally:
            self.budget.leave(key)

    def _record(self, request: Request, info: dict[str, Any], response: Response) -> None:
        status = 0 if response.drop else response.status
        call = Call(time.time(), request.method, request.path, {k: list(v) for k, v in request.query.items()},
                    info["op"], info["mailbox"], request.header("Authorization") is not None, info["app"], status,
                    prefer(request))
        with self._log_lock:
            self.log.append(call)


def _scope(mailboxes: Iterable[str] | None) -> set[str] | None:
    return None if mailboxes is None else {m.lower() for m in mailboxes}


def _known_path(rest: list[str]) -> bool:
    return bool(rest) and rest[0] in ("calendar", "calendarView", "events", "calendars", "translateExchangeIds")


def _route(method: str, rest: list[str]) -> tuple[str, _Handler] | None:
    """The operation name and handler for the path after /v1.0/users/{mailbox}."""
    if rest and rest[0] == "calendar" and len(rest) >= 2 and rest[1] in ("calendarView", "events"):
        rest = rest[1:]             # /calendar/calendarView, /calendar/events... as without /calendar
        scoped = True
    elif len(rest) >= 3 and rest[0] == "calendars" and rest[2] == "events":
        rest = rest[2:]
        scoped = True
    else:
        scoped = False
    if rest == ["calendar"] and method == "GET":
        return "calendar", calendar
    if rest == ["calendarView"] and method == "GET":
        return "calendarView", calendar_view
    if rest == ["calendarView", "delta"] and method == "GET":
        return "delta", lambda api, req, mb: delta(api, req, mb, api.data_fault(mb))
    if rest == ["translateExchangeIds"] and method == "POST":
        return "translate", translate_ids
    if rest == ["events"]:
        if method == "GET":
            return "events.list", list_events
        if method == "POST":
            return "events.create", create_event
        return None
    if len(rest) == 2 and rest[0] == "events":
        event_id = rest[1]
        if method == "GET":
            return "event.get", lambda api, req, mb: get_event(api, req, mb, event_id, calendar_scoped=scoped)
        if method == "PATCH":
            return "event.update", lambda api, req, mb: update_event(api, req, mb, event_id)
        if method == "DELETE":
            return "event.delete", lambda api, req, mb: delete_event(api, req, mb, event_id)
        return None
    if len(rest) == 3 and rest[0] == "events":
        event_id, action = rest[1], rest[2]
        if action == "instances" and method == "GET":
            return "event.instances", lambda api, req, mb: instances(api, req, mb, event_id)
        if action in ("decline", "accept", "tentativelyAccept") and method == "POST":
            name = "event.decline" if action == "decline" else "event.accept"
            return name, lambda api, req, mb: respond(api, req, mb, event_id, action)
    return None
