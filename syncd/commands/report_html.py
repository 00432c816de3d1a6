"""The conflict report as a facility manager's page: one self-contained HTML file.

A summary on top (open conflicts per room and per kind, the oldest open one), what each
kind means and what to do about it (once per kind), then the conflicts grouped by room and
day, each day with a timeline strip (syncd.commands.report_timeline) and one card per
conflict naming what it clashes with. A few lines of inline script filter and sort the
cards (room, kind, status, day; also from the address's `#room=...&kind=...`); without
script every card is shown. No external resources; every value from either system is
escaped; cards, not wide tables, so a 400 px screen never scrolls sideways; printable.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import UTC, datetime, tzinfo
from typing import Any

from syncd.commands import report_timeline as timeline
from syncd.core import model

OPEN, RESOLVED = "open", "resolved"

# kind -> (what a facility manager reads instead of the kind, what happened, what to do)
KINDS: dict[str, tuple[str, str, str]] = {
    model.ROOM_UNAVAILABLE: (
        "Room not available (Ultimo 1015)",
        "An Outlook meeting asked for the room at a time Ultimo already has it reserved. Ultimo counts each "
        "reservation's preparation and cleanup time, so bookings that only touch can clash too.",
        "Move or cancel one of the two bookings (the timeline shows which) and tell the other party. New "
        "Outlook meetings that clash are declined by the room itself (sync.on_room_unavailable, by default "
        "decline_new); the ones still open here were booked before syncd managed the room, or are moves."),
    model.RESERVATION_IN_PAST: (
        "Reservation in the past (Ultimo 1166)",
        "A change reached syncd for a booking Ultimo treats as past; Ultimo no longer accepts changes to it.",
        "Nothing can be synced any more: correct the record by hand in Ultimo if it matters for billing."),
    model.CHANGED_ON_BOTH_SIDES: (
        "Changed in both systems",
        "The booking was moved in Outlook and in Ultimo since syncd last synced it, to different times.",
        "Pick the right version and move the other booking to match; or let one side win with "
        "sync.on_changed_on_both_sides."),
    model.REJECTED_BY_ULTIMO: (
        "Rejected by Ultimo",
        "Ultimo refused syncd's request for another reason (its message is on each card).",
        "Fix what the message names (often the applicant or the space in Ultimo); syncd retries once the "
        "booking's times change."),
    model.MASS_CANCELLATION: (
        "Mass cancellation blocked",
        "Too many bookings disappeared from one side at once, so syncd stopped cancelling them in this room.",
        "Check the room's calendar and Ultimo; if the room really is empty run "
        "`syncd reconcile --room ROOM --accept-empty`."),
}

_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;margin:0 auto;
padding:1.2rem;max-width:72rem;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.2rem;margin:1.6rem 0 .5rem}
h3{font-size:1rem;margin:1.1rem 0 .4rem;color:#34404c}
.meta,.sub{color:#5b6773;font-size:.88rem}.meta{margin:0}
.cards{display:flex;gap:.7rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #d5dbe1;border-radius:8px;padding:.5rem .9rem;min-width:7rem;flex:0 1 auto}
.card b{display:block;font-size:1.5rem}.card.open b{color:#b3261e}.card.resolved b{color:#2e7d32}
.card.oldest{flex:1 1 16rem}
.counts{display:grid;grid-template-columns:repeat(auto-fit,minmax(15rem,1fr));gap:.4rem 1.5rem}
.counts ul{list-style:none;margin:0;padding:0}.counts li{display:flex;justify-content:space-between;gap:1rem;
border-bottom:1px solid #eef1f4;padding:.2rem 0}
.kind{border-left:4px solid #8aa1b8;padding:.1rem .8rem;margin:.7rem 0}
.kind p{margin:.2rem 0}.todo{font-weight:600}
form#filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;background:#f3f5f7;border-radius:8px;
padding:.7rem .9rem;margin:1rem 0}
form#filters label{display:flex;flex-direction:column;font-size:.8rem;color:#44505c;min-width:8rem;flex:1 1 8rem}
form#filters select{font:inherit;padding:.2rem;max-width:100%}
#shown{flex-basis:100%;margin:0;font-size:.85rem;color:#44505c}
section.room{border-top:2px solid #d5dbe1;margin-top:1.4rem}
article.conflict{border:1px solid #d5dbe1;border-radius:8px;padding:.6rem .9rem;margin:.6rem 0;break-inside:avoid}
article.conflict h4{margin:0 0 .2rem;font-size:1rem}
article.conflict p{margin:.25rem 0}
.clashes{margin:.3rem 0 .3rem 1.1rem;padding:0}
.badge{display:inline-block;border-radius:999px;padding:0 .55rem;font-size:.78rem;font-weight:600;margin-left:.3rem}
.badge.open{background:#fde7e4;color:#8c1d15}.badge.resolved{background:#e3f2e5;color:#1e5b22}
.badge.declined{background:#e8eaf6;color:#283593}
.msg{color:#44505c;font-size:.88rem;white-space:pre-line}
.outcome{background:#e8eaf6;border-radius:6px;padding:.2rem .5rem}
svg.timeline{display:block;margin:.3rem 0;font-size:11px;overflow:hidden}
svg.timeline .grid{stroke:#e3e7eb}svg.timeline .tick{fill:#5b6773}
svg.timeline .label{fill:#1d2733}
svg.timeline .bar.meeting,.sw.meeting{fill:#2f6fb3;background:#2f6fb3}
svg.timeline .bar.reservation,.sw.reservation{fill:#e08a1e;background:#e08a1e}
svg.timeline .bar.version,.sw.version{fill:#8e5bb5;background:#8e5bb5}
svg.timeline .clash,.sw.clash{fill:rgba(211,47,47,.22);background:rgba(211,47,47,.3)}
.sw{display:inline-block;width:1.1em;height:.8em;vertical-align:middle;margin:0 .3em 0 0;border-radius:2px}
.sw.buffer{background:repeating-linear-gradient(45deg,#fde3c4 0 3px,#c46a00 3px 5px)}
.legend{font-size:.8rem;color:#44505c;margin:.2rem 0;display:flex;flex-wrap:wrap;gap:.1rem .9rem}
.legend>span{white-space:nowrap}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
.empty{border:1px dashed #aab4be;border-radius:8px;padding:1.5rem;color:#44505c;text-align:center}
[hidden]{display:none!important}
@media print{body{max-width:none;padding:0;font-size:12px}form#filters{display:none!important}
section.room{break-before:auto}article.conflict{border-color:#999}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
""".strip()

