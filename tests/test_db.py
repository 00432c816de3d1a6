"""The database layer on real SQLite and real PostgreSQL: migrations, models, engines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from syncd.errors import DatabaseError
from syncd.store import db
from syncd.store.schema import Base, Conflict, JournalEntry, Link, UltimoBudget

REPO = Path(__file__).resolve().parent.parent
TABLES = {"links", "journal", "conflicts", "room_state", "runs", "ultimo_budget"}
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_urls: str):
    e = db.make_engine(db_urls)
    yield e
    e.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    db.upgrade(engine)
    return engine


def link(**kw) -> Link:
    base = dict(room="room.c25@example.com", space_id="C-25", origin="exchange", state="active",
                start=T0, end=T0 + timedelta(hours=1), synced_hash="h")
    base.update(kw)
    return Link(**base)


def test_upgrade_from_empty_creates_every_table_and_is_idempotent(engine: Engine) -> None:
    assert db.current_revision(engine) is None
    assert not db.schema_is_current(engine)
    head = db.head_revision()
    assert db.upgrade(engine) == head
    assert TABLES <= set(inspect(engine).get_table_names())
    assert db.schema_is_current(engine)
    assert db.upgrade(engine) == head   # a second run changes nothing and does not fail
    assert db.current_revision(engine) == head


def test_models_and_migrations_agree(migrated: Engine) -> None:
    with migrated.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_the_comparison_would_see_a_drifted_schema(migrated: Engine) -> None:
    # Proves the agreement test can fail: an index the models name, gone from the database.
    with migrated.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_journal_status")
    with migrated.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d[0] for d in diff] == ["add_index"]


def test_utc_datetimes_round_trip_aware(migrated: Engine) -> None:
    amsterdam_morning = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    with db.session_factory(migrated)() as s:
        s.add(link(start=amsterdam_morning, end=amsterdam_morning + timedelta(minutes=30)))
        s.commit()
    with db.session_factory(migrated)() as s:
        got = s.scalars(select(Link)).one()
    assert got.start == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert got.start.tzinfo is UTC and got.end.tzinfo is UTC
    assert got.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(migrated: Engine) -> None:
    with db.session_factory(migrated)() as s:
        s.add(link(start=datetime(2026, 11, 20, 8, 0)))
        with pytest.raises(StatementError, match="naive"):
            s.commit()


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(ultimo_id="U1"), dict(ultimo_id="U1")),
        (dict(external_id="sx-1"), dict(external_id="sx-1")),
        (dict(stamp="syncd:u:1"), dict(stamp="syncd:u:1")),
        (dict(exchange_key="K"), dict(exchange_key="K")),
    ],
)
def test_unique_constraints_hold(migrated: Engine, first: dict, second: dict) -> None:
    with db.session_factory(migrated)() as s:
        s.add(link(**first))
        s.commit()
        s.add(link(**second))
        with pytest.raises(IntegrityError):
            s.commit()


def test_same_exchange_key_in_another_room_is_allowed(migrated: Engine) -> None:
    with db.session_factory(migrated)() as s:
        s.add_all([link(exchange_key="K"), link(exchange_key="K", room="room.b@example.com")])
        s.commit()
        assert len(s.scalars(select(Link)).all()) == 2


def test_foreign_keys_are_enforced_and_set_null_on_delete(migrated: Engine) -> None:
    with db.session_factory(migrated)() as s:
        s.add(JournalEntry(link_id=999, room="r", side="ultimo", action="create", payload="{}"))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        lk = link()
        s.add(lk)
        s.flush()
        s.add(Conflict(link_id=lk.id, room="r", space_id="C-25", booking_key="b", kind="x", message=""))
        s.commit()
        s.execute(delete(Link))
        s.commit()
        assert s.scalars(select(Conflict.link_id)).one() is None


def test_sqlite_uses_wal_and_foreign_keys(tmp_db_url: str) -> None:
    e = db.make_engine(tmp_db_url)
    with e.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    e.dispose()


def test_open_database_upgrades_when_behind_or_says_to(tmp_db_url: str) -> None:
    cfg = SimpleNamespace(database=SimpleNamespace(url=tmp_db_url))
    with pytest.raises(DatabaseError, match="syncd db upgrade"):
        db.open_database(cfg, upgrade_if_behind=False)
    e = db.open_database(cfg)
    assert db.schema_is_current(e)
    with db.session_factory(e)() as s:
        s.add(UltimoBudget(day="2026-11-20", calls=3))
        s.commit()
    e.dispose()
    e = db.open_database(cfg, upgrade_if_behind=False)   # current now: no complaint
    e.dispose()


def test_a_revision_from_a_newer_syncd_is_refused(migrated: Engine) -> None:
    with migrated.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseError, match="9999.*does not know"):
        db.upgrade(migrated)


def test_plain_postgresql_url_uses_psycopg3() -> None:
    e = db.make_engine("postgresql://syncd@127.0.0.1/syncd")
    assert e.dialect.driver == "psycopg"
    e.dispose()


def test_sqlite_in_a_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    e = db.make_engine(f"sqlite:///{tmp_path / 'nowhere' / 'syncd.db'}")
    with pytest.raises(DatabaseError) as info:
        db.upgrade(e)
    message = str(info.value)
    assert "\n" not in message and "nowhere" in message and "does not exist" in message


def test_postgres_refused_names_the_server_not_the_password() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    e = db.make_engine("postgresql+psycopg://syncd:Hunter2Secret@127.0.0.1:1/syncd")
    with pytest.raises(DatabaseError) as info:
        db.upgrade(e)
    message = str(info.value)
    assert "Hunter2Secret" not in message
    assert "127.0.0.1" in message and "\n" not in message


# --- the migrations as an installed wheel carries them --------------------------------


def test_installed_wheel_carries_the_migrations_and_they_run(tmp_path: Path, built_wheel: Path) -> None:
    wheel = built_wheel
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "syncd/_migrations/versions/0001_initial.py" in names
        assert "syncd/_migrations/env.py" in names
        site = tmp_path / "site"
        zf.extractall(site)
    target = tmp_path / "from-wheel.db"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        import syncd, syncd.store.db
        assert syncd.__file__.startswith({str(site)!r}), syncd.__file__
        where = syncd.store.db.migrations_dir()
        assert str(where).startswith({str(site)!r}), where
        engine = syncd.store.db.make_engine({f"sqlite:///{target}"!r})
        print(syncd.store.db.upgrade(engine), where)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    revision, where = done.stdout.split()
    assert revision == db.head_revision()
    assert where.endswith("syncd/_migrations")
    e = db.make_engine(f"sqlite:///{target}")
    assert TABLES <= set(inspect(e).get_table_names())
    e.dispose()


def test_migration_0004_keeps_old_conflicts_and_adds_what_they_clash_with(engine: Engine) -> None:
    """A database at 0003 holding a conflict upgrades to the head; the row survives, its new
    columns are empty, and a clash list can then be stored and read back."""
    from alembic import command

    from syncd.core.model import Clash, ConflictInfo
    from syncd.engine import conflicts as store

    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    assert "clashes_with" not in {c["name"] for c in inspect(engine).get_columns("conflicts")}
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO conflicts (room, space_id, booking_key, kind, message, status, detected_at, last_seen_at)"
            " VALUES ('room.c25@example.com', 'C-25', 'uid-1', 'room_unavailable', 'busy', 'open',"
            " '2026-11-20 08:00:00', '2026-11-20 08:00:00')"))
    assert db.upgrade(engine) == db.head_revision()
    with db.session_factory(engine)() as s:
        (row,) = s.scalars(select(Conflict)).all()
        assert (row.message, row.clashes_with, row.outcome) == ("busy", None, None)
        assert store.clashes_of(row) == []
        clash = Clash(kind="reservation", ultimo_id="R-7", description="Board preparation", start=T0,
                      end=T0 + timedelta(hours=1), buffer_only=True, preparation_minutes=10, cleanup_minutes=10)
        store.record(s, room=row.room, space_id="C-25", link_id=None, now=T0 + timedelta(minutes=5),
                     info=ConflictInfo(kind="room_unavailable", message="busy", booking_key="uid-1",
                                       clashes_with=(clash,)))
        s.commit()
    with db.session_factory(engine)() as s:
        (row,) = s.scalars(select(Conflict)).all()
        assert store.clashes_of(row) == [clash]
