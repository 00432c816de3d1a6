"""The standby's wait (`syncd run --standby`, `service.standby`; PostgreSQL only).

While another instance holds the instance lock the standby tells systemd it is up
(READY=1 with a standby status, and watchdog pings), logs what it waits for, and asks for
the lock every second (`syncd.service.lock`). How soon it gets it is documented there.
"""

from __future__ import annotations

import threading

import structlog

from syncd.service import lock
from syncd.service.sdnotify import Notifier

log = structlog.get_logger("syncd.daemon")


def wait_for_lock(url: str, stop: threading.Event, notifier: Notifier) -> lock.InstanceLock | None:
    """The instance lock, at once when free, else once the holder's session ends; None
    when `stop` is set first."""
    seen: list[str] = []

    def waiting(holder: str) -> None:
        if not seen:
            notifier.ready("standby: waiting for the instance lock")
            log.info("service.standby", message="standby: waiting for the active instance's lock",
                     takeover_within_s=lock.TAKEOVER_SECONDS)
        if not seen or seen[-1] != holder:
            log.info("service.standby_waiting", holder=holder)
            seen.append(holder)
        if notifier.watchdog_seconds:
            notifier.watchdog()

    try:
        held = lock.acquire(url, stop=stop, waiting=waiting)
    except lock.StandbyStopped:
        log.info("service.stopped", standby=True)
        return None
    if seen:
        log.info("service.took_over", message="standby took over: the instance lock is ours", lock=held.description)
        notifier.status("took over the instance lock; starting")
    return held
