"""The EWS sandbox against the real exchangelib 5.6.0 client over loopback.

Two halves: the captured exchangelib requests in reference/ews-traffic/ replayed as raw HTTP
(every answer must be a well-formed EWS response that exchangelib's own parsers accept), and
the real `exchangelib.Account` driven through what syncd does: calendar views with recurrence
expansion, filters on an extended property, create/update/delete with change keys, sync
states, declines, authentication modes and injected faults.
"""

from __future__ import annotations

import base64
import http.client
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import exchangelib.protocol
import pytest
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    Account,
    Build,
    CalendarItem,
    Configuration,
    Credentials,
    ExtendedProperty,
    FailFast,
    FaultTolerance,
    Version,
)
from exchangelib import UTC as EWS_UTC
from exchangelib.errors import (
    ErrorIrresolvableConflict,
    ErrorServerBusy,
    UnauthorizedError,
)
from exchangelib.services import ConvertId, CreateItem, GetItem, SyncFolderItems, UpdateItem

from syncd.sandbox.ews.server import EwsSandbox, Recurrence

AMS = ZoneInfo("Europe/Amsterdam")
ROOM = "room1@example.com"
USER, PASSWORD = "svc@example.com", "Pa55-word"
TRAFFIC = Path("/work/shared/reference/ews-traffic")
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
PINNED = Version(build=Build(15, 1, 2507, 6))


class UltimoId(ExtendedProperty):
    property_set_id = "c11ff724-aa03-4555-9952-8fa248a11c3e"
    property_name = "UltimoReservationId"
    property_type = "String"


# A name of our own, so the backend's registration of the same property does not collide.
FIELD = "sbx_ultimo_id"


@pytest.fixture(scope="module", autouse=True)
def _extended_property() -> Iterator[None]:
    CalendarItem.register(FIELD, UltimoId)
    yield
    CalendarItem.deregister(FIELD)


@pytest.fixture
def ews() -> Iterator[EwsSandbox]:
    sandbox = EwsSandbox(users={USER: PASSWORD}, auth="any").start()
    sandbox.add_mailbox(ROOM)
    try:
        yield sandbox
    finally:
        exchangelib.protocol.close_connections()
        sandbox.stop()


def at(month: int, day: int, hour: int, minute: int = 0, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=AMS)


def account(
    ews: EwsSandbox, *, auth: str | None = BASIC, access: str = IMPERSONATION, pinned: bool = True,
    password: str = PASSWORD, retry: Any = None, user: str = USER,
) -> Account:
    config = Configuration(
        service_endpoint=ews.url, credentials=Credentials(user, password), auth_type=auth,
        version=PINNED if pinned else None, retry_policy=retry or FailFast(),
    )
    return Account(ROOM, config=config, autodiscover=False, access_type=access, default_timezone=AMS)


# --- the captured traffic, replayed ------------------------------------------------------------


def post(ews: EwsSandbox, body: bytes, *, user: str = USER, password: str = PASSWORD) -> tuple[int, bytes]:
    host, port = ews.url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        conn.request("POST", "/EWS/Exchange.asmx", body=body, headers={
            "Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {token}",
            "X-AnchorMailbox": ROOM,
        })
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def messages(body: bytes, op: str) -> list[ET.Element]:
    """The response messages of a well-formed `op` answer (with the version header)."""
    root = ET.fromstring(body)
    info = root.find(f"{{{SOAP}}}Header/{{{TNS}}}ServerVersionInfo")
    assert info is not None and info.get("MajorBuildNumber") == "2507" and info.get("Version") == "V2017_07_11"
    resp = root.find(f"{{{SOAP}}}Body/{{{MNS}}}{op}Response")
    assert resp is not None, body[:400]
    found = resp.findall(f"{{{MNS}}}ResponseMessages/{{{MNS}}}{op}ResponseMessage")
    assert found
    for msg in found:
        code = msg.findtext(f"{{{MNS}}}ResponseCode")
        assert (msg.get("ResponseClass") == "Success") == (code == "NoError"), code
    return found


def codes(body: bytes, op: str) -> list[str]:
    return [msg.findtext(f"{{{MNS}}}ResponseCode") or "" for msg in messages(body, op)]


