"""`syncd sandbox`: the bundled Ultimo and EWS sandboxes on loopback, until interrupted.

Prints where they listen and a complete syncd configuration that points at them (or, with
`--write-config FILE`, writes it there), so `syncd --config FILE check` (or reconcile, or
run) works against them at once; three lines say what to run next. `--seed` fills them
with the demo's rooms and bookings (`syncd.sandbox.seed`).
With `--backend graph` the Microsoft Graph sandbox (TLS with a throwaway CA, written to a
temporary file named in the configuration) serves the same room calendars as the EWS one,
and the configuration uses `calendar.backend: graph`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from syncd.sandbox.ultimo.server import UltimoSandbox

API_KEY = "sandbox-key"
EWS_USER = "svc-syncd@example.com"
EWS_PASSWORD = "sandbox-password"
ROOMS: tuple[tuple[str, str], ...] = (("room.c25@example.com", "C-25"), ("room.d12@example.com", "D-12"))
TIMEZONE = "Europe/Amsterdam"
GRAPH_CLIENT_ID = "5e1f0c2a-7b3d-4e8f-9a6b-2c4d6e8f0a1b"
GRAPH_SECRET = "sandbox-graph-secret"
HEALTH_LISTEN = "127.0.0.1:9310"
# Where the configuration points when the EWS sandbox is not installed: nothing listens there.
NO_EWS_ENDPOINT = "http://127.0.0.1:9/EWS/Exchange.asmx"


def sandbox_config_yaml(
    ultimo_url: str,
    ews_url: str | None,
    rooms: Iterable[tuple[str, str]] = ROOMS,
    db_url: str = "sqlite:///syncd-sandbox.db",
    graph: dict[str, str] | None = None,
) -> str:
    """A complete syncd configuration (YAML text) for sandboxes at `ultimo_url` and
    `ews_url`, with `rooms` as (mailbox, space_id) pairs; given `graph` (a `calendar.graph`
    section) the calendar backend is Graph. The sandbox's keys and passwords are written
    inline: they guard nothing."""
    config: dict[str, Any] = {
        "database": {"url": db_url},
        "ultimo": {
            "base_url": ultimo_url,
            "api_key": API_KEY,
            "timezone": TIMEZONE,
            "daily_call_budget": 5000,
            "calls_per_10s": 50,
        },
        "calendar": {
            "backend": "ews",
            "ews": {
                "endpoint": ews_url or NO_EWS_ENDPOINT,
                "auth": "basic",
                "username": EWS_USER,
                "password": EWS_PASSWORD,
                "access": "impersonation",
                "server_version": "15.1.2507.6",
            },
        },
        "rooms": [{"mailbox": mailbox, "space_id": space} for mailbox, space in rooms],
        "applicants": {"default": "ULTIMO", "by_email": {"alice@example.com": "00042"}},
        "sync": {"interval_seconds": 60, "past_days": 1, "future_days": 30},
        # The service's /healthz, /metrics and /status (the default, written out to be seen).
        "service": {"health_listen": HEALTH_LISTEN},
    }
    if graph is not None:
        # The EWS section stays when EWS serves the same calendars: switching `backend` back and
        # forth is then the whole move between the two (a rehearsal of a site's migration).
        ews_section = config["calendar"]["ews"] if ews_url is not None else None
        config["calendar"] = {"backend": "graph", "graph": dict(graph)}
        if ews_section is not None:
            config["calendar"]["ews"] = ews_section
    header = "# syncd configuration for the bundled sandboxes (loopback only; the secrets are the sandbox's)\n"
    if ews_url is None and graph is None:
        header += "# The EWS sandbox is not available: calendar.ews.endpoint points at nothing.\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def start_sandboxes(
    host: str = "127.0.0.1",
    ultimo_port: int = 0,
    ews_port: int = 0,
    rooms: Sequence[tuple[str, str]] = ROOMS,
) -> tuple[UltimoSandbox, Any | None, str | None]:
    """Start the Ultimo sandbox with `rooms`' spaces and, when it is installed, the EWS
    sandbox with their mailboxes. Gives (ultimo, ews or None, why EWS is missing or None).
    Raises OSError when a port cannot be bound (nothing is left running then)."""
    ultimo = UltimoSandbox(host=host, port=ultimo_port, api_keys=(API_KEY,), timezone=TIMEZONE)
    for _mailbox, space in rooms:
        ultimo.add_space(space, preparation_minutes=10, cleanup_minutes=10)
    ultimo.start()
    try:
        from syncd.sandbox.ews.server import EwsSandbox
    except ImportError as exc:
        return ultimo, None, f"the EWS sandbox is not available ({exc}); serving Ultimo only"
    try:
        ews = EwsSandbox(host=host, port=ews_port, users={EWS_USER: EWS_PASSWORD}, auth="basic")
        for mailbox, _space in rooms:
            ews.add_mailbox(mailbox)
        ews.start()
    except BaseException:
        ultimo.stop()
        raise
    return ultimo, ews, None


def start_graph(host: str, port: int, ews: Any | None, rooms: Sequence[tuple[str, str]] = ROOMS) -> Any:
    """The Graph sandbox on `host:port`, serving the EWS sandbox's store when there is one, with
    `rooms`' mailboxes and the sandbox app (GRAPH_CLIENT_ID / GRAPH_SECRET) scoped to them.
    Raises OSError when the port cannot be bound."""
    from syncd.sandbox.graph.server import GraphSandbox

    graph = GraphSandbox(host=host, port=port, store=ews.store if ews is not None else None,
                         timezone=TIMEZONE)
    for mailbox, _space in rooms:
        graph.add_mailbox(mailbox)
    graph.register_app(GRAPH_CLIENT_ID, secret=GRAPH_SECRET, scope=[m for m, _s in rooms])
    return graph.start()


def cmd_sandbox(args: argparse.Namespace, out: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Serve the sandboxes until SIGINT or SIGTERM (or `stop` is set); gives 0, or 3 when
    a port cannot be bound."""
    out = out or sys.stdout
    host = getattr(args, "host", None) or "127.0.0.1"
    backend = getattr(args, "backend", None) or "ews"
    try:
        ultimo, ews, note = start_sandboxes(host, getattr(args, "ultimo_port", 0) or 0,
                                            getattr(args, "ews_port", 0) or 0)
    except OSError as exc:
        print(f"syncd sandbox: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    graph = None
    if backend == "graph":
        try:
            graph = start_graph(host, getattr(args, "graph_port", 0) or 0, ews)
        except OSError as exc:
            if ews is not None:
                ews.stop()
            ultimo.stop()
            print(f"syncd sandbox: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
            return 3
    stop = stop or threading.Event()
    previous = _install_signal_handlers(stop)
    try:
        spaces = ", ".join(space for _m, space in ROOMS)
        mailboxes = ", ".join(m for m, _s in ROOMS)
        print(f"Ultimo sandbox: {ultimo.url}  (ApiKey {API_KEY}; spaces {spaces})", file=out)
        if ews is not None:
            print(f"EWS sandbox:    {ews.url}  (basic auth {EWS_USER} / {EWS_PASSWORD}; rooms {mailboxes})",
                  file=out)
        else:
            print(f"note: {note}", file=out)
        if graph is not None:
            shared = " (the same calendars as EWS)" if ews is not None else ""
            print(f"Graph sandbox:  {graph.graph_url}/v1.0  (tenant {graph.tenant_id}, app {GRAPH_CLIENT_ID} / "
                  f"{GRAPH_SECRET}; rooms {mailboxes}{shared}; CA {graph.ca_file})", file=out)
        if getattr(args, "seed", False):
            _seed(ultimo, ews, out)
        section = graph.calendar_config(GRAPH_CLIENT_ID, GRAPH_SECRET) if graph is not None else None
        config = sandbox_config_yaml(ultimo.url, ews.url if ews is not None else None, graph=section)
        target = getattr(args, "write_config", None)
        if target:
            path = Path(target).absolute()
            try:
                _write(path, config)
            except OSError as exc:
                print(f"syncd sandbox: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
                return 2
            print(f"Configuration: {path}", file=out)
            _next_steps(path, out)
        else:
            _next_steps(None, out)
            print("\nA configuration that points at them (save it as config.yaml):\n", file=out)
            print(config, file=out)
        print("Serving until Ctrl-C or SIGTERM.", file=out, flush=True)
        stop.wait()
        print("Stopping the sandboxes.", file=out, flush=True)
    finally:
        _restore_signal_handlers(previous)
        if graph is not None:
            graph.stop()
        if ews is not None:
            ews.stop()
        ultimo.stop()
    return 0


def _seed(ultimo: UltimoSandbox, ews: Any | None, out: TextIO) -> None:
    if ews is None:
        print("note: not seeded: the EWS sandbox (which holds the calendars) is not available", file=out)
        return
    from syncd.sandbox.seed import seed

    told = seed(ultimo, ews, datetime.now(UTC))
    print("Seeded with the demo's bookings, from tomorrow on:", file=out)
    for line in told:
        print(f"  {line}", file=out)


def _write(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _next_steps(path: Path | None, out: TextIO) -> None:
    """Three lines: what to run next against the sandboxes."""
    if path is None:
        config = ""
        print(file=out)
    else:
        config = "" if path == Path("config.yaml").absolute() else f" --config {path}"
    print(f"Next: syncd{config} check        # reads both sandboxes: rooms, reservations, events", file=out)
    print(f"      syncd{config} reconcile    # one sync; then syncd{config} conflicts list", file=out)
    print(f"      syncd{config} run          # the service; curl -s {HEALTH_LISTEN}/metrics", file=out)


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}   # signals reach the main thread only; the caller stops us through `stop`
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
