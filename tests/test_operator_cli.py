"""What an operator meets first: `config validate` / `config show` (offline, secrets never
shown), global options on either side of the command, `--since` forms, `demo --help`, and
one clear line per system when it cannot be reached."""

from __future__ import annotations

import argparse
import copy
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd import logs
from syncd.commands.cli import build_parser, main, parse_since

REPO = Path(__file__).resolve().parent.parent
API_KEY = "op-ultimo-key-R4n8"
EWS_PASSWORD = "op-ews-pass-T7k2"
CLIENT_SECRET = "op-client-secret-W3p9"
DB_PASSWORD = "op-db-pass-M5q1"
SECRETS = (API_KEY, EWS_PASSWORD, CLIENT_SECRET, DB_PASSWORD)

BASE: dict[str, Any] = {
    "database": {"url": "sqlite:///syncd.db"},
    "ultimo": {"base_url": "https://customer.ultimo.com/api/V1", "api_key": "${ULTIMO_API_KEY}"},
    "calendar": {"ews": {"endpoint": "https://mail.example.com/EWS/Exchange.asmx", "auth": "basic",
                         "username": "svc@example.com", "password": "${EWS_PASSWORD}"}},
    "rooms": [{"mailbox": "room.c25@example.com", "space_id": "C-25"}],
    "applicants": {"default": "ULTIMO"},
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("ULTIMO_API_KEY", API_KEY)
    monkeypatch.setenv("EWS_PASSWORD", EWS_PASSWORD)
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    logs.configure("info", "auto")     # a test at --log-level debug must not leave later tests at debug


def write(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A loopback port that records whether anything connected to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield f"127.0.0.1:{sock.getsockname()[1]}", sock
    sock.close()


def connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


# --- config validate ---------------------------------------------------------------------


def test_validate_sends_nothing_and_exits_0(tmp_path: Path, listener, capsys: pytest.CaptureFixture[str]) -> None:
    address, sock = listener
    c = copy.deepcopy(BASE)
    c["ultimo"]["base_url"] = f"http://{address}/api/V1"
    c["calendar"]["ews"]["endpoint"] = f"http://{address}/EWS/Exchange.asmx"
    path = write(tmp_path, c)
    assert main(["--config", str(path), "config", "validate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: valid (1 room; calendar backend ews; database SQLite database ")
    assert not connected(sock)                         # nothing reached either system
    assert list(tmp_path.glob("*.db*")) == []          # nor created a database


def test_validate_the_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "--config", str(REPO / "config.example.yaml")]) == 0
    assert "config.example.yaml: valid" in capsys.readouterr().out


def test_validate_refuses_a_health_address_that_is_not_loopback(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {**BASE, "service": {"health_listen": "0.0.0.0:9310"}})
    assert main(["--config", str(path), "config", "validate"]) == 2
    err = capsys.readouterr().err
    assert "service.health_listen: 0.0.0.0 is not a loopback address" in err and "Traceback" not in err


# --- config show ---------------------------------------------------------------------------


def test_show_redacts_every_secret_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "ews-client-secret").write_text(CLIENT_SECRET + "\n")
    (tmp_path / "ultimo.key").write_text(API_KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("PGPASS_FOR_SYNCD", DB_PASSWORD)
    monkeypatch.setenv("ULTIMO_HOST", "ultimo.example.net")
    c = copy.deepcopy(BASE)
    c["database"]["url"] = "postgresql+psycopg://syncd:${PGPASS_FOR_SYNCD}@db.example.net/syncd"
    c["ultimo"] = {"base_url": "https://${ULTIMO_HOST}/api/V1", "api_key_file": "ultimo.key"}   # relative file
    c["calendar"]["ews"] = {"endpoint": "https://mail.example.com/EWS/Exchange.asmx", "auth": "oauth2",
                            "tenant_id": "t", "client_id": "c",
                            "client_secret_file": "${CREDENTIALS_DIRECTORY}/ews-client-secret"}
    path = write(tmp_path, c)
    assert main(["--config", str(path), "--log-level", "debug", "config", "show"]) == 0
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out + err
    shown = yaml.safe_load(out)
    assert shown["ultimo"]["api_key"] == f"<redacted from {tmp_path / 'ultimo.key'}>"
    assert shown["calendar"]["ews"]["client_secret"] == f"<redacted from {creds / 'ews-client-secret'}>"
    assert shown["calendar"]["ews"]["password"] is None
    assert shown["database"]["url"] == \
        "postgresql+psycopg://syncd:<redacted from $PGPASS_FOR_SYNCD>@db.example.net/syncd"
    assert shown["ultimo"]["base_url"] == "https://ultimo.example.net/api/V1"       # substituted
    assert shown["sync"]["future_days"] == 30 and shown["service"]["shutdown_grace_seconds"] == 10  # defaults


def test_show_names_environment_and_inline_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = copy.deepcopy(BASE)
    c["calendar"]["ews"]["password"] = EWS_PASSWORD                    # written into the file itself
    c["database"]["url"] = f"postgresql+psycopg://syncd:{DB_PASSWORD}@db/syncd"
    c["ultimo"]["api_key"] = "${ULTIMO_API_KEY:-unused-default}"
    path = write(tmp_path, c)
    assert main(["--config", str(path), "config", "show"]) == 0
    out = capsys.readouterr().out
    assert not any(secret in out for secret in SECRETS)
    shown = yaml.safe_load(out)
    assert shown["ultimo"]["api_key"] == "<redacted from $ULTIMO_API_KEY>"
    assert shown["calendar"]["ews"]["password"] == f"<redacted from {path}>"
    assert shown["database"]["url"] == f"postgresql+psycopg://syncd:<redacted from {path}>@db/syncd"


def test_show_masks_a_secret_that_reached_a_plain_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = copy.deepcopy(BASE)
    c["applicants"]["default"] = "${EWS_PASSWORD}"          # a mistake: a secret where no secret belongs
    path = write(tmp_path, c)
    assert main(["--config", str(path), "config", "show"]) == 0
    assert EWS_PASSWORD not in capsys.readouterr().out


# --- global options on either side -----------------------------------------------------------


def test_global_options_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "elsewhere").mkdir()
    path = write(tmp_path / "elsewhere", BASE)          # not ./config.yaml: only --config finds it
    assert main(["config", "validate", "--config", str(path), "--log-level", "debug"]) == 0
    assert main(["reconcile", "--log-level", "debug", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: configuration file not found" in capsys.readouterr().err
    args = build_parser().parse_args(["--log-level", "error", "--config", "a.yaml", "status", "--log-level", "debug"])
    assert (args.log_level, args.config) == ("debug", "a.yaml")      # after the command wins
    args = build_parser().parse_args(["--config", "a.yaml", "conflicts", "export", "--format", "csv"])
    assert (args.log_level, args.config) == (None, "a.yaml")         # before alone still counts


def test_a_bad_global_option_after_the_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--log-level", "loud"]) == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


# --- --since ---------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-01", date(2026, 11, 1)),
    ("2026-11-01T08:00+01:00", datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
    ("2026-11-01T08:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
    ("7d", NOW - timedelta(days=7)),
    ("24h", NOW - timedelta(hours=24)),
    ("30m", NOW - timedelta(minutes=30)),
    ("2w", NOW - timedelta(weeks=2)),
    ("yesterday", date(2026, 11, 19)),
    ("Today", date(2026, 11, 20)),
])
def test_since_forms(text: str, expected: date | datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["last tuesday", "7", "d7", "-7d", "2026-02-30", "7y"])
def test_since_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="7d, 24h"):
        parse_since(text, NOW)


def test_since_relative_filters_the_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import insert

    from syncd.config.load import load_config
    from syncd.store import db
    from syncd.store.schema import Conflict

    path = write(tmp_path, BASE)
    cfg, _ = load_config(str(path))
    engine = db.open_database(cfg)
    now = datetime.now(UTC)
    rows = [{"room": "room.c25@example.com", "space_id": "C-25", "kind": "room_unavailable", "code": "1015",
             "message": f"m{i}", "status": "open", "detected_at": now - age, "booking_key": f"k{i}"}
            for i, age in enumerate((timedelta(hours=2), timedelta(days=3), timedelta(days=10)))]
    with engine.begin() as conn:
        conn.execute(insert(Conflict), rows)
    engine.dispose()
    found = {}
    for since in ("24h", "7d", "yesterday", "30d"):
        assert main(["conflicts", "export", "--format", "json", "--since", since, "--config", str(path)]) == 0
        found[since] = sorted(r["message"] for r in yaml.safe_load(capsys.readouterr().out))
    assert found == {"24h": ["m0"], "7d": ["m0", "m1"], "yesterday": ["m0"], "30d": ["m0", "m1", "m2"]}


# --- demo --help ------------------------------------------------------------------------------


def test_demo_help_names_the_folder_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: ./syncd-demo)" in text and "temp" not in text
    assert "--config" not in text                     # the demo writes its own configuration
    assert build_parser().parse_args(["demo"]).dir == "syncd-demo"
    assert main(["demo", "--config", "x.yaml"]) == 2
    assert build_parser().parse_args(["demo", "--log-level", "debug"]).log_level == "debug"