def test_replayed_traffic_gets_well_formed_answers_for_unknown_ids(ews: EwsSandbox) -> None:
    seen = []
    for path in sorted(TRAFFIC.glob("*.xml")):
        op = path.stem.split("_", 1)[1]
        status, body = post(ews, path.read_bytes())
        assert status == 200, (path.name, body[:300])
        seen.append((path.stem, codes(body, op)))
    by_name = dict(seen)
    assert by_name["00_ConvertId"] == ["ErrorInvalidIdMalformed"]
    assert by_name["01_GetFolder"] == by_name["02_GetFolder"] == ["NoError"]
    assert by_name["03_CreateItem"] == ["NoError"]
    # The captured ids belong to an earlier fake: EWS answers ErrorItemNotFound, one message per id.
    assert by_name["06_GetItem"] == by_name["08_GetItem"] == ["ErrorItemNotFound"]
    assert by_name["14_UpdateItem"] == by_name["16_UpdateItem"] == ["ErrorItemNotFound"]
    assert by_name["17_DeleteItem"] == ["ErrorItemNotFound"]
    # Sync states are counters: S:1 is the one CreateItem, S:2 has not happened here.
    assert by_name["13_SyncFolderItems"] == by_name["15_SyncFolderItems"] == ["NoError"]
    assert by_name["18_SyncFolderItems"] == ["ErrorInvalidSyncStateData"]
    acc = account(ews)
    parsed = list(GetItem(account=acc).parse(post(ews, (TRAFFIC / "08_GetItem.xml").read_bytes())[1]))
    assert isinstance(parsed[0], exchangelib.errors.ErrorItemNotFound)


def test_replayed_traffic_against_a_seeded_item(ews: EwsSandbox) -> None:
    item_id = ews.book(ROOM, subject="Seed", start=at(3, 10, 9), end=at(3, 10, 10))
    change_key = ews.items(ROOM)[0]["change_key"]
    captured = "STpyb29tMUBleGFtcGxlLmNvbTphODhmMDJlNWUxMTk0MGE4OGIwNDBjMTllMTJmNzgzYw=="
    acc = account(ews)

    def replay(name: str, fresh_key: bool = True) -> bytes:
        text = (TRAFFIC / name).read_text().replace(captured, item_id)
        if fresh_key:
            text = re.sub(r'ChangeKey="Q0s[0-9]"', f'ChangeKey="{ews.items(ROOM)[0]["change_key"]}"', text)
        status, body = post(ews, text.encode())
        assert status == 200
        return body

    created = list(CreateItem(account=acc).parse(replay("03_CreateItem.xml")))
    assert created[0].id and created[0].id != item_id
    for name in ("04_FindItem.xml", "11_FindItem.xml"):
        assert codes(replay(name), "FindItem") == ["NoError"]
    found = messages(replay("09_FindItem.xml"), "FindItem")[0]
    root = found.find(f"{{{MNS}}}RootFolder")
    assert root is not None and root.get("TotalItemsInView") == "1" and root.get("IncludesLastItemInRange") == "true"
    items = list(GetItem(account=acc).parse(replay("06_GetItem.xml")))
    assert items[0].subject == "Seed" and items[0].start == at(3, 10, 9)
    assert items[0].changekey == change_key
    narrow = list(GetItem(account=acc).parse(replay("08_GetItem.xml")))[0]
    assert narrow.subject == "Seed" and narrow.organizer is None  # not asked for, not sent
    with pytest.raises(ErrorIrresolvableConflict):  # ChangeKey="STALE" under NeverOverwrite
        list(UpdateItem(account=acc).parse(replay("16_UpdateItem.xml")))
    updated = list(UpdateItem(account=acc).parse(replay("14_UpdateItem.xml")))
    assert updated[0][0] == item_id
    moved = next(i for i in ews.items(ROOM) if i["id"] == item_id)
    assert (moved["subject"], moved["start"], moved["end"]) == ("Ultimo booking 42 (moved)", at(3, 10, 11),
                                                                at(3, 10, 12))
    assert codes(replay("17_DeleteItem.xml"), "DeleteItem") == ["NoError"]
    assert all(i["id"] != item_id for i in ews.items(ROOM))
    synced = list(SyncFolderItems(account=acc).parse(replay("13_SyncFolderItems.xml")))
    assert [(kind, item.subject) for kind, item in synced] == [("create", "Ultimo booking 42")]
    assert getattr(synced[0][1], FIELD) == "ULT-42"
    probe = list(ConvertId(protocol=acc.protocol).parse(replay("00_ConvertId.xml")))
    assert isinstance(probe[0], exchangelib.errors.ErrorInvalidIdMalformed)


