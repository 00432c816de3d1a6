"""The Graph sandbox's calendarView/delta against the real httpx client: rounds with opaque
skip and delta tokens, sparse occurrences, tombstones for deletions and out-of-window changes,
410 SyncStateNotFound, the injected duplicate id and type-less tombstone, and each variant of
what cancelling one occurrence shows (graph.md §11 question 4).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from test_graph_sandbox import APP, PREFER, ROOM, SECRET, at, new_event, token

from syncd.sandbox.ews.model import Recurrence
from syncd.sandbox.graph.server import GraphSandbox

DELTA = "/calendarView/delta"
WINDOW = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}


@pytest.fixture
def graph() -> Iterator[GraphSandbox]:
    sandbox = GraphSandbox().start()
    sandbox.add_mailbox(ROOM)
    sandbox.register_app(APP, secret=SECRET)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def client(graph: GraphSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{graph.graph_url}/v1.0/users/{ROOM}", verify=graph.client_ssl_context(),
                      trust_env=False, headers={"Authorization": f"Bearer {token(graph)}", "Prefer": PREFER}) as c:
        yield c


def round_(client: httpx.Client, link: str | None = None, page_size: int | None = None
           ) -> tuple[list[list[dict[str, Any]]], str]:
    """The pages of one delta round (from `link`, else a new round over WINDOW) and its deltaLink."""
    headers = {"Prefer": f"{PREFER}, odata.maxpagesize={page_size}"} if page_size else {}
    response = client.get(link, headers=headers) if link else client.get(DELTA, params=WINDOW, headers=headers)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["value"])
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return pages, body["@odata.deltaLink"]
        response = client.get(body["@odata.nextLink"], headers=headers)


def flat(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [entry for page in pages for entry in page]


def test_a_first_round_pages_everything_in_the_window(graph: GraphSandbox, client: httpx.Client) -> None:
    master = graph.book(ROOM, subject="Weekly", start=at(7, 9), end=at(7, 10), recurrence=Recurrence("weekly", count=3))
    graph.book(ROOM, subject="Single", start=at(8, 9), end=at(8, 10))
    graph.book(ROOM, subject="Later", start=at(8, 9, month=2, year=2027), end=at(8, 10, month=2, year=2027))
    pages, link = round_(client, page_size=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    entries = flat(pages)
    assert [e["type"] for e in entries] == ["seriesMaster", "occurrence", "occurrence", "occurrence",
                                            "singleInstance"]
    assert entries[0]["id"] == master and entries[0]["subject"] == "Weekly"
    # Occurrences are sparse: no subject, iCalUId or organizer, only what identifies them.
    assert set(entries[1]) == {"@odata.type", "@odata.etag", "id", "type", "seriesMasterId", "start", "end"}
    assert entries[1]["seriesMasterId"] == master
    assert entries[4]["subject"] == "Single" and "iCalUId" in entries[4]
    assert set(parse_qs(urlsplit(link).query)) == {"$deltatoken"}
    assert graph.calls(ROOM, "delta") == 3


def test_an_unchanged_room_costs_one_request(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.book(ROOM, subject="Single", start=at(8, 9), end=at(8, 10))
    _, link = round_(client)
    graph.clear_log()
    pages, link2 = round_(client, link)
    assert pages == [[]] and graph.calls(ROOM, "delta") == 1
    pages, _ = round_(client, link2)
    assert pages == [[]]


def test_changes_deletes_and_out_of_window_changes(graph: GraphSandbox, client: httpx.Client) -> None:
    moved = graph.book(ROOM, subject="Moves away", start=at(8, 9), end=at(8, 10))
    gone = graph.book(ROOM, subject="Cancelled", start=at(9, 9), end=at(9, 10))
    _, link = round_(client)
    created = new_event(client, "New", at(10, 9)).json()
    graph.move(ROOM, moved, at(8, 9, month=3, year=2027), at(8, 10, month=3, year=2027))
    graph.cancel(ROOM, gone)
    outside = new_event(client, "Outside", at(1, 9, month=4, year=2027)).json()
    entries = flat(round_(client, link)[0])
    by_id = {e["id"]: e for e in entries}
    assert by_id[created["id"]]["subject"] == "New" and "@removed" not in by_id[created["id"]]
    for event_id in (moved, gone, outside["id"]):
        assert by_id[event_id]["@removed"] == {"reason": "deleted"}
        assert by_id[event_id]["type"] == "singleInstance"
    assert len(entries) == 4


def test_delta_refuses_select_and_expand(client: httpx.Client) -> None:
    for option in ("$select", "$expand", "$filter"):
        answer = client.get(DELTA, params={**WINDOW, option: "subject"})
        assert answer.status_code == 400, option


def test_a_lost_sync_state_is_410(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.book(ROOM, subject="Single", start=at(8, 9), end=at(8, 10))
    _, link = round_(client)
    graph.inject("sync_state_not_found", op="delta")
    lost = client.get(link)
    assert lost.status_code == 410 and lost.json()["error"]["code"] == "SyncStateNotFound"
    assert client.get(link).status_code == 200            # the fault was one answer
    graph.forget_sync_states()
    assert client.get(link).status_code == 410            # the token cache was flushed
    assert client.get(DELTA, params={"$deltatoken": "made-up"}).status_code == 410
    pages, _ = round_(client)                              # a new round works
    assert [e["subject"] for e in flat(pages)] == ["Single"]


def test_a_skip_token_can_be_lost_mid_round(graph: GraphSandbox, client: httpx.Client) -> None:
    for day in (8, 9, 10):
        graph.book(ROOM, subject=f"S{day}", start=at(day, 9), end=at(day, 10))
    first = client.get(DELTA, params=WINDOW, headers={"Prefer": "odata.maxpagesize=1"}).json()
    graph.forget_sync_states()
    assert client.get(first["@odata.nextLink"]).status_code == 410


def test_the_duplicate_id_fault_repeats_an_entry_across_pages(graph: GraphSandbox, client: httpx.Client) -> None:
    for day in (8, 9, 10):
        graph.book(ROOM, subject=f"S{day}", start=at(day, 9), end=at(day, 10))
    graph.inject("duplicate_id", op="delta")
    pages, _ = round_(client, page_size=2)
    assert pages[0][-1]["id"] == pages[1][0]["id"]
    assert len({e["id"] for e in flat(pages)}) == 3 and len(flat(pages)) == 4


def test_the_typeless_tombstone_fault(graph: GraphSandbox, client: httpx.Client) -> None:
    gone = graph.book(ROOM, subject="Cancelled", start=at(9, 9), end=at(9, 10))
    _, link = round_(client)
    graph.cancel(ROOM, gone)
    graph.inject("tombstone_without_type", op="delta")
    [entry] = flat(round_(client, link)[0])
    assert entry["id"] == gone and entry["@removed"] == {"reason": "deleted"} and "type" not in entry


@pytest.mark.parametrize("variant", ["series", "tombstone", "none"])
def test_what_cancelling_one_occurrence_shows(graph: GraphSandbox, client: httpx.Client, variant: str) -> None:
    graph.options.occurrence_deletions = variant
    master = graph.book(ROOM, subject="Weekly", start=at(7, 9), end=at(7, 10), recurrence=Recurrence("weekly", count=3))
    _, link = round_(client)
    graph.cancel_occurrence(ROOM, master, at(14, 9))
    entries = flat(round_(client, link)[0])
    if variant == "none":
        assert entries == []
        return
    assert entries[0]["id"] == master and entries[0]["type"] == "seriesMaster"
    live = [e for e in entries if e.get("type") == "occurrence" and "@removed" not in e]
    assert [e["start"]["dateTime"][:10] for e in live] == ["2026-12-07", "2026-12-21"]
    removed = [e for e in entries if "@removed" in e]
    assert len(removed) == (1 if variant == "tombstone" else 0)


def test_a_changed_series_shows_its_master_and_instances(graph: GraphSandbox, client: httpx.Client) -> None:
    master = graph.book(ROOM, subject="Weekly", start=at(7, 9), end=at(7, 10), recurrence=Recurrence("weekly", count=2))
    _, link = round_(client)
    graph.move_occurrence(ROOM, master, at(14, 9), at(14, 15), at(14, 16))
    entries = flat(round_(client, link)[0])
    assert [e["type"] for e in entries] == ["seriesMaster", "occurrence", "exception"]
    assert entries[2]["subject"] == "Weekly" and entries[2]["originalStart"] == "2026-12-14T09:00:00Z"
