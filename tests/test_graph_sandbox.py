"""The Graph sandbox against the real MSAL and httpx clients over loopback TLS: tokens (client
secret and certificate, expiry, 401s), calendarView with series expanded and paged, and events
(transactionId, If-Match, delete, decline, the stamp filter), with the open questions of
graph.md §11 exercised as sandbox options. Delta rounds are in test_graph_delta.py; scope,
throttling, faults and the request log in test_graph_limits.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import msal
import pytest
import requests

from syncd.sandbox.ews.model import Recurrence
from syncd.sandbox.graph.server import GraphSandbox
from syncd.sandbox.graph.tls import client_certificate

ROOM, OTHER = "room1@example.com", "room2@example.com"
APP, SECRET = "11111111-2222-3333-4444-555555555555", "sandbox-secret"
SCOPE = ["https://graph.microsoft.com/.default"]
STAMP = "String {364df495-bcb8-4deb-ab44-ea51442f7fd9} Name SyncdBookingId"
PREFER = 'outlook.timezone="UTC", IdType="ImmutableId"'
AMS = ZoneInfo("Europe/Amsterdam")
WINDOW = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2027-01-31T00:00:00Z"}


def at(day: int, hour: int, month: int = 12, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def msal_app(graph: GraphSandbox, credential: Any, client_id: str = APP) -> msal.ConfidentialClientApplication:
    # requests lets REQUESTS_CA_BUNDLE override a session's `verify`; a session that ignores the
    # environment trusts exactly the sandbox's CA. instance_discovery=False keeps MSAL on loopback.
    session = requests.Session()
    session.trust_env = False
    session.verify = graph.ca_file
    return msal.ConfidentialClientApplication(client_id, client_credential=credential, authority=graph.authority,
                                              http_client=session, instance_discovery=False)


@pytest.fixture
def graph() -> Iterator[GraphSandbox]:
    sandbox = GraphSandbox().start()
    sandbox.add_mailbox(ROOM)
    sandbox.add_mailbox(OTHER)
    sandbox.register_app(APP, secret=SECRET)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def token(graph: GraphSandbox) -> str:
    result = msal_app(graph, SECRET).acquire_token_for_client(SCOPE)
    assert "access_token" in result, result
    return str(result["access_token"])


@pytest.fixture
def client(graph: GraphSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{graph.graph_url}/v1.0/users/{ROOM}", verify=graph.client_ssl_context(), trust_env=False,
                      headers={"Authorization": f"Bearer {token(graph)}", "Prefer": PREFER}) as c:
        yield c


def new_event(client: httpx.Client, subject: str = "syncd", start: datetime | None = None, hours: int = 1,
              **extra: Any) -> httpx.Response:
    start = start or at(10, 10)
    body = {"subject": subject,
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            **extra}
    return client.post("/calendar/events", json=body)


def view(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """Every event of calendarView for WINDOW, following nextLinks."""
    found: list[dict[str, Any]] = []
    response = client.get("/calendar/calendarView", params={**WINDOW, **params})
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["value"])
        if "@odata.nextLink" not in page:
            return found
        response = client.get(page["@odata.nextLink"])


# --- tokens ----------------------------------------------------------------------------------


def test_msal_gets_a_token_with_the_client_secret_and_graph_accepts_it(graph: GraphSandbox) -> None:
    result = msal_app(graph, SECRET).acquire_token_for_client(SCOPE)
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    calendar = httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", verify=graph.client_ssl_context(), trust_env=False,
                         headers={"Authorization": f"Bearer {result['access_token']}"})
    assert calendar.status_code == 200 and calendar.json()["name"] == "Calendar"


@pytest.mark.parametrize("form", ["thumbprint", "public_certificate"])
def test_msal_gets_a_token_with_a_certificate_signed_assertion(graph: GraphSandbox, form: str) -> None:
    cert = client_certificate()
    graph.register_app("cert-app", certificate=cert.cert_pem)
    credential: dict[str, str] = {"private_key": cert.key_pem.decode()}
    if form == "thumbprint":      # RS256 with x5t
        credential["thumbprint"] = cert.thumbprint
    else:                         # PS256 with x5t#S256
        credential["public_certificate"] = cert.cert_pem.decode()
    result = msal_app(graph, credential, "cert-app").acquire_token_for_client(SCOPE)
    assert "access_token" in result, result


def test_an_assertion_signed_by_another_certificate_is_refused(graph: GraphSandbox) -> None:
    registered, other = client_certificate(), client_certificate()
    graph.register_app("cert-app", certificate=registered.cert_pem)
    # The right thumbprint, the wrong key: the signature does not verify.
    credential = {"private_key": other.key_pem.decode(), "thumbprint": registered.thumbprint}
    result = msal_app(graph, credential, "cert-app").acquire_token_for_client(SCOPE)
    assert result["error"] == "invalid_client" and "signature" in result["error_description"]
    credential = {"private_key": other.key_pem.decode(), "thumbprint": other.thumbprint}
    result = msal_app(graph, credential, "cert-app").acquire_token_for_client(SCOPE)
    assert result["error"] == "invalid_client" and "not registered" in result["error_description"]


def test_a_wrong_secret_or_unknown_app_gets_no_token(graph: GraphSandbox) -> None:
    result = msal_app(graph, "wrong").acquire_token_for_client(SCOPE)
    assert result["error"] == "invalid_client" and "AADSTS7000215" in result["error_description"]
    result = msal_app(graph, SECRET, "no-such-app").acquire_token_for_client(SCOPE)
    assert result["error"] == "unauthorized_client"
    assert graph.tokens_issued == 0


def test_requests_without_a_good_token_get_401(graph: GraphSandbox, client: httpx.Client) -> None:
    bare = httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", verify=graph.client_ssl_context(), trust_env=False)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "InvalidAuthenticationToken"
    forged = client.get("/calendar", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401
    assert client.get("/calendar").status_code == 200


def test_an_expired_token_gets_401_and_msal_cache_keeps_it_until_dropped(graph: GraphSandbox) -> None:
    app = msal_app(graph, SECRET)
    first = app.acquire_token_for_client(SCOPE)["access_token"]
    graph.expire_tokens()
    answer = httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", verify=graph.client_ssl_context(), trust_env=False,
                       headers={"Authorization": f"Bearer {first}"})
    assert answer.status_code == 401 and "expired" in answer.json()["error"]["message"]
    # MSAL still believes its cached token good: a client must drop it to get a new one.
    assert app.acquire_token_for_client(SCOPE)["access_token"] == first
    for entry in list(app.token_cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
        app.token_cache.remove_at(entry)
    fresh = app.acquire_token_for_client(SCOPE)["access_token"]
    assert fresh != first
    assert httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", verify=graph.client_ssl_context(), trust_env=False,
                     headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_tokens_expire_after_their_lifetime() -> None:
    with GraphSandbox(token_lifetime=1) as graph:
        graph.add_mailbox(ROOM)
        graph.register_app(APP, secret=SECRET)
        result = msal_app(graph, SECRET).acquire_token_for_client(SCOPE)
        assert result["expires_in"] == 1

        def status() -> int:
            return httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", verify=graph.client_ssl_context(),
                             trust_env=False, headers={"Authorization": f"Bearer {result['access_token']}"}).status_code

        wait_for(lambda: status() == 401)


def test_the_tls_certificate_is_not_trusted_without_the_sandbox_ca(graph: GraphSandbox) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", trust_env=False, verify=True)


# --- calendarView --------------------------------------------------------------------------------


def test_calendar_view_expands_series_pages_and_selects(graph: GraphSandbox, client: httpx.Client) -> None:
    master = graph.book(ROOM, subject="Weekly", start=at(7, 9), end=at(7, 10),
                        recurrence=Recurrence("weekly", count=4))
    graph.book(ROOM, subject="Single", start=at(8, 13), end=at(8, 14), organizer="bob@example.com")
    graph.move_occurrence(ROOM, master, at(14, 9), at(15, 11), at(15, 12))
    graph.cancel_occurrence(ROOM, master, at(21, 9))
    events = view(client, **{"$top": "2", "$select": "subject,type,seriesMasterId,originalStart,start,end,iCalUId"})
    assert [(e["subject"], e["type"]) for e in events] == [
        ("Weekly", "occurrence"), ("Single", "singleInstance"), ("Weekly", "exception"), ("Weekly", "occurrence")]
    series = [e for e in events if e["subject"] == "Weekly"]
    assert {e["seriesMasterId"] for e in series} == {master}
    assert len({e["iCalUId"] for e in series}) == 1
    assert series[1]["originalStart"] == "2026-12-14T09:00:00Z"
    assert series[1]["start"] == {"dateTime": "2026-12-15T11:00:00.0000000", "timeZone": "UTC"}
    assert "organizer" not in series[0] and "@odata.etag" in series[0]
    assert graph.calls(ROOM, "calendarView") == 2


def test_calendar_view_answers_in_the_preferred_time_zone(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.book(ROOM, subject="Local", start=at(8, 13), end=at(8, 14))
    graph.book(ROOM, subject="Holiday", start=datetime(2026, 12, 9).date(), end=datetime(2026, 12, 9).date(),
               all_day=True)
    answer = client.get("/calendar/calendarView", params=WINDOW,
                        headers={"Prefer": 'outlook.timezone="W. Europe Standard Time"'})
    assert answer.headers["Preference-Applied"] == 'outlook.timezone="W. Europe Standard Time"'
    local, holiday = answer.json()["value"]
    assert local["start"] == {"dateTime": "2026-12-08T14:00:00.0000000", "timeZone": "W. Europe Standard Time"}
    assert holiday["isAllDay"] and holiday["start"]["dateTime"] == "2026-12-09T00:00:00.0000000"
    utc = client.get("/calendar/calendarView", params=WINDOW).json()["value"]
    # All-day events are floating dates: midnight whatever zone is asked for.
    assert utc[1]["start"] == {"dateTime": "2026-12-09T00:00:00.0000000", "timeZone": "UTC"}


def test_calendar_view_needs_its_window(client: httpx.Client) -> None:
    answer = client.get("/calendar/calendarView")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ErrorInvalidParameter"


# --- events ----------------------------------------------------------------------------------


def test_create_with_stamp_and_find_it_by_the_filter(graph: GraphSandbox, client: httpx.Client) -> None:
    created = new_event(client, singleValueExtendedProperties=[{"id": STAMP, "value": "syncd:u:42"}])
    assert created.status_code == 201 and created.headers["Location"].endswith(created.json()["id"])
    new_event(client, "other", singleValueExtendedProperties=[{"id": STAMP, "value": "syncd:u:43"}])
    found = client.get("/calendar/events", params={
        "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP}' and ep/value eq 'syncd:u:42')",
        "$expand": f"singleValueExtendedProperties($filter=id eq '{STAMP}')"}).json()["value"]
    assert [e["id"] for e in found] == [created.json()["id"]]
    assert found[0]["singleValueExtendedProperties"] == [{"id": STAMP, "value": "syncd:u:42"}]
    assert found[0]["attendees"] == [] and graph.invitations(ROOM) == []
    # Without the filtered $expand, no extended property comes back (as in Graph).
    plain = client.get(f"/events/{created.json()['id']}", params={"$expand": "singleValueExtendedProperties"})
    assert "singleValueExtendedProperties" not in plain.json()


def test_a_repeated_transaction_id_gives_the_same_event(graph: GraphSandbox, client: httpx.Client) -> None:
    first = new_event(client, transactionId="intent-7")
    again = new_event(client, transactionId="intent-7")
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.json()["transactionId"] == "intent-7"
    assert len(graph.items(ROOM)) == 1
    assert new_event(client, transactionId="intent-8").json()["id"] != first.json()["id"]


@pytest.mark.parametrize("variant", ["409", "400"])
def test_a_repeated_transaction_id_can_be_refused(graph: GraphSandbox, client: httpx.Client, variant: str) -> None:
    graph.options.duplicate_transaction = variant
    new_event(client, transactionId="intent-7")
    again = new_event(client, transactionId="intent-7")
    assert again.status_code == int(variant) and again.json()["error"]["code"] == "ErrorDuplicateTransactionId"
    assert len(graph.items(ROOM)) == 1


def test_patch_with_a_stale_etag_is_412(graph: GraphSandbox, client: httpx.Client) -> None:
    event = new_event(client).json()
    graph.touch(ROOM, event["id"])     # someone else changed it
    moved = client.patch(f"/events/{event['id']}", headers={"If-Match": event["@odata.etag"]},
                         json={"start": {"dateTime": "2026-12-10T12:00:00", "timeZone": "UTC"},
                               "end": {"dateTime": "2026-12-10T13:00:00", "timeZone": "UTC"}})
    assert moved.status_code == 412 and moved.json()["error"]["code"] == "ErrorIrresolvableConflict"
    assert graph.items(ROOM)[0]["start"] == at(10, 10)
    current = client.get(f"/events/{event['id']}").json()
    moved = client.patch(f"/events/{event['id']}", headers={"If-Match": current["@odata.etag"]},
                         json={"start": {"dateTime": "2026-12-10T12:00:00", "timeZone": "UTC"},
                               "end": {"dateTime": "2026-12-10T13:00:00", "timeZone": "UTC"}})
    assert moved.status_code == 200 and moved.json()["changeKey"] != current["changeKey"]
    assert graph.items(ROOM)[0]["start"] == at(10, 12)


def test_if_match_can_be_ignored(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.options.if_match = "ignore"
    event = new_event(client).json()
    graph.touch(ROOM, event["id"])
    assert client.patch(f"/events/{event['id']}", headers={"If-Match": event["@odata.etag"]},
                        json={"subject": "renamed"}).status_code == 200


def test_delete_then_get_is_404(graph: GraphSandbox, client: httpx.Client) -> None:
    event = new_event(client).json()
    assert client.delete(f"/events/{event['id']}").status_code == 204
    for path in (f"/events/{event['id']}", f"/calendar/events/{event['id']}"):
        gone = client.get(path)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "ErrorItemNotFound"
    assert client.delete(f"/events/{event['id']}").status_code == 404


def test_a_deleted_event_can_stay_findable_by_id_outside_the_calendar(graph: GraphSandbox,
                                                                      client: httpx.Client) -> None:
    graph.options.deleted_get = "found"
    event = new_event(client).json()
    client.delete(f"/events/{event['id']}")
    assert client.get(f"/events/{event['id']}").json()["parentFolderId"] == "deleteditems"
    assert client.get(f"/calendar/events/{event['id']}").status_code == 404


def test_the_room_declines_a_meeting_with_a_reason(graph: GraphSandbox, client: httpx.Client) -> None:
    meeting = graph.book(ROOM, subject="Clash", start=at(8, 9), end=at(8, 10), organizer="bob@example.com")
    answer = client.post(f"/events/{meeting}/decline", json={"comment": "Room taken", "sendResponse": True})
    assert answer.status_code == 202 and answer.content == b""
    [decline] = graph.declines(ROOM)
    assert (decline["organizer"], decline["reason"], decline["send_response"]) == ("bob@example.com",
                                                                                   "Room taken", True)
    assert graph.items(ROOM) == []
    own = new_event(client).json()
    refused = client.post(f"/events/{own['id']}/decline", json={"comment": "x"})
    assert refused.status_code == 400


def test_one_occurrence_can_be_declined(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.book(ROOM, subject="Weekly", start=at(7, 9), end=at(7, 10), recurrence=Recurrence("weekly", count=3))
    occurrences = view(client)
    assert client.post(f"/events/{occurrences[1]['id']}/decline", json={"comment": "closed"}).status_code == 202
    assert [e["start"]["dateTime"][:10] for e in view(client)] == ["2026-12-07", "2026-12-21"]