def test_unauthenticated_probe_and_wrong_password_get_401(ews: EwsSandbox) -> None:
    status, _ = post(ews, (TRAFFIC / "00_ConvertId.xml").read_bytes(), password="wrong")
    assert status == 401
    host, port = ews.url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", "/EWS/Exchange.asmx", body=(TRAFFIC / "00_ConvertId.xml").read_bytes())
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401
    offered = resp.getheader("WWW-Authenticate") or ""
    assert "NTLM" in offered and "Basic" in offered
    conn.close()
    assert ews.calls() == 0  # refused requests are not served, so not journaled


# --- the real client ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [BASIC, NTLM, None], ids=["basic", "ntlm", "probed"])
@pytest.mark.parametrize("access", [IMPERSONATION, DELEGATE])
def test_exchangelib_connects_and_lists_a_window(ews: EwsSandbox, auth: str | None, access: str) -> None:
    ews.book(ROOM, subject="Standup", start=at(3, 10, 9), end=at(3, 10, 9, 30))
    acc = account(ews, auth=auth, access=access, pinned=auth is not None)
    assert acc.calendar.name == "Calendar"
    got = list(acc.calendar.view(start=at(3, 10, 0), end=at(3, 11, 0)).only("subject", "start", "end"))
    assert [(i.subject, i.start, i.end) for i in got] == [("Standup", at(3, 10, 9), at(3, 10, 9, 30))]
    assert ews.calls(ROOM, "GetFolder") == 2
    assert ews.calls(ROOM, "FindItem") == 1
    # without a pinned version, exchangelib first guesses it with ConvertId
    assert ews.calls(op="ConvertId") == (0 if auth is not None else 1)


@pytest.mark.parametrize("auth", [BASIC, NTLM])
def test_wrong_password_or_unknown_user_is_unauthorized(ews: EwsSandbox, auth: str) -> None:
    with pytest.raises(UnauthorizedError):
        account(ews, auth=auth, password="not-it").calendar  # noqa: B018
    exchangelib.protocol.close_connections()
    with pytest.raises(UnauthorizedError):
        account(ews, auth=auth, user="mallory@example.com").calendar  # noqa: B018


def test_ntlm_only_sandbox_offers_ntlm_and_takes_domain_user() -> None:
    with EwsSandbox(users={"CORP\\svc": PASSWORD}, auth="ntlm") as ews:
        ews.add_mailbox(ROOM)
        try:
            acc = account(ews, auth=None, pinned=False, user="CORP\\svc")
            assert acc.calendar.name == "Calendar"
        finally:
            exchangelib.protocol.close_connections()


def test_unknown_mailbox_is_error_non_existent_mailbox(ews: EwsSandbox) -> None:
    config = Configuration(service_endpoint=ews.url, credentials=Credentials(USER, PASSWORD), auth_type=BASIC,
                           version=PINNED)
    acc = Account("nobody@example.com", config=config, autodiscover=False, access_type=DELEGATE)
    with pytest.raises(exchangelib.errors.ErrorNonExistentMailbox):
        acc.root  # noqa: B018


def test_full_view_without_only_parses_every_field(ews: EwsSandbox) -> None:
    ews.book(ROOM, subject="Board", start=at(3, 10, 13), end=at(3, 10, 14), organizer="bob@example.com",
             private=True)
    [item] = list(account(ews).calendar.view(start=at(3, 10, 0), end=at(3, 11, 0)))
    assert item.subject == "Board" and item.sensitivity == "Private"
    assert item.organizer.email_address == "bob@example.com"
    assert item.type == "Single" and item.is_all_day is False and item.my_response_type == "Accept"
    assert item.start == at(3, 10, 13) and str(item._start_timezone) in ("Europe/Berlin", "Europe/Amsterdam")
    assert item.uid and item.datetime_created is not None and item.last_modified_time is not None


