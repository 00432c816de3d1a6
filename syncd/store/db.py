"""The database: engines for SQLite and PostgreSQL, sessions, and the schema's version.

    make_engine(url) -> Engine
    session_factory(engine) -> sessionmaker
    upgrade(engine) -> str                    the revision reached
    current_revision(engine) / head_revision() / schema_is_current(engine)
    open_database(cfg, upgrade_if_behind=True) -> Engine    what reconcile and run use

Every failure to open or migrate the database is a DatabaseError with one line that
names the database (never its password).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

import syncd
from syncd.config.schema import Config
from syncd.errors import DatabaseError

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


def make_engine(url: str) -> Engine:
    """An engine for `url` (sqlite:/// or postgresql[+psycopg]://).

    SQLite connections use WAL, enforce foreign keys and wait for a busy lock; PostgreSQL
    goes through psycopg 3. Connects lazily. Raises DatabaseError for a bad URL."""
    try:
        parsed = _normalise(make_url(url))
    except (ArgumentError, ValueError) as e:
        raise DatabaseError(f"bad database URL: {e}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}
        )
    raise DatabaseError(f"unsupported database {describe(parsed)}: use sqlite:/// or postgresql+psycopg://")


def _normalise(url: URL) -> URL:
    # Plain postgresql:// would pick psycopg2, which syncd does not install.
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        # WAL lets `syncd status` read while the service writes.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cur.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def describe(url: str | URL) -> str:
    """The URL as it may be shown: password masked; a SQLite URL as its file path."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database or ':memory:'}"
    return parsed.render_as_string(hide_password=True)


def database_error(exc: BaseException, url: str | URL, doing: str = "open") -> DatabaseError:
    """A DatabaseError for `exc` in one line: what, which database, and the driver's reason."""
    orig = getattr(exc, "orig", None) or exc
    reason = " ".join(str(orig).split("\n")[0].split()) or type(orig).__name__
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            pass
    password = getattr(url, "password", None)
    if password:
        reason = reason.replace(str(password), "***")
    where = describe(url)
    if isinstance(url, URL) and url.get_backend_name() == "sqlite" and url.database:
        folder = Path(url.database).parent
        if not folder.is_dir():
            reason = f"folder {folder} does not exist"
    return DatabaseError(f"cannot {doing} {where}: {reason}")


# --- migrations ---------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic script folder: `syncd/_migrations` in an installed wheel, the
    checkout's `migrations/` otherwise. Raises DatabaseError when neither exists."""
    package = Path(syncd.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseError(f"syncd's migrations are missing (looked in {package / '_migrations'})")


def _alembic_config(script_location: Path | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(script_location or migrations_dir()))
    # Alembic would otherwise configure logging from a file and reset syncd's setup.
    cfg.attributes["configure_logger"] = False
    return cfg


def head_revision(script_location: Path | None = None) -> str:
    """The newest revision the installed migrations know."""
    head = ScriptDirectory.from_config(_alembic_config(script_location)).get_current_head()
    if head is None:
        raise DatabaseError("syncd's migrations hold no revision")
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None for a database syncd never set up.

    Raises DatabaseError when the database cannot be opened."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as e:
        raise database_error(e, engine.url) from None


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision. Raises DatabaseError."""
    return current_revision(engine) == head_revision()


def upgrade(engine: Engine, script_location: Path | None = None) -> str:
    """Bring the schema to the newest revision; gives the revision reached.

    Idempotent. Raises DatabaseError when the database cannot be opened or migrated, or
    is at a revision this syncd does not know (written by a newer syncd)."""
    cfg = _alembic_config(script_location)
    script = ScriptDirectory.from_config(cfg)
    current = current_revision(engine)
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise DatabaseError(
            f"{describe(engine.url)} is at schema revision {current}, which this syncd does not know "
            "(was it written by a newer syncd?)"
        )
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except (SQLAlchemyError, CommandError) as e:
        raise database_error(e, engine.url, doing="upgrade") from None
    reached = current_revision(engine)
    if reached is None:
        raise DatabaseError(f"upgrading {describe(engine.url)} left no schema revision")
    return reached


def open_database(cfg: Config, *, upgrade_if_behind: bool = True) -> Engine:
    """The engine for `cfg.database.url`, its schema brought up to date when behind
    (or, with upgrade_if_behind=False, a DatabaseError saying to run `syncd db upgrade`)."""
    engine = make_engine(cfg.database.url)
    try:
        current = current_revision(engine)
        head = head_revision()
        if current != head:
            if not upgrade_if_behind:
                raise DatabaseError(
                    f"{describe(engine.url)} schema is at {current or 'no revision'}, newest is {head}: "
                    "run `syncd db upgrade`"
                )
            upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL, or None (PostgreSQL, in-memory)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(os.path.expanduser(parsed.database))
