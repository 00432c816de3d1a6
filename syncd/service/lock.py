"""One service per database: an instance lock held for the life of `syncd run`.

SQLite: an exclusive `fcntl.flock` on `<database file>.lock` (the file keeps the holder's
pid for the message a second instance prints). PostgreSQL: a session-level
`pg_try_advisory_lock` on a connection of its own, held open; the key is derived from
the database and schema, so two syncd installations in separate schemas do not collide.
Either lock disappears with the process, however it ends.

A standby (`syncd run --standby`, PostgreSQL only) waits for the lock instead of giving
up: it asks for it every `POLL_SECONDS` on a connection of its own and takes it as soon as
the active instance's session ends. How soon that is:

- the active process dies (crash, `kill -9`, OOM): its kernel closes the connection, the
  server ends the session at once; the standby holds the lock within about 1 s;
- the active machine vanishes (power, network): nothing closes the connection, so the lock
  connection asks the server for TCP keepalives (`tcp_keepalives_idle` 5 s, then every 2 s,
  3 unanswered probes) and a `tcp_user_timeout` of 10 s; the server ends the session within
  about 11 s, the standby holds the lock within about 12 s (TAKEOVER_SECONDS: 15).

The same settings on the client side let an active instance cut off from the database
notice within about as long that its lock is no longer certain (`held()` fails), and stop.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from syncd.errors import AnotherInstanceRunning, DatabaseError

LOCK_NAME = "syncd-instance"
POLL_SECONDS = 1.0            # how often a standby asks for the lock
TAKEOVER_SECONDS = 15         # documented bound: a vanished active machine to a standby holding the lock
_KEEPALIVE = {"idle": 5, "interval": 2, "count": 3, "user_timeout_ms": 10_000}
# libpq's own keepalives (this end notices a dead server) and, through `options`, the
# server's for this session (the server notices a vanished client and ends the session).
LOCK_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": _KEEPALIVE["idle"],
    "keepalives_interval": _KEEPALIVE["interval"],
    "keepalives_count": _KEEPALIVE["count"],
    "tcp_user_timeout": _KEEPALIVE["user_timeout_ms"],
    "options": (f"-c tcp_keepalives_idle={_KEEPALIVE['idle']} -c tcp_keepalives_interval={_KEEPALIVE['interval']} "
                f"-c tcp_keepalives_count={_KEEPALIVE['count']} -c tcp_user_timeout={_KEEPALIVE['user_timeout_ms']}"),
}


class StandbyStopped(Exception):
    """A standby was asked to stop before it got the lock."""


class InstanceLock:
    """A held instance lock. `release()` (or leaving the `with` block) lets go of it;
    `held()` checks it is still ours (a PostgreSQL connection can be lost)."""

    description = "no lock"

    def held(self) -> bool:
        return True

    def release(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _NoLock(InstanceLock):
    """An in-memory SQLite database: nothing to share, nothing to lock."""


class FileLock(InstanceLock):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"lock file {path}"
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise DatabaseError(f"cannot open the lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(self._fd)
            os.close(self._fd)
            self._fd = None
            who = f" (pid {holder})" if holder else ""
            raise AnotherInstanceRunning(
                f"another syncd service is already running against this database{who}: {path} is locked"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)   # closing drops the flock
        self._fd = None


def _read_pid(fd: int) -> str | None:
    try:
        data = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return data if data.isdigit() else None


class AdvisoryLock(InstanceLock):
    """The PostgreSQL instance lock. Without `stop` it is taken at once or refused
    (AnotherInstanceRunning); with `stop` (a standby) it is waited for, asking every `poll`
    seconds, calling `waiting(holder)` after each refusal, until taken or `stop` is set
    (StandbyStopped). A standby keeps waiting through database outages."""

    def __init__(self, url: Any, *, stop: threading.Event | None = None, poll: float = POLL_SECONDS,
                 waiting: Callable[[str], None] | None = None) -> None:
        # A pool of its own, of one connection that is never returned: the lock lives
        # as long as that session does.
        self._engine = create_engine(url, poolclass=NullPool, connect_args=_connect_args(url))
        self._conn: Any = None
        self.key = 0
        self.description = "PostgreSQL advisory lock"
        if stop is None:
            try:
                got = self._take()
            except SQLAlchemyError as e:
                self._close()
                raise DatabaseError(f"cannot take the instance lock in PostgreSQL: {_reason(e)}") from None
            if not got:
                holder = self._holder()
                self._close()
                raise AnotherInstanceRunning(
                    f"another syncd service is already running against this database{holder}: "
                    f"{self.description} is taken"
                )
            return
        while not stop.is_set():
            try:
                if self._take():
                    return
                holder = self._holder() or " (holder unknown)"
            except SQLAlchemyError as e:
                self._drop_connection()
                holder = f" (database unreachable: {_reason(e)})"
            if waiting is not None:
                waiting(holder.strip(" ()"))
            stop.wait(poll)
        self._close()
        raise StandbyStopped()

    def _take(self) -> bool:
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            scope = self._conn.execute(text("SELECT current_database() || '/' || current_schema()")).scalar_one()
            self.key = advisory_key(str(scope))
            self.description = f"PostgreSQL advisory lock {self.key} on {scope}"
        return bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar_one())

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None

    def _close(self) -> None:
        self._drop_connection()
        self._engine.dispose()

    def _holder(self) -> str:
        try:
            # pg_locks shows a bigint key as its high and low 32 bits.
            row = self._conn.execute(text(
                "SELECT a.pid, a.client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = :hi AND l.objid = :lo AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ), {"hi": (self.key >> 32) & 0xFFFFFFFF, "lo": self.key & 0xFFFFFFFF}).first()
        except SQLAlchemyError:
            return ""
        if row is None:
            return ""
        return f" (server process {row[0]}, client {row[1] or 'local socket'})"

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            got = self._conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
            )).scalar_one()
        except SQLAlchemyError:
            return False
        return bool(got)

    def release(self) -> None:
        try:
            if self._conn is not None:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        except SQLAlchemyError:
            pass   # a lost connection already released it
        finally:
            self._close()


def _connect_args(url: Any) -> dict[str, Any]:
    """LOCK_CONNECT_ARGS, keeping the URL's own `options` (e.g. a search_path) before ours."""
    args = dict(LOCK_CONNECT_ARGS)
    own = make_url(url).query.get("options") if isinstance(url, str) else url.query.get("options")
    if isinstance(own, tuple):
        own = " ".join(own)
    if own:
        args["options"] = f"{own} {args['options']}"
    return args