@pytest.mark.slow
def test_demo_uses_the_folder_its_help_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0                        # cwd is tmp_path
    out = capsys.readouterr().out
    folder = tmp_path / "syncd-demo"
    assert f"Conflict report: {folder / 'conflicts.html'}" in out
    assert (folder / "config.yaml").is_file() and (folder / "syncd-demo.db").is_file()


# --- one line per unreachable system -----------------------------------------------------------


@pytest.mark.slow
def test_unreachable_systems_say_one_line_each(tmp_path: Path, listener, capsys: pytest.CaptureFixture[str]) -> None:
    address, sock = listener
    sock.close()                                   # a port where nothing listens any more
    c = copy.deepcopy(BASE)
    c["rooms"].append({"mailbox": "room.c26@example.com", "space_id": "C-26"})
    c["ultimo"].update(base_url=f"http://{address}/api/V1", max_retries=1)
    c["calendar"]["ews"].update(endpoint=f"http://{address}/EWS/Exchange.asmx", server_version="15.1.2507.6")
    c["logging"] = {"format": "json"}
    path = write(tmp_path, c)
    assert main(["--config", str(path), "check"]) == 3
    out, err = capsys.readouterr()
    assert err == ""                                # the retries' detail is at debug level
    first = next(line for line in out.splitlines() if line.startswith("room.c25"))
    assert "ultimo FAILED: cannot reach Ultimo" in first and "calendar FAILED: EWS at" in first
    assert "Reraised" not in out and "HTTPConnectionPool" not in out
    assert "Connection refused" in first
    assert main(["--config", str(path), "--log-level", "debug", "check"]) == 3
    err = capsys.readouterr().err
    assert "ews_reconnect" in err and "ultimo.retry" in err          # the detail, when asked for