def test_recurring_series_expands_with_moved_and_cancelled_occurrences(ews: EwsSandbox) -> None:
    master = ews.book(ROOM, subject="Weekly", start=at(3, 3, 9), end=at(3, 3, 10),
                      recurrence=Recurrence("weekly", count=4))
    ews.move_occurrence(ROOM, master, at(3, 10, 9), at(3, 10, 14), at(3, 10, 15))
    ews.cancel_occurrence(ROOM, master, at(3, 17, 9))
    cal = account(ews).calendar
    got = list(cal.view(start=at(3, 1, 0), end=at(4, 1, 0)).only(
        "subject", "start", "end", "type", "original_start", FIELD))
    assert [(i.type, i.start, i.original_start) for i in got] == [
        ("Occurrence", at(3, 3, 9), at(3, 3, 9)),
        ("Exception", at(3, 10, 14), at(3, 10, 9)),
        ("Occurrence", at(3, 24, 9), at(3, 24, 9)),
    ]
    assert len({i.id for i in got}) == 3 and master not in {i.id for i in got}
    # filter() sees the master only, with the series description
    [found] = list(cal.filter(subject="Weekly"))
    assert found.type == "RecurringMaster" and found.id == master
    assert found.recurrence.boundary.number == 4
    assert [o.start for o in found.modified_occurrences] == [at(3, 10, 14)]
    assert [d.start for d in found.deleted_occurrences] == [at(3, 17, 9)]
    # an occurrence leads back to its master, and a deleted one is gone
    occ = got[0]
    master_item = occ.recurring_master()
    master_item.refresh()
    assert master_item.id == master and master_item.subject == "Weekly"
    view = ews.occurrences(ROOM, at(3, 1, 0), at(4, 1, 0))
    assert [v["original_start"] for v in view] == [at(3, 3, 9), at(3, 10, 9), at(3, 24, 9)]


def test_deleted_occurrence_id_is_answered_as_deleted_from_recurrence(ews: EwsSandbox) -> None:
    """Exchange's answer for the id of an occurrence deleted from its series is
    ErrorCalendarOccurrenceIsDeletedFromRecurrence (exchangelib raises it)."""
    master = ews.book(ROOM, subject="Daily", start=at(3, 3, 9), end=at(3, 3, 10),
                      recurrence=Recurrence("daily", until=date(2025, 3, 7)))
    cal = account(ews).calendar
    occs = list(cal.view(start=at(3, 1, 0), end=at(3, 10, 0)).only("start"))
    assert len(occs) == 5
    ews.cancel_occurrence(ROOM, master, at(3, 5, 9))
    with pytest.raises(exchangelib.errors.ErrorCalendarOccurrenceIsDeletedFromRecurrence):
        list(cal.account.fetch(ids=[(occs[2].id, occs[2].changekey)], only_fields=["start"]))
    others = [o for i, o in enumerate(occs) if i != 2]
    refetched = list(cal.account.fetch(ids=[(o.id, o.changekey) for o in others], only_fields=["start"]))
    assert [r.start for r in refetched] == [at(3, 3, 9), at(3, 4, 9), at(3, 6, 9), at(3, 7, 9)]


def test_weekly_series_keeps_wall_clock_across_dst(ews: EwsSandbox) -> None:
    ews.book(ROOM, subject="Planning", start=at(3, 24, 10), end=at(3, 24, 11),
             recurrence=Recurrence("weekly", interval=1, weekdays=(0, 3), until=date(2025, 4, 3)))
    got = list(account(ews).calendar.view(start=at(3, 20, 0), end=at(4, 10, 0)).only("start", "end"))
    utc_hours = [(i.start.astimezone(EWS_UTC).date(), i.start.astimezone(EWS_UTC).hour) for i in got]
    # Mon 24, Thu 27 March in CET (UTC+1); Mon 31 March, Thu 3 April in CEST (UTC+2)
    assert utc_hours == [(date(2025, 3, 24), 9), (date(2025, 3, 27), 9), (date(2025, 3, 31), 8),
                         (date(2025, 4, 3), 8)]
    assert {i.start.astimezone(AMS).hour for i in got} == {10}