# Filter and sort the cards; the address's #room=..&kind=..&status=..&day=..&sort=.. presets it.
_SCRIPT = """
(function(){
var f=document.getElementById('filters');if(!f)return;f.hidden=false;
var keys=['room','kind','status','day','sort'];
var q=new URLSearchParams(location.hash.slice(1));
keys.forEach(function(k){var v=q.get(k);if(v!==null&&f.elements[k])f.elements[k].value=v;});
function apply(){
 var want={};keys.forEach(function(k){want[k]=f.elements[k].value;});var shown=0,total=0;
 document.querySelectorAll('article.conflict').forEach(function(a){total++;
  var ok=['room','kind','status','day'].every(function(k){return !want[k]||a.dataset[k]===want[k];});
  a.hidden=!ok;if(ok)shown++;});
 document.querySelectorAll('section.day,section.room').forEach(function(s){
  s.hidden=!s.querySelector('article.conflict:not([hidden])');});
 var main=document.getElementById('rooms'),rooms=Array.prototype.slice.call(main.children);
 rooms.sort(function(a,b){
  if(want.sort==='open')return (b.dataset.open-a.dataset.open)||a.dataset.room.localeCompare(b.dataset.room);
  if(want.sort==='earliest')return a.dataset.first.localeCompare(b.dataset.first);
  return a.dataset.room.localeCompare(b.dataset.room);});
 rooms.forEach(function(r){main.appendChild(r);});
 document.getElementById('shown').textContent=shown+' of '+total+' conflicts shown';
 var h=keys.filter(function(k){return want[k];}).map(function(k){return k+'='+encodeURIComponent(want[k]);});
 history.replaceState(null,'',h.length?'#'+h.join('&'):location.pathname+location.search);
}
f.addEventListener('change',apply);f.addEventListener('submit',function(e){e.preventDefault();apply();});
apply();})();
""".strip()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def _local(iso: str | None, tz: tzinfo) -> datetime | None:
    return datetime.fromisoformat(iso).astimezone(tz) if iso else None


