"""The conflict report (interface.md, "Conflict report") and the `syncd conflicts` commands.

`rows()` turns stored conflicts into the report's fields; `to_csv`, `to_json` and
`to_html` render the same rows. CSV cells that a spreadsheet would run as a formula
(starting with = + - @, tab or carriage return) get a leading `'`; JSON stays raw.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from syncd.core import model
from syncd.engine import conflicts as store
from syncd.errors import UsageError
from syncd.store.schema import Conflict

FIELDS = (
    "id", "detected_at", "room", "space_id", "kind", "code", "message", "subject",
    "organizer", "start", "end", "ultimo_id", "status",
)
_TIME_FIELDS = ("detected_at", "start", "end")
FORMATS = ("csv", "json", "html")

# What a facility manager reads instead of the kind, and what to do about it.
KIND_LABELS = {
    model.ROOM_UNAVAILABLE: ("Room not available (Ultimo 1015)",
                             "Ultimo already has the room reserved at that time. Move or cancel one of the bookings."),
    model.RESERVATION_IN_PAST: ("Reservation in the past (Ultimo 1166)",
                                "Ultimo no longer accepts changes to this reservation."),
    model.CHANGED_ON_BOTH_SIDES: ("Changed in both systems",
                                  "The booking was changed in Exchange and in Ultimo; pick one version and edit the other."),
    model.REJECTED_BY_ULTIMO: ("Rejected by Ultimo", "Ultimo refused the change; see its message."),
    model.MASS_CANCELLATION: ("Mass cancellation blocked",
                              "syncd stopped cancelling bookings in this room because too many disappeared at once."),
}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def rows(conflicts: Iterable[Conflict]) -> list[dict[str, Any]]:
    """The report's rows: one dict per conflict with exactly FIELDS, in that order.
    Times are ISO 8601 strings in UTC with their offset; missing values are None."""
    out = []
    for c in conflicts:
        row: dict[str, Any] = {name: getattr(c, name) for name in FIELDS}
        for name in _TIME_FIELDS:
            row[name] = _iso(row[name])
        out.append(row)
    return out


def _defuse(value: Any) -> str:
    """A CSV cell: '' for None, and text a spreadsheet would evaluate made literal."""
    if value is None:
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def to_csv(report_rows: Iterable[dict[str, Any]]) -> str:
    """The rows as CSV (RFC 4180, CRLF line ends) with a header row."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(FIELDS)
    for row in report_rows:
        writer.writerow([_defuse(row[name]) for name in FIELDS])
    return buf.getvalue()


def to_json(report_rows: Iterable[dict[str, Any]]) -> str:
    """The rows as a JSON list of objects (missing values are null)."""
    return json.dumps([{name: row[name] for name in FIELDS} for row in report_rows],
                      indent=2, ensure_ascii=False) + "\n"


