"""Logging: JSON or console lines, and no secret at any level, from syncd or any library."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog

from syncd import logs

SECRET = "S3cretPassw0rd!"
API_KEY = "ak-4f1c2d9e8b7a"


@pytest.fixture(autouse=True)
def _secrets() -> Iterator[None]:
    logs.register_secret(SECRET)
    logs.register_secret(API_KEY)
    yield
    logs.configure("info", "json")


def _json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "auto")   # pytest's captured stderr is not a terminal
    structlog.get_logger("syncd.test").info("room synced", room="room.c25@example.com", created=2)
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["event"] == "room synced" and line["room"] == "room.c25@example.com" and line["created"] == 2
    assert line["level"] == "info" and line["timestamp"].endswith("Z")


def test_console_lines_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "console")
    structlog.get_logger("syncd.test").warning("room halted", room="room.c25@example.com")
    err = capsys.readouterr().err
    assert "room halted" in err and "room=room.c25@example.com" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("warning", "json")
    structlog.get_logger("syncd.test").info("quiet")
    logging.getLogger("syncd.other").info("also quiet")
    structlog.get_logger("syncd.test").error("loud")
    assert [e["event"] for e in _json_lines(capsys.readouterr().err)] == ["loud"]


def test_structlog_fields_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", "json")
    log = structlog.get_logger("syncd.test")
    log.debug("calling", api_key=API_KEY, password="whatever-it-is", url=f"https://x/?key={API_KEY}",
              headers={"ApiKey": API_KEY, "Accept": "application/json"},
              note=f"the key {API_KEY} and the password {SECRET}")
    err = capsys.readouterr().err
    assert API_KEY not in err and SECRET not in err and "whatever-it-is" not in err
    (line,) = _json_lines(err)
    assert line["api_key"] == "***" and line["password"] == "***"
    assert line["headers"] == {"ApiKey": "***", "Accept": "application/json"}
    assert line["note"] == "the key *** and the password ***"


@pytest.mark.parametrize(
    "message, args",
    [
        ("Request headers: %s", ({"Authorization": "Basic dXNlcjpzZWNyZXQ=", "Accept": "text/xml"},)),
        ("Request headers: %s", ({"Authorization": "NTLM TlRMTVNTUAADAAAAGAAYAEgAAAA", "Accept": "text/xml"},)),
        ("> POST /api HTTP/1.1\r\nApiKey: %s\r\nAccept: */*", (API_KEY,)),
        ("token response: %s", ('{"token_type": "Bearer", "access_token": "eyJ0eXAiOiJKV1Qi.x.y"}',)),
        ("body: %s", ("grant_type=client_credentials&client_id=abc&client_secret=Zm9vYmFy&scope=x",)),
        ("login as svc with %s", (SECRET,)),
        ("GET %s", (f"https://h/api?ApiKey={API_KEY}&x=1",)),
    ],
)
def test_stdlib_records_are_scrubbed_at_debug(capsys: pytest.CaptureFixture[str], message: str, args: tuple) -> None:
    logs.configure("debug", "json")
    logging.getLogger("exchangelib.util").debug(message, *args)
    err = capsys.readouterr().err
    (line,) = _json_lines(err)
    assert line["logger"] == "exchangelib.util"
    for leaked in ("dXNlcjpzZWNyZXQ=", "TlRMTVNTUAAD", API_KEY, "eyJ0eXAi", "Zm9vYmFy", SECRET):
        assert leaked not in err
    assert "***" in line["event"]


def test_a_traceback_carrying_a_secret_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", "json")
    try:
        raise RuntimeError(f"server said no to {SECRET}")
    except RuntimeError:
        logging.getLogger("requests_ntlm").exception("failed")
        structlog.get_logger("syncd.test").exception("failed too")
    err = capsys.readouterr().err
    assert SECRET not in err
    lines = _json_lines(err)
    assert len(lines) == 2 and all("RuntimeError" in e["exception"] for e in lines)


def test_library_chatter_stays_out_below_debug(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    logging.getLogger("httpx").info("HTTP Request: POST https://h/api \"HTTP/1.1 200 OK\"")
    logging.getLogger("httpx").warning("something odd")
    assert [e["event"] for e in _json_lines(capsys.readouterr().err)] == ["something odd"]


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html>no</html>"
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_real_exchangelib_debug_output_shows_no_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    """exchangelib at DEBUG prints every request's headers, Authorization included."""
    from exchangelib import BASIC, DELEGATE, Account, Build, Configuration, Credentials, FailFast, Version

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        logs.configure("debug", "json")
        config = Configuration(
            service_endpoint=f"http://127.0.0.1:{server.server_port}/EWS/Exchange.asmx",
            credentials=Credentials("svc-syncd@example.com", SECRET), auth_type=BASIC,
            version=Version(build=Build(15, 1, 2507, 6)), retry_policy=FailFast(),
        )
        account = Account("room.c25@example.com", config=config, autodiscover=False, access_type=DELEGATE)
        with pytest.raises(Exception):  # noqa: B017 - the server answers garbage on purpose
            account.calendar.all().count()
        account.protocol.close()
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    basic = base64.b64encode(f"svc-syncd@example.com:{SECRET}".encode()).decode()
    assert "Authorization" in err                      # the header was logged ...
    assert SECRET not in err and basic not in err      # ... but not its value
    assert any(e["logger"].startswith("exchangelib") for e in _json_lines(err))


def test_scrub_text_masks_longest_secret_first() -> None:
    logs.register_secret("abc-secret")
    logs.register_secret("abc-secret-longer")
    assert logs.scrub_text("x abc-secret-longer y") == "x *** y"
