"""`syncd status`: what the database says about each room and the Ultimo budget
(`syncd.service.status` collects and renders it).

Reads only (the schema is not upgraded; a database behind the code says so). When the
database cannot be read by the caller (the service's state directory belongs to its own
user), the running service is asked instead: its health endpoint's /status gives the same
data, so the output is the same.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

from syncd import logs
from syncd.config.schema import Config
from syncd.errors import DatabaseError
from syncd.service.health import parse_listen
from syncd.service.status import collect_status, render_status
from syncd.store import db

log = logs.get_logger("syncd.status")


def cmd_status(cfg: Config, args: Any, *, out: TextIO | None = None, now: datetime | None = None) -> int:
    """Print the status; gives 0 when every room is fine, 1 when a room's last sync
    failed or it is halted. Raises DatabaseError when the database cannot be read and no
    service answers on `service.health_listen`."""
    out = out or sys.stdout
    now = now or datetime.now(UTC)
    try:
        engine = db.open_database(cfg, upgrade_if_behind=False)
        try:
            data = collect_status(cfg, engine, now=now)
        finally:
            engine.dispose()
    except DatabaseError as e:
        data = _from_service(cfg, e)
    return render_status(data, out)


def _from_service(cfg: Config, unreadable: DatabaseError) -> dict[str, Any]:
    """The status from the running service's /status; raises `unreadable` (with a hint)
    when there is no service to ask or it does not answer."""
    listen = cfg.service.health_listen
    if not listen:
        raise unreadable
    host, port = parse_listen(listen)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}/status"
    try:
        response = httpx.get(url, timeout=10.0)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        log.debug("status.service_unavailable", url=url, error=str(e))
        raise DatabaseError(f"{unreadable}; and no service answered at {url} (is `syncd run` running?)") from None
    print(f"syncd status: the database is not readable here ({unreadable}); this is the service's own view "
          f"from {url}", file=sys.stderr)
    return data
