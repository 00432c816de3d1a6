"""What is particular to the EWS backend: authentication, the requests it sends, failures.

Everything runs the real exchangelib over loopback HTTP against `EwsSandbox`. Where a test
must see the requests as sent (headers, the SOAP body), a recording HTTP hop sits between
client and sandbox; for OAuth2 it also plays Exchange Online's part of accepting the
bearer token (the sandbox speaks Basic and NTLM only), and a loopback token endpoint plays
the Microsoft identity platform.
"""

from __future__ import annotations

import base64
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import exchangelib.protocol
import exchangelib.services.common
import pytest
import requests
from exchangelib.protocol import BaseProtocol, Protocol
from pydantic import SecretStr

import syncd.calendars.ews.backend
from syncd.calendars.ews.backend import EwsCalendar
from syncd.calendars.ews.connect import WholeBody
from syncd.config.schema import EwsConfig
from syncd.core.model import NewEvent, TimeWindow
from syncd.errors import (
    CalendarAuthError,
    CalendarProtocolError,
    CalendarThrottled,
    CalendarUnreachable,
)
from syncd.sandbox.ews.server import EwsSandbox
from syncd.sandbox.httpbase import (
    LoopbackServer,
    Request,
    Response,
    garbage_response,
    html_error_page,
    json_response,
    slow,
)

AMS = ZoneInfo("Europe/Amsterdam")
ROOM = "room.c25@example.com"
USER, PASSWORD = "svc-syncd@example.com", "s3cret-Pa55word"
CLIENT_ID, CLIENT_SECRET, TOKEN = "4b1d-app", "cl1ent-S3cret-value", "tok-abc123"
S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
WEEK = TimeWindow(datetime(2027, 3, 15, tzinfo=AMS), datetime(2027, 3, 22, tzinfo=AMS))


def at(day: int, hour: int) -> datetime:
    return datetime(2027, 3, day, hour, tzinfo=AMS)


@pytest.fixture(autouse=True)
def _fresh_connections() -> Iterator[None]:
    yield
    exchangelib.protocol.close_connections()


@pytest.fixture
def sandbox() -> Iterator[EwsSandbox]:
    box = EwsSandbox(users={USER: PASSWORD}, auth="basic").start()
    box.add_mailbox(ROOM)
    try:
        yield box
    finally:
        box.stop()


def config(endpoint: str, **kw: Any) -> EwsConfig:
    values: dict[str, Any] = {"auth": "basic", "username": USER, "password": SecretStr(PASSWORD),
                              "server_version": "15.1.2507.6", "throttle_max_wait_seconds": 30}
    values.update(kw)
    return EwsConfig(endpoint=endpoint, **values)


class Backend:
    """An EwsCalendar with a recording sleep; closed by `closing`."""

    def __init__(self, cfg: EwsConfig, **kw: Any):
        self.sleeps: list[float] = []
        self.calendar = EwsCalendar(cfg, retry_sleep=self.sleeps.append, retry_wait=0.01, **kw)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    made: list[Backend] = []
    yield made
    for b in made:
        b.calendar.close()


@pytest.fixture
def make(backends: list[Backend]) -> Any:
    def _make(cfg: EwsConfig, **kw: Any) -> Backend:
        backend = Backend(cfg, **kw)
        backends.append(backend)
        return backend

    return _make


class RecordingHop:
    """A loopback HTTP hop that records each request and forwards it to the sandbox.

    With `bearer`, it only lets requests with that bearer token through (as Exchange
    Online would) and forwards them with the sandbox's Basic credentials."""

    def __init__(self, target: str, bearer: str | None = None):
        self.target = target
        self.bearer = bearer
        self.requests: list[Request] = []
        self._http = requests.Session()
        self._server = LoopbackServer(self._handle).start()
        self.url = self._server.url + "/EWS/Exchange.asmx"

    def _handle(self, request: Request) -> Response:
        self.requests.append(request)
        auth = request.header("Authorization") or ""
        if self.bearer is not None:
            if auth != f"Bearer {self.bearer}":
                return Response(401, b"", "text/plain", headers={"WWW-Authenticate": "Bearer"})
            auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers = {"Content-Type": request.header("Content-Type") or "text/xml", "Authorization": auth}
        for name in ("X-AnchorMailbox",):
            if request.header(name):
                headers[name] = request.header(name) or ""
        answer = self._http.post(self.target, data=request.body, headers=headers, timeout=10)
        return Response(answer.status_code, answer.content, answer.headers.get("Content-Type", "text/xml"))

    def close(self) -> None:
        self._server.stop()
        self._http.close()

    def envelopes(self, op: str) -> list[tuple[Request, ET.Element, ET.Element]]:
        """(request, SOAP header, operation element) for every request of `op`."""
        found = []
        for request in self.requests:
            root = ET.fromstring(request.body)
            body = root.find(f"{{{S}}}Body")
            if body is not None and len(body) and body[0].tag == f"{{{M}}}{op}":
                found.append((request, root.find(f"{{{S}}}Header"), body[0]))
        return found


