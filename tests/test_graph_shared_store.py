"""One mailbox store, two protocols: the EWS sandbox (driven by the real exchangelib) and the
Graph sandbox (driven by httpx with an MSAL token) serve the same room calendars, so what is
written through one is read through the other with the same UID/iCalUId and syncd's stamp.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import exchangelib.protocol
import httpx
import pytest
from exchangelib import (
    BASIC,
    IMPERSONATION,
    Account,
    Build,
    CalendarItem,
    Configuration,
    Credentials,
    FailFast,
    Version,
)
from test_graph_sandbox import APP, PREFER, ROOM, SECRET, STAMP, at, new_event, token

from syncd.calendars.ews.convert import STAMP_FIELD
from syncd.core.model import event_uid_for
from syncd.sandbox.ews.model import Recurrence
from syncd.sandbox.ews.server import EwsSandbox
from syncd.sandbox.graph.convert import GOID_PREFIX
from syncd.sandbox.graph.server import GraphSandbox

USER, PASSWORD = "svc@example.com", "Pa55-word"
WINDOW = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}
EXPAND = {"$expand": f"singleValueExtendedProperties($filter=id eq '{STAMP}')"}


@pytest.fixture
def both() -> Iterator[tuple[GraphSandbox, EwsSandbox]]:
    graph = GraphSandbox().start()
    ews = EwsSandbox(users={USER: PASSWORD}, auth="basic", store=graph.store).start()
    graph.add_mailbox(ROOM)
    graph.register_app(APP, secret=SECRET)
    try:
        yield graph, ews
    finally:
        exchangelib.protocol.close_connections()
        ews.stop()
        graph.stop()


@pytest.fixture
def client(both: tuple[GraphSandbox, EwsSandbox]) -> Iterator[httpx.Client]:
    graph = both[0]
    with httpx.Client(base_url=f"{graph.graph_url}/v1.0/users/{ROOM}", verify=graph.client_ssl_context(),
                      trust_env=False, headers={"Authorization": f"Bearer {token(graph)}", "Prefer": PREFER}) as c:
        yield c


def account(ews: EwsSandbox) -> Account:
    config = Configuration(service_endpoint=ews.url, credentials=Credentials(USER, PASSWORD), auth_type=BASIC,
                           version=Version(build=Build(15, 1, 2507, 6)), retry_policy=FailFast())
    return Account(ROOM, config=config, autodiscover=False, access_type=IMPERSONATION, default_timezone=exchangelib.UTC)


def view(client: httpx.Client) -> list[dict[str, Any]]:
    answer = client.get("/calendar/calendarView", params={**WINDOW, **EXPAND, "$top": "100"})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["value"])


def ews_item(acc: Account, start: datetime, stamp: str | None = None) -> CalendarItem:
    item = CalendarItem(account=acc, folder=acc.calendar, subject="Blocked by syncd", start=start,
                        end=start + timedelta(hours=1), uid=event_uid_for(stamp) if stamp else None,
                        **({STAMP_FIELD: stamp} if stamp else {}))
    item.save()
    return item


@pytest.mark.parametrize("variant", ["goid", "verbatim"])
def test_an_event_syncd_wrote_through_ews_reads_back_through_graph(both: tuple[GraphSandbox, EwsSandbox],
                                                                   client: httpx.Client, variant: str) -> None:
    graph, ews = both
    graph.options.ical_uid = variant
    item = ews_item(account(ews), at(8, 9), stamp="syncd:u:42")
    [event] = view(client)
    assert event["singleValueExtendedProperties"] == [{"id": STAMP, "value": "syncd:u:42"}]
    uid = event_uid_for("syncd:u:42")
    if variant == "verbatim":
        assert event["iCalUId"] == uid
    else:    # Exchange wraps a foreign UID into a GlobalObjectId; the UID is still inside it
        assert event["iCalUId"].startswith(GOID_PREFIX) and uid.encode().hex().upper() in event["iCalUId"]
    assert event["changeKey"] == item.changekey
    found = client.get("/calendar/events", params={
        "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP}' and ep/value eq 'syncd:u:42')"})
    assert [e["id"] for e in found.json()["value"]] == [event["id"]]


def test_an_event_written_through_graph_reads_back_through_ews(both: tuple[GraphSandbox, EwsSandbox],
                                                               client: httpx.Client) -> None:
    graph, ews = both
    created = new_event(client, "Blocked by syncd", at(9, 9), transactionId="intent-1",
                        singleValueExtendedProperties=[{"id": STAMP, "value": "syncd:u:7"}]).json()
    acc = account(ews)
    [item] = list(acc.calendar.filter(**{STAMP_FIELD: "syncd:u:7"}))
    assert item.uid == created["iCalUId"] and getattr(item, STAMP_FIELD) == "syncd:u:7"
    assert item.start == at(9, 9) and item.changekey == created["changeKey"]
    # A move through EWS shows through Graph with a new change key.
    item.start, item.end = at(9, 11), at(9, 12)
    item.save(update_fields=["start", "end"])
    [event] = view(client)
    assert event["id"] == created["id"] and event["start"]["dateTime"] == "2026-12-09T11:00:00.0000000"
    assert event["changeKey"] != created["changeKey"]


def test_people_booking_through_either_sandbox_show_in_both(both: tuple[GraphSandbox, EwsSandbox],
                                                            client: httpx.Client) -> None:
    graph, ews = both
    ews_master = ews.book(ROOM, subject="Weekly", start=at(7, 9), end=at(7, 10),
                          recurrence=Recurrence("weekly", count=3), organizer="bob@example.com")
    graph_single = graph.book(ROOM, subject="Single", start=at(8, 13), end=at(8, 14))
    graph.cancel_occurrence(ROOM, ews_master, at(14, 9))      # the Graph helper takes an EWS id
    ews.move(ROOM, graph_single, at(8, 15), at(8, 16))          # and the EWS helper a Graph id
    events = view(client)
    assert [(e["subject"], e["type"], e["start"]["dateTime"][:13]) for e in events] == [
        ("Weekly", "occurrence", "2026-12-07T09"), ("Single", "singleInstance", "2026-12-08T15"),
        ("Weekly", "occurrence", "2026-12-21T09")]
    ews_view = ews.occurrences(ROOM, at(1, 0), at(31, 0))
    assert [v["uid"] for v in ews_view] == [e["iCalUId"] for e in events]
    assert events[1]["id"] == graph_single
    assert {e["organizer"]["emailAddress"]["address"] for e in events} == {"bob@example.com", "alice@example.com"}


def test_translate_exchange_ids_maps_ews_ids_to_graph_ids(both: tuple[GraphSandbox, EwsSandbox],
                                                         client: httpx.Client) -> None:
    _graph, ews = both
    item = ews_item(account(ews), at(8, 9), stamp="syncd:u:1")
    answer = client.post("/translateExchangeIds", json={
        "inputIds": [item.id, "bm9uc2Vuc2U="], "sourceIdType": "ewsId", "targetIdType": "restImmutableEntryId"})
    assert answer.status_code == 200
    good, bad = answer.json()["value"]
    assert good["sourceId"] == item.id and "targetId" not in bad
    event = client.get(f"/events/{good['targetId']}").json()
    assert event["subject"] == "Blocked by syncd"
    back = client.post("/translateExchangeIds", json={
        "inputIds": [event["id"]], "sourceIdType": "restImmutableEntryId", "targetIdType": "ewsId"})
    assert back.json()["value"][0]["targetId"] == item.id


def test_a_decline_through_graph_is_seen_by_ews(both: tuple[GraphSandbox, EwsSandbox], client: httpx.Client) -> None:
    graph, ews = both
    meeting = ews.book(ROOM, subject="Clash", start=at(8, 9), end=at(8, 10), organizer="bob@example.com")
    [event] = view(client)
    assert client.post(f"/events/{event['id']}/decline", json={"comment": "Room taken"}).status_code == 202
    assert ews.items(ROOM) == [] and ews.declines(ROOM)[0]["reason"] == "Room taken"
    assert meeting not in {i["id"] for i in ews.items(ROOM)}
    assert datetime.now(UTC) >= ews.declines(ROOM)[0]["time"]


def test_a_write_through_either_protocol_shows_in_the_others_incremental_sync(
        both: tuple[GraphSandbox, EwsSandbox], client: httpx.Client) -> None:
    _graph, ews = both
    acc = account(ews)
    first = client.get("/calendarView/delta", params=WINDOW).json()
    assert first["value"] == [] and "@odata.deltaLink" in first
    acc.calendar.item_sync_state = None
    for _change in acc.calendar.sync_items(only_fields=["subject"]):   # EWS's first sync: nothing yet
        pass
    state = acc.calendar.item_sync_state
    # EWS writes; Graph's next delta round reports it.
    ews_item(acc, at(8, 9), stamp="syncd:u:5")
    [entry] = client.get(first["@odata.deltaLink"]).json()["value"]
    assert entry["subject"] == "Blocked by syncd" and entry["type"] == "singleInstance"
    # Graph writes; EWS's next SyncFolderItems reports it (the EWS write too).
    new_event(client, "Through Graph", at(9, 9))
    acc.calendar.item_sync_state = state
    created = [item.subject for kind, item in acc.calendar.sync_items(only_fields=["subject"]) if kind == "create"]
    assert sorted(created) == ["Blocked by syncd", "Through Graph"]
