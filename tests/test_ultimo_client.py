"""The Ultimo client (syncd.ultimo.client) against the Ultimo sandbox over real loopback HTTP.

Contract tests: every workflow, every error class, retries and backoff (a fake sleep
records the waits, so nothing here waits for real except the one timeout test), the
rate limiter and the budget on every attempt, window splitting, and the API key never
leaving the request headers.
"""

from __future__ import annotations

import email.utils
import json
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import structlog

from syncd.config.schema import UltimoConfig
from syncd.core.model import NewReservation, TimeWindow
from syncd.errors import (
    BudgetExhausted,
    ConfigError,
    CredentialsError,
    ReservationInPast,
    RoomUnavailable,
    UltimoAuthError,
    UltimoNotFound,
    UltimoProtocolError,
    UltimoQuotaExceeded,
    UltimoRejected,
    UltimoTransient,
    UltimoUnreachable,
)
from syncd.sandbox.httpbase import LoopbackServer, Response, html_error_page, json_response
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.store.schema import Base
from syncd.ultimo import wire as wire
from syncd.ultimo.budget import DailyBudget, RateLimiter
from syncd.ultimo.client import UltimoClient, UltimoOutcomeUnknown

KEY = "k3y-Sup3rSecret-7f41c9"
AMS = ZoneInfo("Europe/Amsterdam")
# Nine o'clock local time, three days ahead: always in the future for the sandbox.
DAY = (datetime.now(AMS) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)


def at(hour: float, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, minutes=int(hour * 60) - 9 * 60)


def window(days: int = 2) -> TimeWindow:
    return TimeWindow(DAY - timedelta(days=1), DAY + timedelta(days=days))


def new(start: datetime, end: datetime, space: str = "C-25", ext: str = "sx-1") -> NewReservation:
    return NewReservation(ext, space, start, end, "Team meeting", "00042")


