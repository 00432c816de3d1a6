"""The Graph backend beyond the shared contract: tokens, scope, throttling, delta rounds, lost
answers to writes, the variants of Graph's open questions (graph.md section 11), and logs.

The real MSAL and httpx against the Graph sandbox over TLS; no sleeps (the backend's sleeps
are recorded, not slept)."""

from __future__ import annotations

import io
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from graphharness import CLIENT_ID, SECRET, GraphHarness, graph_config

from syncd import logs
from syncd.calendars.graph.backend import GraphCalendar
from syncd.core.model import NewEvent, TimeWindow
from syncd.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarProtocolError,
    CalendarThrottled,
    StaleChangeKey,
)
from syncd.sandbox.httpbase import Response

AMS = ZoneInfo("Europe/Amsterdam")
ROOM = "room.c25@example.com"
OTHER = "room.d12@example.com"
MON = datetime(2027, 3, 15, tzinfo=AMS)
WEEK = TimeWindow(MON, MON + timedelta(days=7))


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 3, day, hour, minute, tzinfo=AMS)


@pytest.fixture
def room(request: pytest.FixtureRequest) -> Any:
    options = getattr(request, "param", {})
    harness = GraphHarness(**options)
    try:
        yield harness
    finally:
        harness.close()


def new_event(stamp: str = "syncd:u:4711", transaction_id: str | None = None) -> NewEvent:
    return NewEvent(subject="Ultimo reservation", start=at(17, 13), end=at(17, 14), stamp=stamp,
                    transaction_id=transaction_id)


def calendar_at(room: GraphHarness, now: datetime, **overrides: Any) -> GraphCalendar:
    cfg = graph_config(room.sandbox, throttle_max_wait_seconds=overrides.pop("max_wait", 30), **overrides)
    calendar = GraphCalendar(cfg, retry_sleep=room.sleeps.append, backoff_first=0.01, clock=lambda: now,
                             sync_days=(1, 14))
    room._opened.append(calendar)
    return calendar


# --- tokens and scope ---------------------------------------------------------------------


def test_one_token_serves_many_requests_and_an_expired_one_is_replaced_once(room: GraphHarness) -> None:
    room.book("Standup", at(16, 9), at(16, 9, 30))
    for _ in range(3):
        room.calendar.list_events(room.mailbox, WEEK)
    assert room.sandbox.tokens_issued == 1

    room.sandbox.expire_tokens()          # revoked server-side; MSAL's cache still holds it
    assert [e.subject for e in room.calendar.list_events(room.mailbox, WEEK)] == ["Standup"]
    assert room.sandbox.tokens_issued == 2
    assert room.sleeps == []


def test_a_token_refused_twice_is_bad_credentials(room: GraphHarness) -> None:
    room.sandbox.inject("http401", count=2, mailbox=room.mailbox)
    with pytest.raises(CalendarAuthError) as raised:
        room.calendar.list_events(room.mailbox, WEEK)
    assert raised.value.exit_status == 3
    assert CLIENT_ID in str(raised.value)


def test_a_mailbox_outside_the_apps_scope_fails_alone(room: GraphHarness) -> None:
    room.sandbox.add_mailbox(OTHER)
    room.sandbox.set_scope(CLIENT_ID, {ROOM})

    with pytest.raises(CalendarError) as raised:
        room.calendar.list_events(OTHER, WEEK)

    assert not isinstance(raised.value, CalendarAuthError)   # exit 1: the other rooms go on
    text = str(raised.value)
    assert "outside the app's scope" in text and OTHER in text
    assert f"Test-ServicePrincipalAuthorization -Identity {CLIENT_ID} -Resource {OTHER}" in text
    assert room.calendar.list_events(ROOM, WEEK) == []
    with pytest.raises(CalendarError, match="outside the app's scope"):
        room.calendar.probe(OTHER)
    assert "mailbox in the app's scope" in room.calendar.probe(ROOM)


def test_certificate_credentials(room: GraphHarness, tmp_path: Any) -> None:
    from test_graph_config import make_pair

    cert, key, _ = make_pair(tmp_path)
    room.sandbox.register_app("7b1e9c2d-4f3a-4e5b-8c6d-1a2b3c4d5e6f", certificate=cert.read_bytes())
    cfg = graph_config(room.sandbox).model_copy(update={
        "client_id": "7b1e9c2d-4f3a-4e5b-8c6d-1a2b3c4d5e6f", "client_secret": None,
        "certificate_file": str(cert), "private_key_file": str(key)})
    calendar = GraphCalendar(cfg, retry_sleep=room.sleeps.append)
    room._opened.append(calendar)
    room.book("Standup", at(16, 9), at(16, 9, 30))
    assert [e.subject for e in calendar.list_events(room.mailbox, WEEK)] == ["Standup"]


# --- throttling ---------------------------------------------------------------------------


