"""The conflict report's timeline strip: one room's day as inline SVG, drawn to scale.

One row per booking: the Exchange meeting(s) in conflict and the Ultimo reservation(s) they
clash with, each reservation with its preparation and cleanup buffers hatched on either
side, and a red band where the two bookings' reach overlaps: the clash is seen, not read.
Horizontal positions are percentages, so the strip takes the page's width (no sideways
scrolling on a phone) while its text keeps its size. Every text is escaped.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

ROW, TOP, AXIS = 34, 4, 22
HATCH_ID = "syncd-buffer-hatch"

# Defined once per page (ids are document-wide); every strip's buffers refer to it.
DEFS = (
    '<svg width="0" height="0" aria-hidden="true" focusable="false" style="position:absolute">'
    f'<defs><pattern id="{HATCH_ID}" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde3c4"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#c46a00" stroke-width="2.5"/></pattern></defs></svg>'
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _t(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass
class _Bar:
    side: str                 # meeting | reservation | version
    label: str
    start: datetime
    end: datetime
    prep: timedelta = timedelta(0)
    cleanup: timedelta = timedelta(0)

    @property
    def reach(self) -> tuple[datetime, datetime]:
        return self.start - self.prep, self.end + self.cleanup


def _minutes(d: dict[str, Any], key: str) -> timedelta:
    value = d.get(key)
    return timedelta(minutes=value) if isinstance(value, int) else timedelta(0)


def bars(group: list[dict[str, Any]]) -> tuple[list[_Bar], list[tuple[datetime, datetime]]]:
    """The rows of one room's day and the stretches where bookings clash."""
    out: list[_Bar] = []
    seen: set[tuple[Any, ...]] = set()
    clashes: list[tuple[datetime, datetime]] = []
    for row in group:
        start, end = _t(row.get("start")), _t(row.get("end"))
        meeting = None
        if start is not None and end is not None:
            meeting = _Bar("meeting", row.get("subject") or "(no subject)", start, end)
            out.append(meeting)
        for d in row.get("clashes_with") or []:
            c_start, c_end = _t(d.get("start")), _t(d.get("end"))
            if c_start is None or c_end is None or d.get("kind") == "exchange_version":
                continue
            if d.get("kind") == "reservation":
                bar = _Bar("reservation", " ".join(filter(None, [
                    f"Ultimo {d['ultimo_id']}" if d.get("ultimo_id") else "Ultimo", d.get("description")])),
                    c_start, c_end, _minutes(d, "preparation_minutes"), _minutes(d, "cleanup_minutes"))
            elif d.get("kind") == "ultimo_version":
                bar = _Bar("version", "Ultimo's version", c_start, c_end)
            else:
                continue
            key = (bar.side, d.get("ultimo_id"), bar.label, bar.start, bar.end)
            if key not in seen:
                seen.add(key)
                out.append(bar)
            if meeting is not None and bar.side == "reservation":
                # The meeting gets the room's buffers too: where the two reaches meet is the clash.
                meeting.prep, meeting.cleanup = max(meeting.prep, bar.prep), max(meeting.cleanup, bar.cleanup)
                lo = max(meeting.start - meeting.prep, bar.reach[0])
                hi = min(meeting.end + meeting.cleanup, bar.reach[1])
                if lo < hi:
                    clashes.append((lo, hi))
    return out, clashes


def _hour_floor(t: datetime, tz: tzinfo) -> datetime:
    return t.astimezone(tz).replace(minute=0, second=0, microsecond=0)


