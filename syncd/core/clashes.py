"""What a booking clashes with, and how to say so to a person. Pure: no I/O, no clock.

Ultimo refuses a reservation (1015) when the room is occupied within reach of it: each
reservation occupies [start - preparation, end + cleanup), and the new booking gets the
space's buffers too. `occupying` finds, in a read already made, the reservations that
reach a booking; a clash is `buffer_only` when the times themselves do not overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo

from syncd.core.model import Clash, Reservation

ZERO = timedelta(0)


def _minutes(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() // 60))


def room_buffers(reservations: Iterable[Reservation]) -> tuple[timedelta, timedelta]:
    """The largest preparation and cleanup seen on the room's reservations: Ultimo does not
    publish a space's buffers, so these stand in for the ones a new booking gets."""
    prep, cleanup = ZERO, ZERO
    for r in reservations:
        if r.start_with_preparation is not None:
            prep = max(prep, r.start - r.start_with_preparation)
        if r.end_with_cleanup is not None:
            cleanup = max(cleanup, r.end_with_cleanup - r.end)
    return prep, cleanup


def reaches(start: datetime, end: datetime, other_start: datetime, other_end: datetime,
            prep: timedelta, cleanup: timedelta) -> bool:
    """True when [other_start, other_end) (buffers included) meets [start - prep, end + cleanup)."""
    return other_start < end + cleanup and other_end > start - prep


def occupying(start: datetime, end: datetime, reservations: Iterable[Reservation], *,
              own: str | None = None, origins: dict[str, str] | None = None,
              buffers: tuple[timedelta, timedelta] | None = None) -> tuple[Clash, ...]:
    """The reservations (other than `own`) occupying the room within reach of [start, end),
    earliest first. `origins`: UltimoId -> `exchange` for syncd's copies of Outlook meetings."""
    reservations = list(reservations)
    prep, cleanup = buffers if buffers is not None else room_buffers(reservations)
    found = []
    for r in reservations:
        if r.ultimo_id == own:
            continue
        r_start = r.start_with_preparation or r.start
        r_end = r.end_with_cleanup or r.end
        if not reaches(start, end, r_start, r_end, prep, cleanup):
            continue
        found.append(Clash(
            kind="reservation", ultimo_id=r.ultimo_id, description=r.description or None,
            origin=(origins or {}).get(r.ultimo_id, "ultimo"), start=r.start, end=r.end,
            buffer_only=not (r.start < end and r.end > start),
            preparation_minutes=_minutes(r.start - r_start), cleanup_minutes=_minutes(r_end - r.end)))
    return tuple(sorted(found, key=lambda c: (c.start or start, c.ultimo_id or "")))


def planned(key: str, start: datetime, end: datetime, description: str, *, meeting: tuple[datetime, datetime],
            buffers: tuple[timedelta, timedelta]) -> Clash | None:
    """A reservation syncd creates earlier in the same pass, as a clash of `meeting` (None
    when out of reach). Its UltimoId is filled in once the create succeeded."""
    prep, cleanup = buffers
    m_start, m_end = meeting
    if not reaches(m_start, m_end, start - prep, end + cleanup, prep, cleanup):
        return None
    return Clash(kind="reservation", origin="exchange", description=description, start=start, end=end,
                 buffer_only=not (start < m_end and end > m_start), preparation_minutes=_minutes(prep),
                 cleanup_minutes=_minutes(cleanup), pending_key=key)


def zone_label(tz: tzinfo, when: datetime | None = None) -> str:
    """The zone's name as people read it: `Europe/Amsterdam`, or `UTC`."""
    return getattr(tz, "key", None) or (when.astimezone(tz).tzname() if when else None) or str(tz)


def clock(value: datetime, tz: tzinfo) -> str:
    return f"{value.astimezone(tz):%H:%M}"


def occupied_text(c: Clash, meeting_start: datetime | None, tz: tzinfo = UTC) -> str:
    """`14:00–15:10 (incl. 10 min cleanup)`: the stretch of the room the clash occupies,
    buffers named; the day is added when it is not the meeting's."""
    if c.start is None or c.end is None:
        return "(times unknown)"
    prep = timedelta(minutes=c.preparation_minutes or 0)
    cleanup = timedelta(minutes=c.cleanup_minutes or 0)
    start, end, note = c.start, c.end, ""
    if c.buffer_only and meeting_start is not None and c.end <= meeting_start:
        end, note = c.end + cleanup, f" (incl. {c.cleanup_minutes} min cleanup)" if cleanup else ""
    elif c.buffer_only and meeting_start is not None:
        start, note = c.start - prep, f" (incl. {c.preparation_minutes} min preparation)" if prep else ""
    elif prep or cleanup:
        parts = [f"{m} min {what}" for m, what in ((c.preparation_minutes, "preparation"),
                                                      (c.cleanup_minutes, "cleanup")) if m]
        note = f" (plus {' and '.join(parts)})"
    day = ""
    if meeting_start is None or start.astimezone(tz).date() != meeting_start.astimezone(tz).date():
        day = f"{start.astimezone(tz):%a %d %b} "
    return f"{day}{clock(start, tz)}–{clock(end, tz)} {end.astimezone(tz):%Z}{note}"


def decline_reason(space_id: str, clashes: Iterable[Clash], meeting_start: datetime, ultimo_message: str,
                   tz: tzinfo = UTC) -> str:
    """What the room tells the organizer when it declines a meeting Ultimo refused:
    `Room C-25 is reserved in Ultimo 14:00–15:00 CET (incl. 10 min cleanup).` plus Ultimo's cause."""
    cause = next((line.strip() for line in reversed(ultimo_message.splitlines()) if line.strip()), "")
    times = [occupied_text(c, meeting_start, tz) for c in clashes if c.kind == "reservation"]
    if times:
        text = f"Room {space_id} is reserved in Ultimo {' and '.join(times)}."
    else:
        text = f"Room {space_id} is not available at this time in Ultimo."
    return f"{text} Ultimo: {cause}" if cause else text


def summary(c: Clash, meeting_start: datetime | None = None, tz: tzinfo = UTC) -> str:
    """One clash in one line, for the CSV column and terminal output."""
    if c.kind == "reservation":
        who = f"Ultimo reservation {c.ultimo_id}" if c.ultimo_id else "a reservation syncd was creating"
        if c.origin == "exchange":
            who += " (syncd's copy of an Outlook meeting)"
        label = f" '{c.description}'" if c.description else ""
        through = " — clashes only through the buffers" if c.buffer_only else ""
        return f"{who}{label} {occupied_text(c, meeting_start, tz)}{through}"
    if c.kind in ("exchange_version", "ultimo_version"):
        side = "Exchange" if c.kind == "exchange_version" else "Ultimo"
        return f"{side} now {_span(c.start, c.end, tz)}"
    tried = c.action or "syncd's request"
    return f"{tried} {_span(c.start, c.end, tz)}: Ultimo said {' '.join((c.message or '').split())!r}"


def _span(start: datetime | None, end: datetime | None, tz: tzinfo) -> str:
    if start is None or end is None:
        return "(times unknown)"
    s, e = start.astimezone(tz), end.astimezone(tz)
    if s.date() == e.date():
        return f"{s:%Y-%m-%d %H:%M}–{e:%H:%M} {e:%Z}"
    return f"{s:%Y-%m-%d %H:%M} – {e:%Y-%m-%d %H:%M} {e:%Z}"
