"""The Graph sandbox's room scope, throttling, injected faults and request log, against the
real MSAL and httpx clients over loopback TLS."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from test_graph_sandbox import APP, OTHER, PREFER, ROOM, SECRET, WINDOW, new_event, token, wait_for

from syncd.sandbox.graph.server import GraphOptions, GraphSandbox
from syncd.sandbox.graph.tls import client_certificate
from syncd.sandbox.httpbase import Hold, Response


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


@pytest.fixture
def client(graph: GraphSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{graph.graph_url}/v1.0/users/{ROOM}", verify=graph.client_ssl_context(),
                      trust_env=False, headers={"Authorization": f"Bearer {token(graph)}", "Prefer": PREFER}) as c:
        yield c


# --- scope, throttling ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["403", "404"])
def test_a_mailbox_outside_the_app_scope_is_refused(graph: GraphSandbox, client: httpx.Client, variant: str) -> None:
    graph.options.out_of_scope = variant
    graph.set_scope(APP, {ROOM})
    assert client.get("/calendar").status_code == 200
    other = client.get(f"{graph.graph_url}/v1.0/users/{OTHER}/calendar")
    expected = ("ErrorAccessDenied" if variant == "403" else "ErrorInvalidUser")
    assert other.status_code == int(variant) and other.json()["error"]["code"] == expected


def test_options_are_checked_when_set(graph: GraphSandbox) -> None:
    with pytest.raises(ValueError, match="duplicate_transaction must be one of"):
        graph.options.duplicate_transaction = "201"
    with pytest.raises(AttributeError):
        graph.options.if_match_mode = "ignore"
    with pytest.raises(ValueError):
        GraphOptions(ical_uid="uid")
    assert graph.options.duplicate_transaction == "replay"


def test_an_unknown_mailbox_is_404(graph: GraphSandbox, client: httpx.Client) -> None:
    answer = client.get(f"{graph.graph_url}/v1.0/users/nobody@example.com/calendar")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "ErrorInvalidUser"


def test_the_mailbox_budget_answers_429_with_retry_after(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.set_budget(3, window=600)
    assert [client.get("/calendar").status_code for _ in range(3)] == [200, 200, 200]
    throttled = client.get("/calendar")
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert 590 <= int(throttled.headers["Retry-After"]) <= 600
    other = client.get(f"{graph.graph_url}/v1.0/users/{OTHER}/calendar")
    assert other.status_code == 200        # the budget is per mailbox


@pytest.mark.parametrize("scope", ["app", "mailbox"])
def test_more_than_the_concurrency_limit_in_flight_is_429(graph: GraphSandbox, client: httpx.Client,
                                                          scope: str) -> None:
    graph.options.concurrency_limit = 1
    graph.options.concurrency_scope = scope
    results: list[int] = []
    second = httpx.Client(verify=graph.client_ssl_context(), trust_env=False,
                          headers={"Authorization": client.headers["Authorization"]})
    in_other: threading.Thread | None = None
    with graph.store.lock:          # the first request waits inside the sandbox, in flight
        worker = threading.Thread(target=lambda: results.append(client.get("/calendar").status_code))
        worker.start()
        key = (APP,) if scope == "app" else (APP, ROOM)
        wait_for(lambda: graph.budget._in_flight.get(key, 0) == 1)
        same = second.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar")
        assert same.status_code == 429 and "MailboxConcurrency" in same.json()["error"]["message"]
        if scope == "app":          # the limit counts every mailbox of the app
            assert second.get(f"{graph.graph_url}/v1.0/users/{OTHER}/calendar").status_code == 429
        else:                       # another mailbox has its own limit (it waits for the store, answered later)
            in_other = threading.Thread(target=lambda: results.append(
                second.get(f"{graph.graph_url}/v1.0/users/{OTHER}/calendar").status_code))
            in_other.start()
            wait_for(lambda: graph.budget._in_flight.get((APP, OTHER), 0) == 1)
    worker.join(10)
    if in_other is not None:
        in_other.join(10)
    second.close()
    assert results == [200] * (1 if scope == "app" else 2)


# --- faults and the log ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,status", [("http429", 429), ("http503", 503), ("http504", 504)])
def test_injected_throttling_carries_retry_after(graph: GraphSandbox, client: httpx.Client, kind: str,
                                                 status: int) -> None:
    graph.inject(kind, op="calendarView", retry_after=7)
    answer = client.get("/calendar/calendarView", params=WINDOW)
    assert answer.status_code == status and answer.headers["Retry-After"] == "7"
    assert client.get("/calendar/calendarView", params=WINDOW).status_code == 200


def test_a_dropped_connection_and_a_garbage_body(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.inject("drop", op="calendar")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/calendar")
    graph.inject("garbage", op="calendar")
    answer = client.get("/calendar")
    with pytest.raises(ValueError):
        answer.json()
    graph.inject("http401", op="calendar")
    assert client.get("/calendar").status_code == 401
    assert client.get("/calendar").status_code == 200


def test_an_answer_lost_after_the_create_was_done(graph: GraphSandbox, client: httpx.Client) -> None:
    graph.inject("lost_answer", op="events.create")
    with pytest.raises(httpx.RemoteProtocolError):
        new_event(client, transactionId="intent-1")
    assert len(graph.items(ROOM)) == 1
    retried = new_event(client, transactionId="intent-1")
    assert retried.status_code == 201 and len(graph.items(ROOM)) == 1


def test_a_slow_answer_times_the_client_out_though_the_work_was_done(graph: GraphSandbox,
                                                                     client: httpx.Client) -> None:
    graph.inject("slow", op="events.create", delay=3)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/calendar/events", timeout=0.5, json={
                "subject": "slow", "transactionId": "intent-1",
                "start": {"dateTime": "2026-12-10T10:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2026-12-10T11:00:00", "timeZone": "UTC"}})
    assert [i["subject"] for i in graph.items(ROOM)] == ["slow"]


def test_a_held_answer_comes_after_the_work_and_only_once_released(graph: GraphSandbox,
                                                                   client: httpx.Client) -> None:
    """The crash campaign's hold: the event is made, its answer kept back until released,
    then the connection closes unanswered (the client was to be killed meanwhile)."""
    hold = Hold(drop=True)
    graph.inject("hold", op="events.create", hold=hold)
    outcome: list[BaseException] = []

    def create() -> None:
        try:
            new_event(client, transactionId="intent-1")
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=create)
    caller.start()
    assert hold.reached.wait(10)
    assert len(graph.items(ROOM)) == 1 and caller.is_alive()        # made, unanswered
    hold.release()
    caller.join(10)
    assert isinstance(outcome[0], httpx.RemoteProtocolError)
    with pytest.raises(ValueError, match="takes a Hold"):
        graph.inject("hold", op="events.create")


def test_a_given_answer_comes_after_the_work(graph: GraphSandbox, client: httpx.Client) -> None:
    """The malformed corpus's fault: the event is made, then the answer given is sent instead."""
    graph.inject("answer_after", op="events.create", answer=Response(201, b"<html>made?</html>"))
    answer = new_event(client, transactionId="intent-1")
    assert (answer.status_code, answer.content) == (201, b"<html>made?</html>")
    assert len(graph.items(ROOM)) == 1
    assert new_event(client, transactionId="intent-2").json()["subject"]      # one request only
    # Given for several requests, each is answered as Graph answers it: its own ids echoed.
    graph.inject("answer_after", count=2, op="calendar", answer=Response(200, b"{}"))
    echoed = [client.get("/calendar", headers={"client-request-id": cid}).headers["client-request-id"]
              for cid in ("first-request", "second-request")]
    assert echoed == ["first-request", "second-request"]
    with pytest.raises(ValueError, match="takes an answer"):
        graph.inject("answer_after", op="events.create")
    with pytest.raises(ValueError, match="random faults"):
        graph.faults.randomly(0.2, ("answer_after",))


