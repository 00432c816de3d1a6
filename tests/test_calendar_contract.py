"""The contract of "a room calendar" (syncd.calendars.base.RoomCalendar), for every backend.

Each backend comes with a harness: the calendar under test, pointed at a sandbox of the
real service over loopback, and the hands of the people who use that room in Exchange
(booking, moving and cancelling meetings behind syncd's back), plus the sandbox's request
log and fault injection. EWS: the real exchangelib against `syncd.sandbox.ews.server.EwsSandbox`;
Graph: the real MSAL and httpx against `syncd.sandbox.graph.server.GraphSandbox` over TLS
(`tests/graphharness.py`). The tests below are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import exchangelib.protocol
import pytest
from graphharness import GraphHarness
from pydantic import SecretStr

from syncd.calendars.base import RoomCalendar
from syncd.config.schema import EwsConfig
from syncd.core.model import Event, NewEvent, TimeWindow
from syncd.errors import CalendarAuthError, CalendarError, EventGone, StaleChangeKey
from syncd.sandbox.ews.server import EwsSandbox, Recurrence

AMS = ZoneInfo("Europe/Amsterdam")
ROOM = "room.c25@example.com"
ORGANIZER = "alice@example.com"
USER, PASSWORD = "svc-syncd@example.com", "s3cret-Pa55word"

# A week in March 2027; Europe/Amsterdam moves to summer time on Sunday 28 March 2027.
MON = datetime(2027, 3, 15, tzinfo=AMS)
WEEK = TimeWindow(MON, MON + timedelta(days=7))


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """Local Amsterdam time `hour:minute` on March `day` 2027, as an aware datetime."""
    return datetime(2027, 3, day, hour, minute, tzinfo=AMS)


class EwsHarness:
    """EWS on exchangelib against the EWS sandbox."""

    name = "ews"
    who = USER

    def __init__(self) -> None:
        self.sandbox = EwsSandbox(users={USER: PASSWORD}, auth="basic", timezone="Europe/Amsterdam").start()
        self.sandbox.add_mailbox(ROOM)
        self.mailbox = ROOM
        self.sleeps: list[float] = []
        self._opened: list[Any] = []
        self.calendar = self.make_calendar()

    def make_calendar(self, password: str = PASSWORD, **overrides: Any) -> RoomCalendar:
        from syncd.calendars.ews.backend import EwsCalendar

        cfg = EwsConfig(endpoint=self.sandbox.url, auth="basic", username=USER, password=SecretStr(password),
                        server_version="15.1.2507.6", throttle_max_wait_seconds=overrides.pop("max_wait", 30),
                        **overrides)
        calendar = EwsCalendar(cfg, retry_sleep=self.sleeps.append, retry_wait=0.01)
        self._opened.append(calendar)
        return calendar

    def close(self) -> None:
        for calendar in self._opened:
            calendar.close()
        exchangelib.protocol.close_connections()
        self.sandbox.stop()

    # --- what people do in Exchange -------------------------------------------------------

    def book(self, subject: str, start: datetime, end: datetime, **kw: Any) -> str:
        return self.sandbox.book(self.mailbox, subject=subject, start=start, end=end,
                                 organizer=kw.pop("organizer", ORGANIZER), **kw)

    def series(self, subject: str, start: datetime, end: datetime, kind: str, count: int) -> str:
        return self.book(subject, start, end, recurrence=Recurrence(kind=kind, count=count))

    def move(self, item_id: str, start: datetime, end: datetime) -> None:
        self.sandbox.move(self.mailbox, item_id, start, end)

    def cancel(self, item_id: str) -> None:
        self.sandbox.cancel(self.mailbox, item_id)

    def move_occurrence(self, master_id: str, original_start: datetime, start: datetime, end: datetime) -> None:
        self.sandbox.move_occurrence(self.mailbox, master_id, original_start, start, end)

    def cancel_occurrence(self, master_id: str, original_start: datetime) -> None:
        self.sandbox.cancel_occurrence(self.mailbox, master_id, original_start)

    def touch(self, item_id: str) -> None:
        self.sandbox.touch(self.mailbox, item_id)

    def declines(self) -> list[dict]:
        return self.sandbox.declines(self.mailbox)

    # --- the sandbox's side ---------------------------------------------------------------

    def forget_requests(self) -> None:
        self.sandbox.clear_journal()

    def requests(self) -> int:
        return self.sandbox.calls(mailbox=self.mailbox)

    def write_requests(self) -> int:
        return sum(self.sandbox.calls(mailbox=self.mailbox, op=op) for op in ("CreateItem", "UpdateItem", "DeleteItem"))

    def change_check_requests(self) -> int:
        return self.sandbox.calls(mailbox=self.mailbox, op="SyncFolderItems")

    def make_busy(self, back_off_seconds: float) -> None:
        self.sandbox.inject("server_busy", back_off_ms=int(back_off_seconds * 1000))

    def drop_next_connection(self) -> None:
        self.sandbox.inject("drop")


BACKENDS: dict[str, Callable[[], Any]] = {"ews": EwsHarness, "graph": GraphHarness}


@pytest.fixture(params=sorted(BACKENDS))
def room(request: pytest.FixtureRequest) -> Iterator[Any]:
    harness = BACKENDS[request.param]()
    try:
        yield harness
    finally:
        harness.close()


def by_subject(events: list[Event]) -> dict[str, Event]:
    return {e.subject: e for e in events}


# --- reading ------------------------------------------------------------------------------


def test_reads_the_meetings_overlapping_the_window_in_utc(room: Any) -> None:
    room.book("Standup", at(16, 9), at(16, 9, 30))
    room.book("Across the end", at(21, 23), at(22, 1))
    room.book("Ends at the window start", at(14, 23), at(15, 0))
    room.book("Next week", at(23, 10), at(23, 11))

    events = room.calendar.list_events(room.mailbox, WEEK)

    got = by_subject(events)
    assert sorted(got) == ["Across the end", "Standup"]
    standup = got["Standup"]
    assert (standup.start, standup.end) == (datetime(2027, 3, 16, 8, 0, tzinfo=UTC),
                                            datetime(2027, 3, 16, 8, 30, tzinfo=UTC))
    assert standup.start.tzinfo is UTC
    assert standup.organizer == ORGANIZER
    assert not standup.private and not standup.all_day and not standup.cancelled and not standup.recurring
    assert standup.stamp is None
    assert standup.key and "|" not in standup.key
    assert standup.item_id and standup.change_key
    # Reading twice gives the same keys: they identify bookings, not reads.
    assert {e.key for e in room.calendar.list_events(room.mailbox, WEEK)} == {e.key for e in events}


@pytest.mark.parametrize("kind", ["daily", "weekly"])
def test_occurrences_of_a_series_with_one_moved_and_one_cancelled(room: Any, kind: str) -> None:
    step = timedelta(days=1 if kind == "daily" else 7)
    first = at(15, 10)
    master = room.series(f"{kind} review", first, first + timedelta(hours=1), kind, count=4)
    window = TimeWindow(MON, MON + 4 * step)
    before = room.calendar.list_events(room.mailbox, window)
    assert len(before) == 4
    assert all(e.recurring for e in before)
    assert len({e.key for e in before}) == 4
    starts = sorted(e.start for e in before)
    assert starts == [(first + i * step).astimezone(UTC) for i in range(4)]

    second, third = first + step, first + 2 * step
    room.move_occurrence(master, second, second + timedelta(hours=3), second + timedelta(hours=4))
    room.cancel_occurrence(master, third)
    after = room.calendar.list_events(room.mailbox, window)

    key_of = {e.start: e.key for e in before}
    assert len(after) == 3
    assert {e.key for e in after} == {key_of[first.astimezone(UTC)], key_of[second.astimezone(UTC)],
                                      key_of[(first + 3 * step).astimezone(UTC)]}
    moved = next(e for e in after if e.key == key_of[second.astimezone(UTC)])
    assert moved.start == (second + timedelta(hours=3)).astimezone(UTC)
    assert moved.end == (second + timedelta(hours=4)).astimezone(UTC)
    assert key_of[third.astimezone(UTC)] not in {e.key for e in after}


def test_private_meeting_is_flagged_with_its_subject_available(room: Any) -> None:
    room.book("Salary talk", at(17, 14), at(17, 15), private=True)

    (event,) = room.calendar.list_events(room.mailbox, WEEK)

    assert event.private is True
    assert event.subject == "Salary talk"


def test_weekly_series_across_dst_keeps_local_time(room: Any) -> None:
    room.series("Monday planning", at(15, 9), at(15, 10), "weekly", count=4)

    events = room.calendar.list_events(room.mailbox, TimeWindow(MON, MON + timedelta(days=28)))

    utc_hours = [e.start.hour for e in events]
    assert utc_hours == [8, 8, 7, 7]      # CET (UTC+1) twice, then CEST (UTC+2)
    assert {e.start.astimezone(AMS).hour for e in events} == {9}
    assert all(e.end - e.start == timedelta(hours=1) for e in events)


def test_all_day_meeting_spans_local_midnight_to_midnight(room: Any) -> None:
    room.book("Company day", at(18, 0), at(19, 0), all_day=True)

    (event,) = room.calendar.list_events(room.mailbox, WEEK)

    assert event.all_day is True
    assert event.start == at(18, 0).astimezone(UTC) == datetime(2027, 3, 17, 23, 0, tzinfo=UTC)
    assert event.end == at(19, 0).astimezone(UTC)   # exclusive: the next midnight


def test_cancelled_meeting_is_no_longer_listed(room: Any) -> None:
    item = room.book("Cancelled by organizer", at(16, 11), at(16, 12))
    room.cancel(item)

    assert room.calendar.list_events(room.mailbox, WEEK) == []
    assert room.calendar.get_event(room.mailbox, item) is None


# --- change tracking ------------------------------------------------------------------------


def test_change_check_costs_one_request_when_nothing_changed(room: Any) -> None:
    room.book("Existing", at(16, 9), at(16, 10))
    first = room.calendar.check_changes(room.mailbox, None)
    assert first.changed is True and first.state

    room.forget_requests()
    quiet = room.calendar.check_changes(room.mailbox, first.state)
    assert quiet.changed is False
    assert room.requests() == 1 and room.change_check_requests() == 1

    room.book("Walk-in", at(16, 13), at(16, 14))
    busy = room.calendar.check_changes(room.mailbox, quiet.state)
    assert busy.changed is True
    assert room.calendar.check_changes(room.mailbox, busy.state).changed is False


def test_change_check_sees_moves_and_cancellations(room: Any) -> None:
    item = room.book("Review", at(16, 9), at(16, 10))
    state = room.calendar.check_changes(room.mailbox, None).state
    room.move(item, at(16, 11), at(16, 12))
    moved = room.calendar.check_changes(room.mailbox, state)
    assert moved.changed is True
    room.cancel(item)
    assert room.calendar.check_changes(room.mailbox, moved.state).changed is True


def test_unusable_change_state_counts_as_changed_with_a_fresh_state(room: Any) -> None:
    check = room.calendar.check_changes(room.mailbox, "bm90IGEgc3luYyBzdGF0ZQ==")
    assert check.changed is True and check.state
    assert room.calendar.check_changes(room.mailbox, check.state).changed is False


# --- writing --------------------------------------------------------------------------------


def new_event(stamp: str = "syncd:u:4711", day: int = 17) -> NewEvent:
    return NewEvent(subject="Ultimo reservation 4711", start=at(day, 13), end=at(day, 14), stamp=stamp,
                    body="Booked in Ultimo")


def test_created_event_reads_back_with_its_stamp(room: Any) -> None:
    ref = room.calendar.create_event(room.mailbox, new_event())

    (event,) = room.calendar.list_events(room.mailbox, WEEK)
    assert event.item_id == ref.item_id and event.change_key == ref.change_key
    assert event.stamp == "syncd:u:4711"
    assert event.subject == "Ultimo reservation 4711"
    assert (event.start, event.end) == (at(17, 13).astimezone(UTC), at(17, 14).astimezone(UTC))
    found = room.calendar.find_stamped(room.mailbox, "syncd:u:4711", WEEK)
    assert found is not None and found.item_id == ref.item_id
    assert room.calendar.find_stamped(room.mailbox, "syncd:u:9999", WEEK) is None
    got = room.calendar.get_event(room.mailbox, ref.item_id)
    assert got is not None and got.stamp == "syncd:u:4711"


def test_move_with_the_current_change_key(room: Any) -> None:
    ref = room.calendar.create_event(room.mailbox, new_event())

    moved = room.calendar.move_event(room.mailbox, ref.item_id, ref.change_key, at(17, 15), at(17, 16))

    assert moved.change_key != ref.change_key
    event = room.calendar.get_event(room.mailbox, moved.item_id)
    assert event is not None
    assert (event.start, event.end) == (at(17, 15).astimezone(UTC), at(17, 16).astimezone(UTC))
    assert event.change_key == moved.change_key


def test_move_with_a_stale_change_key_overwrites_nothing(room: Any) -> None:
    ref = room.calendar.create_event(room.mailbox, new_event())
    room.touch(ref.item_id)            # someone edited it after syncd read it

    with pytest.raises(StaleChangeKey):
        room.calendar.move_event(room.mailbox, ref.item_id, ref.change_key, at(17, 15), at(17, 16))

    event = room.calendar.get_event(room.mailbox, ref.item_id)
    assert event is not None and event.start == at(17, 13).astimezone(UTC)


def test_vanished_event(room: Any) -> None:
    ref = room.calendar.create_event(room.mailbox, new_event())
    room.cancel(ref.item_id)

    assert room.calendar.get_event(room.mailbox, ref.item_id) is None
    with pytest.raises(EventGone):
        room.calendar.move_event(room.mailbox, ref.item_id, ref.change_key, at(17, 15), at(17, 16))
    with pytest.raises(EventGone):
        room.calendar.remove_event(room.mailbox, ref.item_id, ref.change_key)


def test_an_occurrence_deleted_from_its_series_is_gone(room: Any) -> None:
    """Exchange answers ErrorCalendarOccurrenceIsDeletedFromRecurrence for the id of an
    occurrence deleted from its series: that is "gone", like a deleted single item."""
    master = room.series("Weekly review", at(15, 10), at(15, 11), "weekly", count=3)
    occurrences = room.calendar.list_events(room.mailbox, TimeWindow(MON, MON + timedelta(days=21)))
    second = next(e for e in occurrences if e.start == at(22, 10).astimezone(UTC))
    room.cancel_occurrence(master, at(22, 10))

    assert room.calendar.get_event(room.mailbox, second.item_id) is None
    with pytest.raises(EventGone):
        room.calendar.move_event(room.mailbox, second.item_id, second.change_key, at(22, 15), at(22, 16))
    with pytest.raises(EventGone):
        room.calendar.remove_event(room.mailbox, second.item_id, second.change_key)


def test_remove_event(room: Any) -> None:
    keep = room.calendar.create_event(room.mailbox, new_event("syncd:u:1", day=16))
    gone = room.calendar.create_event(room.mailbox, new_event("syncd:u:2", day=17))

    room.calendar.remove_event(room.mailbox, gone.item_id, gone.change_key)

    assert [e.item_id for e in room.calendar.list_events(room.mailbox, WEEK)] == [keep.item_id]
    assert room.calendar.find_stamped(room.mailbox, "syncd:u:2", WEEK) is None


def test_get_event_follows_a_move_out_of_the_window(room: Any) -> None:
    item = room.book("Moved far away", at(16, 9), at(16, 10))
    room.move(item, at(30, 9), at(30, 10))

    assert room.calendar.list_events(room.mailbox, WEEK) == []
    event = room.calendar.get_event(room.mailbox, item)
    assert event is not None and event.start == at(30, 9).astimezone(UTC)


def test_decline_tells_the_organizer_why(room: Any) -> None:
    item = room.book("Double booked", at(16, 9), at(16, 10))
    (event,) = room.calendar.list_events(room.mailbox, WEEK)

    room.calendar.decline(room.mailbox, event.item_id, event.change_key, "Room taken in Ultimo (R-88)")

    (declined,) = room.declines()
    assert "Room taken in Ultimo (R-88)" in str(declined)
    assert item in str(declined) or event.item_id in str(declined)


# --- failures -------------------------------------------------------------------------------


def test_throttling_is_waited_out(room: Any) -> None:
    room.book("Standup", at(16, 9), at(16, 9, 30))
    room.make_busy(2)

    events = room.calendar.list_events(room.mailbox, WEEK)

    assert [e.subject for e in events] == ["Standup"]
    assert room.sleeps == [pytest.approx(2)]      # as long as the server asked


def test_dropped_connection_is_retried(room: Any) -> None:
    room.book("Standup", at(16, 9), at(16, 9, 30))
    room.calendar.probe(room.mailbox)
    room.drop_next_connection()

    assert [e.subject for e in room.calendar.list_events(room.mailbox, WEEK)] == ["Standup"]
    assert len(room.sleeps) == 1                  # one short pause before reconnecting


def test_bad_credentials_fail_at_once(room: Any) -> None:
    calendar = room.make_calendar(password="wrong-password", max_wait=3600)
    room.forget_requests()

    with pytest.raises(CalendarAuthError) as raised:
        calendar.list_events(room.mailbox, WEEK)

    assert room.sleeps == []                      # not mistaken for throttling
    assert room.who in str(raised.value)
    assert "wrong-password" not in str(raised.value) and "wrong-password" not in repr(raised.value)


def test_unknown_mailbox_is_named(room: Any) -> None:
    with pytest.raises(CalendarError) as raised:
        room.calendar.list_events("nobody@example.com", WEEK)
    assert "nobody@example.com" in str(raised.value)
    assert not isinstance(raised.value, CalendarAuthError)


def test_probe_reads_without_writing(room: Any) -> None:
    room.book("Standup", at(16, 9), at(16, 9, 30))
    room.forget_requests()

    assert room.calendar.probe(room.mailbox)

    assert room.requests() >= 1 and room.write_requests() == 0
