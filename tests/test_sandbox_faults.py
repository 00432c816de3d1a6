"""The sandboxes' fault injection the crash-and-fault campaign relies on: answers held
back after the write (Hold), answers lost or spoilt after the write took effect, random
fault schedules, and the history of everything ever created."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from syncd.sandbox.httpbase import FaultQueue, Hold
from syncd.sandbox.ultimo.server import UltimoSandbox

KEY = "sandbox-key"
CREATE = "REST_CreateReservation"
ELEMENT = "0167a94a-5dae-4efe-bf13-029a47728b97"


@pytest.fixture
def ultimo() -> Iterator[UltimoSandbox]:
    box = UltimoSandbox(api_keys=(KEY,)).start()
    box.add_space("C-25")
    try:
        yield box
    finally:
        box.stop()


def _create(ultimo: UltimoSandbox, hours: int, timeout: float = 5.0) -> httpx.Response:
    start = (datetime.now(UTC) + timedelta(days=1, hours=hours)).replace(microsecond=0)
    body = {"SpaceId": "C-25", "StartTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "EndTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"), "ApplicantId": "00042"}
    return httpx.post(f"{ultimo.url}/Action/{CREATE}", json=body, timeout=timeout,
                      headers={"ApiKey": KEY, "ApplicationElementId": ELEMENT})


def test_a_held_answer_is_sent_only_after_release_and_the_write_is_already_done(ultimo: UltimoSandbox) -> None:
    hold = Hold(drop=False)
    ultimo.inject("hold", workflow="create", hold=hold)
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(_create(ultimo, 1)))
    caller.start()
    assert hold.reached.wait(5)
    assert len(ultimo.reservations("C-25")) == 1 and answers == []   # done, not yet answered
    hold.release()
    caller.join(5)
    assert answers[0].status_code == 200


def test_a_dropping_hold_closes_the_connection_unanswered(ultimo: UltimoSandbox) -> None:
    hold = Hold()
    ultimo.inject("hold", workflow="create", hold=hold)
    errors: list[Exception] = []

    def call() -> None:
        try:
            _create(ultimo, 1)
        except httpx.HTTPError as e:
            errors.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    assert hold.reached.wait(5)
    hold.release()
    caller.join(5)
    assert len(errors) == 1 and len(ultimo.reservations("C-25")) == 1


@pytest.mark.parametrize(("kind", "status"), [("http500_after", 500), ("http503_after", 503)])
def test_an_error_page_after_the_write_leaves_the_write_done(ultimo: UltimoSandbox, kind: str, status: int) -> None:
    ultimo.inject(kind, workflow="create")
    answer = _create(ultimo, 1)
    assert answer.status_code == status and answer.headers["content-type"].startswith("text/html")
    assert len(ultimo.reservations("C-25")) == 1


def test_history_keeps_cancelled_reservations(ultimo: UltimoSandbox) -> None:
    uid = _create(ultimo, 1).json()["Properties"]["UltimoId"]
    ultimo.cancel(uid)
    assert ultimo.reservations("C-25") == []
    assert [(r["ultimo_id"], r["status"]) for r in ultimo.history()] == [(uid, "Cancelled")]


def test_random_faults_hit_about_their_share_reproducibly() -> None:
    def draws(seed: int) -> list[str | None]:
        queue = FaultQueue()
        queue.randomly(0.2, ["drop", "http500"], seed=seed)
        return [None if (f := queue.take("x")) is None else f.kind for _ in range(1000)]

    first = draws(7)
    assert first == draws(7)
    hits = sum(1 for f in first if f is not None)
    assert 150 < hits < 250
    queue = FaultQueue()
    queue.add("garbage", count=1)
    queue.randomly(1.0, ["drop"], seed=1)
    assert [queue.take().kind, queue.take().kind] == ["garbage", "drop"]   # type: ignore[union-attr]
    queue.clear()
    assert queue.take() is None


@pytest.mark.parametrize("kind", ["drop_after", "http503_after", "slow_after"])
def test_an_ews_create_whose_answer_is_lost_exists_once(kind: str) -> None:
    import exchangelib.protocol
    from pydantic import SecretStr

    from syncd.calendars.ews.backend import EwsCalendar
    from syncd.config.schema import EwsConfig
    from syncd.core.model import NewEvent
    from syncd.errors import CalendarError
    from syncd.sandbox.ews.server import EwsSandbox

    room = "room@example.com"
    with EwsSandbox(users={"u@example.com": "pw"}, auth="basic") as ews:
        ews.add_mailbox(room)
        cfg = EwsConfig(endpoint=ews.url, auth="basic", username="u@example.com", password=SecretStr("pw"),
                        server_version="15.1.2507.6", timeout_seconds=1)
        calendar = EwsCalendar(cfg, retry_sleep=lambda _s: None, retry_wait=0.001)
        calendar.probe(room)
        ews.inject(kind, op="CreateItem", delay=3.0)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        try:
            calendar.create_event(room, NewEvent(subject="x", start=start, end=start + timedelta(hours=1),
                                                 stamp="syncd:u:1"))
        except CalendarError:
            pass   # said so in one line; the executor settles it by the stamp
        made = [i for i in ews.history(room) if i["extended_properties"].get("SyncdBookingId") == "syncd:u:1"]
        assert len(made) == 1 and not made[0]["removed"]
        calendar.close()
        exchangelib.protocol.close_connections()