def test_all_day_and_private_meetings(ews: EwsSandbox) -> None:
    ews.book(ROOM, subject="Offsite", start=at(3, 12, 0), end=at(3, 13, 0), all_day=True)
    ews.book(ROOM, subject="HR", start=at(3, 12, 15), end=at(3, 12, 16), private=True)
    stored = {i["subject"]: i for i in ews.items(ROOM)}
    assert stored["Offsite"]["start"] == at(3, 12, 0) and stored["Offsite"]["end"] == at(3, 13, 0)
    got = {i.subject: i for i in account(ews).calendar.view(start=at(3, 12, 0), end=at(3, 13, 0)).only(
        "subject", "start", "end", "is_all_day", "sensitivity")}
    assert got["Offsite"].is_all_day is True
    # exchangelib turns all-day values into dates, the end inclusive
    assert got["Offsite"].start == date(2025, 3, 12) and got["Offsite"].end == date(2025, 3, 12)
    assert got["HR"].sensitivity == "Private"


def test_calendar_view_limits(ews: EwsSandbox) -> None:
    for day in range(3, 8):
        ews.book(ROOM, subject=f"d{day}", start=at(3, day, 9), end=at(3, day, 10))
    cal = account(ews).calendar
    assert [i.subject for i in cal.view(start=at(3, 1, 0), end=at(3, 31, 0), max_items=2).only("subject")] == [
        "d3", "d4"]
    with pytest.raises(exchangelib.errors.ErrorCalendarViewRangeTooBig):
        list(cal.view(start=at(1, 1, 0), end=at(1, 2, 0, year=2028)).only("subject"))
    # an item ending exactly at the window start is included, as real EWS does
    assert [i.subject for i in cal.view(start=at(3, 3, 10), end=at(3, 3, 12)).only("subject")] == ["d3"]


def test_create_filter_update_delete_with_change_keys(ews: EwsSandbox) -> None:
    cal = account(ews).calendar
    item = CalendarItem(account=cal.account, folder=cal, subject="Ultimo 42", start=at(3, 11, 9),
                        end=at(3, 11, 10), location="Room 1", **{FIELD: "ULT-42"})
    item.save(send_meeting_invitations="SendToNone")
    [stored] = ews.items(ROOM)
    assert stored["id"] == item.id and stored["change_key"] == item.changekey
    assert stored["extended_properties"] == {"UltimoReservationId": "ULT-42"}
    assert stored["organizer"] == ROOM and stored["start_timezone"] == "W. Europe Standard Time"

    [found] = list(cal.filter(**{FIELD: "ULT-42"}))
    assert found.id == item.id and getattr(found, FIELD) == "ULT-42"
    assert list(cal.filter(**{FIELD: "ULT-43"})) == []
    in_window = list(cal.filter(start__lt=at(3, 12, 0), end__gt=at(3, 11, 0)).only("subject"))
    assert [i.subject for i in in_window] == ["Ultimo 42"]

    stale = CalendarItem(account=cal.account, folder=cal, id=item.id, changekey=item.changekey,
                         start=at(3, 11, 15), end=at(3, 11, 16))
    ews.touch(ROOM, item.id)  # the Resource Booking Assistant bumps the change key
    with pytest.raises(ErrorIrresolvableConflict):
        stale.save(update_fields=["start", "end"], conflict_resolution="NeverOverwrite")
    assert ews.items(ROOM)[0]["start"] == at(3, 11, 9)
    stale.save(update_fields=["start", "end"], conflict_resolution="AlwaysOverwrite")
    assert ews.items(ROOM)[0]["start"] == at(3, 11, 15)
    assert stale.id == item.id and stale.changekey == ews.items(ROOM)[0]["change_key"] != item.changekey

    setattr(stale, FIELD, "ULT-99")
    stale.subject = "renamed"
    stale.save(update_fields=["subject", FIELD], conflict_resolution="NeverOverwrite")
    assert ews.items(ROOM)[0]["subject"] == "renamed"
    assert ews.items(ROOM)[0]["extended_properties"] == {"UltimoReservationId": "ULT-99"}

    stale.delete(send_meeting_cancellations="SendToNone")
    assert ews.items(ROOM) == []
    assert isinstance(list(cal.account.fetch(ids=[(item.id, None)]))[0], exchangelib.errors.ErrorItemNotFound)