def test_throttling_past_the_budget_gives_up_within_it(room: GraphHarness) -> None:
    calendar = room.make_calendar(max_wait=5)
    room.sandbox.inject("http429", count=10, mailbox=room.mailbox, retry_after=2)

    with pytest.raises(CalendarThrottled) as raised:
        calendar.list_events(room.mailbox, WEEK)

    assert room.sleeps == [2, 2]          # a third wait would pass 5 s
    assert "throttle_max_wait_seconds=5" in str(raised.value)
    assert calendar.throttling.read() == (2, 4.0)      # the service's throttling metrics


def test_503_and_504_without_retry_after_back_off_exponentially(room: GraphHarness) -> None:
    room.sandbox.inject("http503", mailbox=room.mailbox, retry_after=None)
    room.sandbox.inject("http504", mailbox=room.mailbox, retry_after=None)
    room.book("Standup", at(16, 9), at(16, 9, 30))
    assert len(room.calendar.list_events(room.mailbox, WEEK)) == 1
    assert room.sleeps == [pytest.approx(0.01), pytest.approx(0.02)]


def test_never_more_than_four_requests_in_flight(room: GraphHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    room.sandbox.options.concurrency_limit = 4
    for day in range(15, 22):
        room.book(f"Meeting {day}", at(day, 9), at(day, 10))
    # A slow server (each answer takes 20 ms), so that requests overlap; the sandbox counts them.
    serve = room.sandbox._serve
    lock, now_in, most = threading.Lock(), [0], [0]

    def slow(*args: Any) -> Any:
        with lock:
            now_in[0] += 1
            most[0] = max(most[0], now_in[0])
        try:
            threading.Event().wait(0.02)
            return serve(*args)
        finally:
            with lock:
                now_in[0] -= 1

    monkeypatch.setattr(room.sandbox, "_serve", slow)
    # Three backends (three connection pools) in one process share the app's limit of 4.
    calendars = [room.make_calendar(max_wait=0) for _ in range(3)]      # a 429 would fail at once
    errors: list[BaseException] = []

    def read(calendar: GraphCalendar) -> None:
        try:
            for _ in range(3):
                calendar.list_events(room.mailbox, WEEK)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=read, args=(calendars[i % 3],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 2 <= most[0] <= 4
    assert all(c.status != 429 for c in room.sandbox.requests())


# --- reads --------------------------------------------------------------------------------


def paged(room: GraphHarness, days: range) -> GraphCalendar:
    """Ten half-hour meetings on each of `days` (March 2027), and a calendar reading 10 a page."""
    for day in days:
        for hour in range(8, 18):
            room.book(f"Slot {day} {hour}", at(day, hour), at(day, hour, 30))
    calendar = room.make_calendar(page_size=10)
    assert isinstance(calendar, GraphCalendar)
    return calendar


def test_every_page_is_read_and_a_failed_page_fails_the_read(room: GraphHarness,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calendar = paged(room, range(15, 22))
    assert len(calendar.list_events(room.mailbox, WEEK)) == 70
    assert room.sandbox.calls(mailbox=room.mailbox, op="calendarView") >= 7

    # The third page comes back as garbage: nothing is returned as if it were the calendar.
    serve, pages = room.sandbox._serve, [0]

    def third_page_garbage(request: Any, op: str, *rest: Any) -> Any:
        if op == "calendarView":
            pages[0] += 1
            if pages[0] == 3:
                room.sandbox.inject("garbage", mailbox=room.mailbox, op="calendarView")
        return serve(request, op, *rest)

    monkeypatch.setattr(room.sandbox, "_serve", third_page_garbage)
    with pytest.raises(CalendarProtocolError):
        calendar.list_events(room.mailbox, WEEK)
    assert pages[0] == 3


def test_a_next_link_back_to_a_page_already_read_fails_the_read(room: GraphHarness,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calendar = paged(room, range(15, 18))
    serve, first_link = room.sandbox._serve, []

    def looping(request: Any, op: str, *rest: Any) -> Any:
        answer = serve(request, op, *rest)
        page = json.loads(answer.body) if op == "calendarView" else {}
        if "@odata.nextLink" in page:        # every page points back at the second one
            first_link[:] = first_link or [page["@odata.nextLink"]]
            page["@odata.nextLink"] = first_link[0]
            answer.body = json.dumps(page).encode()
        return answer

    monkeypatch.setattr(room.sandbox, "_serve", looping)
    with pytest.raises(CalendarProtocolError, match="already read"):
        calendar.list_events(room.mailbox, WEEK)
    assert room.sandbox.calls(mailbox=room.mailbox, op="calendarView") == 2


def test_an_occurrence_is_found_by_its_key_and_a_series_without_an_id_fails(room: GraphHarness) -> None:
    room.series("Weekly", at(16, 9), at(16, 10), "weekly", 3)
    third = room.calendar.list_events(room.mailbox, TimeWindow(MON, MON + timedelta(days=21)))[2]
    found = room.calendar.find_by_key(room.mailbox, third.key)
    assert found is not None and (found.key, found.start) == (third.key, at(30, 9))

    master = {"id": None, "type": "seriesMaster", "iCalUId": third.key.partition("|")[0]}
    room.sandbox.inject("answer_after", op="events.list", answer=Response(200, json.dumps({"value": [master]})
                                                                          .encode()))
    with pytest.raises(CalendarProtocolError, match="series without an id"):
        room.calendar.find_by_key(room.mailbox, third.key)


# --- change checks ------------------------------------------------------------------------


def test_a_lost_round_starts_a_new_one(room: GraphHarness) -> None:
    now = datetime(2027, 3, 16, 12, tzinfo=UTC)
    calendar = calendar_at(room, now)
    room.book("Existing", at(16, 9), at(16, 10))
    state = calendar.check_changes(room.mailbox, None).state
    assert calendar.check_changes(room.mailbox, state).changed is False

    room.sandbox.inject("sync_state_not_found", mailbox=room.mailbox, op="delta")
    lost = calendar.check_changes(room.mailbox, state)
    assert lost.changed is True and lost.state != state
    assert calendar.check_changes(room.mailbox, lost.state).changed is False

    room.sandbox.forget_sync_states()     # every token gone, as after a long outage
    assert calendar.check_changes(room.mailbox, lost.state).changed is True


def test_the_window_sliding_to_a_new_day_starts_a_new_round(room: GraphHarness) -> None:
    monday = datetime(2027, 3, 15, 12, tzinfo=UTC)
    state = calendar_at(room, monday).check_changes(room.mailbox, None).state
    assert calendar_at(room, monday + timedelta(hours=11)).check_changes(room.mailbox, state).changed is False
    room.forget_requests()
    slid = calendar_at(room, monday + timedelta(days=1)).check_changes(room.mailbox, state)
    assert slid.changed is True
    assert room.sandbox.calls(mailbox=room.mailbox, op="delta") >= 1


@pytest.mark.parametrize("fault", ["duplicate_id", "tombstone_without_type"])
def test_odd_delta_pages_count_as_a_change(room: GraphHarness, fault: str) -> None:
    calendar = room.make_calendar(page_size=10)
    item = room.book("Existing", at(16, 9), at(16, 10))
    for day in range(15, 22):
        room.book(f"Other {day}", at(day, 11), at(day, 12))
    state = calendar.check_changes(room.mailbox, None).state
    room.cancel(item)
    room.sandbox.inject(fault, mailbox=room.mailbox)
    check = calendar.check_changes(room.mailbox, state)
    assert check.changed is True
    assert calendar.check_changes(room.mailbox, check.state).changed is False


def test_a_change_outside_the_window_is_only_a_hint(room: GraphHarness) -> None:
    now = datetime(2027, 3, 16, 12, tzinfo=UTC)
    calendar = calendar_at(room, now)
    kept = room.book("Inside", at(16, 9), at(16, 10))
    state = calendar.check_changes(room.mailbox, None).state
    room.book("Far away", at(16, 9) + timedelta(days=60), at(16, 10) + timedelta(days=60))
    assert calendar.check_changes(room.mailbox, state).changed is True   # an @removed hint
    # ... which the full read confirms: nothing in the window went away.
    assert [e.item_id for e in calendar.list_events(room.mailbox, WEEK)] == [kept]


# --- writes whose answer was lost ----------------------------------------------------------


@pytest.mark.parametrize("room", [{"duplicate_transaction": v} for v in ("replay", "409", "400")],
                         indirect=True, ids=["replay", "409", "400"])
def test_a_create_whose_answer_was_lost_is_not_duplicated(room: GraphHarness) -> None:
    room.sandbox.inject("lost_answer", mailbox=room.mailbox, op="events.create")

    ref = room.calendar.create_event(room.mailbox, new_event(transaction_id="syncd-intent-1"))

    (event,) = room.calendar.list_events(room.mailbox, WEEK)
    assert (event.item_id, event.stamp, event.key) == (ref.item_id, "syncd:u:4711", ref.key)
    assert room.sandbox.calls(mailbox=room.mailbox, op="events.create") == 2


def test_a_later_create_of_the_same_booking_does_not_collide(room: GraphHarness) -> None:
    first = room.calendar.create_event(room.mailbox, new_event(transaction_id="syncd-intent-1"))
    room.cancel(first.item_id)                 # someone deleted it; syncd puts it back
    again = room.calendar.create_event(room.mailbox, new_event(transaction_id="syncd-intent-2"))
    (event,) = room.calendar.list_events(room.mailbox, WEEK)
    assert event.item_id == again.item_id != first.item_id


def test_a_move_and_a_remove_whose_answers_were_lost(room: GraphHarness) -> None:
    ref = room.calendar.create_event(room.mailbox, new_event())
    room.sandbox.inject("lost_answer", mailbox=room.mailbox, op="event.update")
    moved = room.calendar.move_event(room.mailbox, ref.item_id, ref.change_key, at(17, 15), at(17, 16))
    got = room.calendar.get_event(room.mailbox, ref.item_id)
    assert got is not None and got.start == at(17, 15).astimezone(UTC) and got.change_key == moved.change_key

    room.sandbox.inject("lost_answer", mailbox=room.mailbox, op="event.delete")
    room.calendar.remove_event(room.mailbox, ref.item_id, moved.change_key)
    assert room.calendar.list_events(room.mailbox, WEEK) == []


@pytest.mark.parametrize("room", [{"if_match": "ignore"}], indirect=True)
def test_a_tenant_ignoring_if_match_is_guarded_by_a_read_first(room: GraphHarness) -> None:
    calendar = room.make_calendar(check_change_key_before_write=True)
    ref = calendar.create_event(room.mailbox, new_event())
    room.touch(ref.item_id)
    with pytest.raises(StaleChangeKey):
        calendar.move_event(room.mailbox, ref.item_id, ref.change_key, at(17, 15), at(17, 16))
    event = calendar.get_event(room.mailbox, ref.item_id)
    assert event is not None and event.start == at(17, 13).astimezone(UTC)


@pytest.mark.parametrize("room", [{"deleted_get": "found"}], indirect=True)
def test_a_deleted_event_still_found_by_id_counts_as_gone(room: GraphHarness) -> None:
    item = room.book("Cancelled", at(16, 9), at(16, 10))
    room.cancel(item)
    assert room.calendar.get_event(room.mailbox, item) is None


# --- logs ---------------------------------------------------------------------------------


def test_a_debug_run_prints_no_token_secret_or_key(room: GraphHarness, tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from test_graph_config import make_pair

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logs.configure("debug", "json")
    try:
        cert, key, _ = make_pair(tmp_path)
        room.sandbox.register_app("7b1e9c2d-4f3a-4e5b-8c6d-1a2b3c4d5e6f", certificate=cert.read_bytes())
        cfg = graph_config(room.sandbox).model_copy(update={
            "client_id": "7b1e9c2d-4f3a-4e5b-8c6d-1a2b3c4d5e6f", "client_secret": None,
            "certificate_file": str(cert), "private_key_file": str(key)})
        with_cert = GraphCalendar(cfg, retry_sleep=room.sleeps.append)
        room._opened.append(with_cert)
        for calendar in (room.calendar, with_cert):
            ref = calendar.create_event(room.mailbox, new_event(f"syncd:u:{id(calendar)}"))
            calendar.list_events(room.mailbox, WEEK)
            calendar.check_changes(room.mailbox, None)
            calendar.move_event(room.mailbox, ref.item_id, ref.change_key, at(17, 15), at(17, 16))
        room.sandbox.expire_tokens()
        room.calendar.list_events(room.mailbox, WEEK)
        with pytest.raises(CalendarAuthError):
            room.make_calendar(password="Wrong-secret-value-1").list_events(room.mailbox, WEEK)
    finally:
        logs.configure("error", "json")
    text = err.getvalue()
    assert "graph_request" in text and '"httpx' in text and '"msal' in text   # the libraries did log
    assert SECRET not in text and "Wrong-secret-value-1" not in text
    assert "PRIVATE KEY" not in text
    for line in key.read_text().splitlines()[1:-1]:
        assert line not in text
    assert "eyJ" not in text                  # no JWT: neither an access token nor a client assertion


def test_every_request_asks_for_utc_and_immutable_ids_and_selects_its_fields(room: GraphHarness) -> None:
    room.book("Standup", at(16, 9), at(16, 9, 30))
    ref = room.calendar.create_event(room.mailbox, new_event())
    room.forget_requests()
    room.calendar.list_events(room.mailbox, WEEK)
    room.calendar.get_event(room.mailbox, ref.item_id)
    room.calendar.find_stamped(room.mailbox, "syncd:u:4711", WEEK)
    room.calendar.check_changes(room.mailbox, None)
    calls = room.sandbox.requests(mailbox=room.mailbox)
    assert calls and all(c.authorized for c in calls)
    assert all(c.prefer.get("outlook.timezone") == "UTC" and c.prefer.get("idtype") == "ImmutableId" for c in calls)
    reads = [c for c in calls if c.op in ("calendarView", "event.get", "events.list")]
    assert reads and all("$select" in c.query and "$expand" in c.query for c in reads)
    assert all("singleValueExtendedProperties($filter=id eq" in c.query["$expand"][0] for c in reads)