def readable(iso: str | None, tz: tzinfo) -> str:
    local = _local(iso, tz)
    return "" if local is None else f"{local:%a %d %b %Y %H:%M} {local.tzname()}"


def when(start_iso: str | None, end_iso: str | None, tz: tzinfo) -> str:
    """`Mon 23 Nov 2026 10:00 – 11:00 CET` (plain text, not escaped)."""
    start, end = _local(start_iso, tz), _local(end_iso, tz)
    if start is None or end is None:
        return readable(start_iso or end_iso, tz)
    if start.date() == end.date():
        return f"{start:%a %d %b %Y} {start:%H:%M} – {end:%H:%M} {end.tzname()}"
    return f"{readable(start_iso, tz)} – {readable(end_iso, tz)}"


def kind_label(kind: str, code: str | None = None) -> str:
    """The friendly name of a conflict kind with Ultimo's code (plain text, not escaped)."""
    label = KINDS.get(kind, (kind.replace("_", " ").capitalize(), "", ""))[0]
    if code and f"Ultimo {code})" not in label:
        label += f" (Ultimo {code})"
    return label


def _clash_html(d: dict[str, Any], meeting_start: str | None, tz: tzinfo) -> str:
    kind = d.get("kind")
    span = when(d.get("start"), d.get("end"), tz)
    if kind == "reservation":
        who = (f"Ultimo reservation <code>{_e(d['ultimo_id'])}</code>" if d.get("ultimo_id")
               else "a reservation syncd was creating")
        if d.get("origin") == "exchange":
            who += " (syncd's copy of another Outlook meeting)"
        label = f" <b>{_e(d['description'])}</b>" if d.get("description") else ""
        buffers = [f"{d[k]} min {k.split('_')[0]}" for k in ("preparation_minutes", "cleanup_minutes") if d.get(k)]
        extra = f" plus {' and '.join(buffers)}" if buffers else ""
        only = " — <b>clashes only through the buffers</b>" if d.get("buffer_only") else ""
        return f"<li>{who}{label}, {_e(span)}{_e(extra)}{only}</li>"
    if kind in ("exchange_version", "ultimo_version"):
        side = "Outlook" if kind == "exchange_version" else "Ultimo"
        ref = f" (reservation <code>{_e(d['ultimo_id'])}</code>)" if d.get("ultimo_id") else ""
        return f"<li>{side} now: {_e(span)}{ref}</li>"
    said = f": Ultimo said “{_e(d.get('message'))}”" if d.get("message") else ""
    return f"<li>syncd tried to {_e(d.get('action') or 'write')} ({_e(span)}){said}</li>"