class Waits(list):
    """A fake sleep: records the seconds it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sandbox():
    with UltimoSandbox(api_keys=(KEY,)) as sb:
        sb.add_space("C-25")                       # 10 min preparation and cleanup
        sb.add_space("C-26", 0, 0)                 # no buffers
        yield sb


def config(url: str, **overrides) -> UltimoConfig:
    values = {"base_url": url, "api_key": KEY, "max_retries": 3, "timeout_seconds": 5.0}
    values.update(overrides)
    return UltimoConfig(**values)


@pytest.fixture
def make_client(sandbox):
    clients: list[UltimoClient] = []

    def make(url: str | None = None, *, budget=None, limiter=None, **overrides) -> UltimoClient:
        waits = Waits()
        client = UltimoClient(
            config(url or sandbox.url, **overrides), budget=budget, limiter=limiter,
            sleep=waits, backoff_base=0.5, backoff_cap=8.0,
        )
        client.waits = waits   # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(make_client):
    return make_client()


# --- workflows --------------------------------------------------------------------------------


def test_create_gives_a_zero_padded_string_id_and_books_the_room(sandbox, client):
    uid = client.create_reservation(new(at(10), at(11)))
    assert isinstance(uid, str) and len(uid) == 11 and uid.startswith("0000")
    [row] = sandbox.reservations("C-25")
    assert row["ultimo_id"] == uid
    assert row["external_id"] == "sx-1"
    assert (row["start"], row["end"]) == (at(10), at(11))
    assert row["applicant_id"] == "00042" and row["description"] == "Team meeting"
    sent = sandbox.journal[-1].request
    # Times go out in the UTC Z form; the applicant under both documented names.
    assert sent["StartTime"] == at(10).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sent["ApplicantId"] == sent["Applicant"] == "00042"
    assert client.calls == 1


@pytest.mark.parametrize("field", ["ApplicantId", "Applicant"])
def test_applicant_field_can_be_pinned(sandbox, make_client, field):
    make_client(applicant_field=field).create_reservation(new(at(10), at(11)))
    sent = sandbox.journal[-1].request
    assert sent[field] == "00042"
    assert set(sent) & {"ApplicantId", "Applicant"} == {field}


def test_update_moves_and_cancel_removes(sandbox, client):
    uid = client.create_reservation(new(at(10), at(11)))
    client.update_reservation(uid, at(14), at(15.5))
    [row] = client.get_reservations("C-25", window())
    assert (row.ultimo_id, row.start, row.end) == (uid, at(14), at(15.5))
    client.cancel_reservation(uid)
    assert client.get_reservations("C-25", window()) == []
    assert sandbox.reservation(uid)["status"] == "Cancelled"


def test_get_reads_rows_in_utc_with_buffers_and_names(sandbox, client):
    uid = sandbox.reserve("C-25", at(9), at(10.5), description="Board", applicant_id="ULTIMO")
    sandbox.reserve("C-25", at(9, day=5), at(10, day=5))          # outside the window
    sandbox.reserve("C-26", at(9), at(10))                         # another room
    [row] = client.get_reservations("C-25", window())
    assert row.ultimo_id == uid and row.space_id == "C-25"
    assert row.start == at(9) and row.start.tzinfo is UTC
    assert row.end == at(10.5)
    assert row.start_with_preparation == at(8 + 50 / 60)
    assert row.end_with_cleanup == at(10 + 40 / 60)
    assert (row.description, row.applicant_id, row.applicant_name, row.status) == \
        ("Board", "ULTIMO", "Ultimo", "Processed")


@pytest.mark.parametrize("switch", ["lowercase_create", "misspell_preparation", "type_as_number"])
def test_documented_variants_are_read(sandbox, client, switch):
    setattr(sandbox, switch, True)
    uid = client.create_reservation(new(at(10), at(11)))
    assert uid.startswith("0000")
    [row] = client.get_reservations("C-25", window())
    assert row.start_with_preparation == at(9 + 50 / 60)
    with pytest.raises(RoomUnavailable):
        client.create_reservation(new(at(10), at(11), ext="sx-2"))


def test_numeric_ids_become_strings(sandbox, client):
    sandbox.numeric_ids = True
    uid = client.create_reservation(new(at(10), at(11)))
    assert uid == "6712"
    assert [r.ultimo_id for r in client.get_reservations("C-25", window())] == ["6712"]


@pytest.mark.parametrize("style", ["list", "missing", "null"])
def test_empty_results_in_every_documented_form(sandbox, client, style):
    sandbox.empty_style = style
    assert client.get_reservations("C-25", window()) == []


# --- business errors --------------------------------------------------------------------------


def test_1015_when_the_room_is_taken(sandbox, client):
    sandbox.reserve("C-25", at(10), at(11))
    with pytest.raises(RoomUnavailable) as caught:
        client.create_reservation(new(at(10.5), at(12)))
    assert caught.value.code == "1015" and caught.value.status == 400
    assert "not available" in str(caught.value)
    assert len(sandbox.reservations("C-25")) == 1
    assert sandbox.calls("create") == 1        # a conflict is never retried


def test_1015_for_bookings_that_merely_touch_because_of_buffers(sandbox, client):
    sandbox.reserve("C-25", at(9), at(10))
    with pytest.raises(RoomUnavailable):
        client.create_reservation(new(at(10), at(11)))
    # The same touch in a room without buffers is fine.
    sandbox.reserve("C-26", at(9), at(10))
    client.create_reservation(new(at(10), at(11), space="C-26"))


def test_1015_on_update(sandbox, client):
    sandbox.reserve("C-25", at(13), at(14))
    uid = client.create_reservation(new(at(10), at(11)))
    with pytest.raises(RoomUnavailable):
        client.update_reservation(uid, at(12.5), at(13.5))
    assert sandbox.reservation(uid)["start"] == at(10)


def test_1166_for_the_past(sandbox, client):
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    uid = sandbox.reserve("C-25", past, past + timedelta(hours=1))
    with pytest.raises(ReservationInPast) as caught:
        client.update_reservation(uid, at(10), at(11))
    assert caught.value.code == "1166"
    with pytest.raises(ReservationInPast):
        client.cancel_reservation(uid)
    with pytest.raises(ReservationInPast):
        client.create_reservation(new(past + timedelta(hours=3), past + timedelta(hours=4)))


def test_other_400_is_rejected_with_its_code(sandbox, client):
    sandbox.type_as_number = True
    with pytest.raises(UltimoRejected) as caught:
        client.create_reservation(new(at(10), at(11), space="NO-SUCH-ROOM"))
    assert type(caught.value) is UltimoRejected
    assert caught.value.code == "9002" and "NO-SUCH-ROOM" in caught.value.ultimo_message
    with pytest.raises(UltimoRejected) as caught:
        client.cancel_reservation("00000000001")
    assert caught.value.code == "9003"
    assert sandbox.calls() == 2


@pytest.mark.parametrize(("key", "code"), [("", "MissingApiKey"), ("wrong-key", "InvalidApiKey")])
def test_401_is_an_auth_error_without_retries(sandbox, make_client, key, code):
    client = make_client(api_key=key)
    with pytest.raises(UltimoAuthError) as caught:
        client.get_reservations("C-25", window())
    assert isinstance(caught.value, CredentialsError) and caught.value.exit_status == 3
    assert code in str(caught.value)
    assert sandbox.calls() == 1
    assert "wrong-key" not in str(caught.value)


def test_404_names_the_url(sandbox, make_client):
    client = make_client(sandbox.url.replace("/api/V1", "/api/V9"))
    with pytest.raises(UltimoNotFound) as caught:
        client.cancel_reservation("00000006712")
    assert "/api/V9/Action/REST_CancelReservation" in str(caught.value)
    assert caught.value.exit_status == 3
    assert KEY not in str(caught.value)


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http429", "http413"])
def test_quota_is_retried_then_reported(sandbox, client, kind):
    sandbox.inject(kind, count=10)
    with pytest.raises(UltimoQuotaExceeded):
        client.get_reservations("C-25", window())
    assert sandbox.calls() == 4 == client.calls        # max_retries=3: four attempts
    assert len(client.waits) == 3


def test_quota_then_success(sandbox, client):
    sandbox.inject("http429", count=2)
    uid = client.create_reservation(new(at(10), at(11)))    # a 429 was not taken in: safe to repeat
    assert [r["ultimo_id"] for r in sandbox.reservations()] == [uid]
    assert sandbox.calls("create") == 3


@pytest.mark.parametrize("kind", ["http500", "http503", "html", "drop"])
def test_server_failures_are_retried_with_capped_jittered_backoff(sandbox, client, kind):
    sandbox.inject(kind, count=3)
    sandbox.reserve("C-25", at(10), at(11))
    assert len(client.get_reservations("C-25", window())) == 1
    assert sandbox.calls() == 4
    # Full jitter: each wait lies in [0, base * 2^n], n = 0, 1, 2.
    assert len(client.waits) == 3
    for n, wait in enumerate(client.waits):
        assert 0 <= wait <= 0.5 * 2**n


def test_backoff_is_capped(sandbox, make_client):
    client = make_client(max_retries=8)
    sandbox.inject("http500", count=8)
    client.get_reservations("C-25", window())
    assert max(client.waits) <= 8.0
    assert len(client.waits) == 8


def test_persistent_5xx_ends_as_transient(sandbox, client):
    sandbox.inject("html", count=10)
    with pytest.raises(UltimoTransient) as caught:
        client.update_reservation("00000006712", at(10), at(11))
    assert "502" in str(caught.value) and "HTML page" in str(caught.value)
    assert "<html" not in str(caught.value)


def test_retry_after_in_seconds_is_honoured(sandbox, client):
    sandbox.inject("http503", retry_after=7)
    client.get_reservations("C-25", window())
    assert client.waits == [7.0]


def test_retry_after_as_http_date_is_honoured(sandbox):
    fixed_now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    waits = Waits()
    client = UltimoClient(config(sandbox.url), sleep=waits, now=lambda: fixed_now)
    sandbox.inject("http429", retry_after=email.utils.format_datetime(fixed_now + timedelta(seconds=30), usegmt=True))
    with client:
        client.get_reservations("C-25", window())
    assert waits == [30.0]


def test_retry_after_beyond_the_cap_gives_up_at_once(sandbox, client):
    sandbox.inject("http429", count=5, retry_after=3600)
    with pytest.raises(UltimoQuotaExceeded) as caught:
        client.get_reservations("C-25", window())
    assert caught.value.retry_after == 3600
    assert sandbox.calls() == 1 and client.waits == []


def test_timeout_on_a_slow_answer_is_retried(sandbox, make_client):
    client = make_client(timeout_seconds=0.2)
    sandbox.inject("slow", workflow="get", delay=3)
    assert client.get_reservations("C-25", window()) == []
    assert sandbox.calls("get") == 2 and len(client.waits) == 1


def test_slow_timeouts_end_as_transient(sandbox, make_client):
    client = make_client(timeout_seconds=0.1, max_retries=1)
    sandbox.inject("slow", count=2, delay=3)
    with pytest.raises(UltimoTransient, match="did not answer"):
        client.get_reservations("C-25", window())


@pytest.mark.parametrize(("kind", "created"), [("slow", 1), ("drop_after", 1), ("http503_after", 1), ("drop", 0),
                                               ("http500", 0), ("http503", 0), ("html", 0)])
def test_a_create_that_may_have_arrived_is_not_repeated(sandbox, make_client, kind, created):
    client = make_client(timeout_seconds=0.2)
    sandbox.inject(kind, workflow="create", delay=3)
    with pytest.raises(UltimoOutcomeUnknown) as caught:
        client.create_reservation(new(at(10), at(11)))
    assert isinstance(caught.value, UltimoTransient)
    assert "may have been created" in str(caught.value)
    assert sandbox.calls("create") == 1               # never sent twice: no duplicate booking
    assert len(sandbox.reservations()) == created


@pytest.mark.parametrize("workflow", ["update", "cancel"])
def test_an_update_or_cancel_answered_503_after_it_took_effect_is_repeated_safely(sandbox, client, workflow):
    """Update and cancel are retried after a 5xx (see the client's docstring): the second
    attempt leaves the reservation as the first did, and nothing is created."""
    uid = sandbox.reserve("C-25", at(10), at(11))
    sandbox.inject("http503_after", workflow=workflow)
    if workflow == "update":
        client.update_reservation(uid, at(12), at(13))
        assert (sandbox.reservation(uid)["start"], sandbox.reservation(uid)["end"]) == (at(12), at(13))
    else:
        with pytest.raises(UltimoRejected):          # the repeat meets "already cancelled"
            client.cancel_reservation(uid)
        assert sandbox.reservation(uid)["status"] == "Cancelled"
    assert sandbox.calls(workflow) == 2
    assert len(sandbox.reservations()) == (1 if workflow == "update" else 0)


def test_garbage_is_a_protocol_error_without_retry(sandbox, client):
    sandbox.inject("garbage")
    with pytest.raises(UltimoProtocolError, match="not JSON"):
        client.get_reservations("C-25", window())
    assert sandbox.calls() == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (html_error_page(200, "Sign in"), "not JSON"),
        (json_response(200, {"error": "nope"}), "no 'properties'"),
        (json_response(200, [1, 2]), "not a JSON object"),
        (json_response(200, {"properties": {"Output": {"collection": "rows"}}}), "collection"),
        (json_response(200, {"properties": {"Output": {"collection": [{"UltimoId": "1"}]}}}), "StartTime"),
        (json_response(200, {"properties": {"Output": {"collection": [
            {"UltimoId": "1", "StartTime": "tomorrow", "EndTime": "later"}]}}}), "not a date"),
        (Response(302, b"", headers={"Location": "https://login.example.com/"}), "redirected"),
        (Response(400, b"<html>Bad Request</html>", "text/html"), "no JSON"),
    ],
)
def test_wrong_shaped_answers_are_protocol_errors(answer, message):
    with LoopbackServer(lambda request: answer) as server:
        client = UltimoClient(config(server.url + "/api/V1"), sleep=Waits())
        with client, pytest.raises(UltimoProtocolError, match=message) as caught:
            client.get_reservations("C-25", window())
    assert len(str(caught.value)) < 300


def test_connection_refused_is_unreachable(sandbox, make_client):
    url = sandbox.url
    sandbox.stop()
    client = make_client(url)
    with pytest.raises(UltimoUnreachable) as caught:
        client.get_reservations("C-25", window())
    assert caught.value.exit_status == 3
    assert client.calls == 4 and len(client.waits) == 3


def test_create_is_retried_when_the_connection_was_refused(sandbox):
    """Refused means nothing arrived: the create is safe to repeat once Ultimo is back."""
    url, port = sandbox.url, sandbox.port
    sandbox.stop()
    restarted = UltimoSandbox(port=port, api_keys=(KEY,))
    restarted.add_space("C-25")

    def sleep(seconds: float) -> None:
        if not restarted.running:
            restarted.start()

    try:
        with UltimoClient(config(url), sleep=sleep) as client:
            client.create_reservation(new(at(10), at(11)))
            assert client.calls == 2
            assert len(restarted.reservations()) == 1
    finally:
        restarted.stop()


def test_wrong_application_element_id_is_a_server_error(sandbox, make_client):
    client = make_client(application_element_ids={"get": "00000000-0000-0000-0000-000000000000"}, max_retries=1)
    with pytest.raises(UltimoTransient, match="500"):
        client.get_reservations("C-25", window())
    client.create_reservation(new(at(10), at(11)))   # the other workflows keep their GUIDs


# --- headers, limiter, budget -------------------------------------------------------------------


def test_headers_on_the_wire():
    seen = []

    def record(request):
        seen.append((request.path, dict(request.headers.items()), request.json()))
        if request.path.endswith("GetReservationsForSpace"):
            return json_response(200, {"properties": {"Output": {"collection": []}}})
        return json_response(200, {"properties": {}})

    with LoopbackServer(record) as server:
        cfg = config(server.url + "/api/V1", accept_language="nl-NL")
        with UltimoClient(cfg) as client:
            client.update_reservation("00000006712", at(10), at(11))
            client.cancel_reservation("00000006712")
            client.get_reservations("C-25", window())
    paths = [p for p, _h, _b in seen]
    assert paths == ["/api/V1/Action/REST_UpdateReservation", "/api/V1/Action/REST_CancelReservation",
                     "/api/V1/Action/REST_GetReservationsForSpace"]
    guids = [h["ApplicationElementId"] for _p, h, _b in seen]
    assert guids == ["3736d834-fa5e-4edc-9abd-f38962ff8afd", "5d5a10ee-7b14-4dd4-8683-33822ea56f12",
                     "860ea091-4d76-47d9-a733-c3bb18440dde"]
    for _p, headers, _b in seen:
        assert headers["ApiKey"] == KEY
        assert headers["Accept-Language"] == "nl-NL"
        assert headers["Content-Type"] == "application/json"
    assert seen[0][2] == {"UltimoId": "00000006712", "StartTime": at(10).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "EndTime": at(11).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert set(seen[2][2]) == {"SpaceId", "From", "Till"}


def test_every_attempt_goes_through_the_limiter(sandbox, make_client):
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(2, 10.0, clock=lambda: clock[0], sleep=sleep, margin=0.0)
    client = make_client(limiter=limiter)
    sandbox.inject("http500", count=2)
    client.get_reservations("C-25", window())          # 3 attempts: the third waits for the window
    assert client.calls == 3
    assert waits == [10.0]


def test_budget_counts_retries_and_survives_a_restart(sandbox, make_client, tmp_path):
    url = f"sqlite:///{tmp_path / 'syncd.db'}"
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    client = make_client(budget=DailyBudget(engine, 6))
    sandbox.inject("http503", count=2)
    client.get_reservations("C-25", window())
    assert DailyBudget(engine, 6).spent_today() == 3
    engine.dispose()
    # A restarted process: a new engine and a new client on the same file.
    engine2 = sa.create_engine(url)
    cfg = config(sandbox.url, daily_call_budget=4)
    with UltimoClient.from_config(cfg, engine2) as again:
        assert again.budget.spent_today() == 3
        again.get_reservations("C-25", window())
        before = sandbox.calls()
        with pytest.raises(BudgetExhausted):
            again.get_reservations("C-25", window())
        assert sandbox.calls() == before            # refused before anything was sent
    engine2.dispose()


# --- window splitting -------------------------------------------------------------------------


def test_more_rows_than_a_page_are_all_read_by_splitting(sandbox, client):
    first = DAY.replace(hour=7)
    booked = set()
    for n in range(250):    # 25 a day for 10 days, 30 minutes each
        start = first + timedelta(days=n // 25, minutes=30 * (n % 25))
        booked.add(sandbox.reserve("C-25", start, start + timedelta(minutes=30), force=True))
    rows = client.get_reservations("C-25", TimeWindow(DAY - timedelta(days=1), DAY + timedelta(days=11)))
    ids = [r.ultimo_id for r in rows]
    assert len(ids) == len(set(ids)) == 250
    assert set(ids) == booked
    assert [r.start for r in rows] == sorted(r.start for r in rows)
    # Each full page costs a split: a handful of calls, not hundreds.
    assert 3 <= client.calls <= 12, client.calls


def test_a_reservation_across_the_split_point_is_returned_once(sandbox, client):
    sandbox.page_cap = 3
    client_window = TimeWindow(at(8), at(16))
    long_one = sandbox.reserve("C-25", at(11), at(13), force=True)    # spans the midpoint 12:00
    for hour in (8, 9, 10, 14, 15):
        sandbox.reserve("C-25", at(hour), at(hour + 0.5), force=True)
    cfg_client = UltimoClient(config(sandbox.url, page_limit=3), sleep=Waits())
    with cfg_client:
        rows = cfg_client.get_reservations("C-25", client_window)
    assert [r.ultimo_id for r in rows].count(long_one) == 1
    assert len(rows) == 6


def test_gives_up_when_a_minute_holds_a_full_page(sandbox, make_client):
    sandbox.page_cap = 5
    for _ in range(6):
        sandbox.reserve("C-25", at(10), at(10.5), force=True)
    client = make_client(page_limit=5)
    with pytest.raises(UltimoProtocolError, match="full page"):
        client.get_reservations("C-25", window())


# --- secrets ----------------------------------------------------------------------------------


def test_the_api_key_is_never_logged_nor_in_errors(sandbox, make_client, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "syncd"):     # whatever an earlier test configured
        caplog.set_level(logging.DEBUG, logger=name)
    errors: list[BaseException] = []
    with structlog.testing.capture_logs() as events:
        client = make_client(max_retries=1)
        uid = client.create_reservation(new(at(10), at(11)))
        client.update_reservation(uid, at(11), at(12))
        client.get_reservations("C-25", window())
        for kind in ("http500", "html", "drop", "garbage", "http429"):
            sandbox.inject(kind, count=2)
            try:
                client.get_reservations("C-25", window())
            except Exception as exc:   # noqa: BLE001 - collected to inspect
                errors.append(exc)
        for call in (lambda: client.create_reservation(new(at(11), at(12), ext="x")),
                     lambda: make_client(sandbox.url + "x").get_reservations("C-25", window())):
            try:
                call()
            except Exception as exc:   # noqa: BLE001
                errors.append(exc)
        bad_key = make_client(api_key=KEY + "-old")
        try:
            bad_key.get_reservations("C-25", window())
        except UltimoAuthError as exc:
            errors.append(exc)
    assert len(errors) == 8
    assert any(e["event"] == "ultimo.call" for e in events)
    assert any(e["event"] == "ultimo.retry" for e in events)
    everything = json.dumps(events, default=str) + caplog.text + "".join(capsys.readouterr())
    everything += "".join(f"{e!s}{e!r}{e.args!r}" for e in errors)
    assert "HTTP Request: POST" in caplog.text     # httpx and httpcore were heard at DEBUG
    assert "send_request_headers" in caplog.text
    assert KEY not in everything


def test_missing_client_certificate_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="TLS files"):
        UltimoClient(config("https://api-customer.ultimo.net/api/v1", client_cert=str(tmp_path / "none.pem")))


# --- the parser on the documented variants (no HTTP) ---------------------------------------------

def rows_of(payload):
    return wire.parse_reservations(payload, "C-25", "Europe/Amsterdam")


ROW = {
    "UltimoId": "00000006712", "Description": "Team", "ApplicantId": "ULTIMO", "ApplicantName": "Ultimo",
    "StartTime": "2020-03-10T09:00:00.000000+01:00", "EndTime": "2020-03-10T10:30:00.000000+01:00",
    "StartTimeIncludingPreparationTime": "2020-03-10T08:50:00.000000+01:00",
    "EndTimeIncludingCleanupTime": "2020-03-10T10:40:00.000000+01:00", "Status": "Processed",
}


@pytest.mark.parametrize(
    "payload",
    [
        {"properties": {"Output": {"collection": [ROW]}}},
        {"Properties": {"output": {"Collection": [ROW]}}},
        {"PROPERTIES": {"OUTPUT": {"COLLECTION": [{k.lower(): v for k, v in ROW.items()}]}}},
        {"properties": {"Output": {"collection": [
            {("StartTimeIncludingPreperationTime" if k.startswith("StartTimeIncl") else k): v for k, v in ROW.items()}
        ]}}},
    ],
)
def test_parser_reads_keys_in_any_case_and_the_misspelling(payload):
    [row], raw = rows_of(payload)
    assert raw == 1
    assert row.ultimo_id == "00000006712"
    assert row.start == datetime(2020, 3, 10, 8, 0, tzinfo=UTC)
    assert row.end == datetime(2020, 3, 10, 9, 30, tzinfo=UTC)
    assert row.start_with_preparation == datetime(2020, 3, 10, 7, 50, tzinfo=UTC)
    assert row.end_with_cleanup == datetime(2020, 3, 10, 9, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-03-10T09:00:00.000000+01:00", datetime(2020, 3, 10, 8, 0, tzinfo=UTC)),
        ("2020-03-10T09:00:00.0000000+01:00", datetime(2020, 3, 10, 8, 0, tzinfo=UTC)),   # .NET's 7 digits
        ("2018-08-20T15:17:59Z", datetime(2018, 8, 20, 15, 17, 59, tzinfo=UTC)),
        ("2018-08-21 15:21:59", datetime(2018, 8, 21, 13, 21, 59, tzinfo=UTC)),           # summer: +02:00
        ("2018-12-21T15:21:59", datetime(2018, 12, 21, 14, 21, 59, tzinfo=UTC)),          # winter: +01:00
        ("2020-03-10T09:00:00.123456-05:00", datetime(2020, 3, 10, 14, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_times_with_and_without_offset(text, expected):
    assert wire.parse_time(text, "Europe/Amsterdam") == expected


def test_offset_less_times_follow_the_configured_zone():
    assert wire.parse_time("2020-07-01 09:00:00", "America/New_York") == datetime(2020, 7, 1, 13, 0, tzinfo=UTC)


def test_times_go_out_in_utc_z_form_without_cutting_a_window_short():
    moment = datetime(2021, 6, 14, 12, 0, 0, 250000, tzinfo=AMS)
    assert wire.format_time(moment) == "2021-06-14T10:00:00Z"
    assert wire.format_time(moment, round_up=True) == "2021-06-14T10:00:01Z"
    body = wire.get_body("C-25", moment, moment + timedelta(hours=1))
    assert body == {"SpaceId": "C-25", "From": "2021-06-14T10:00:00Z", "Till": "2021-06-14T11:00:01Z"}
    with pytest.raises(ValueError):
        wire.format_time(datetime(2021, 6, 14, 12, 0))


@pytest.mark.parametrize("payload", [
    {"properties": {"Output": {"collection": []}}},
    {"properties": {"Output": {}}},
    {"properties": {"Output": {"collection": None}}},
])
def test_every_documented_form_of_empty(payload):
    assert rows_of(payload) == ([], 0)


@pytest.mark.parametrize("payload", [
    {"properties": {"Output": None}},
    {"properties": {}},
    {"properties": None},
    {"properties": []},
    {"properties": {"Output": "none"}},
])
def test_an_answer_without_the_collection_is_malformed_not_empty(payload):
    with pytest.raises(UltimoProtocolError, match="properties|Output"):
        rows_of(payload)


def test_cancelled_rows_are_dropped_but_counted_for_the_page():
    rows = [ROW, {**ROW, "UltimoId": "2", "Status": "Cancelled"}, {**ROW, "UltimoId": "3", "Status": "Geannuleerd"}]
    found, raw = rows_of({"properties": {"Output": {"collection": rows}}})
    assert [r.ultimo_id for r in found] == ["00000006712"]
    assert raw == 3


def test_ids_stay_strings():
    assert wire.parse_create({"Properties": {"UltimoId": "00000006712"}}) == "00000006712"
    assert wire.parse_create({"properties": {"ultimoid": 6712}}) == "6712"
    [row], _ = rows_of({"properties": {"Output": {"collection": [{**ROW, "UltimoId": 42, "ApplicantId": 7}]}}})
    assert (row.ultimo_id, row.applicant_id) == ("42", "7")
    for bad in ({"Properties": {}}, {"Properties": {"UltimoId": None}}, {"Properties": {"UltimoId": True}}, {}):
        with pytest.raises(UltimoProtocolError):
            wire.parse_create(bad)


@pytest.mark.parametrize(("body", "expected"), [
    ({"message": "Room ...\r\nCause: x", "type": "3", "code": "1015"}, ("1015", "Room ... Cause: x")),
    ({"message": "m", "type": 3, "code": 1166}, ("1166", "m")),
    ({"Message": "m", "Code": "MissingApiKey"}, ("MissingApiKey", "m")),
    ("not an object", (None, "")),
])
def test_error_bodies(body, expected):
    assert wire.parse_error(body) == expected


# --- mTLS (the api- host with client certificates) ------------------------------------------------


def _pki(folder):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    cryptography = pytest.importorskip("cryptography")
    del cryptography
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def issue(name, issuer_name, issuer_key, *, ca=False, san=None, usage=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    def write(stem, key, cert):
        (folder / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(folder / f"{stem}.pem"), str(folder / f"{stem}.key")

    ca_key, ca_cert = issue("syncd test CA", None, None, ca=True)
    server = issue("127.0.0.1", ca_cert.subject, ca_key, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                   usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = issue("syncd", ca_cert.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return {"ca": write("ca", ca_key, ca_cert)[0], "server": write("server", *server),
            "client": write("client", *client)}


@pytest.fixture
def mtls_sandbox(tmp_path):
    import ssl

    files = _pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files["ca"])
    context.load_cert_chain(*files["server"])
    context.verify_mode = ssl.CERT_REQUIRED          # no client certificate, no connection
    with UltimoSandbox(api_keys=(KEY,), ssl_context=context) as sb:
        sb.add_space("C-25")
        yield sb, files


def test_mtls_with_the_client_certificate(mtls_sandbox):
    sandbox, files = mtls_sandbox
    assert sandbox.url.startswith("https://127.0.0.1:")
    cert, key = files["client"]
    with UltimoClient(config(sandbox.url, client_cert=cert, client_key=key, verify_tls=files["ca"])) as client:
        client.create_reservation(new(at(10), at(11)))
        assert len(client.get_reservations("C-25", window())) == 1


def test_mtls_without_a_client_certificate_fails(mtls_sandbox):
    sandbox, files = mtls_sandbox
    with UltimoClient(config(sandbox.url, verify_tls=files["ca"]), sleep=Waits()) as client, \
            pytest.raises(UltimoUnreachable, match="certificate") as caught:
        client.get_reservations("C-25", window())
    assert "client_cert" in str(caught.value)
    assert sandbox.calls() == 0 and client.calls == 1      # not retried: it cannot get better


def test_an_untrusted_server_certificate_is_unreachable_without_retries(mtls_sandbox):
    sandbox, files = mtls_sandbox
    cert, key = files["client"]
    waits = Waits()
    with UltimoClient(config(sandbox.url, client_cert=cert, client_key=key), sleep=waits) as client, \
            pytest.raises(UltimoUnreachable, match="certificate"):
        client.get_reservations("C-25", window())
    assert client.calls == 1 and waits == []
