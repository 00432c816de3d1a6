"""The Graph backend's harness for the room-calendar contract (tests/test_calendar_contract.py):
`GraphCalendar` on the real MSAL and httpx against `syncd.sandbox.graph.server.GraphSandbox`
over TLS on loopback, and the hands of the room's people acting on the sandbox's store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import SecretStr

from syncd.calendars.base import RoomCalendar
from syncd.calendars.graph.auth import forget_apps
from syncd.config.schema import GraphConfig
from syncd.sandbox.ews.server import Recurrence
from syncd.sandbox.graph.server import GraphSandbox

CLIENT_ID = "5f0c7a1e-3b2d-4c8e-9a6f-0e1d2c3b4a59"
SECRET = "graph-Secret~value-7Qk2"
ORGANIZER = "alice@example.com"

WRITES = ("events.create", "event.update", "event.delete")


def graph_config(sandbox: GraphSandbox, *, secret: str = SECRET, **overrides: Any) -> GraphConfig:
    return GraphConfig(tenant_id=sandbox.tenant_id, client_id=CLIENT_ID, client_secret=SecretStr(secret),
                       authority=sandbox.url, graph_url=f"{sandbox.graph_url}/v1.0", ca_file=sandbox.ca_file,
                       timezone="Europe/Amsterdam", **overrides)


class GraphHarness:
    """Microsoft Graph through MSAL and httpx against the Graph sandbox."""

    name = "graph"
    who = CLIENT_ID

    def __init__(self, mailbox: str = "room.c25@example.com", **options: Any) -> None:
        self.sandbox = GraphSandbox(timezone="Europe/Amsterdam").start()
        for name, value in options.items():
            setattr(self.sandbox.options, name, value)
        self.sandbox.add_mailbox(mailbox)
        self.sandbox.register_app(CLIENT_ID, secret=SECRET)
        self.mailbox = mailbox
        self.sleeps: list[float] = []
        self._opened: list[Any] = []
        self.calendar = self.make_calendar()

    def make_calendar(self, password: str = SECRET, **overrides: Any) -> RoomCalendar:
        from syncd.calendars.graph.backend import GraphCalendar

        cfg = graph_config(self.sandbox, secret=password,
                           throttle_max_wait_seconds=overrides.pop("max_wait", 30), **overrides)
        calendar = GraphCalendar(cfg, retry_sleep=self.sleeps.append, backoff_first=0.01)
        self._opened.append(calendar)
        return calendar

    def close(self) -> None:
        for calendar in self._opened:
            calendar.close()
        forget_apps()
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
        self.sandbox.clear_log()

    def requests(self) -> int:
        return self.sandbox.calls(mailbox=self.mailbox)

    def write_requests(self) -> int:
        return sum(self.sandbox.calls(mailbox=self.mailbox, op=op) for op in WRITES)

    def change_check_requests(self) -> int:
        return self.sandbox.calls(mailbox=self.mailbox, op="delta")

    def make_busy(self, back_off_seconds: float) -> None:
        self.sandbox.inject("http429", retry_after=back_off_seconds, mailbox=self.mailbox)

    def drop_next_connection(self) -> None:
        self.sandbox.inject("drop", mailbox=self.mailbox)