def _card(row: dict[str, Any], tz: tzinfo, day: str) -> str:
    status = row["status"] or OPEN
    declined = bool(row.get("outcome")) and "declined" in str(row.get("outcome")).lower()
    subject = _e(row["subject"]) if row["subject"] else '<span class="sub">(no subject)</span>'
    lines = [f'<p><b>{_e(kind_label(row["kind"], row["code"]))}</b> · {_e(when(row["start"], row["end"], tz))}</p>']
    who = []
    if row["organizer"]:
        who.append(f"organizer {_e(row['organizer'])}")
    if row["ultimo_id"]:
        who.append(f"Ultimo reservation <code>{_e(row['ultimo_id'])}</code>")
    if who:
        lines.append(f'<p class="sub">{" · ".join(who)}</p>')
    clashes = row.get("clashes_with") or []
    if clashes:
        heading = {model.ROOM_UNAVAILABLE: "Clashes with", model.CHANGED_ON_BOTH_SIDES: "The two versions"}.get(
            row["kind"], "What syncd tried")
        lines.append(f"<p>{heading}:</p><ul class=\"clashes\">"
                     + "".join(_clash_html(d, row["start"], tz) for d in clashes) + "</ul>")
    if row.get("outcome"):
        lines.append(f'<p class="outcome">{_e(str(row["outcome"])[:1].upper() + str(row["outcome"])[1:])}</p>')
    if row["message"]:
        lines.append(f'<p class="msg">{_e(row["message"])}</p>')
    lines.append(f'<p class="sub">#{_e(row["id"])} · first seen {_e(readable(row["detected_at"], tz))}</p>')
    badges = f'<span class="badge {_e(status)}">{_e(status)}</span>'
    if declined:
        badges += '<span class="badge declined">declined</span>'
    return (f'<article class="conflict" id="c{_e(row["id"])}" data-room="{_e(row["room"])}" '
            f'data-kind="{_e(row["kind"])}" data-status="{_e(status)}" data-day="{_e(day)}">'
            f"<h4>{subject}{badges}</h4>{''.join(lines)}</article>")


def _day_of(row: dict[str, Any], tz: tzinfo) -> str:
    local = _local(row["start"], tz) or _local(row["detected_at"], tz)
    return f"{local:%Y-%m-%d}" if local else ""


def _groups(rows: list[dict[str, Any]], tz: tzinfo) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in sorted(rows, key=lambda r: (r["room"] or "", _day_of(r, tz), r["start"] or "", r["id"] or 0)):
        out.setdefault(r["room"] or "", {}).setdefault(_day_of(r, tz), []).append(r)
    return out


def _summary(rows: list[dict[str, Any]], tz: tzinfo, now: datetime) -> str:
    opened = [r for r in rows if r["status"] == OPEN]
    by_status = Counter(r["status"] for r in rows)
    cards = "".join(f'<div class="card {s}"><b>{by_status.get(s, 0)}</b>{s}</div>' for s in (OPEN, RESOLVED))
    if opened:
        oldest = min(opened, key=lambda r: (r["detected_at"] or "", r["id"]))
        first = _local(oldest["detected_at"], now.tzinfo or UTC)
        age = (now - first).days if first else 0
        cards += (f'<div class="card oldest"><span class="sub">Oldest open, first seen '
                  f"{_e(readable(oldest['detected_at'], tz))}{f' ({age} days ago)' if age >= 1 else ''}</span><br>"
                  f'<a href="#c{_e(oldest["id"])}">#{_e(oldest["id"])}</a> {_e(oldest["subject"] or "(no subject)")}'
                  f' · {_e(oldest["room"])} · {_e(kind_label(oldest["kind"], oldest["code"]))}</div>')
    per_room = Counter(r["room"] for r in opened)
    per_kind = Counter(r["kind"] for r in opened)
    rooms = "".join(f"<li><span>{_e(room)}</span><b>{n}</b></li>" for room, n in sorted(per_room.items()))
    kinds = "".join(f"<li><span>{_e(kind_label(k))}</span><b>{n}</b></li>"
                    for k, n in sorted(per_kind.items(), key=lambda kv: (-kv[1], kv[0])))
    lists = ""
    if opened:
        lists = (f'<div class="counts"><div><h3>Open per room</h3><ul>{rooms}</ul></div>'
                 f"<div><h3>Open per kind</h3><ul>{kinds}</ul></div></div>")
    return f'<h2>Summary</h2><div class="cards">{cards}</div>{lists}'