def _reason(e: SQLAlchemyError) -> str:
    orig = getattr(e, "orig", None) or e
    return " ".join(str(orig).split("\n")[0].split()) or type(orig).__name__


def advisory_key(scope: str) -> int:
    """A signed 64-bit key for `scope` (stable across processes and versions)."""
    digest = hashlib.sha256(f"{LOCK_NAME}:{scope}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def supports_standby(url: str) -> bool:
    """Whether a standby can wait for this database's lock (PostgreSQL only)."""
    return make_url(url).get_backend_name() == "postgresql"


def acquire(url_or_engine: str | Engine, *, stop: threading.Event | None = None,
            waiting: Callable[[str], None] | None = None, poll: float = POLL_SECONDS) -> InstanceLock:
    """Take the instance lock for the database at `url_or_engine`.

    Raises AnotherInstanceRunning when another process holds it, DatabaseError when it
    cannot be taken at all (unreachable PostgreSQL, unwritable folder). With `stop` (a
    standby; PostgreSQL only) it waits for the lock instead, and raises StandbyStopped
    when `stop` is set first."""
    url = url_or_engine.url if isinstance(url_or_engine, Engine) else make_url(url_or_engine)
    backend = url.get_backend_name()
    if stop is not None and backend != "postgresql":
        raise DatabaseError(f"a standby needs PostgreSQL, not {backend}")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            return _NoLock()
        db_file = Path(os.path.expanduser(url.database))
        return FileLock(db_file.with_name(db_file.name + ".lock"))
    if backend == "postgresql":
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return AdvisoryLock(url, stop=stop, waiting=waiting, poll=poll)
    raise DatabaseError(f"no instance lock for database backend {backend}")
