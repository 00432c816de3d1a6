"""A small threaded HTTP/1.1 keep-alive server on loopback, shared by the sandboxes.

Usage::

    def handle(request: Request) -> Response:
        return json_response(200, {"ok": True})

    server = LoopbackServer(handle).start()       # 127.0.0.1, ephemeral port
    server.url                                    # "http://127.0.0.1:<port>"
    server.stop()

`LoopbackServer(handler, host="127.0.0.1", port=0, ssl_context=None)`: `start()` returns
self, `stop()` closes the listening socket and every open connection, `port`, `url`
(https when given a server-side SSLContext, e.g. one requiring client certificates);
usable as a context manager. Subclasses may override `handle(request)` instead of passing a handler.

The handler gets a `Request` (method, path, query, headers — case-insensitive —, body)
and returns a `Response`. Faults are ordinary responses:

- `drop_connection()`   close the connection without answering a byte;
- `slow(response, s)`   answer `response` after `s` seconds (stop() cuts the wait short);
- `html_error_page(502)` an HTML error page, as a reverse proxy in front of a server gives;
- `garbage_response()`  200 with a body that is not what the client expects.

`FaultQueue` holds faults injected by a test (`add("drop", count=2, match="Create")`) for
the handler to `take(key)` one per request, thread-safe; `randomly(rate, kinds, seed)`
also fails that share of the requests no queued fault applies to.

`Hold` keeps an answer back after the work was done (`Response.hold`): `reached` is set
when a request is held, the answer goes out (or, with `drop`, the connection closes) once
`release()` is called; the campaign kills the client in between.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Fault",
    "FaultQueue",
    "Hold",
    "LoopbackServer",
    "Request",
    "Response",
    "drop_connection",
    "garbage_response",
    "html_error_page",
    "json_response",
    "slow",
]


@dataclass(frozen=True)
class Request:
    """One HTTP request as the handler sees it. `headers` looks names up case-insensitively."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client: tuple[str, int]

    def json(self) -> Any:
        """The body parsed as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str, default: str | None = None) -> str | None:
        value = self.headers.get(name)
        return default if value is None else value


class Hold:
    """An answer held back after the request was served: `reached` is set when a request
    is held; the answer is sent (closed unanswered with `drop`) once `release()` is
    called, or after `timeout` seconds. One Hold holds every request it is given."""

    def __init__(self, *, drop: bool = True, timeout: float = 60.0) -> None:
        self.drop = drop
        self.timeout = timeout
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait(self, stopping: threading.Event) -> None:
        """Called by the server with the answer ready: block until released (or stopping)."""
        self.reached.set()
        waited = 0.0
        while waited < self.timeout and not self._released.is_set() and not stopping.is_set():
            self._released.wait(0.05)
            waited += 0.05


@dataclass
class Response:
    """What the server answers. `drop` closes the connection without answering;
    `delay` waits that long before answering (or dropping); `hold` keeps the answer
    back until released (see Hold)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    hold: Hold | None = None

    def canned(self) -> Response:
        """A fresh copy of this answer's status, body, type and headers, to send once: a
        server adds its own headers to what it sends, so an answer kept to be sent again
        (the malformed corpus's) is never sent itself."""
        return Response(self.status, self.body, self.content_type, dict(self.headers))


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with `payload` serialised compactly."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=body, headers=dict(headers or {}))


def html_error_page(status: int = 502, title: str = "Bad Gateway") -> Response:
    """An HTML error page such as a load balancer returns when the backend is down."""
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>"
        f"<body><h1>{status} {title}</h1><hr><p>nginx</p></body></html>\n"
    )
    return Response(status=status, body=page.encode(), content_type="text/html; charset=utf-8")


def garbage_response(status: int = 200) -> Response:
    """A 200 whose body is neither JSON nor XML."""
    return Response(status=status, body=b"\x00\x01not json {{{", content_type="application/json")


def drop_connection(delay: float = 0.0) -> Response:
    """Close the connection without sending a response (after `delay` seconds)."""
    return Response(drop=True, delay=delay)


def slow(response: Response, delay: float) -> Response:
    """`response`, sent only after `delay` seconds."""
    response.delay = delay
    return response


@dataclass(frozen=True)
class Fault:
    """An injected fault: its `kind` and free parameters (`delay`, `retry_after`, ...)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


class FaultQueue:
    """Faults waiting to be served, each `count` times, optionally only for requests
    whose key (a workflow or operation name chosen by the server) equals `match`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[list[Any]] = []   # [fault, remaining, match]
        self._random: tuple[float, tuple[str, ...], random.Random, dict[str, Any]] | None = None

    def add(self, kind: str, count: int = 1, match: str | None = None, **params: Any) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._items.append([Fault(kind, params), count, match])

    def take(self, key: str | None = None) -> Fault | None:
        """The first fault that applies to `key`, spending one of its count; None if none."""
        with self._lock:
            for item in self._items:
                fault, _remaining, match = item
                if match is None or match == key:
                    item[1] -= 1
                    if item[1] == 0:
                        self._items.remove(item)
                    return fault
            if self._random is not None:
                rate, kinds, rng, params = self._random
                if rng.random() < rate:
                    return Fault(rng.choice(kinds), params)
        return None

    def randomly(self, rate: float, kinds: Sequence[str], seed: int | None = None, **params: Any) -> None:
        """From now on fail a `rate` share of the requests no queued fault applies to,
        each as one of `kinds` chosen at random (reproducible with `seed`); rate 0 stops."""
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if rate and not kinds:
            raise ValueError("kinds must name at least one fault")
        with self._lock:
            self._random = (rate, tuple(kinds), random.Random(seed), dict(params)) if rate else None

    def clear(self) -> None:
        """Forget queued faults and stop random ones."""
        with self._lock:
            self._items.clear()
            self._random = None

    def pending(self) -> int:
        with self._lock:
            return sum(item[1] for item in self._items)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs here, in the connection's own thread, so one slow or
        # failing client cannot hold up the accept loop.
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (timeouts, dropped connections) is normal in the tests.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "syncd-sandbox/1"
    timeout = 30   # idle keep-alive connections end after this long
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002
        pass   # the sandboxes keep their own journals

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate small writes: without NODELAY, Nagle's
        # algorithm and the client's delayed ACK add 40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, False)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers=self.headers,
            body=body,
            client=self.client_address,
        )
        owner = self.server.owner
        try:
            response = owner.handle(request)
        except Exception as exc:  # noqa: BLE001 - a sandbox bug becomes a 500, not a hung client
            response = Response(500, f"sandbox error: {exc!r}".encode(), "text/plain; charset=utf-8")
        if response.hold is not None:
            response.hold.wait(owner._stopping)
            if response.hold.drop or owner._stopping.is_set():
                response = drop_connection()
        if response.delay > 0 and owner._stopping.wait(response.delay):
            response = drop_connection()
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True   # the client gave up (timeout); nothing to tell it

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class LoopbackServer:
    """A threaded HTTP/1.1 keep-alive server for the sandboxes. Bind to port 0 for an
    ephemeral port; `url` is `http://host:port` once started."""

    def __init__(
        self,
        handler: Callable[[Request], Response] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self.ssl_context = ssl_context
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def handle(self, request: Request) -> Response:
        """Answer one request; the default calls the handler given to __init__."""
        if self._handler is None:
            return json_response(404, {"message": "no handler"})
        return self._handler(request)

    def start(self) -> LoopbackServer:
        """Bind and serve in a background thread; returns self. Raises OSError if the port is taken."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _Handler)
        server.owner = self
        server.ssl_context = self.ssl_context
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