# --- HTML -----------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;margin:2rem;background:#fff}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:1.6rem 0 .6rem}
.meta{color:#5b6773;margin:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1.2rem 0}
.card{border:1px solid #d5dbe1;border-radius:8px;padding:.7rem 1.1rem;min-width:8rem}
.card b{display:block;font-size:1.7rem}
.card.open b{color:#b3261e}.card.resolved b{color:#2e7d32}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.5rem .6rem;border-bottom:1px solid #e3e7eb}
th{background:#f3f5f7;font-weight:600;font-size:.85rem;text-transform:uppercase;letter-spacing:.03em;color:#44505c}
table.counts{width:auto;min-width:28rem}
td.num,th.num{text-align:right}
.hint,.sub{color:#5b6773;font-size:.85rem}
.msg{max-width:26rem;overflow-wrap:anywhere}
.badge{display:inline-block;border-radius:999px;padding:.05rem .6rem;font-size:.8rem;font-weight:600}
.badge.open{background:#fde7e4;color:#8c1d15}.badge.resolved{background:#e3f2e5;color:#1e5b22}
.empty{border:1px dashed #aab4be;border-radius:8px;padding:1.5rem;color:#44505c;text-align:center}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
@media print{body{margin:0}th{background:none}}
""".strip()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def _readable(iso: str | None, tz: tzinfo) -> str:
    if not iso:
        return ""
    local = datetime.fromisoformat(iso).astimezone(tz)
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()}"


def _when(start_iso: str | None, end_iso: str | None, tz: tzinfo) -> str:
    if not start_iso:
        return _readable(end_iso, tz)
    if not end_iso:
        return _readable(start_iso, tz)
    start = datetime.fromisoformat(start_iso).astimezone(tz)
    end = datetime.fromisoformat(end_iso).astimezone(tz)
    if start.date() == end.date():
        return f"{start:%a %d %b %Y}<br>{start:%H:%M} – {end:%H:%M} {_e(end.tzname())}"
    return f"{_e(_readable(start_iso, tz))} –<br>{_e(_readable(end_iso, tz))}"


def kind_label(kind: str, code: str | None = None) -> str:
    """The friendly name of a conflict kind with Ultimo's code (plain text, not escaped)."""
    label = KIND_LABELS.get(kind, (kind.replace("_", " ").capitalize(), ""))[0]
    if code and f"Ultimo {code})" not in label:
        label += f" (Ultimo {code})"
    return label


def _row_html(row: dict[str, Any], tz: tzinfo) -> str:
    hint = KIND_LABELS.get(row["kind"], ("", ""))[1]
    booking = f"<b>{_e(row['subject'])}</b>" if row["subject"] else '<span class="sub">(no subject)</span>'
    if row["organizer"]:
        booking += f'<br><span class="sub">{_e(row["organizer"])}</span>'
    if row["ultimo_id"]:
        booking += f'<br><span class="sub">Ultimo reservation <code>{_e(row["ultimo_id"])}</code></span>'
    return (
        "<tr>"
        f'<td class="num">{_e(row["id"])}</td>'
        f"<td>{_e(_readable(row['detected_at'], tz))}</td>"
        f'<td>{_e(row["room"])}<br><span class="sub">Ultimo space {_e(row["space_id"])}</span></td>'
        f'<td><b>{_e(kind_label(row["kind"], row["code"]))}</b><br><span class="hint">{_e(hint)}</span></td>'
        f"<td>{booking}</td>"
        f"<td>{_when(row['start'], row['end'], tz)}</td>"
        f'<td class="msg">{_e(row["message"])}</td>'
        f'<td><span class="badge {_e(row["status"])}">{_e(row["status"])}</span></td>'
        "</tr>"
    )


def _summary_html(report_rows: list[dict[str, Any]]) -> str:
    by_status = Counter(r["status"] for r in report_rows)
    by_kind: dict[str, Counter[str]] = {}
    for r in report_rows:
        by_kind.setdefault(r["kind"], Counter())[r["status"]] += 1
    cards = "".join(
        f'<div class="card {_e(s)}"><b>{by_status.get(s, 0)}</b>{_e(s)}</div>'
        for s in (store.OPEN, store.RESOLVED)
    )
    lines = "".join(
        f"<tr><td>{_e(kind_label(k))}</td><td class=\"num\">{c[store.OPEN]}</td>"
        f"<td class=\"num\">{c[store.RESOLVED]}</td><td class=\"num\">{sum(c.values())}</td></tr>"
        for k, c in sorted(by_kind.items(), key=lambda kc: (-sum(kc[1].values()), kc[0]))
    )
    return (
        f'<div class="cards">{cards}</div>'
        '<table class="counts"><thead><tr><th>What happened</th><th class="num">Open</th>'
        f'<th class="num">Resolved</th><th class="num">Total</th></tr></thead><tbody>{lines}</tbody></table>'
    )


def to_html(report_rows: Iterable[dict[str, Any]], *, generated_at: datetime, title: str,
            tz: tzinfo = UTC, scope: str = "") -> str:
    """A self-contained HTML page (inline CSS, no scripts, no external resources) showing
    the rows with readable times in `tz`. Every value from the rows is escaped."""
    report_rows = list(report_rows)
    meta = f"Generated {_e(_readable(_iso(generated_at), tz))} · times in {_e(_zone_name(tz))}"
    if scope:
        meta += f" · {_e(scope)}"
    if report_rows:
        body = (
            "<h2>Summary</h2>" + _summary_html(report_rows) + "<h2>Conflicts</h2>"
            '<table class="conflicts"><thead><tr><th class="num">#</th><th>Detected</th><th>Room</th>'
            "<th>What happened</th><th>Booking</th><th>When</th><th>Message</th><th>Status</th></tr></thead>"
            "<tbody>" + "\n".join(_row_html(r, tz) for r in report_rows) + "</tbody></table>"
        )
    else:
        body = ('<p class="empty">No conflicts to report: Exchange and Ultimo agree on every booking '
                "syncd looked at.</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>"
        f'<h1>{_e(title)}</h1><p class="meta">{meta}</p>\n{body}\n</body></html>\n'
    )


# --- the commands ---------------------------------------------------------------------


@contextmanager
def _session(cfg: Any) -> Iterator[Session]:
    from syncd.store.db import open_database, session_factory  # db pulls in Alembic; load it only here

    engine = open_database(cfg)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _display_zone(cfg: Any) -> tzinfo:
    """The zone people at the site read times in: Ultimo's, else UTC."""
    name = getattr(getattr(cfg, "ultimo", None), "timezone", None)
    return ZoneInfo(name) if name else UTC


def _clean(value: Any, width: int | None = None) -> str:
    """One terminal cell: control characters (an escape sequence in a subject) blanked."""
    text = "".join(ch if ch.isprintable() else " " for ch in ("" if value is None else str(value)))
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _short(value: datetime | None, tz: tzinfo) -> str:
    return "" if value is None else f"{value.astimezone(tz):%Y-%m-%d %H:%M %Z}"


def format_table(found: list[Conflict], tz: tzinfo = UTC) -> str:
    """The conflicts as a plain text table, one line each, with a header line."""
    header = ("id", "detected", "room", "kind", "code", "start", "subject", "status")
    lines = [header] + [
        (str(c.id), _short(c.detected_at, tz), _clean(c.room, 40), _clean(c.kind), _clean(c.code),
         _short(c.start, tz), _clean(c.subject, 40), _clean(c.status))
        for c in found
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines) + "\n"


def cmd_conflicts_list(cfg: Any, args: Any) -> int:
    """`syncd conflicts list [--all]`: prints the open (or all) conflicts; gives 0."""
    include_resolved = bool(getattr(args, "all", False))
    with _session(cfg) as session:
        found = store.query(session, include_resolved=include_resolved, since=None)
    if not found:
        print("No conflicts." if include_resolved else "No open conflicts.")
        return 0
    sys.stdout.write(format_table(found, _display_zone(cfg)))
    return 0


def since_utc(value: date | datetime | str | None) -> datetime | None:
    """`--since` as an aware UTC datetime: a date is its UTC midnight, a naive datetime is UTC.
    Raises UsageError on text that is no ISO 8601 date or time."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
        except ValueError:
            raise UsageError(f"--since: {value!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.combine(value, time(0), tzinfo=UTC)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step: a reader sees the old file or the
    whole new one, never a part. Raises UsageError when the file cannot be written."""
    try:
        mode = path.stat().st_mode & 0o7777 if path.is_file() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is None:
            # mkstemp makes the file private; give a new report the mode any new file gets.
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def render(fmt: str, report_rows: list[dict[str, Any]], *, tz: tzinfo = UTC, scope: str = "",
           now: datetime | None = None) -> str:
    """The report in `fmt` (csv, json or html). Raises UsageError on another format."""
    if fmt == "csv":
        return to_csv(report_rows)
    if fmt == "json":
        return to_json(report_rows)
    if fmt == "html":
        return to_html(report_rows, generated_at=now or datetime.now(UTC), title="syncd conflict report",
                       tz=tz, scope=scope)
    raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def cmd_conflicts_export(cfg: Any, args: Any) -> int:
    """`syncd conflicts export --format csv|json|html [--output FILE] [--all] [--since DATE]`:
    writes the report to FILE (atomically) or standard output; gives 0.
    Raises UsageError (exit 2) on a bad format, date or an unwritable FILE."""
    fmt = getattr(args, "format", None) or ""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    since = since_utc(getattr(args, "since", None))
    include_resolved = bool(getattr(args, "all", False))
    with _session(cfg) as session:
        report_rows = rows(store.query(session, include_resolved=include_resolved, since=since))
    scope = "open and resolved conflicts" if include_resolved else "open conflicts"
    if since is not None:
        scope += f" first seen since {since:%Y-%m-%d %H:%M} UTC"
    text = render(fmt, report_rows, tz=_display_zone(cfg), scope=scope)
    output = getattr(args, "output", None)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    path = Path(output)
    write_atomically(path, text)
    noun = "conflict" if len(report_rows) == 1 else "conflicts"
    print(f"Wrote {len(report_rows)} {noun} to {path} ({fmt}).", file=sys.stderr)
    return 0