@pytest.fixture
def hop(sandbox: EwsSandbox) -> Iterator[RecordingHop]:
    recorder = RecordingHop(sandbox.url)
    yield recorder
    recorder.close()


def new_event(stamp: str = "syncd:u:4711") -> NewEvent:
    return NewEvent(subject="Ultimo reservation 4711", start=at(17, 13), end=at(17, 14), stamp=stamp,
                    body="Booked in Ultimo")


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("username", [USER, "CORP\\svc-syncd"])
def test_ntlm(make: Any, username: str) -> None:
    with EwsSandbox(users={username: PASSWORD}, auth="ntlm") as box:
        box.add_mailbox(ROOM)
        box.book(ROOM, subject="Standup", start=at(16, 9), end=at(16, 10))

        ok = make(config(box.url, auth="ntlm", username=username))
        assert [e.subject for e in ok.calendar.list_events(ROOM, WEEK)] == ["Standup"]

        bad = make(config(box.url, auth="ntlm", username=username, password=SecretStr("nope")))
        with pytest.raises(CalendarAuthError):
            bad.calendar.list_events(ROOM, WEEK)
        assert bad.sleeps == []


def test_basic_against_an_ntlm_only_server_is_an_auth_error(make: Any) -> None:
    with EwsSandbox(users={USER: PASSWORD}, auth="ntlm") as box:
        box.add_mailbox(ROOM)
        backend = make(config(box.url, auth="basic"))
        with pytest.raises(CalendarAuthError) as raised:
            backend.calendar.probe(ROOM)
        assert box.url in str(raised.value) and USER in str(raised.value)


class TokenEndpoint:
    """The Microsoft identity platform's client-credentials token endpoint, on loopback."""

    def __init__(self) -> None:
        self.forms: list[dict[str, list[str]]] = []
        self._server = LoopbackServer(self._handle).start()
        self.url = self._server.url + "/tenant-1/oauth2/v2.0/token"

    def _handle(self, request: Request) -> Response:
        form = parse_qs(request.body.decode())
        self.forms.append(form)
        if form.get("client_id") != [CLIENT_ID] or form.get("client_secret") != [CLIENT_SECRET]:
            return json_response(401, {"error": "invalid_client", "error_description": "AADSTS7000215"})
        return json_response(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})

    def close(self) -> None:
        self._server.stop()


def test_oauth2_client_credentials(make: Any, sandbox: EwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")   # the loopback token endpoint is plain http
    tokens = TokenEndpoint()
    exchange_online = RecordingHop(sandbox.url, bearer=TOKEN)
    try:
        sandbox.book(ROOM, subject="Standup", start=at(16, 9), end=at(16, 10))
        cfg = config(exchange_online.url, auth="oauth2", username=None, password=None, tenant_id="tenant-1",
                     client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET), token_url=tokens.url)
        backend = make(cfg)

        assert [e.subject for e in backend.calendar.list_events(ROOM, WEEK)] == ["Standup"]
        backend.calendar.check_changes(ROOM, None)

        (form,) = tokens.forms                            # one token, reused
        assert form["grant_type"] == ["client_credentials"]
        assert form["scope"] == ["https://outlook.office365.com/.default"]
        assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in exchange_online.requests)
        for _, header, _ in exchange_online.envelopes("FindItem"):
            assert header.findtext(f".//{{{T}}}ExchangeImpersonation//{{{T}}}PrimarySmtpAddress") == ROOM

        wrong = make(cfg.model_copy(update={"client_secret": SecretStr("not-the-secret")}))
        with pytest.raises(CalendarAuthError) as raised:
            wrong.calendar.probe(ROOM)
        assert CLIENT_ID in str(raised.value) and tokens.url in str(raised.value)
        assert "not-the-secret" not in str(raised.value) and CLIENT_SECRET not in str(raised.value)
    finally:
        exchange_online.close()
        tokens.close()


