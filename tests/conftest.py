"""Shared, generic fixtures: databases.

- `pg_url`: the PostgreSQL URL from $SYNCD_TEST_POSTGRES_URL (skips without it).
- `pg_schema_url`: a fresh PostgreSQL schema for this test only (search_path set in
  the URL), dropped afterwards.
- `tmp_db_url`: a SQLite file URL in the test's tmp_path (the file is not created).
- `built_wheel`: a wheel of syncd built once per session from a copy of the tree.
- `db_urls`: parametrized over SQLite and PostgreSQL: one URL per test, each a fresh,
  empty database (the PostgreSQL variant is marked `postgres` and skips without it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

PG_ENV = "SYNCD_TEST_POSTGRES_URL"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return url


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def tmp_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'syncd.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_urls(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'syncd.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    try:
        import hatchling  # noqa: F401
    except ImportError:
        pytest.skip("hatchling is not installed: the wheel cannot be built without the network")
    # Build from a copy: the checkout may hold other people's work in progress and a .venv.
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.db", ".pytest_cache",
                                                             "build", "dist", "tmp"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(out / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (out / "dist").glob("syncd-*.whl")
    return wheel
