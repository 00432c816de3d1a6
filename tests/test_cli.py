"""The command line: usage errors, the error translator, `db upgrade`, and `syncd check`."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import inspect

from syncd.commands import cli
from syncd.commands.check import check_rooms, check_window, cmd_check, exit_status
from syncd.commands.cli import main
from syncd.config.load import load_config
from syncd.core.model import Reservation, Room, TimeWindow
from syncd.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarUnreachable,
    DatabaseError,
    UltimoAuthError,
    UltimoUnreachable,
)
from syncd.store import db

API_KEY = "cli-test-key-7Hq2"
PASSWORD = "cli-test-pass-9Zr4"
CONFIG: dict[str, Any] = {
    "database": {"url": "sqlite:///state/syncd.db"},
    "ultimo": {"base_url": "https://customer.ultimo.com/api/V1", "api_key": "${ULTIMO_API_KEY}"},
    "calendar": {"ews": {"endpoint": "https://mail.example.com/EWS/Exchange.asmx",
                         "username": "svc@example.com", "password": "${EWS_PASSWORD}"}},
    "rooms": [{"mailbox": "room.c25@example.com", "space_id": "C-25"},
              {"mailbox": "room.c26@example.com", "space_id": "C-26"}],
    "applicants": {"default": "ULTIMO"},
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ULTIMO_API_KEY", API_KEY)
    monkeypatch.setenv("EWS_PASSWORD", PASSWORD)
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def write_config(folder: Path, **changes: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    c = copy.deepcopy(CONFIG)
    for section, value in changes.items():
        c[section] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(c))
    return path


# --- usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["db"],
        ["db", "downgrade"],
        ["conflicts"],
        ["conflicts", "export"],
        ["conflicts", "export", "--format", "xml"],
        ["conflicts", "export", "--format", "csv", "--since", "last tuesday"],
        ["conflicts", "export", "--format", "csv", "--since", "2026-02-30"],
        ["--log-level", "loud", "check"],
        ["reconcile", "--dry-run", "--bogus"],
        ["reconcile", "--room"],
        ["sandbox", "--ultimo-port", "70000"],
        ["sandbox", "--ews-port", "http"],
        ["check", "extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "error:" in err and "usage:" in err and out == ""


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("check", "db", "reconcile", "run", "status", "conflicts", "sandbox", "demo"):
        assert command in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("syncd ")


def test_python_dash_m_syncd() -> None:
    done = subprocess.run([sys.executable, "-m", "syncd", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("syncd ")
    done = subprocess.run([sys.executable, "-m", "syncd", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice" in done.stderr


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-01", date(2026, 11, 1)),
        ("2026-11-01T08:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        ("2026-11-01T08:00+01:00", datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
    ],
)
def test_since_is_parsed_before_anything_runs(value: str, expected: date | datetime) -> None:
    args = cli.build_parser().parse_args(["conflicts", "export", "--format", "json", "--since", value])
    assert args.since == expected
    if isinstance(expected, datetime):
        assert args.since.tzinfo is not None


def test_reconcile_options_parse() -> None:
    args = cli.build_parser().parse_args(["reconcile", "--room", "C-25", "--room", "room.b@example.com", "--dry-run"])
    assert args.command == "reconcile" and args.room == ["C-25", "room.b@example.com"] and args.dry_run


# --- the error translator --------------------------------------------------------------


def _interrupted(cfg: Any, args: Any) -> int:
    raise KeyboardInterrupt


def _database_down(cfg: Any, args: Any) -> int:
    raise DatabaseError("cannot open the database: it is on fire")


def _unreachable(cfg: Any, args: Any) -> int:
    raise UltimoUnreachable(f"cannot reach Ultimo with key {API_KEY}")


def _bug(cfg: Any, args: Any) -> int:
    raise ZeroDivisionError(f"oops near {PASSWORD}")


def _report_level(cfg: Any, args: Any) -> int:
    return logging.getLogger().getEffectiveLevel()


@pytest.mark.parametrize(
    "handler, status, line",
    [
        ("_interrupted", 130, "syncd: error: interrupted"),
        ("_database_down", 1, "syncd: error: cannot open the database: it is on fire"),
        ("_unreachable", 3, "syncd: error: cannot reach Ultimo with key ***"),
        ("_bug", 1, "syncd: error: unexpected ZeroDivisionError: oops near ***"),
    ],
)
def test_errors_become_one_line_and_an_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    handler: str, status: int, line: str,
) -> None:
    # `check` reads the secrets (so they are known to the scrubber); `status` reads none.
    monkeypatch.setitem(cli.HANDLERS, "check", (__name__, handler, True))
    assert main(["--config", str(write_config(tmp_path)), "check"]) == status
    err = capsys.readouterr().err
    error_lines = [x for x in err.splitlines() if x.startswith("syncd: error:")]
    if handler == "_bug":
        assert len(error_lines) == 1 and error_lines[0].startswith(line)
    else:
        assert error_lines == [line]
    assert API_KEY not in err and PASSWORD not in err
    if handler != "_bug":
        assert "Traceback" not in err


def test_log_level_option_overrides_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.HANDLERS, "status", (__name__, "_report_level", True))
    path = write_config(tmp_path, logging={"level": "warning", "format": "json"})
    assert main(["--config", str(path), "status"]) == logging.WARNING
    assert main(["--config", str(path), "--log-level", "DEBUG", "status"]) == logging.DEBUG


def test_a_command_whose_module_is_missing_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.HANDLERS, "status", ("syncd.no_such_module", "cmd", True))
    assert main(["--config", str(write_config(tmp_path)), "status"]) == 1
    assert "is not available in this build" in capsys.readouterr().err


# --- db upgrade ------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_next_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "etc" / "syncd")
    (tmp_path / "etc" / "syncd" / "state").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    out = capsys.readouterr().out
    target = tmp_path / "etc" / "syncd" / "state" / "syncd.db"
    assert target.is_file() and list(elsewhere.iterdir()) == []
    assert f"upgraded from empty to revision {db.head_revision()}" in out and str(target) in out
    assert main(["--config", str(path), "db", "upgrade"]) == 0    # twice is fine
    assert f"already at revision {db.head_revision()}" in capsys.readouterr().out
    engine = db.make_engine(f"sqlite:///{target}")
    assert {"links", "journal", "conflicts", "room_state", "runs", "ultimo_budget"} <= set(
        inspect(engine).get_table_names())
    engine.dispose()


def test_db_upgrade_in_a_missing_folder_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(write_config(tmp_path)), "db", "upgrade"]) == 1   # state/ does not exist
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "syncd: error: cannot open SQLite database" in err and "does not exist" in err


def test_db_upgrade_refused_by_postgres_hides_the_password(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, database={"url": "postgresql+psycopg://syncd:Pg-Secret-55@127.0.0.1:1/syncd"})
    assert main(["--config", str(path), "db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert "Pg-Secret-55" not in err and "127.0.0.1" in err and err.count("\n") == 1


@pytest.mark.postgres
def test_db_upgrade_on_postgres(tmp_path: Path, pg_schema_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, database={"url": pg_schema_url})
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    assert "already at revision" in capsys.readouterr().out


# --- syncd check: the logic, with small stateful fakes ---------------------------------

ROOMS = [Room("room.a@example.com", "A"), Room("room.b@example.com", "B"), Room("room.c@example.com", "C")]
WINDOW = TimeWindow(datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))


class FakeUltimo:
    def __init__(self, per_space: dict[str, list[Reservation] | Exception]) -> None:
        self.per_space = per_space
        self.asked: list[str] = []

    def get_reservations(self, space_id: str, window: TimeWindow) -> list[Reservation]:
        self.asked.append(space_id)
        answer = self.per_space.get(space_id, [])
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeCalendar:
    def __init__(self, failures: dict[str, Exception] | None = None, everything: Exception | None = None) -> None:
        self.failures = failures or {}
        self.everything = everything
        self.probed: list[str] = []

    def probe(self, mailbox: str) -> str:
        self.probed.append(mailbox)
        if self.everything:
            raise self.everything
        if mailbox in self.failures:
            raise self.failures[mailbox]
        return "calendar folder readable"

    def list_events(self, mailbox: str, window: TimeWindow) -> list[Any]:
        return [object()] * len(mailbox.split("."))     # a count that differs per room


def res(space: str, n: int) -> list[Reservation]:
    start = WINDOW.start + timedelta(hours=8)
    return [Reservation(f"{space}{i}", space, start + timedelta(hours=i), start + timedelta(hours=i, minutes=30))
            for i in range(n)]


def test_check_all_ok() -> None:
    results = check_rooms(ROOMS, FakeUltimo({"A": res("A", 3), "B": res("B", 1)}), FakeCalendar(), WINDOW)
    ok = "calendar ok (3 events in window; calendar folder readable)"
    assert [r.line() for r in results] == [
        f"room.a@example.com (A): ultimo ok (3 reservations in window), {ok}",
        f"room.b@example.com (B): ultimo ok (1 reservation in window), {ok}",
        f"room.c@example.com (C): ultimo ok (0 reservations in window), {ok}",
    ]
    assert exit_status(results) == 0


def test_check_ultimo_unreachable_is_3_and_not_retried_per_room() -> None:
    ultimo = FakeUltimo({s: UltimoUnreachable("connection refused by 127.0.0.1:9") for s in "ABC"})
    results = check_rooms(ROOMS, ultimo, FakeCalendar(), WINDOW)
    assert ultimo.asked == ["A"]        # the other rooms are not tried again
    assert "ultimo FAILED: connection refused by 127.0.0.1:9" in results[0].line()
    assert all("ultimo FAILED: not tried (failed for room.a@example.com, see above)" in r.line() for r in results[1:])
    assert all("calendar ok" in r.line() for r in results)
    assert exit_status(results) == 3


def test_check_credentials_refused_is_3() -> None:
    cal = FakeCalendar(everything=CalendarAuthError("EWS refused the credentials of svc@example.com"))
    results = check_rooms(ROOMS, FakeUltimo({}), cal, WINDOW)
    assert exit_status(results) == 3 and len(cal.probed) == 1
    results = check_rooms(ROOMS, FakeUltimo({s: UltimoAuthError("Ultimo refused the API key") for s in "ABC"}),
                          FakeCalendar(), WINDOW)
    assert exit_status(results) == 3


def test_check_one_room_failing_is_1() -> None:
    cal = FakeCalendar({"room.b@example.com": CalendarError("mailbox room.b@example.com does not exist")})
    results = check_rooms(ROOMS, FakeUltimo({}), cal, WINDOW)
    assert exit_status(results) == 1
    assert results[1].line() == ("room.b@example.com (B): ultimo ok (0 reservations in window), "
                                 "calendar FAILED: mailbox room.b@example.com does not exist")
    assert cal.probed == [r.mailbox for r in ROOMS]   # a room's own problem does not stop the others


def test_check_unexpected_client_error_is_reported_per_room() -> None:
    results = check_rooms(ROOMS, FakeUltimo({"A": ValueError("bad row")}), FakeCalendar(), WINDOW)
    assert "ultimo FAILED: unexpected ValueError: bad row" in results[0].line()
    assert exit_status(results) == 1


def test_check_an_unreachable_calendar_for_some_rooms_only_is_1() -> None:
    cal = FakeCalendar({"room.a@example.com": CalendarUnreachable("timed out")})
    # The first failure is system-wide, so the rest are marked the same without a wait.
    results = check_rooms(ROOMS, FakeUltimo({}), cal, WINDOW)
    assert exit_status(results) == 3 and cal.probed == ["room.a@example.com"]


def test_check_window_is_the_sync_window() -> None:
    now = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    w = check_window(now, 1, 30)
    assert w.start == now - timedelta(days=1) and w.end == now + timedelta(days=30)


def test_cmd_check_prints_and_creates_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, path = load_config(str(write_config(tmp_path)))
    ultimo = FakeUltimo({"C-25": res("C-25", 2)})
    status = cmd_check(cfg, type("A", (), {"config_path": path})(), ultimo=ultimo, calendar=FakeCalendar(),
                       now=lambda: datetime(2026, 11, 20, 12, tzinfo=UTC))
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[0] == f"configuration: {path} is valid, 2 room(s)"
    assert "not created yet" in out[1]
    assert out[2].startswith("window: 2026-11-19 12:00 to 2026-12-20 12:00 UTC")
    assert out[3] == ("room.c25@example.com (C-25): ultimo ok (2 reservations in window), "
                      "calendar ok (3 events in window; calendar folder readable)")
    assert not (tmp_path / "state").exists()


# --- syncd check against the real Ultimo client and its sandbox --------------------------


@pytest.fixture
def ultimo_sandbox():
    sandbox_mod = pytest.importorskip("syncd.sandbox.ultimo.server")
    sandbox = sandbox_mod.UltimoSandbox(api_keys=(API_KEY,)).start()
    sandbox.add_space("C-25")
    sandbox.add_space("C-26")
    yield sandbox
    sandbox.stop()


def test_check_reads_the_ultimo_sandbox(tmp_path: Path, ultimo_sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.ultimo.client import UltimoClient

    now = datetime.now(UTC)
    soon = now.replace(minute=0, second=0, microsecond=0) + timedelta(days=20)
    ultimo_sandbox.reserve("C-25", soon, soon + timedelta(hours=1))
    ultimo_sandbox.reserve("C-25", soon + timedelta(days=20), soon + timedelta(days=20, hours=1))  # past the window
    ultimo = {**CONFIG["ultimo"], "base_url": ultimo_sandbox.url, "max_retries": 0}
    cfg, path = load_config(str(write_config(tmp_path, ultimo=ultimo)))
    client = UltimoClient.from_config(cfg.ultimo)
    try:
        status = cmd_check(cfg, type("A", (), {"config_path": path})(), ultimo=client, calendar=FakeCalendar(),
                           now=lambda: now)
    finally:
        client.close()
    out = capsys.readouterr().out
    assert status == 0, out
    assert "room.c25@example.com (C-25): ultimo ok (1 reservation in window, 1 call)" in out
    assert "room.c26@example.com (C-26): ultimo ok (0 reservations in window, 1 call)" in out
    assert "Ultimo calls made by this check: 2 (of ultimo.daily_call_budget 5000)" in out
    assert ultimo_sandbox.calls() == 2


def test_check_with_a_wrong_api_key_is_3(tmp_path: Path, ultimo_sandbox, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.ultimo.client import UltimoClient

    monkeypatch.setenv("ULTIMO_API_KEY", "not-the-key-at-all")
    ultimo = {**CONFIG["ultimo"], "base_url": ultimo_sandbox.url, "max_retries": 0}
    cfg, path = load_config(str(write_config(tmp_path, ultimo=ultimo)))
    client = UltimoClient.from_config(cfg.ultimo)
    try:
        status = cmd_check(cfg, type("A", (), {"config_path": path})(), ultimo=client, calendar=FakeCalendar())
    finally:
        client.close()
    out = capsys.readouterr().out
    assert status == 3, out
    assert "ultimo FAILED" in out and "not-the-key-at-all" not in out


# --- `syncd check` end to end: the command line against both sandboxes -------------------


@pytest.fixture
def sandboxes():
    from syncd.sandbox.ews.server import EwsSandbox
    from syncd.sandbox.ultimo.server import UltimoSandbox

    ultimo = UltimoSandbox(api_keys=(API_KEY,)).start()
    ews = EwsSandbox(users={"svc@example.com": PASSWORD}, auth="basic").start()
    for mailbox, space in (("room.c25@example.com", "C-25"), ("room.c26@example.com", "C-26")):
        ultimo.add_space(space)
        ews.add_mailbox(mailbox)
    yield ultimo, ews
    ews.stop()
    ultimo.stop()


def sandbox_config(folder: Path, ultimo, ews, **changes: Any) -> Path:
    c = {
        "ultimo": {**CONFIG["ultimo"], "base_url": ultimo.url, "max_retries": 0},
        "calendar": {"ews": {**CONFIG["calendar"]["ews"], "endpoint": ews.url, "auth": "basic",
                             "server_version": "15.1.2507.6"}},
    }
    c.update(changes)
    return write_config(folder, **c)


@pytest.mark.slow
def test_syncd_check_end_to_end(tmp_path: Path, sandboxes, capsys: pytest.CaptureFixture[str]) -> None:
    ultimo, ews = sandboxes
    from syncd.sandbox.ews.server import Recurrence

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # The whole sync window is read (30 days by default), not only today.
    ultimo.reserve("C-26", now + timedelta(days=25), now + timedelta(days=25, hours=1))
    ultimo.reserve("C-26", now + timedelta(days=1), now + timedelta(days=1, hours=1))
    ews.book("room.c25@example.com", subject="Stand-up", start=now + timedelta(days=2),
             end=now + timedelta(days=2, minutes=15), organizer="alice@example.com",
             recurrence=Recurrence(kind="daily", count=3))
    path = sandbox_config(tmp_path, ultimo, ews)
    assert main(["--config", str(path), "check"]) == 0
    out = capsys.readouterr().out
    assert "room.c25@example.com (C-25): ultimo ok (0 reservations in window, 1 call), calendar ok (3 events" in out
    assert "room.c26@example.com (C-26): ultimo ok (2 reservations in window, 1 call), calendar ok (0 events" in out
    assert not (tmp_path / "state").exists()      # check writes nothing, creates no database
    assert len(ultimo.reservations()) == 2 and ews.items("room.c26@example.com") == []


@pytest.mark.slow
def test_syncd_check_one_room_missing_in_exchange_is_1(tmp_path: Path, sandboxes,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ultimo, ews = sandboxes
    rooms = [*CONFIG["rooms"], {"mailbox": "room.ghost@example.com", "space_id": "C-99"}]
    ultimo.add_space("C-99")
    path = sandbox_config(tmp_path, ultimo, ews, rooms=rooms)
    assert main(["--config", str(path), "check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    ghost = next(x for x in lines if x.startswith("room.ghost@example.com"))
    assert "ultimo ok" in ghost and "calendar FAILED" in ghost
    assert sum("calendar ok" in x for x in lines) == 2


@pytest.mark.slow
def test_syncd_check_wrong_ews_password_is_3(tmp_path: Path, sandboxes, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ultimo, ews = sandboxes
    monkeypatch.setenv("EWS_PASSWORD", "wrong-password-123")
    assert main(["--config", str(sandbox_config(tmp_path, ultimo, ews)), "check"]) == 3
    captured = capsys.readouterr()
    assert captured.out.count("calendar FAILED") == 2 and captured.out.count("ultimo ok") == 2
    assert "wrong-password-123" not in captured.out + captured.err


@pytest.mark.slow
def test_syncd_check_ultimo_down_is_3(tmp_path: Path, sandboxes, capsys: pytest.CaptureFixture[str]) -> None:
    ultimo, ews = sandboxes
    path = sandbox_config(tmp_path, ultimo, ews)
    ultimo.stop()
    assert main(["--config", str(path), "check"]) == 3
    out = capsys.readouterr().out
    assert out.count("ultimo FAILED") == 2 and out.count("calendar ok") == 2
