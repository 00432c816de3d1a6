"""The service's loopback HTTP endpoint (`service.health_listen`, default 127.0.0.1:9310):

/healthz   200 when healthy, 503 otherwise; JSON: ready, healthy, the reasons when not,
           and per system the last success, the consecutive failures and the back-off.
           `role` is "active", or "standby" while a standby waits for the instance lock
           (200: a waiting standby is healthy; `ready` is false until it takes over).
/metrics   Prometheus exposition through prometheus-client (`syncd.service.metrics`):
           process and Python metrics, and syncd's own series.
/status    what `syncd status` prints, as JSON (when the service gives a status function).

A WSGI application on the standard library's threading WSGI server. The service hands the
server a function giving a `HealthSnapshot`; rendering is pure. The endpoint binds loopback
addresses only: it names rooms and is not authenticated.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import structlog
from prometheus_client import make_wsgi_app

from syncd.errors import ConfigError
from syncd.service.metrics import ServiceMetrics, render_metrics

__all__ = ["HealthServer", "HealthSnapshot", "RoomHealth", "SystemHealth", "parse_listen", "render_healthz",
           "render_metrics"]

log = structlog.get_logger("syncd.health")

FAILURES_BEFORE_UNHEALTHY = 3


@dataclass(frozen=True, slots=True)
class SystemHealth:
    name: str                                   # exchange | ultimo
    last_success: datetime | None = None
    last_failure: datetime | None = None
    consecutive_failures: int = 0
    backoff_until: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class RoomHealth:
    mailbox: str
    space_id: str
    exchange_at: datetime | None = None          # last read or change check of the calendar
    ultimo_at: datetime | None = None            # last read of Ultimo (any window)
    ultimo_full_at: datetime | None = None       # last read of the whole window
    open_conflicts: int = 0
    failing: bool = False
    halted: str | None = None


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    now: datetime
    ready: bool
    stopping: bool = False
    standby: bool = False                        # waiting for the instance lock
    systems: tuple[SystemHealth, ...] = ()
    rooms: tuple[RoomHealth, ...] = ()
    ultimo_calls_today: int | None = None
    ultimo_daily_budget: int = 0
    ultimo_tokens: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    syncs: int = 0
    writes: dict[str, int] = field(default_factory=dict)
    stuck: tuple[str, ...] = ()                  # room jobs running far too long
    calendar_throttle_waits: int = 0             # waits because the calendar server throttled
    calendar_throttle_seconds: float = 0.0

    def reasons(self) -> list[str]:
        """Why the service is not healthy (empty: healthy)."""
        out = []
        if not self.ready and not (self.standby and not self.stopping):
            out.append("starting" if not self.stopping else "stopping")
        for s in self.systems:
            if s.consecutive_failures >= FAILURES_BEFORE_UNHEALTHY:
                out.append(f"{s.name} failing ({s.consecutive_failures} times in a row): {s.last_error or 'error'}")
        if self.stuck:
            out.append(f"room jobs stuck: {', '.join(self.stuck)}")
        return out

    @property
    def healthy(self) -> bool:
        return not self.reasons()


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def render_healthz(snap: HealthSnapshot) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of /healthz."""
    reasons = snap.reasons()
    body = {
        "status": "ok" if not reasons else "unhealthy",
        "role": "standby" if snap.standby else "active",
        "ready": snap.ready,
        "reasons": reasons,
        "systems": {
            s.name: {"last_success": _iso(s.last_success), "last_failure": _iso(s.last_failure),
                     "consecutive_failures": s.consecutive_failures, "backoff_until": _iso(s.backoff_until),
                     "last_error": s.last_error}
            for s in snap.systems
        },
        "rooms": len(snap.rooms),
        "rooms_failing": sum(1 for r in snap.rooms if r.failing),
        "ultimo_calls_today": snap.ultimo_calls_today,
        "ultimo_daily_budget": snap.ultimo_daily_budget,
        "now": snap.now.isoformat(),
    }
    return (200 if not reasons else 503), body


# --- the server ----------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9310`, `[::1]:9310` or `localhost:9310` as (host, port). Raises
    ConfigError for anything but a loopback address."""
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"service.health_listen: bad port in {value!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(f"service.health_listen: {host} is not a loopback address "
                              "(use 127.0.0.1, [::1] or localhost; the endpoint is not authenticated)")
    return host, int(port_text)


StatusProvider = Callable[[], dict[str, Any]]
StartResponse = Callable[..., Any]


class _App:
    """The WSGI application: /healthz and /status here, /metrics from prometheus-client."""

    def __init__(self, provider: Callable[[], HealthSnapshot], metrics: ServiceMetrics,
                 status: StatusProvider | None) -> None:
        self.provider = provider
        self.status = status
        self.metrics_app = make_wsgi_app(metrics.registry)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        known = ("/healthz", "/metrics") + (("/status",) if self.status is not None else ())
        if path not in known:
            return _send(start_response, 404, "text/plain; charset=utf-8",
                         f"not found: try {', '.join(known)}\n".encode(), method)
        if method not in ("GET", "HEAD"):
            return _send(start_response, 405, "text/plain; charset=utf-8", b"only GET\n", method, allow="GET")
        try:
            if path == "/metrics":
                return self.metrics_app(environ, start_response)
            if path == "/status":
                assert self.status is not None
                body = json.dumps(self.status(), indent=1).encode()
                return _send(start_response, 200, "application/json", body, method)
            code, health = render_healthz(self.provider())
        except Exception:  # noqa: BLE001 - the endpoint must answer, the service must go on
            log.exception("health.request_failed", path=path)
            return _send(start_response, 500, "text/plain; charset=utf-8", b"internal error\n", method)
        return _send(start_response, code, "application/json", json.dumps(health, indent=1).encode(), method)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _send(start_response: StartResponse, status: int, ctype: str, body: bytes, method: str,
          **headers: str) -> list[bytes]:
    start_response(f"{status} {_REASONS[status]}",
                   [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                    *((k.title(), v) for k, v in headers.items())])
    return [] if method == "HEAD" else [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("health.request", line=format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves /healthz, /metrics (and /status) on a background thread.

    `metrics`: the service's registry and instruments; by default one reading `provider`."""

    def __init__(self, listen: str, provider: Callable[[], HealthSnapshot], *,
                 metrics: ServiceMetrics | None = None, status: StatusProvider | None = None) -> None:
        host, port = parse_listen(listen)
        self.metrics = metrics or ServiceMetrics(provider)
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), _QuietHandler)
        except OSError as e:
            raise ConfigError(f"service.health_listen: cannot listen on {listen}: {e.strerror or e}") from None
        self._server.set_app(_App(provider, self.metrics, status))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="syncd-health", daemon=True)

    @property
    def address(self) -> str:
        raw_host, port = self._server.server_address[:2]
        host = raw_host.decode() if isinstance(raw_host, bytes) else str(raw_host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