def svg(group: list[dict[str, Any]], tz: tzinfo, *, title: str) -> str:
    """The strip for one room's day (`group`: report rows), or '' when nothing has times."""
    rows, clashes = bars(group)
    if not rows:
        return ""
    lo = _hour_floor(min(b.reach[0] for b in rows), tz)
    hi = _hour_floor(max(b.reach[1] for b in rows), tz) + timedelta(hours=1)
    if hi - lo < timedelta(hours=3):
        lo -= timedelta(hours=1)
        hi = lo + timedelta(hours=3)
    span = (hi - lo).total_seconds()

    def x(t: datetime) -> float:
        return round(max(0.0, min(100.0, (t - lo).total_seconds() / span * 100)), 3)

    height = TOP + ROW * len(rows) + AXIS
    parts = [f'<svg class="timeline" width="100%" height="{height}" role="img" aria-label="{_e(title)}">'
             f"<title>{_e(title)}</title>"]
    step = 1 if span <= 8 * 3600 else 2 if span <= 16 * 3600 else 4
    tick = lo
    while tick <= hi:
        at = x(tick)
        parts.append(f'<line x1="{at}%" x2="{at}%" y1="{TOP}" y2="{height - AXIS + 4}" class="grid"/>')
        if tick < hi:
            anchor = "start" if at < 1 else "middle"
            parts.append(f'<text x="{max(at, 0.5)}%" y="{height - 6}" text-anchor="{anchor}" class="tick">'
                         f"{tick.astimezone(tz):%H:%M}</text>")
        tick += timedelta(hours=step)
    for c_lo, c_hi in clashes:
        parts.append(f'<rect x="{x(c_lo)}%" y="{TOP}" width="{max(x(c_hi) - x(c_lo), 0.4)}%" '
                     f'height="{ROW * len(rows)}" class="clash"><title>clash {c_lo.astimezone(tz):%H:%M}–'
                     f"{c_hi.astimezone(tz):%H:%M}</title></rect>")
    for i, b in enumerate(rows):
        y = TOP + i * ROW
        r_lo, r_hi = b.reach
        if b.prep:
            parts.append(f'<rect x="{x(r_lo)}%" y="{y + 15}" width="{x(b.start) - x(r_lo)}%" height="14" '
                         f'fill="url(#{HATCH_ID})" class="buffer"><title>{int(b.prep.total_seconds() // 60)} min '
                         "preparation</title></rect>")
        if b.cleanup:
            parts.append(f'<rect x="{x(b.end)}%" y="{y + 15}" width="{x(r_hi) - x(b.end)}%" height="14" '
                         f'fill="url(#{HATCH_ID})" class="buffer"><title>{int(b.cleanup.total_seconds() // 60)} min '
                         "cleanup</title></rect>")
        when = f"{b.start.astimezone(tz):%H:%M}–{b.end.astimezone(tz):%H:%M}"
        label = (b.label if len(b.label) <= 44 else b.label[:43] + "…")
        who = {"meeting": "Outlook", "reservation": "", "version": ""}[b.side]
        # The times first: on a narrow screen the end of a long label is what gets cut.
        text = f"{when} {who + ': ' if who else ''}{label}"
        parts.append(f'<rect x="{x(b.start)}%" y="{y + 15}" width="{max(x(b.end) - x(b.start), 0.4)}%" '
                     f'height="14" rx="2" class="bar {b.side}"><title>{_e(text)}</title></rect>')
        # Labels start at the strip's left edge: they fit a phone's width wherever the bar is.
        parts.append(f'<text x="3" y="{y + 11}" class="label">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def legend(group: list[dict[str, Any]]) -> str:
    """The key to the strip of `group`: only what it shows."""
    rows, clashes = bars(group)
    sides = {b.side for b in rows}
    items = [("meeting", "Outlook meeting", "meeting" in sides),
             ("reservation", "Ultimo reservation", "reservation" in sides),
             ("version", "Ultimo's version", "version" in sides),
             ("buffer", "preparation / cleanup buffer", any(b.prep or b.cleanup for b in rows)),
             ("clash", "where they clash", bool(clashes))]
    return ('<p class="legend">' + " ".join(f'<span><span class="sw {cls}"></span>{text}</span>'
                                           for cls, text, shown in items if shown) + "</p>")