def test_random_faults_fail_a_share_of_calendar_requests_until_cleared(graph: GraphSandbox,
                                                                      client: httpx.Client) -> None:
    graph.faults.randomly(0.5, ("http503", "lost_answer"), seed=3, retry_after=0)
    codes = []
    for _ in range(60):
        try:
            codes.append(client.get("/calendar").status_code)
        except httpx.RemoteProtocolError:
            codes.append(0)                                         # answer lost after the work
    assert 15 <= codes.count(503) + codes.count(0) <= 45 and codes.count(503) and codes.count(0)
    assert set(codes) <= {200, 503, 0}
    token(graph)                                                    # the token endpoint is spared
    graph.faults.clear()
    assert all(client.get("/calendar").status_code == 200 for _ in range(10))
    with pytest.raises(ValueError, match="random faults"):
        graph.faults.randomly(0.2, ("hold",))


def test_the_request_log_names_mailbox_and_auth_but_never_the_token(graph: GraphSandbox,
                                                                   client: httpx.Client) -> None:
    client.get("/calendar/calendarView", params=WINDOW)
    httpx.get(f"{graph.graph_url}/v1.0/users/{ROOM}/calendar", verify=graph.client_ssl_context(), trust_env=False)
    calls = graph.requests(ROOM)
    assert [(c.op, c.authorized, c.status, c.app) for c in calls] == [
        ("calendarView", True, 200, APP), ("calendar", False, 401, None)]
    assert calls[0].query["startDateTime"] == [WINDOW["startDateTime"]]
    assert calls[0].prefer == {"outlook.timezone": "UTC", "idtype": "ImmutableId"}
    echoed = client.get("/calendar", headers={"client-request-id": "c0ffee"})
    assert echoed.headers["client-request-id"] == "c0ffee" and len(echoed.headers["request-id"]) == 36
    bearer = client.headers["Authorization"].split()[1]
    for shown in (repr(graph.log), repr(graph.identity), repr(graph.identity.apps)):
        assert bearer not in shown and SECRET not in shown
    assert "PRIVATE KEY" not in repr(client_certificate())
