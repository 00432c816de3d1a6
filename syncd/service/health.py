"""The service's loopback HTTP endpoint (`service.health_listen`): /healthz and /metrics.

/healthz   200 when healthy, 503 otherwise; JSON: ready, healthy, the reasons when not,
           and per system the last success, the consecutive failures and the back-off.
/metrics   Prometheus text exposition format (version 0.0.4), written here by hand:
           staleness per room and side, Ultimo calls today against the budget, open
           conflicts, errors by kind, syncs and writes.

The service hands the server a function giving a `HealthSnapshot`; rendering is pure.
The endpoint binds loopback addresses only: it names rooms and is not authenticated.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from syncd.errors import ConfigError

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
    systems: tuple[SystemHealth, ...] = ()
    rooms: tuple[RoomHealth, ...] = ()
    ultimo_calls_today: int | None = None
    ultimo_daily_budget: int = 0
    ultimo_tokens: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    syncs: int = 0
    writes: dict[str, int] = field(default_factory=dict)
    stuck: tuple[str, ...] = ()                  # room jobs running far too long

    def reasons(self) -> list[str]:
        """Why the service is not healthy (empty: healthy)."""
        out = []
        if not self.ready:
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


# --- Prometheus text format ------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metrics:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{inner}}} {_num(value)}")
            else:
                self.lines.append(f"{name} {_num(value)}")


def _age(now: datetime, t: datetime | None) -> float:
    return math.inf if t is None else max(0.0, (now - t).total_seconds())


def render_metrics(snap: HealthSnapshot) -> str:
    """/metrics in the Prometheus text exposition format."""
    m = _Metrics()
    now = snap.now
    m.family("syncd_ready", "gauge", "1 when the service has started and is syncing.", [({}, float(snap.ready))])
    m.family("syncd_healthy", "gauge", "1 when /healthz answers 200.", [({}, float(snap.healthy))])
    m.family("syncd_system_up", "gauge", "0 while a system is failing and backed off.",
             [({"system": s.name}, float(s.consecutive_failures == 0)) for s in snap.systems])
    m.family("syncd_system_last_success_timestamp_seconds", "gauge",
             "Unix time of the last successful call to the system (0: none yet).",
             [({"system": s.name}, s.last_success.timestamp() if s.last_success else 0.0) for s in snap.systems])
    stale: list[tuple[dict[str, str], float]] = []
    for r in snap.rooms:
        stale.append(({"room": r.mailbox, "side": "exchange"}, _age(now, r.exchange_at)))
        stale.append(({"room": r.mailbox, "side": "ultimo"}, _age(now, r.ultimo_at)))
        stale.append(({"room": r.mailbox, "side": "ultimo_full"}, _age(now, r.ultimo_full_at)))
    m.family("syncd_room_staleness_seconds", "gauge",
             "Seconds since the side was last read for the room (ultimo: the near-term window at least; "
             "ultimo_full: the whole window; +Inf: never).", stale)
    m.family("syncd_open_conflicts", "gauge", "Open conflicts per room.",
             [({"room": r.mailbox}, float(r.open_conflicts)) for r in snap.rooms])
    m.family("syncd_room_failing", "gauge", "1 while the room's last sync failed or it is halted.",
             [({"room": r.mailbox}, float(r.failing or r.halted is not None)) for r in snap.rooms])
    if snap.ultimo_calls_today is not None:
        m.family("syncd_ultimo_calls_today", "gauge", "Ultimo calls counted today (UTC) by every syncd process.",
                 [({}, float(snap.ultimo_calls_today))])
    m.family("syncd_ultimo_daily_budget", "gauge", "ultimo.daily_call_budget.",
             [({}, float(snap.ultimo_daily_budget))])
    if snap.ultimo_tokens is not None:
        m.family("syncd_ultimo_tokens", "gauge", "Ultimo calls the pacing allows right now.",
                 [({}, round(snap.ultimo_tokens, 3))])
    m.family("syncd_errors_total", "counter", "Failures since start, by kind.",
             [({"kind": k}, float(v)) for k, v in sorted(snap.errors.items())])
    m.family("syncd_room_syncs_total", "counter", "Room syncs since start.", [({}, float(snap.syncs))])
    m.family("syncd_writes_total", "counter", "Writes since start, by action.",
             [({"action": k}, float(v)) for k, v in sorted(snap.writes.items())])
    return "\n".join(m.lines) + "\n"


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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path not in ("/healthz", "/metrics"):
            self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")
            return
        try:
            snap = self.server.provider()
        except Exception:  # noqa: BLE001 - the endpoint must answer, the service must go on
            log.exception("health.snapshot_failed")
            self._send(500, "text/plain; charset=utf-8", b"internal error\n")
            return
        if path == "/healthz":
            status, body = render_healthz(snap)
            self._send(status, "application/json", json.dumps(body, indent=1).encode())
        else:
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(snap).encode())

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        self._send(405, "text/plain; charset=utf-8", b"only GET\n", allow="GET")

    do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

    def _send(self, status: int, ctype: str, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers.items():
            self.send_header(k.title(), v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("health.request", line=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], provider: Callable[[], HealthSnapshot]) -> None:
        self.provider = provider
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class HealthServer:
    """Serves /healthz and /metrics from `provider` on a background thread."""

    def __init__(self, listen: str, provider: Callable[[], HealthSnapshot]) -> None:
        host, port = parse_listen(listen)
        try:
            self._server = _Server((host, port), provider)
        except OSError as e:
            raise ConfigError(f"service.health_listen: cannot listen on {listen}: {e.strerror or e}") from None
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