def test_filter_pages_through_many_items(ews: EwsSandbox) -> None:
    for n in range(7):
        ews.book(ROOM, subject=f"m{n}", start=at(3, 3, 8 + n), end=at(3, 3, 9 + n))
    qs = account(ews).calendar.filter(start__gte=at(3, 3, 0)).only("subject")
    qs.page_size = 3
    assert [i.subject for i in qs] == [f"m{n}" for n in range(7)]
    assert ews.calls(ROOM, "FindItem") == 3


def test_updating_an_occurrence_makes_it_an_exception(ews: EwsSandbox) -> None:
    master = ews.book(ROOM, subject="Daily", start=at(3, 3, 9), end=at(3, 3, 10),
                      recurrence=Recurrence("daily", count=3))
    cal = account(ews).calendar
    second = list(cal.view(start=at(3, 4, 0), end=at(3, 5, 0)))[0]
    second.start, second.end = at(3, 4, 15), at(3, 4, 16)
    second.save(update_fields=["start", "end"], conflict_resolution="NeverOverwrite")
    view = ews.occurrences(ROOM, at(3, 1, 0), at(3, 10, 0))
    assert [(v["type"], v["start"]) for v in view] == [
        ("Occurrence", at(3, 3, 9)), ("Exception", at(3, 4, 15)), ("Occurrence", at(3, 5, 9))]
    assert view[1]["id"] == second.id and view[1]["master_id"] == master
    third = list(cal.view(start=at(3, 5, 0), end=at(3, 6, 0)))[0]
    third.delete(send_meeting_cancellations="SendToNone")
    assert [v["start"] for v in ews.occurrences(ROOM, at(3, 1, 0), at(3, 10, 0))] == [at(3, 3, 9), at(3, 4, 15)]
    assert ews.items(ROOM)[0]["deleted_occurrences"] == [at(3, 5, 9)]


def test_sync_items_reports_changes_once(ews: EwsSandbox) -> None:
    first = ews.book(ROOM, subject="one", start=at(3, 3, 9), end=at(3, 3, 10))
    series = ews.book(ROOM, subject="series", start=at(3, 4, 9), end=at(3, 4, 10),
                      recurrence=Recurrence("daily", count=5))
    cal = account(ews).calendar
    fields = ["subject", "start", "end", FIELD]
    changes = [(kind, i.id) for kind, i in cal.sync_items(only_fields=fields)]
    assert changes == [("create", first), ("create", series)]
    state = cal.item_sync_state
    assert list(cal.sync_items(sync_state=state, only_fields=fields)) == []  # second time: nothing new
    assert cal.item_sync_state == state

    ews.rename(ROOM, first, "one!")
    ews.rename(ROOM, first, "one!!")  # two edits fold into one Update
    ews.move_occurrence(ROOM, series, at(3, 5, 9), at(3, 5, 11), at(3, 5, 12))  # master Update
    third = ews.book(ROOM, subject="three", start=at(3, 6, 9), end=at(3, 6, 10))
    ews.cancel(ROOM, third)  # created and gone since the state: not reported
    got = [(kind, i.id, getattr(i, "subject", None)) for kind, i in cal.sync_items(sync_state=state,
                                                                                    only_fields=fields)]
    assert got == [("update", first, "one!!"), ("update", series, "series")]
    state2 = cal.item_sync_state
    ews.cancel(ROOM, first)
    deleted = list(cal.sync_items(sync_state=state2, only_fields=fields))
    assert [(kind, i.id) for kind, i in deleted] == [("delete", first)]


