"""Every malformed answer of the corpus (syncd/sandbox/corpus.py), served by the sandboxes
to the real clients (httpx for Ultimo, exchangelib for EWS, httpx and MSAL for Microsoft
Graph): each gives a typed syncd
error with one line of text, concludes nothing (a read is never an empty room, a create
is never taken as not made) and loses nothing (the same call answers right once the
sandbox does).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import exchangelib.protocol
import pytest
from graphharness import GraphHarness
from pydantic import SecretStr

from syncd.calendars.ews.backend import EwsCalendar
from syncd.config.schema import EwsConfig, UltimoConfig
from syncd.core.model import NewEvent, NewReservation, TimeWindow
from syncd.errors import CalendarAuthError, CalendarError, UltimoError, UltimoRejected
from syncd.sandbox import corpus
from syncd.sandbox.ews.server import EwsSandbox
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.ultimo.budget import RateLimiter
from syncd.ultimo.client import UltimoClient, UltimoOutcomeUnknown

USER, PASSWORD, KEY = "svc@example.com", "pw", "sandbox-key"
ROOM, SPACE = "room.c25@example.com", "C-25"
LOTS = 50   # every attempt within one call meets the answer


def _day(hours: int) -> datetime:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    return base + timedelta(hours=hours)


@pytest.fixture(scope="module")
def ultimo() -> Iterator[UltimoSandbox]:
    box = UltimoSandbox(api_keys=(KEY,), rate_limit=10**9, daily_limit=10**9).start()
    box.add_space(SPACE)
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
def ews() -> Iterator[EwsSandbox]:
    box = EwsSandbox(users={USER: PASSWORD}, auth="basic").start()
    box.add_mailbox(ROOM)
    try:
        yield box
    finally:
        box.stop()
        exchangelib.protocol.close_connections()


@pytest.fixture
def client(ultimo: UltimoSandbox) -> Iterator[UltimoClient]:
    ultimo.faults.clear()
    cfg = UltimoConfig.model_validate({"base_url": ultimo.url, "api_key": KEY, "timezone": "Europe/Amsterdam",
                                       "max_retries": 2, "timeout_seconds": 5})
    c = UltimoClient(cfg, limiter=RateLimiter(10**6, 10.0), sleep=lambda _s: None, backoff_base=0.001)
    yield c
    c._http.close()
    ultimo.faults.clear()


@pytest.fixture
def calendar(ews: EwsSandbox) -> Iterator[EwsCalendar]:
    ews.faults.clear()
    cfg = EwsConfig(endpoint=ews.url, auth="basic", username=USER, password=SecretStr(PASSWORD),
                    server_version="15.1.2507.6", throttle_max_wait_seconds=0.3, timeout_seconds=5)
    cal = EwsCalendar(cfg, retry_sleep=lambda _s: None, retry_wait=0.001)
    cal.probe(ROOM)   # the connection and the calendar folder are known before the faults start
    yield cal
    cal.close()
    ews.faults.clear()


def _one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


def _ids(entries: tuple[corpus.Malformed, ...]) -> list[str]:
    return [e.name for e in entries]



@pytest.mark.parametrize("entry", corpus.ULTIMO, ids=_ids(corpus.ULTIMO))
def test_ultimo_malformed_answer_is_a_typed_one_line_error(
        entry: corpus.Malformed, ultimo: UltimoSandbox, client: UltimoClient) -> None:
    uid = ultimo.reserve(SPACE, _day(len(ultimo.history()) * 3), _day(len(ultimo.history()) * 3 + 1))
    window = TimeWindow(_day(-48), _day(24 * 30))
    ultimo.inject("answer_after", count=LOTS, workflow=entry.call, answer=entry.response())
    with pytest.raises(UltimoError) as caught:
        _call_ultimo(entry.call, client, uid)
    _one_line(caught.value)
    if entry.call == "create":
        # Ultimo made the reservation: the answer says nothing, so it must not read as "not made".
        assert isinstance(caught.value, UltimoOutcomeUnknown), caught.value
    else:
        assert not isinstance(caught.value, UltimoRejected), caught.value
    ultimo.faults.clear()
    live = {r.ultimo_id for r in client.get_reservations(SPACE, window)}
    if entry.call == "cancel":
        assert uid not in live   # the cancel took effect; reading again tells so
    else:
        assert uid in live       # nothing lost


def _call_ultimo(call: str, client: UltimoClient, uid: str) -> Any:
    if call == "get":
        return client.get_reservations(SPACE, TimeWindow(_day(-48), _day(24 * 30)))
    if call == "create":
        start = _day(24 * 20 + len(uid) % 7)
        return client.create_reservation(NewReservation(
            space_id=SPACE, start=start, end=start + timedelta(minutes=30), description="From Exchange",
            applicant_id="00042", external_id=f"sx-{uid}"))
    if call == "update":
        return client.update_reservation(uid, _day(24 * 25), _day(24 * 25 + 1))
    return client.cancel_reservation(uid)


@pytest.mark.parametrize("entry", corpus.EWS, ids=_ids(corpus.EWS))
def test_ews_malformed_answer_is_a_typed_one_line_error(
        entry: corpus.Malformed, ews: EwsSandbox, calendar: EwsCalendar) -> None:
    window = TimeWindow(_day(-48), _day(24 * 30))
    n = len(ews.history(ROOM))
    item_id = ews.book(ROOM, subject=f"Meeting {n}", start=_day(n * 3), end=_day(n * 3 + 1))
    before = {e.item_id for e in calendar.list_events(ROOM, window)}
    assert item_id in before
    ews.inject("answer_after", count=LOTS, op=entry.call, answer=entry.response())
    try:
        _call_ews(entry.call, calendar, item_id, n)
    except CalendarError as error:
        _one_line(error)
    else:
        # A create whose answer was spoilt may be settled at once: the retry finds the
        # event it made by its stamp. Anything else must fail.
        assert entry.call == "CreateItem", "no error"
    ews.faults.clear()
    if entry.call == "CreateItem":   # made once, whatever was answered
        assert len([e for e in calendar.list_events(ROOM, window) if e.stamp == f"syncd:u:{n}"]) == 1
    after = {e.item_id for e in calendar.list_events(ROOM, window)}
    if entry.call == "DeleteItem":
        assert item_id not in after
    else:
        assert item_id in after   # nothing lost


def _call_ews(call: str, calendar: EwsCalendar, item_id: str, n: int) -> Any:
    window = TimeWindow(_day(-48), _day(24 * 30))
    if call in ("FindItem", "GetItem"):
        return calendar.list_events(ROOM, window)
    if call == "SyncFolderItems":
        return calendar.check_changes(ROOM, None)
    event = next(e for e in calendar.list_events(ROOM, window) if e.item_id == item_id)
    if call == "CreateItem":
        start = _day(24 * 20 + n)
        return calendar.create_event(ROOM, NewEvent(subject="From Ultimo", start=start,
                                                    end=start + timedelta(minutes=30), stamp=f"syncd:u:{n}"))
    if call == "UpdateItem":
        return calendar.move_event(ROOM, item_id, event.change_key, _day(24 * 26), _day(24 * 26 + 1))
    return calendar.remove_event(ROOM, item_id, event.change_key)


# --- Microsoft Graph ------------------------------------------------------------------------

GRAPH_READS = ("calendarView", "delta", "events.list", "event.get")


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphHarness]:
    harness = GraphHarness(ROOM)
    try:
        yield harness
    finally:
        harness.close()


@pytest.mark.parametrize("entry", corpus.GRAPH, ids=_ids(corpus.GRAPH))
def test_graph_malformed_answer_is_a_typed_one_line_error(entry: corpus.Malformed, graph: GraphHarness) -> None:
    box, calendar = graph.sandbox, graph.calendar
    box.faults.clear()
    window = TimeWindow(_day(-48), _day(24 * 30))
    n = len(calendar.list_events(ROOM, window))
    if entry.call == "events.list":     # syncd's own event, found by its stamp
        item_id = calendar.create_event(ROOM, NewEvent(subject=f"Reservation {n}", start=_day(n * 3),
                                                       end=_day(n * 3 + 1), stamp=f"syncd:s:{n}")).item_id
    else:
        item_id = graph.book(f"Meeting {n}", _day(n * 3), _day(n * 3 + 1))
    state = calendar.check_changes(ROOM, None).state if entry.call == "delta" else None
    event = next(e for e in calendar.list_events(ROOM, window) if e.item_id == item_id)
    box.inject("answer_after", count=LOTS, op=entry.call, mailbox=ROOM, answer=entry.response())
    try:
        _call_graph(entry.call, calendar, event, state, n)
    except CalendarError as error:
        _one_line(error)
        assert not isinstance(error, CalendarAuthError), error   # one room fails; the run goes on
    else:
        pytest.fail("no error: a malformed answer was taken for a good one")
    box.faults.clear()
    after = {e.item_id: e for e in calendar.list_events(ROOM, window)}
    if entry.call == "events.create":   # made once, whatever was answered
        assert len([e for e in after.values() if e.stamp == f"syncd:u:{n}"]) == 1
    if entry.call in ("event.delete", "event.decline"):
        assert item_id not in after     # it took effect; reading again tells so
    else:
        assert item_id in after         # nothing lost
    if entry.call == "event.update":
        assert (after[item_id].start, after[item_id].end) == (_day(24 * 26 + n), _day(24 * 26 + n + 1))
    if entry.call in GRAPH_READS:       # the same call answers right once Graph does
        again = _call_graph(entry.call, calendar, event, state, n)
        assert again is not None
        if entry.call in ("events.list", "event.get"):
            assert again.item_id == item_id


def _call_graph(call: str, calendar: Any, event: Any, state: str | None, n: int) -> Any:
    window = TimeWindow(_day(-48), _day(24 * 30))
    if call == "calendarView":
        return calendar.list_events(ROOM, window)
    if call == "delta":
        return calendar.check_changes(ROOM, state)
    if call == "events.list":
        return calendar.find_stamped(ROOM, event.stamp, window)
    if call == "event.get":
        return calendar.get_event(ROOM, event.item_id)
    if call == "events.create":
        start = _day(24 * 20 + n)
        return calendar.create_event(ROOM, NewEvent(subject="From Ultimo", start=start,
                                                    end=start + timedelta(minutes=30), stamp=f"syncd:u:{n}"))
    if call == "event.update":
        return calendar.move_event(ROOM, event.item_id, event.change_key, _day(24 * 26 + n), _day(24 * 26 + n + 1))
    if call == "event.decline":
        return calendar.decline(ROOM, event.item_id, event.change_key, "The room is taken in Ultimo.")
    return calendar.remove_event(ROOM, event.item_id, event.change_key)
