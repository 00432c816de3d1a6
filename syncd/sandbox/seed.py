"""The demo's rooms and bookings, for `syncd demo` and `syncd sandbox --seed`.

    seed(ultimo, ews, now) -> list[str]    ordinary, private, recurring (one occurrence moved,
                                           one cancelled) and clashing bookings on both sides,
                                           from tomorrow on; gives what a person would see

The Graph sandbox serves the EWS sandbox's store, so seeding EWS seeds Graph too.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Europe/Amsterdam")
ROOMS: tuple[tuple[str, str], ...] = (("room.c25@example.com", "C-25"), ("room.d12@example.com", "D-12"))


def _at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day.date(), time(hour, minute), tzinfo=ZONE)


def seed(ultimo: Any, ews: Any, now: datetime) -> list[str]:
    """Put example bookings on both sides; gives what a person would see, line by line."""
    from syncd.sandbox.ews.server import Recurrence

    c25, d12 = ROOMS[0][0], ROOMS[1][0]
    for _, space in ROOMS:
        ultimo.add_space(space, preparation_minutes=10, cleanup_minutes=10)
    for mailbox, _ in ROOMS:
        ews.add_mailbox(mailbox)
    local_now = now.astimezone(ZONE)
    d1 = local_now + timedelta(days=1)
    d2 = local_now + timedelta(days=2)
    d3 = local_now + timedelta(days=3)
    told = []

    ews.book(c25, subject="Team sync", start=_at(d1, 9), end=_at(d1, 10), organizer="alice@example.com")
    told.append("Exchange C-25: 'Team sync' (Alice), tomorrow 09:00-10:00")
    ews.book(c25, subject="Salary talk", start=_at(d1, 11), end=_at(d1, 11, 30), organizer="bob@example.com",
             private=True)
    told.append("Exchange C-25: a private meeting (Bob), tomorrow 11:00-11:30")
    master = ews.book(c25, subject="Daily stand-up", start=_at(d1, 8, 0), end=_at(d1, 8, 15),
                      organizer="alice@example.com", recurrence=Recurrence(kind="daily", count=5))
    ews.move_occurrence(c25, master, _at(d2, 8, 0), _at(d2, 16, 30), _at(d2, 16, 45))
    ews.cancel_occurrence(c25, master, _at(d3, 8, 0))
    told.append("Exchange C-25: 'Daily stand-up', 5 days from tomorrow 08:00; day 2 moved to 16:30, day 3 cancelled")
    ultimo.reserve("C-25", _at(d1, 13), _at(d1, 14), description="Board preparation", applicant_id="00050")
    ews.book(c25, subject="Customer call", start=_at(d1, 13, 30), end=_at(d1, 14, 30), organizer="bob@example.com")
    told.append("Ultimo C-25: 'Board preparation' tomorrow 13:00-14:00; Exchange C-25: 'Customer call' 13:30-14:30"
                " (a clash)")
    ultimo.reserve("C-25", _at(d2, 14), _at(d2, 15), description="Facility inspection", applicant_id="00051")
    told.append("Ultimo C-25: 'Facility inspection' the day after tomorrow 14:00-15:00")
    ultimo.reserve("D-12", _at(d1, 10), _at(d1, 12), description="Quarterly review", applicant_id="00042")
    ews.book(d12, subject="Quarterly review", start=_at(d1, 10), end=_at(d1, 12), organizer="alice@example.com")
    told.append("Both sides D-12: 'Quarterly review' tomorrow 10:00-12:00 (already booked on both)")
    ews.book(d12, subject="Design review", start=_at(d1, 14), end=_at(d1, 15), organizer="alice@example.com")
    ews.book(d12, subject="Retrospective", start=_at(d1, 15), end=_at(d1, 16), organizer="bob@example.com")
    told.append("Exchange D-12: 'Design review' 14:00-15:00 and 'Retrospective' 15:00-16:00 tomorrow (they touch;"
                " Ultimo's 10-minute buffers make them clash)")
    return told
