"""systemd's notification protocol (sd_notify), standard library only.

With `Type=notify` systemd passes a datagram socket in $NOTIFY_SOCKET (a path, or an
abstract name written with a leading `@`) and reads `KEY=value` lines from it:
READY=1 when started, WATCHDOG=1 at least every $WATCHDOG_USEC microseconds with
`WatchdogSec=`, STOPPING=1 on the way out, STATUS=... for `systemctl status`.
Without $NOTIFY_SOCKET every call is a no-op, so the service runs the same outside
systemd. A failed send is logged, never raised: notification must not stop the service.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("syncd.sdnotify")


class Notifier:
    """Sends notifications to the socket named in `env` (the process environment)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()       # abstract namespace
        elif raw.startswith("/"):
            self.address = raw
        self._watchdog = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_seconds(self) -> float | None:
        """How often to send WATCHDOG=1 (half of WATCHDOG_USEC, as systemd advises), or
        None when no watchdog is set for this process."""
        return None if self._watchdog is None else self._watchdog / 2

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines (keys upper-cased); gives whether it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as e:
            log.warning("sdnotify.failed", error=e.strerror or str(e))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process the watchdog is meant for; a child inherits the
    # environment but is not that process.
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