@pytest.mark.parametrize("access", ["impersonation", "delegate"])
def test_impersonation_or_delegate(make: Any, sandbox: EwsSandbox, hop: RecordingHop, access: str) -> None:
    backend = make(config(hop.url, access=access))
    backend.calendar.list_events(ROOM, WEEK)
    backend.calendar.check_changes(ROOM, None)

    sent = [e for op in ("GetFolder", "FindItem", "SyncFolderItems") for e in hop.envelopes(op)]
    assert sent
    for request, header, _ in sent:
        impersonated = header.findtext(f".//{{{T}}}ExchangeImpersonation//{{{T}}}PrimarySmtpAddress")
        assert impersonated == (ROOM if access == "impersonation" else None)
        assert request.header("X-AnchorMailbox") == ROOM


def test_pinned_server_version_skips_the_probe(make: Any, sandbox: EwsSandbox) -> None:
    make(config(sandbox.url)).calendar.list_events(ROOM, WEEK)
    assert sandbox.calls(op="ConvertId") == 0

    make(config(sandbox.url, server_version=None)).calendar.list_events(ROOM, WEEK)
    assert sandbox.calls(op="ConvertId") == 1


# --- what is sent --------------------------------------------------------------------------


def field_uris(op_elem: ET.Element) -> set[str]:
    props = op_elem.find(f".//{{{T}}}AdditionalProperties")
    if props is None:
        return set()
    found = {e.get("FieldURI", "") for e in props.iter(f"{{{T}}}FieldURI")}
    found |= {e.get("PropertyName", "") for e in props.iter(f"{{{T}}}ExtendedFieldURI")}
    return found


def test_reads_ask_only_for_the_fields_syncd_uses(make: Any, sandbox: EwsSandbox, hop: RecordingHop) -> None:
    sandbox.book(ROOM, subject="Standup", start=at(16, 9), end=at(16, 10))
    backend = make(config(hop.url))
    backend.calendar.list_events(ROOM, WEEK)
    state = backend.calendar.check_changes(ROOM, None).state
    backend.calendar.check_changes(ROOM, state)

    (_, _, get_item), = hop.envelopes("GetItem")
    fields = field_uris(get_item)
    assert {"item:Subject", "calendar:Start", "calendar:End", "calendar:UID", "calendar:Organizer",
            "item:Sensitivity", "calendar:IsAllDayEvent", "calendar:CalendarItemType", "calendar:OriginalStart",
            "calendar:IsCancelled", "SyncdBookingId"} <= fields
    assert len(fields) < 20                               # exchangelib's default is ~80
    assert not fields & {"item:Body", "item:MimeContent", "item:Attachments"}
    (_, _, find_item), = hop.envelopes("FindItem")
    view = find_item.find(f"{{{M}}}CalendarView")
    assert view is not None and view.get("MaxEntriesReturned")
    for _, _, sync in hop.envelopes("SyncFolderItems"):
        assert field_uris(sync) == set()                  # ids only
        assert sync.findtext(f"{{{M}}}MaxChangesReturned") == "512"


