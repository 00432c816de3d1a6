"""The Ultimo sandbox (syncd.sandbox.ultimo.server) follows the documented connector, quirks
included, as seen by a plain HTTP client; and `syncd sandbox` serves it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from syncd.config.schema import Config, UltimoConfig
from syncd.core.model import TimeWindow
from syncd.sandbox.serve import cmd_sandbox, sandbox_config_yaml
from syncd.sandbox.ultimo.server import WORKFLOWS, SandboxRejected, UltimoSandbox
from syncd.ultimo.client import UltimoClient

AMS = ZoneInfo("Europe/Amsterdam")
KEY = "sandbox-key"
CREATE, UPDATE, CANCEL, GET = WORKFLOWS


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# Winter and summer days far enough ahead, with a clock set before them.
WINTER = datetime(2031, 1, 14, 9, 0, tzinfo=AMS)
SUMMER = datetime(2031, 7, 15, 9, 0, tzinfo=AMS)


@pytest.fixture
def clock():
    return Clock(datetime(2031, 1, 1, 8, 0, tzinfo=UTC))


@pytest.fixture
def sandbox(clock):
    with UltimoSandbox(clock=clock) as sb:
        sb.add_space("C-25")
        sb.add_space("D-12", preparation_minutes=0, cleanup_minutes=15)
        yield sb


@pytest.fixture
def post(sandbox):
    with httpx.Client(timeout=5) as http:
        def call(workflow: str, body, *, key: str | None = KEY, element: str | None = None, raw: bytes | None = None):
            headers = {"ApplicationElementId": element if element is not None else WORKFLOWS.get(workflow, "")}
            if key is not None:
                headers["ApiKey"] = key
            if raw is not None:
                return http.post(f"{sandbox.url}/Action/{workflow}", content=raw, headers=headers)
            return http.post(f"{sandbox.url}/Action/{workflow}", json=body, headers=headers)
        yield call


def z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_body(start: datetime, end: datetime, space: str = "C-25", ext: str = "DEMO01") -> dict:
    return {"ExternalId": ext, "Description": "Team meeting Front office", "SpaceId": space,
            "StartTime": z(start), "EndTime": z(end), "Applicant": "ULTIMO"}


def get_rows(post, space: str, since: datetime, till: datetime) -> list[dict]:
    answer = post(GET, {"SpaceId": space, "From": z(since), "Till": z(till)})
    assert answer.status_code == 200, answer.text
    return answer.json()["properties"]["Output"]["collection"]


# --- documented shapes ---------------------------------------------------------------------------


def test_create_answers_with_capital_properties_and_a_padded_string_id(sandbox, post):
    answer = post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1)))
    assert answer.status_code == 200
    assert answer.json() == {"Properties": {"UltimoId": "00000006712"}}
    second = post(CREATE, create_body(WINTER + timedelta(hours=3), WINTER + timedelta(hours=4), ext="DEMO02"))
    assert second.json() == {"Properties": {"UltimoId": "00000006713"}}
    assert [r["external_id"] for r in sandbox.reservations("C-25")] == ["DEMO01", "DEMO02"]


def test_update_and_cancel_answer_lowercase_empty_properties(sandbox, post):
    uid = post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1))).json()["Properties"]["UltimoId"]
    moved = post(UPDATE, {"UltimoId": uid, "StartTime": z(WINTER + timedelta(hours=2)),
                          "EndTime": z(WINTER + timedelta(hours=3))})
    assert (moved.status_code, moved.json()) == (200, {"properties": {}})
    assert sandbox.reservations()[0]["start"] == WINTER + timedelta(hours=2)
    cancelled = post(CANCEL, {"UltimoId": uid})
    assert (cancelled.status_code, cancelled.json()) == (200, {"properties": {}})
    assert sandbox.reservations() == []
    again = post(CANCEL, {"UltimoId": uid})
    assert again.status_code == 400 and again.json()["code"] == "9004"


def test_get_rows_carry_offset_times_in_the_sandbox_zone_and_no_external_id(sandbox, post):
    sandbox.reserve("C-25", WINTER, WINTER + timedelta(minutes=90), description="Board", applicant_id="00042")
    sandbox.reserve("C-25", SUMMER, SUMMER + timedelta(hours=1), applicant_id="ULTIMO")
    [winter] = get_rows(post, "C-25", WINTER - timedelta(days=1), WINTER + timedelta(days=1))
    assert winter == {
        "UltimoId": "00000006712", "Description": "Board", "ApplicantId": "00042", "ApplicantName": "Alice Example",
        "StartTime": "2031-01-14T09:00:00.000000+01:00", "EndTime": "2031-01-14T10:30:00.000000+01:00",
        "StartTimeIncludingPreparationTime": "2031-01-14T08:50:00.000000+01:00",
        "EndTimeIncludingCleanupTime": "2031-01-14T10:40:00.000000+01:00", "Status": "Processed",
    }
    [summer] = get_rows(post, "C-25", SUMMER - timedelta(days=1), SUMMER + timedelta(days=1))
    assert summer["StartTime"] == "2031-07-15T09:00:00.000000+02:00"


def test_both_input_time_forms_are_accepted(sandbox, post):
    local = {**create_body(WINTER, WINTER), "StartTime": "2031-01-14 09:00:00", "EndTime": "2031-01-14 10:00:00"}
    assert post(CREATE, local).status_code == 200
    assert sandbox.reservations()[0]["start"] == WINTER                       # read in Amsterdam time
    summer = {**create_body(SUMMER, SUMMER), "StartTime": "2031-07-15 09:00:00", "EndTime": "2031-07-15 10:00:00"}
    assert post(CREATE, summer).status_code == 200
    assert sandbox.reservations()[1]["start"] == SUMMER
    offset_form = {**create_body(WINTER, WINTER), "StartTime": "2031-01-15T09:00:00+01:00",
                   "EndTime": "2031-01-15T10:00:00+01:00"}
    refused = post(CREATE, offset_form)
    assert refused.status_code == 400 and refused.json()["code"] == "9001"


def test_keys_of_the_request_are_read_without_case(sandbox, post):
    body = {k.lower(): v for k, v in create_body(WINTER, WINTER + timedelta(hours=1)).items()}
    assert post(CREATE, body).status_code == 200


@pytest.mark.parametrize(("style", "expected"), [
    ("list", {"properties": {"Output": {"collection": []}}}),
    ("missing", {"properties": {"Output": {}}}),
    ("null", {"properties": {"Output": {"collection": None}}}),
])
def test_empty_result_styles(sandbox, post, style, expected):
    sandbox.empty_style = style
    answer = post(GET, {"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER + timedelta(days=1))})
    assert answer.json() == expected


def test_quirk_switches(sandbox, post):
    sandbox.lowercase_create = sandbox.numeric_ids = sandbox.misspell_preparation = sandbox.type_as_number = True
    assert post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1))).json() == {"properties": {"UltimoId": 6712}}
    [row] = get_rows(post, "C-25", WINTER, WINTER + timedelta(days=1))
    assert row["UltimoId"] == 6712 and "StartTimeIncludingPreperationTime" in row
    clash = post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1)))
    assert clash.json()["type"] == 3


# --- errors ----------------------------------------------------------------------------------------


def test_401_variants(post):
    missing = post(GET, {}, key=None)
    assert (missing.status_code, missing.json()) == (401, {"message": "Missing API key", "code": "MissingApiKey"})
    invalid = post(GET, {}, key="nope")
    assert (invalid.status_code, invalid.json()) == (401, {"message": "The API key is invalid",
                                                           "code": "InvalidApiKey"})


@pytest.mark.parametrize("element", ["not-a-guid", "", "00000000-0000-0000-0000-000000000000", WORKFLOWS[CREATE]])
def test_wrong_application_element_id_is_a_500_internal_server_error(post, element):
    answer = post(GET, {"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER)}, element=element)
    assert answer.status_code == 500
    assert set(answer.json()) == {"message", "exceptionType", "detailMessage", "type", "stackTrace", "code"}
    assert answer.json()["code"] == "InternalServerError"


def test_unknown_workflow_is_404_and_the_path_is_case_insensitive(sandbox, post):
    assert post("REST_DeleteEverything", {}).status_code == 404
    with httpx.Client() as http:
        lower = http.post(sandbox.url.replace("/api/V1", "/api/v1") + "/Action/" + GET,
                          json={"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER + timedelta(hours=1))},
                          headers={"ApiKey": KEY, "ApplicationElementId": WORKFLOWS[GET]})
    assert lower.status_code == 200


def test_1015_shape_and_buffers(sandbox, post):
    sandbox.reserve("C-25", WINTER, WINTER + timedelta(hours=1))
    touching = post(CREATE, create_body(WINTER + timedelta(hours=1), WINTER + timedelta(hours=2)))
    assert touching.status_code == 400
    assert touching.json() == {
        "message": "Room reservation cannot be requested or processed.\r\nCause: meeting room is not available.",
        "type": "3", "code": "1015",
    }
    # 10 min cleanup after the first plus 10 min preparation before the second: 20 min gap.
    assert post(CREATE, create_body(WINTER + timedelta(minutes=79), WINTER + timedelta(hours=2))).status_code == 400
    assert post(CREATE, create_body(WINTER + timedelta(minutes=80), WINTER + timedelta(hours=2))).status_code == 200
    # D-12 has cleanup only: the gap is 15 minutes.
    sandbox.reserve("D-12", WINTER, WINTER + timedelta(hours=1))
    assert post(CREATE, create_body(WINTER + timedelta(minutes=74), WINTER + timedelta(hours=2),
                                    space="D-12")).status_code == 400
    assert post(CREATE, create_body(WINTER + timedelta(minutes=75), WINTER + timedelta(hours=2),
                                    space="D-12")).status_code == 200


def test_1166_follows_the_clock(sandbox, post, clock):
    uid = sandbox.reserve("C-25", WINTER, WINTER + timedelta(hours=1))
    clock.now = WINTER + timedelta(minutes=1)
    moved = post(UPDATE, {"UltimoId": uid, "StartTime": z(WINTER + timedelta(days=1)),
                          "EndTime": z(WINTER + timedelta(days=1, hours=1))})
    assert moved.status_code == 400
    assert moved.json() == {"message": "Room reservation cannot be modified.\r\nCause: Room reservation is in the past.",
                            "type": "3", "code": "1166"}
    assert post(CANCEL, {"UltimoId": uid}).json()["code"] == "1166"
    assert post(CREATE, create_body(WINTER, WINTER + timedelta(hours=2))).json()["code"] == "1166"
    clock.now = WINTER - timedelta(minutes=1)
    assert post(CANCEL, {"UltimoId": uid}).status_code == 200


def test_other_refusals(post):
    assert post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1), space="X-1")).json()["code"] == "9002"
    assert post(UPDATE, {"UltimoId": "00000000099", "StartTime": z(WINTER), "EndTime": z(WINTER)}).json()["code"] \
        == "9003"
    assert post(CREATE, create_body(WINTER, WINTER)).json()["code"] == "9005"
    missing = {k: v for k, v in create_body(WINTER, WINTER + timedelta(hours=1)).items() if k != "SpaceId"}
    assert post(CREATE, missing).json()["code"] == "9001"
    not_json = post(CREATE, None, raw=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["type"] == "3"


# --- Get ----------------------------------------------------------------------------------------


def test_get_matches_by_overlap_and_skips_cancelled(sandbox, post):
    before = sandbox.reserve("C-25", WINTER - timedelta(hours=2), WINTER)                       # ends at From
    across = sandbox.reserve("C-25", WINTER + timedelta(minutes=30), WINTER + timedelta(hours=2))
    gone = sandbox.reserve("C-25", WINTER + timedelta(hours=3), WINTER + timedelta(hours=4))
    sandbox.cancel(gone)
    rows = get_rows(post, "C-25", WINTER + timedelta(hours=1), WINTER + timedelta(hours=5))
    assert [r["UltimoId"] for r in rows] == [across]
    assert before not in [r["UltimoId"] for r in get_rows(post, "C-25", WINTER, WINTER + timedelta(hours=1))]
    assert sandbox.reservation(gone)["status"] == "Cancelled"


def test_get_caps_at_page_cap(sandbox, post):
    sandbox.page_cap = 7
    for n in range(10):
        sandbox.reserve("C-25", WINTER + timedelta(hours=n), WINTER + timedelta(hours=n, minutes=10), force=True)
    rows = get_rows(post, "C-25", WINTER, WINTER + timedelta(days=1))
    assert len(rows) == 7
    assert rows[0]["StartTime"].startswith("2031-01-14T09:00")


def test_unknown_space_in_get(post):
    assert post(GET, {"SpaceId": "X-1", "From": z(WINTER), "Till": z(WINTER)}).json()["code"] == "9002"


# --- quotas, journal, faults ----------------------------------------------------------------------


def test_rate_limit_answers_429(clock):
    with UltimoSandbox(rate_limit=3, rate_window=600, clock=clock) as sb, httpx.Client() as http:
        sb.add_space("C-25")
        statuses = [http.post(f"{sb.url}/Action/{GET}", json={"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER)},
                              headers={"ApiKey": KEY, "ApplicationElementId": WORKFLOWS[GET]}).status_code
                    for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_daily_quota(clock):
    with UltimoSandbox(daily_limit=2, clock=clock) as sb, httpx.Client() as http:
        sb.add_space("C-25")

        def status() -> int:
            return http.post(f"{sb.url}/Action/{GET}", json={"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER)},
                             headers={"ApiKey": KEY, "ApplicationElementId": WORKFLOWS[GET]}).status_code

        assert [status(), status(), status()] == [200, 200, 429]
        assert sb.calls_today() == 2
        clock.now += timedelta(days=1)
        assert status() == 200


def test_journal_records_every_request(sandbox, post):
    post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1)))
    post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1)))
    post(GET, {"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER)}, key="bad")
    assert [(c.workflow, c.status) for c in sandbox.journal] == [(CREATE, 200), (CREATE, 400), (GET, 401)]
    assert sandbox.journal[0].request["ExternalId"] == "DEMO01"
    assert sandbox.journal[0].time.tzinfo is not None
    assert (sandbox.calls(), sandbox.calls("create"), sandbox.calls(GET)) == (3, 2, 1)
    sandbox.clear_journal()
    assert sandbox.calls() == 0


@pytest.mark.parametrize(("kind", "status", "content_type"), [
    ("http500", 500, "application/json"), ("http503", 503, "application/json"), ("html", 502, "text/html"),
    ("garbage", 200, "application/json"), ("http429", 429, "application/json"), ("http413", 413, "application/json"),
])
def test_faults_answer_as_injected_and_do_no_work(sandbox, post, kind, status, content_type):
    sandbox.inject(kind, count=2, workflow="create", retry_after=5)
    for _ in range(2):
        answer = post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1)))
        assert answer.status_code == status
        assert answer.headers["content-type"].startswith(content_type)
        if kind in ("http503", "http429", "http413"):
            assert answer.headers["retry-after"] == "5"
    assert sandbox.reservations() == []
    assert post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1))).status_code == 200   # count spent


def test_faults_only_hit_their_workflow(sandbox, post):
    sandbox.inject("http500", workflow=CREATE)
    assert post(GET, {"SpaceId": "C-25", "From": z(WINTER), "Till": z(WINTER)}).status_code == 200
    assert post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1))).status_code == 500


@pytest.mark.parametrize(("kind", "created"), [("drop", 0), ("drop_after", 1)])
def test_dropped_connections(sandbox, post, kind, created):
    sandbox.inject(kind)
    with pytest.raises(httpx.RemoteProtocolError):
        post(CREATE, create_body(WINTER, WINTER + timedelta(hours=1)))
    assert len(sandbox.reservations()) == created
    assert sandbox.journal[-1].status == 0


def test_slow_answers_arrive_late_but_the_work_is_done(sandbox):
    sandbox.inject("slow", delay=5)
    with httpx.Client(timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.post(f"{sandbox.url}/Action/{CREATE}", json=create_body(WINTER, WINTER + timedelta(hours=1)),
                  headers={"ApiKey": KEY, "ApplicationElementId": WORKFLOWS[CREATE]})
    assert len(sandbox.reservations()) == 1


def test_unknown_fault_kind_is_refused(sandbox):
    with pytest.raises(ValueError, match="unknown fault"):
        sandbox.inject("meteor")


# --- people in Ultimo, and threads ---------------------------------------------------------------


def test_person_helpers(sandbox):
    uid = sandbox.reserve("C-25", WINTER, WINTER + timedelta(hours=1))
    with pytest.raises(SandboxRejected) as caught:
        sandbox.reserve("C-25", WINTER + timedelta(minutes=30), WINTER + timedelta(hours=2))
    assert caught.value.code == "1015"
    forced = sandbox.reserve("C-25", WINTER + timedelta(minutes=30), WINTER + timedelta(hours=2), force=True)
    sandbox.move(forced, WINTER + timedelta(hours=5), WINTER + timedelta(hours=6))
    with pytest.raises(SandboxRejected):
        sandbox.move(forced, WINTER, WINTER + timedelta(hours=1))
    sandbox.cancel(uid)
    [row] = sandbox.reservations("C-25")
    assert row["ultimo_id"] == forced and row["start"] == WINTER + timedelta(hours=5)
    assert row["via"] == "ultimo" and row["external_id"] is None
    assert sandbox.reservations("D-12") == []
    with pytest.raises(ValueError):
        sandbox.reserve("C-25", datetime(2031, 2, 1, 9), datetime(2031, 2, 1, 10))
    with pytest.raises(SandboxRejected):
        sandbox.reserve("NOPE", WINTER, WINTER + timedelta(hours=1))


def test_concurrent_creates_for_one_slot_book_it_once(sandbox):
    results: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def book(n: int) -> None:
        with httpx.Client() as http:
            start.wait()
            answer = http.post(f"{sandbox.url}/Action/{CREATE}",
                               json=create_body(WINTER, WINTER + timedelta(hours=1), ext=f"E{n}"),
                               headers={"ApiKey": KEY, "ApplicationElementId": WORKFLOWS[CREATE]})
        with lock:
            results.append(answer.status_code)

    threads = [threading.Thread(target=book, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [200] + [400] * 7
    assert len(sandbox.reservations()) == 1


# --- syncd sandbox ---------------------------------------------------------------------------------


def test_sandbox_config_is_a_valid_syncd_configuration():
    text = sandbox_config_yaml("http://127.0.0.1:1234/api/V1", "http://127.0.0.1:5678/EWS/Exchange.asmx",
                               [("room.a@example.com", "A-1")], "sqlite:///x.db")
    cfg = Config.model_validate(yaml.safe_load(text))
    assert cfg.ultimo.base_url == "http://127.0.0.1:1234/api/V1"
    assert [(r.mailbox, r.space_id) for r in cfg.rooms] == [("room.a@example.com", "A-1")]
    assert cfg.database.url == "sqlite:///x.db"
    assert Config.model_validate(yaml.safe_load(sandbox_config_yaml("http://127.0.0.1:1/api/V1", None)))


def serve_in_thread(args, monkeypatch=None):
    out, stop, result = io.StringIO(), threading.Event(), {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", cmd_sandbox(args, out=out, stop=stop)))
    thread.start()
    deadline = time.monotonic() + 10
    while "Serving until" not in out.getvalue() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return out, stop, thread, result


def printed_config(text: str) -> Config:
    body = text.split("(save it as config.yaml):", 1)[1].split("Serving until", 1)[0]
    return Config.model_validate(yaml.safe_load(body))


def test_cmd_sandbox_serves_what_its_configuration_says():
    import argparse

    out, stop, thread, result = serve_in_thread(argparse.Namespace(host="127.0.0.1", ultimo_port=0, ews_port=0))
    try:
        cfg = printed_config(out.getvalue())
        with UltimoClient(cfg.ultimo) as client:
            window = TimeWindow(datetime.now(UTC), datetime.now(UTC) + timedelta(days=1))
            assert client.get_reservations(cfg.rooms[0].space_id, window) == []
        if "EWS sandbox:" in out.getvalue():
            assert cfg.calendar.ews.endpoint in out.getvalue()
    finally:
        stop.set()
        thread.join(10)
    assert result["rc"] == 0


def test_cmd_sandbox_without_the_ews_sandbox(monkeypatch):
    import argparse

    monkeypatch.setitem(sys.modules, "syncd.sandbox.ews.server", None)    # import fails
    out, stop, thread, result = serve_in_thread(argparse.Namespace(host="127.0.0.1", ultimo_port=0, ews_port=0))
    stop.set()
    thread.join(10)
    assert result["rc"] == 0
    assert "EWS sandbox is not available" in out.getvalue()
    assert printed_config(out.getvalue()).ultimo.base_url.endswith("/api/V1")


def test_cmd_sandbox_reports_a_taken_port(sandbox, capsys):
    import argparse

    rc = cmd_sandbox(argparse.Namespace(host="127.0.0.1", ultimo_port=sandbox.port, ews_port=0))
    assert rc == 3
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.slow
def test_syncd_sandbox_command_stops_cleanly_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "sandbox"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving until"):
                break
        cfg = printed_config("".join(lines))
        with UltimoClient(UltimoConfig(base_url=cfg.ultimo.base_url, api_key="sandbox-key")) as client:
            now = datetime.now(UTC)
            assert client.get_reservations("C-25", TimeWindow(now, now + timedelta(hours=1))) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
