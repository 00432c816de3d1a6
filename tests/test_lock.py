"""One service per database: a second `syncd run` on the same database refuses to start,
on SQLite (a lock file) and on PostgreSQL (an advisory lock), across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from syncd.errors import AnotherInstanceRunning
from syncd.service import lock

HOLDER = textwrap.dedent("""
    import sys, time
    from syncd.service import lock
    held = lock.acquire(sys.argv[1])
    print("held", flush=True)
    sys.stdin.readline()      # hold until told to go
    held.release()
""")


def hold_in_child(url: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline() if child.stdout else ""
    if line.strip() != "held":
        child.kill()
        raise AssertionError(f"child did not take the lock: {line!r} {child.stderr.read() if child.stderr else ''}")
    return child


def test_second_instance_in_the_same_process_is_refused(db_urls: str):
    first = lock.acquire(db_urls)
    try:
        with pytest.raises(AnotherInstanceRunning) as e:
            lock.acquire(db_urls)
        assert "another syncd service is already running" in str(e.value)
        assert e.value.exit_status == 1
        assert first.held()
    finally:
        first.release()
    again = lock.acquire(db_urls)       # released: the next start succeeds
    again.release()


def test_second_process_is_refused_and_told_who_holds_it(db_urls: str):
    child = hold_in_child(db_urls)
    try:
        with pytest.raises(AnotherInstanceRunning) as e:
            lock.acquire(db_urls)
        if db_urls.startswith("sqlite"):
            assert f"pid {child.pid}" in str(e.value)
        else:
            assert "server process" in str(e.value)
    finally:
        child.communicate("go\n", timeout=10)
    lock.acquire(db_urls).release()


def test_a_killed_holder_leaves_no_stale_lock(db_urls: str):
    child = hold_in_child(db_urls)
    child.kill()
    child.wait(timeout=10)
    if child.stdout:
        child.stdout.close()
    if child.stderr:
        child.stderr.close()
    # The kernel drops the flock; PostgreSQL ends the session (give it a moment at most).
    for _ in range(50):
        try:
            lock.acquire(db_urls).release()
            break
        except AnotherInstanceRunning:
            time.sleep(0.1)
    else:
        pytest.fail("the lock of a killed process was never released")


def test_sqlite_lock_file_sits_beside_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'syncd.db'}"
    with lock.acquire(url) as held:
        assert (tmp_path / "syncd.db.lock").exists()
        assert str(tmp_path / "syncd.db.lock") in held.description


def test_in_memory_sqlite_needs_no_lock():
    with lock.acquire("sqlite://") as a, lock.acquire("sqlite:///:memory:") as b:
        assert a.held() and b.held()


@pytest.mark.postgres
def test_postgres_schemas_of_one_database_lock_separately(pg_schema_url: str, pg_url: str):
    with lock.acquire(pg_schema_url) as a:
        with lock.acquire(pg_url) as b:     # the default schema: another installation
            assert a.held() and b.held()


def test_advisory_key_is_a_stable_signed_64_bit_number():
    k = lock.advisory_key("test/public")
    assert k == lock.advisory_key("test/public") != lock.advisory_key("test/other")
    assert -(2**63) <= k < 2**63