def test_writes_send_no_invitations_and_keep_newer_edits(make: Any, sandbox: EwsSandbox,
                                                         hop: RecordingHop) -> None:
    backend = make(config(hop.url))
    ref = backend.calendar.create_event(ROOM, new_event())
    moved = backend.calendar.move_event(ROOM, ref.item_id, ref.change_key, at(17, 15), at(17, 16))
    backend.calendar.remove_event(ROOM, moved.item_id, moved.change_key)
    meeting = sandbox.book(ROOM, subject="Taken", start=at(18, 9), end=at(18, 10))
    (event,) = backend.calendar.list_events(ROOM, WEEK)
    backend.calendar.decline(ROOM, event.item_id, event.change_key, "Taken in Ultimo")

    (_, _, create), (_, _, decline) = hop.envelopes("CreateItem")
    assert create.get("SendMeetingInvitations") == "SendToNone"
    item = create.find(f".//{{{T}}}CalendarItem")
    assert item is not None
    assert item.findtext(f"{{{T}}}Start") == "2027-03-17T13:00:00+01:00"     # in the configured zone
    start_tz = item.find(f"{{{T}}}StartTimeZone")
    assert start_tz is not None and start_tz.get("Id") == "W. Europe Standard Time"
    assert item.findtext(f"{{{T}}}LegacyFreeBusyStatus") == "Busy"
    assert item.findtext(f"{{{T}}}ExtendedProperty/{{{T}}}Value") == "syncd:u:4711"

    (_, _, update), = hop.envelopes("UpdateItem")
    assert update.get("ConflictResolution") == "NeverOverwrite"
    assert update.get("SendMeetingInvitationsOrCancellations") == "SendToNone"
    change_key = update.find(f".//{{{T}}}ItemId")
    assert change_key is not None and change_key.get("ChangeKey") == ref.change_key
    assert {f.get("FieldURI") for f in update.iter(f"{{{T}}}FieldURI")} == {
        "calendar:Start", "calendar:End", "calendar:StartTimeZone", "calendar:EndTimeZone"}

    (_, _, delete), = hop.envelopes("DeleteItem")
    assert delete.get("SendMeetingCancellations") == "SendToNone"

    assert decline.get("MessageDisposition") == "SendOnly"
    reply = decline.find(f".//{{{T}}}DeclineItem")
    assert reply is not None and reply.findtext(f"{{{T}}}Body") == "Taken in Ultimo"
    (declined,) = sandbox.declines(ROOM)
    assert (declined["item_id"], declined["reason"]) == (meeting, "Taken in Ultimo")


# --- secrets --------------------------------------------------------------------------------


def test_no_password_in_logs_or_errors(make: Any, sandbox: EwsSandbox, caplog: pytest.LogCaptureFixture,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.book(ROOM, subject="Standup", start=at(16, 9), end=at(16, 10))
    good = make(config(sandbox.url))
    good.calendar.list_events(ROOM, WEEK)
    sandbox.inject("drop")
    good.calendar.list_events(ROOM, WEEK)
    bad = make(config(sandbox.url, password=SecretStr("Wr0ng-Pa55word")))
    with pytest.raises(CalendarAuthError) as raised:
        bad.calendar.probe(ROOM)

    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    texts = [r.getMessage() for r in caplog.records] + [str(e) for e in chain] + [repr(e) for e in chain]
    texts += list(capsys.readouterr())
    for secret in (PASSWORD, "Wr0ng-Pa55word"):
        assert not [t for t in texts if secret in t]


# --- failures -------------------------------------------------------------------------------


def test_throttling_is_bounded_in_total(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url, throttle_max_wait_seconds=0.12))
    sandbox.inject("server_busy", count=10, back_off_ms=50)

    with pytest.raises(CalendarThrottled) as raised:
        backend.calendar.list_events(ROOM, WEEK)

    assert backend.sleeps == [pytest.approx(0.05), pytest.approx(0.05)]
    assert "throttle_max_wait_seconds" in str(raised.value)
    waits, seconds = backend.calendar.throttling.read()     # the service's throttling metrics
    assert waits == 2 and seconds == pytest.approx(0.1)


