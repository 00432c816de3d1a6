"""Alembic environment for syncd.

syncd runs Alembic from code (`syncd.store.db.upgrade`), handing over an open connection in
`config.attributes["connection"]` (or an engine in `config.attributes["engine"]`); the
`alembic` command line works too, from `sqlalchemy.url` or $SYNCD_DATABASE_URL.
No logging setup here: syncd's own logging stays in charge.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from syncd.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters tables by copying them; later revisions need batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SYNCD_DATABASE_URL")
    if not url:
        raise RuntimeError("no database: pass a connection, set sqlalchemy.url or $SYNCD_DATABASE_URL")
    return url


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = config.attributes.get("engine")
    if engine is None:
        from syncd.store.db import make_engine

        engine = make_engine(_url())
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
