"""Graph event JSON -> syncd's Event (pure): keys shaped like the EWS backend's, times in UTC,
all-day events at local midnight whichever way Graph wrote them, the stamp, odd inputs."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from syncd.calendars.graph.convert import GRAPH_STAMP_ID, create_body, event_key, to_event
from syncd.core.model import NewEvent
from syncd.errors import CalendarProtocolError, UnknownTimeZone

AMS = ZoneInfo("Europe/Amsterdam")
UID = "040000008200E00074C5B7101A82E00800000000"


def item(**fields: object) -> dict:
    base = {"id": "AAMk-1", "changeKey": "ck1", "iCalUId": UID, "type": "singleInstance",
            "start": {"dateTime": "2027-03-16T08:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2027-03-16T08:30:00.0000000", "timeZone": "UTC"},
            "subject": "Standup", "organizer": {"emailAddress": {"address": "alice@example.com"}},
            "sensitivity": "normal"}
    return {**base, **fields}


def test_a_single_meeting() -> None:
    e = to_event(item(), AMS)
    assert (e.key, e.item_id, e.change_key) == (UID, "AAMk-1", "ck1")
    assert (e.start, e.end) == (datetime(2027, 3, 16, 8, tzinfo=UTC), datetime(2027, 3, 16, 8, 30, tzinfo=UTC))
    assert e.organizer == "alice@example.com" and not e.private and not e.recurring and e.stamp is None


def test_occurrence_keys_are_the_ews_backends() -> None:
    moved = item(type="exception", originalStart="2027-03-17T08:00:00Z",
                 start={"dateTime": "2027-03-17T15:00:00.0000000", "timeZone": "UTC"},
                 end={"dateTime": "2027-03-17T15:30:00.0000000", "timeZone": "UTC"})
    plain = item(type="occurrence")        # an unmodified occurrence: where it starts is where it was
    assert event_key(moved) == f"{UID}|2027-03-17T08:00:00+00:00"
    assert event_key(plain) == f"{UID}|2027-03-16T08:00:00+00:00"
    assert to_event(moved, AMS).recurring


@pytest.mark.parametrize("start, end", [
    ("2027-03-18T00:00:00.0000000", "2027-03-19T00:00:00.0000000"),     # midnight in the zone asked for (UTC)
    ("2027-03-17T23:00:00.0000000", "2027-03-18T23:00:00.0000000"),     # local midnight, written in UTC
])
def test_all_day_is_local_midnight_to_midnight(start: str, end: str) -> None:
    e = to_event(item(isAllDay=True, originalStartTimeZone="W. Europe Standard Time",
                      start={"dateTime": start, "timeZone": "UTC"}, end={"dateTime": end, "timeZone": "UTC"}), AMS)
    assert e.all_day
    assert (e.start, e.end) == (datetime(2027, 3, 18, tzinfo=AMS).astimezone(UTC),
                                datetime(2027, 3, 19, tzinfo=AMS).astimezone(UTC))


def test_a_time_in_another_zone_than_asked_for_is_converted() -> None:
    e = to_event(item(start={"dateTime": "2027-03-16T09:00:00", "timeZone": "Europe/Amsterdam"},
                      end={"dateTime": "2027-03-16T09:30:00", "timeZone": "W. Europe Standard Time"}), AMS)
    assert (e.start.hour, e.end.hour, e.end.minute) == (8, 8, 30)
    with pytest.raises(UnknownTimeZone):
        to_event(item(start={"dateTime": "2027-03-16T09:00:00", "timeZone": "Mars Standard Time"}), AMS)


def test_stamp_privacy_and_fallbacks() -> None:
    e = to_event(item(sensitivity="private", iCalUId=None, changeKey=None, **{"@odata.etag": 'W/"ck9"'},
                      singleValueExtendedProperties=[{"id": GRAPH_STAMP_ID.upper(), "value": "syncd:u:7"}]), AMS)
    assert (e.key, e.change_key, e.stamp, e.private) == ("AAMk-1", "ck9", "syncd:u:7", True)
    with pytest.raises(CalendarProtocolError):
        to_event(item(start={"timeZone": "UTC"}), AMS)
    with pytest.raises(CalendarProtocolError):
        to_event(item(start={"dateTime": "yesterday", "timeZone": "UTC"}), AMS)


def test_the_create_body_blocks_the_room_without_inviting_anyone() -> None:
    new = NewEvent(subject="Inspection", start=datetime(2027, 3, 16, 9, tzinfo=AMS),
                   end=datetime(2027, 3, 16, 10, tzinfo=AMS), stamp="syncd:u:42", transaction_id="syncd-t1")
    body = create_body(new, "syncd-t1")
    assert "attendees" not in body and body["showAs"] == "busy" and body["transactionId"] == "syncd-t1"
    assert body["start"] == {"dateTime": "2027-03-16T08:00:00", "timeZone": "UTC"}
    assert body["singleValueExtendedProperties"] == [{"id": GRAPH_STAMP_ID, "value": "syncd:u:42"}]