def test_sync_truncates_with_max_changes_and_rejects_bad_state(ews: EwsSandbox) -> None:
    ids = [ews.book(ROOM, subject=f"s{n}", start=at(3, 3, 8 + n), end=at(3, 3, 9 + n)) for n in range(5)]
    cal = account(ews).calendar
    got = [i.id for _, i in cal.sync_items(only_fields=["subject"], max_changes_returned=2)]
    assert got == ids and ews.calls(ROOM, "SyncFolderItems") == 3
    with pytest.raises(exchangelib.errors.ErrorInvalidSyncStateData):
        list(cal.sync_items(sync_state="bm90LWEtc3RhdGU=", only_fields=["subject"]))


def test_decline_removes_the_meeting_and_tells_the_organizer(ews: EwsSandbox) -> None:
    ews.book(ROOM, subject="Clash", start=at(3, 10, 9), end=at(3, 10, 10), organizer="carol@example.com")
    [item] = list(account(ews).calendar.view(start=at(3, 10, 0), end=at(3, 11, 0)))
    item.decline(body="Room closed for maintenance")
    assert ews.items(ROOM) == []
    [decline] = ews.declines(ROOM)
    assert decline["organizer"] == "carol@example.com" and decline["reason"] == "Room closed for maintenance"
    assert decline["item_id"] == item.id and decline["start"] == at(3, 10, 9)


# --- faults -------------------------------------------------------------------------------------


def test_server_busy_is_retried_after_the_back_off(ews: EwsSandbox) -> None:
    acc = account(ews, retry=FaultTolerance(max_wait=5))
    cal = acc.calendar
    ews.inject("server_busy", op="FindItem", back_off_ms=20)
    assert list(cal.view(start=at(3, 1, 0), end=at(3, 2, 0))) == []
    assert ews.calls(ROOM, "FindItem") == 2


def test_server_busy_under_fail_fast_carries_the_back_off(ews: EwsSandbox) -> None:
    cal = account(ews).calendar
    ews.inject("server_busy", back_off_ms=1500)
    with pytest.raises(ErrorServerBusy) as err:
        list(cal.view(start=at(3, 1, 0), end=at(3, 2, 0)))
    assert err.value.back_off == 1.5


def test_http_faults_are_consumed_in_order(ews: EwsSandbox) -> None:
    cal = account(ews).calendar
    ews.inject("http503", op="FindItem")
    ews.inject("http401", mailbox=ROOM)
    ews.inject("drop", op="GetItem")
    window = {"start": at(3, 1, 0), "end": at(3, 2, 0)}
    with pytest.raises(ErrorServerBusy, match="HTTP 503"):  # FailFast re-raises 503 as busy
        list(cal.view(**window))
    with pytest.raises(UnauthorizedError):
        list(cal.view(**window))
    ews.book(ROOM, subject="x", start=at(3, 1, 9), end=at(3, 1, 10))
    with pytest.raises(exchangelib.errors.TransportError):
        list(cal.view(**window))
    exchangelib.protocol.close_connections()
    assert [i.subject for i in account(ews).calendar.view(**window)] == ["x"]