def _kinds(rows: list[dict[str, Any]]) -> str:
    parts = []
    for kind in sorted({r["kind"] for r in rows}, key=lambda k: (list(KINDS).index(k) if k in KINDS else 99, k)):
        label, what, todo = KINDS.get(kind, (kind_label(kind), "", "See Ultimo's message on each card."))
        parts.append(f'<div class="kind"><b>{_e(label)}</b>'
                     + (f"<p>{_e(what)}</p>" if what else "")
                     + f'<p><span class="todo">What to do:</span> {_e(todo)}</p></div>')
    return "<h2>What the conflicts mean</h2>" + "".join(parts)


def _select(name: str, label: str, options: list[tuple[str, str]], first: str = "all") -> str:
    opts = f'<option value="">{_e(first)}</option>' + "".join(
        f'<option value="{_e(v)}">{_e(text)}</option>' for v, text in options)
    return f'<label>{_e(label)}<select name="{name}">{opts}</select></label>'


def _filters(rows: list[dict[str, Any]], tz: tzinfo) -> str:
    rooms = sorted({r["room"] for r in rows if r["room"]})
    kinds = sorted({r["kind"] for r in rows})
    days = sorted({_day_of(r, tz) for r in rows} - {""})
    day_text = [(d, f"{datetime.fromisoformat(d):%a %d %b %Y}") for d in days]
    return ('<form id="filters" hidden>'
            + _select("room", "Room", [(r, r) for r in rooms])
            + _select("kind", "Kind", [(k, kind_label(k)) for k in kinds])
            + _select("status", "Status", [(OPEN, OPEN), (RESOLVED, RESOLVED)])
            + _select("day", "Day", day_text)
            + _select("sort", "Rooms in order of", [("open", "most open conflicts"),
                                                    ("earliest", "earliest booking")], first="name")
            + '<p id="shown" aria-live="polite"></p></form>')


def _rooms(rows: list[dict[str, Any]], tz: tzinfo) -> str:
    parts = []
    for room, days in _groups(rows, tz).items():
        all_rows = [r for day_rows in days.values() for r in day_rows]
        space = next((r["space_id"] for r in all_rows if r["space_id"]), "")
        open_n = sum(1 for r in all_rows if r["status"] == OPEN)
        first = min((r["start"] or "" for r in all_rows), default="")
        sections = []
        for day, day_rows in days.items():
            title = f"{datetime.fromisoformat(day):%a %d %b %Y}" if day else "(no date)"
            strip = timeline.svg(day_rows, tz, title=f"{room} on {title}: the bookings that clash")
            cards = "".join(_card(r, tz, day) for r in day_rows)
            sections.append(f'<section class="day" data-day="{_e(day)}"><h3>{_e(title)}</h3>'
                            f"{strip}{timeline.legend(day_rows) if strip else ''}{cards}</section>")
        parts.append(f'<section class="room" data-room="{_e(room)}" data-open="{open_n}" data-first="{_e(first)}">'
                     f'<h2>{_e(room)} <span class="sub">Ultimo space {_e(space)} · {open_n} open</span></h2>'
                     + "".join(sections) + "</section>")
    return '<div id="rooms">' + "".join(parts) + "</div>"


def to_html(report_rows: list[dict[str, Any]], *, generated_at: datetime, title: str,
            tz: tzinfo = UTC, scope: str = "") -> str:
    """The report page for `report_rows` (syncd.commands.report.rows), times in `tz`."""
    meta = f"Generated {_e(readable(generated_at.astimezone(UTC).isoformat(), tz))} · times in {_e(zone_name(tz))}"
    if scope:
        meta += f" · {_e(scope)}"
    if report_rows:
        body = (_summary(report_rows, tz, generated_at) + _kinds(report_rows) + "<h2>Conflicts by room and day</h2>"
                + _filters(report_rows, tz) + _rooms(report_rows, tz) + f"<script>{_SCRIPT}</script>")
    else:
        body = ('<p class="empty">No conflicts to report: Exchange and Ultimo agree on every booking '
                "syncd looked at.</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>{timeline.DEFS}"
        f'<h1>{_e(title)}</h1><p class="meta">{meta}</p>\n{body}\n</body></html>\n'
    )
