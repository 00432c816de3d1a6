"""`syncd sandbox`: the bundled Ultimo and EWS sandboxes on loopback, until interrupted.

Prints where they listen and a complete syncd configuration that points at them, so
`syncd --config that.yaml check` (or reconcile, or run) works against them at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import yaml

from syncd.sandbox.ultimo.server import UltimoSandbox

API_KEY = "sandbox-key"
EWS_USER = "svc-syncd@example.com"
EWS_PASSWORD = "sandbox-password"
ROOMS: tuple[tuple[str, str], ...] = (("room.c25@example.com", "C-25"), ("room.d12@example.com", "D-12"))
TIMEZONE = "Europe/Amsterdam"
# Where the configuration points when the EWS sandbox is not installed: nothing listens there.
NO_EWS_ENDPOINT = "http://127.0.0.1:9/EWS/Exchange.asmx"


def sandbox_config_yaml(
    ultimo_url: str,
    ews_url: str | None,
    rooms: Iterable[tuple[str, str]] = ROOMS,
    db_url: str = "sqlite:///syncd-sandbox.db",
) -> str:
    """A complete syncd configuration (YAML text) for sandboxes at `ultimo_url` and
    `ews_url`, with `rooms` as (mailbox, space_id) pairs. The sandbox's key and password
    are written inline: they guard nothing."""
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
    }
    header = "# syncd configuration for the bundled sandboxes (loopback only; the secrets are the sandbox's)\n"
    if ews_url is None:
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


def cmd_sandbox(args: argparse.Namespace, out: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Serve both sandboxes until SIGINT or SIGTERM (or `stop` is set); gives 0, or 3 when
    a port cannot be bound."""
    out = out or sys.stdout
    host = getattr(args, "host", None) or "127.0.0.1"
    try:
        ultimo, ews, note = start_sandboxes(host, getattr(args, "ultimo_port", 0) or 0,
                                            getattr(args, "ews_port", 0) or 0)
    except OSError as exc:
        print(f"syncd sandbox: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    stop = stop or threading.Event()
    previous = _install_signal_handlers(stop)
    try:
        spaces = ", ".join(space for _m, space in ROOMS)
        print(f"Ultimo sandbox: {ultimo.url}  (ApiKey {API_KEY}; spaces {spaces})", file=out)
        if ews is not None:
            mailboxes = ", ".join(m for m, _s in ROOMS)
            print(f"EWS sandbox:    {ews.url}  (basic auth {EWS_USER} / {EWS_PASSWORD}; rooms {mailboxes})",
                  file=out)
        else:
            print(f"note: {note}", file=out)
        print("\nA configuration that points at them (save it as config.yaml):\n", file=out)
        print(sandbox_config_yaml(ultimo.url, ews.url if ews is not None else None), file=out)
        print("Serving until Ctrl-C or SIGTERM.", file=out, flush=True)
        stop.wait()
        print("Stopping the sandboxes.", file=out, flush=True)
    finally:
        _restore_signal_handlers(previous)
        if ews is not None:
            ews.stop()
        ultimo.stop()
    return 0


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