def test_busy_without_a_back_off_value_waits_retry_wait(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    sandbox.inject("http503")
    assert backend.calendar.list_events(ROOM, WEEK) == []
    assert backend.sleeps == [0.01]


def test_each_calendar_keeps_its_own_settings(make: Any, sandbox: EwsSandbox) -> None:
    impatient = make(config(sandbox.url, throttle_max_wait_seconds=0))
    patient = make(config(sandbox.url))
    sandbox.inject("server_busy", back_off_ms=50)
    with pytest.raises(CalendarThrottled):
        impatient.calendar.list_events(ROOM, WEEK)
    sandbox.inject("server_busy", back_off_ms=50)
    assert patient.calendar.list_events(ROOM, WEEK) == []
    assert BaseProtocol.TIMEOUT == 120                   # exchangelib's global left alone


def test_connection_lost_for_good_is_unreachable(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    sandbox.inject("drop", count=10)
    with pytest.raises(CalendarUnreachable) as raised:
        backend.calendar.list_events(ROOM, WEEK)
    assert backend.sleeps == [0.5, 1.0, 2.0]
    assert sandbox.url in str(raised.value)


def test_a_401_after_working_gets_one_fresh_connection(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    backend.calendar.list_events(ROOM, WEEK)
    sandbox.inject("http401")
    assert backend.calendar.list_events(ROOM, WEEK) == []
    sandbox.inject("http401", count=2)
    with pytest.raises(CalendarAuthError):
        backend.calendar.list_events(ROOM, WEEK)
    assert backend.sleeps == []


def test_answers_that_are_not_ews(make: Any, sandbox: EwsSandbox) -> None:
    garbage = LoopbackServer(lambda request: garbage_response()).start()
    gateway = LoopbackServer(lambda request: html_error_page(502)).start()
    try:
        with pytest.raises(CalendarProtocolError):
            make(config(garbage.url + "/EWS/Exchange.asmx")).calendar.probe(ROOM)
        down = make(config(gateway.url + "/EWS/Exchange.asmx"))
        with pytest.raises(CalendarUnreachable):
            down.calendar.probe(ROOM)
        assert down.sleeps == [0.5, 1.0, 2.0]
        with pytest.raises(CalendarUnreachable) as raised:
            make(config(sandbox.url.replace("/EWS/", "/OWA/"))).calendar.probe(ROOM)
        assert "HTTP 404" in str(raised.value)
    finally:
        garbage.stop()
        gateway.stop()


def test_timeout_is_applied_per_calendar(make: Any) -> None:
    stuck = LoopbackServer(lambda request: slow(garbage_response(), 5)).start()
    try:
        backend = make(config(stuck.url + "/EWS/Exchange.asmx", timeout_seconds=0.3), reconnect_attempts=0)
        with pytest.raises(CalendarUnreachable):   # a garbage answer would be a CalendarProtocolError
            backend.calendar.probe(ROOM)
    finally:
        stuck.stop()


# --- reading details ------------------------------------------------------------------------


def test_long_window_is_read_in_pieces(make: Any, sandbox: EwsSandbox) -> None:
    start = datetime(2027, 1, 4, tzinfo=AMS)
    sandbox.book(ROOM, subject="First", start=start + timedelta(hours=9), end=start + timedelta(hours=10))
    late = start + timedelta(days=3 * 365)
    sandbox.book(ROOM, subject="Last", start=late, end=late + timedelta(hours=1))
    backend = make(config(sandbox.url))

    events = backend.calendar.list_events(ROOM, TimeWindow(start, late + timedelta(days=1)))

    assert [e.subject for e in events] == ["First", "Last"]
    assert sandbox.calls(op="FindItem") > 1


def test_answers_reach_the_parser_in_one_piece(make: Any, sandbox: EwsSandbox,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """exchangelib parses an answer through iter_content(), one byte per chunk unless told
    otherwise: the body, already read whole, reaches the parser in one piece."""
    for hour in range(8, 18):
        sandbox.book(ROOM, subject=f"Meeting {hour}", start=at(16, hour), end=at(16, hour) + timedelta(minutes=45))
    pieces: list[int] = []
    parse = exchangelib.services.common.to_xml

    def counting(content: Any) -> Any:
        chunks = [content] if isinstance(content, bytes) else list(content)
        pieces.append(len(chunks))
        return parse(b"".join(chunks))

    monkeypatch.setattr(exchangelib.services.common, "to_xml", counting)
    backend = make(config(sandbox.url))

    events = backend.calendar.list_events(ROOM, WEEK)
    ref = backend.calendar.create_event(ROOM, new_event())

    assert sorted(e.subject for e in events) == sorted(f"Meeting {h}" for h in range(8, 18))
    assert ref.item_id and sandbox.calls(op="CreateItem") == 1
    assert pieces and set(pieces) == {1}


def test_dense_window_is_split(make: Any, sandbox: EwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncd.calendars.ews.backend, "VIEW_MAX_ITEMS", 5)
    for i in range(12):
        sandbox.book(ROOM, subject=f"Slot {i:02d}", start=at(16, 8) + timedelta(minutes=30 * i),
                     end=at(16, 8) + timedelta(minutes=30 * i + 30))
    backend = make(config(sandbox.url))

    events = backend.calendar.list_events(ROOM, WEEK)

    assert [e.subject for e in events] == [f"Slot {i:02d}" for i in range(12)]
    assert sandbox.calls(op="FindItem") > 2


def test_unknown_windows_time_zone_is_not_a_crash(make: Any, sandbox: EwsSandbox) -> None:
    sandbox.book(ROOM, subject="Odd client", start=at(16, 9), end=at(16, 10), timezone="Customized Time Zone")
    backend = make(config(sandbox.url))

    with pytest.warns(UserWarning, match="Customized Time Zone"):    # exchangelib names the zone
        (event,) = backend.calendar.list_events(ROOM, WEEK)

    assert (event.start, event.end) == (datetime(2027, 3, 16, 8, tzinfo=UTC), datetime(2027, 3, 16, 9, tzinfo=UTC))


def test_create_retried_after_a_dropped_connection_makes_one_event(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    backend.calendar.probe(ROOM)
    sandbox.inject("drop", op="CreateItem")

    ref = backend.calendar.create_event(ROOM, new_event())

    (item,) = sandbox.items(ROOM)
    assert item["id"] == ref.item_id
    assert item["extended_properties"] == {"SyncdBookingId": "syncd:u:4711"}
    assert sandbox.calls(op="FindItem") == 1      # looked for its stamp before creating again


def test_remove_retried_after_a_dropped_connection(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    ref = backend.calendar.create_event(ROOM, new_event())
    sandbox.inject("drop", op="DeleteItem")
    backend.calendar.remove_event(ROOM, ref.item_id, ref.change_key)
    assert sandbox.items(ROOM) == []


def test_move_into_the_repeated_hour_of_a_dst_change(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    night = datetime(2027, 10, 31, 0, 30, tzinfo=UTC)           # 02:30 CEST; 01:30 UTC is 02:30 CET
    ref = backend.calendar.create_event(ROOM, NewEvent(subject="Night", start=night, end=night + timedelta(
        minutes=30), stamp="syncd:u:night"))
    later = night + timedelta(hours=1)

    moved = backend.calendar.move_event(ROOM, ref.item_id, ref.change_key, later, later + timedelta(minutes=30))

    event = backend.calendar.get_event(ROOM, moved.item_id)
    assert event is not None and (event.start, event.end) == (later, later + timedelta(minutes=30))


def test_close_lets_go_of_the_connection_pool(make: Any, sandbox: EwsSandbox) -> None:
    backend = make(config(sandbox.url))
    backend.calendar.probe(ROOM)
    cfg = backend.calendar._config
    backend.calendar.close()
    with pytest.raises(KeyError):
        Protocol[cfg]

    backend.calendar.probe(ROOM)                       # usable again, with its own settings
    assert type(backend.calendar._protocol).__name__ == "SyncdProtocol"
    assert backend.calendar._protocol.TIMEOUT == 60.0
    assert backend.calendar._account(ROOM).protocol is backend.calendar._protocol


class _RawAnswer:
    """What urllib3 hands an adapter, as little of it as build_response reads."""

    status = 200
    headers: dict[str, str] = {}
    reason = "OK"


@pytest.mark.parametrize(("verify", "expected"), [(False, False), ("/etc/ssl/certs/ca.pem", "/etc/ssl/certs/ca.pem"),
                                                  (True, True)])
def test_tls_verification_setting_reaches_the_sessions(make: Any, verify: Any, expected: Any) -> None:
    backend = make(config("https://mail.example.com/EWS/Exchange.asmx", verify_tls=verify))
    session = backend.calendar._protocol.create_session()
    try:
        assert session.verify == expected
        # Either way the answers are parsed from the whole body (see the test above).
        adapter = session.get_adapter("https://mail.example.com/EWS/Exchange.asmx")
        assert adapter.build_response(requests.PreparedRequest(), _RawAnswer()).__class__ is WholeBody
    finally:
        session.close()