def test_drop_closes_the_connection_without_an_answer(ews: EwsSandbox) -> None:
    ews.inject("drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(ews, (TRAFFIC / "00_ConvertId.xml").read_bytes())
    status, _ = post(ews, (TRAFFIC / "00_ConvertId.xml").read_bytes())
    assert status == 200
    assert [op for _, _, op in ews.journal] == ["ConvertId", "ConvertId"]
    ews.clear_journal()
    assert ews.calls() == 0


def test_book_rejects_naive_datetimes(ews: EwsSandbox) -> None:
    with pytest.raises(ValueError):
        ews.book(ROOM, subject="x", start=datetime(2025, 3, 3, 9), end=datetime(2025, 3, 3, 10))
    with pytest.raises(ValueError):
        ews.book(ROOM, subject="x", start=at(3, 3, 10), end=at(3, 3, 9))
    with pytest.raises(KeyError):
        ews.book("ghost@example.com", subject="x", start=at(3, 3, 9), end=at(3, 3, 10))
    with pytest.raises(KeyError):
        ews.move(ROOM, "bm90LW91cnM=", at(3, 3, 9), at(3, 3, 10))


def test_renaming_a_master_keeps_its_exceptions(ews: EwsSandbox) -> None:
    master = ews.book(ROOM, subject="Weekly", start=at(3, 3, 9), end=at(3, 3, 10),
                      recurrence=Recurrence("weekly", count=3))
    ews.move_occurrence(ROOM, master, at(3, 10, 9), at(3, 10, 12), at(3, 10, 13))
    ews.cancel_occurrence(ROOM, master, at(3, 17, 9))
    cal = account(ews).calendar
    [item] = list(cal.filter(subject="Weekly"))
    item.subject = "Weekly (renamed)"
    item.save(update_fields=["subject"], conflict_resolution="NeverOverwrite")
    view = ews.occurrences(ROOM, at(3, 1, 0), at(3, 31, 0))
    assert [(v["subject"], v["start"]) for v in view] == [
        ("Weekly (renamed)", at(3, 3, 9)), ("Weekly (renamed)", at(3, 10, 12))]


def test_folders_by_issued_id_accept_and_move_to_trash(ews: EwsSandbox) -> None:
    ews.book(ROOM, subject="Keep", start=at(3, 10, 9), end=at(3, 10, 10))
    ews.book(ROOM, subject="Trash", start=at(3, 10, 11), end=at(3, 10, 12))
    cal = account(ews).calendar
    before = ews.calls(ROOM, "GetFolder")
    cal.refresh()  # GetFolder by the FolderId the sandbox issued
    assert ews.calls(ROOM, "GetFolder") == before + 1 and cal.name == "Calendar" and cal.total_count == 2
    got = {i.subject: i for i in cal.view(start=at(3, 10, 0), end=at(3, 11, 0))}
    got["Keep"].accept(body="See you")
    assert ews.items(ROOM)[0]["my_response_type"] == "Accept" and ews.declines(ROOM) == []
    got["Trash"].move_to_trash()
    assert [i["subject"] for i in ews.items(ROOM)] == ["Keep"]


def test_basic_only_sandbox_offers_basic_only() -> None:
    with EwsSandbox(users={USER: PASSWORD}, auth="basic") as ews:
        host, port = ews.url.split("//")[1].split("/")[0].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/EWS/Exchange.asmx", body=(TRAFFIC / "00_ConvertId.xml").read_bytes())
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 401 and resp.getheader("WWW-Authenticate") == 'Basic realm="127.0.0.1"'


def test_declining_an_outdated_meeting_is_refused(ews: EwsSandbox) -> None:
    item_id = ews.book(ROOM, subject="Moving", start=at(3, 10, 9), end=at(3, 10, 10))
    [item] = list(account(ews).calendar.view(start=at(3, 10, 0), end=at(3, 11, 0)))
    ews.move(ROOM, item_id, at(3, 10, 11), at(3, 10, 12))
    with pytest.raises(exchangelib.errors.ErrorStaleObject):
        item.decline(body="Too late")
    assert ews.declines(ROOM) == [] and len(ews.items(ROOM)) == 1


def test_truncated_sync_pages_never_update_before_create(ews: EwsSandbox) -> None:
    cal = account(ews).calendar
    list(cal.sync_items(only_fields=["subject"]))
    state = cal.item_sync_state
    first = ews.book(ROOM, subject="a", start=at(3, 3, 9), end=at(3, 3, 10))
    second = ews.book(ROOM, subject="b", start=at(3, 3, 11), end=at(3, 3, 12))
    ews.rename(ROOM, first, "a2")  # written after `second` was created
    pages = [(kind, item.id) for kind, item in
             cal.sync_items(sync_state=state, only_fields=["subject"], max_changes_returned=1)]
    first_seen: dict[str, str] = {}
    for kind, item_id in pages:
        first_seen.setdefault(item_id, kind)
    assert first_seen == {first: "create", second: "create"}  # a client never sees an unknown item updated
    assert list(cal.sync_items(sync_state=cal.item_sync_state, only_fields=["subject"])) == []
