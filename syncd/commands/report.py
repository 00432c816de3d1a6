"""The conflict report (interface.md, "Conflict report") and the `syncd conflicts` commands.

`rows()` turns stored conflicts into the report's fields; `to_csv`, `to_json` and
`to_html` (syncd.commands.report_html) render the same rows. CSV cells that a spreadsheet would run as a formula
(starting with = + - @, tab or carriage return) get a leading `'`; JSON stays raw.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from syncd.commands.report_html import kind_label, to_html, zone_name
from syncd.core.clashes import summary as clash_summary
from syncd.engine import conflicts as store
from syncd.errors import UsageError
from syncd.store.schema import Conflict

FIELDS = (
    "id", "detected_at", "room", "space_id", "kind", "code", "message", "subject",
    "organizer", "start", "end", "ultimo_id", "status", "clashes_with", "outcome",
)
_TIME_FIELDS = ("detected_at", "start", "end")
FORMATS = ("csv", "json", "html")
__all__ = ["FIELDS", "FORMATS", "kind_label", "render", "rows", "to_csv", "to_html", "to_json"]

def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def rows(conflicts: Iterable[Conflict]) -> list[dict[str, Any]]:
    """The report's rows: one dict per conflict with exactly FIELDS, in that order.
    Times are ISO 8601 strings in UTC with their offset; missing values are None;
    `clashes_with` is a list of objects (`Clash.as_dict`), empty when nothing is known."""
    out = []
    for c in conflicts:
        row: dict[str, Any] = {name: getattr(c, name) for name in FIELDS if name != "clashes_with"}
        for name in _TIME_FIELDS:
            row[name] = _iso(row[name])
        row["clashes_with"] = [clash.as_dict() for clash in store.clashes_of(c)]
        out.append({name: row[name] for name in FIELDS})
    return out


def clashes_text(clashes: list[dict[str, Any]]) -> str:
    """The `clashes_with` list as one readable CSV cell (times ISO 8601 with offset), e.g.
    `Ultimo reservation R-7 'Board preparation' 2026-11-23T12:00:00+00:00/2026-11-23T13:00:00+00:00
    (10 min preparation, 10 min cleanup; clashes only through these buffers)`; `; ` between clashes."""
    parts = []
    for d in clashes:
        kind = d.get("kind")
        times = f"{d.get('start') or '?'}/{d.get('end') or '?'}"
        if kind == "reservation":
            who = f"Ultimo reservation {d['ultimo_id']}" if d.get("ultimo_id") else "a reservation"
            if d.get("origin") == "exchange":
                who += " (syncd's copy of an Outlook meeting)"
            label = f" '{d['description']}'" if d.get("description") else ""
            buffers = [f"{d[k]} min {k.split('_')[0]}" for k in ("preparation_minutes", "cleanup_minutes")
                       if d.get(k)]
            note = ", ".join(buffers)
            if d.get("buffer_only"):
                note += "; clashes only through these buffers" if note else "clashes only through buffers"
            parts.append(f"{who}{label} {times}" + (f" ({note})" if note else ""))
        elif kind in ("exchange_version", "ultimo_version"):
            side = "Exchange" if kind == "exchange_version" else "Ultimo"
            parts.append(f"{side} now {times}")
        else:
            said = " ".join(str(d.get("message") or "").split())
            parts.append(f"{d.get('action') or 'tried'} {times}: Ultimo said {said!r}")
    return "; ".join(parts)


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
        cells = {**row, "clashes_with": clashes_text(row["clashes_with"] or [])}
        writer.writerow([_defuse(cells[name]) for name in FIELDS])
    return buf.getvalue()


def to_json(report_rows: Iterable[dict[str, Any]]) -> str:
    """The rows as a JSON list of objects (missing values are null)."""
    return json.dumps([{name: row[name] for name in FIELDS} for row in report_rows],
                      indent=2, ensure_ascii=False) + "\n"


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


def display_zone(cfg: Any) -> tzinfo:
    """The one zone people read times in: display.timezone, else Ultimo's, else UTC."""
    zone = getattr(cfg, "display_zone", None)
    if isinstance(zone, tzinfo):
        return zone
    name = getattr(getattr(cfg, "ultimo", None), "timezone", None)
    return ZoneInfo(name) if name else UTC


def _clean(value: Any, width: int | None = None) -> str:
    """One terminal cell: control characters (an escape sequence in a subject) blanked."""
    text = "".join(ch if ch.isprintable() else " " for ch in ("" if value is None else str(value)))
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _short(value: datetime | None, tz: tzinfo) -> str:
    return "" if value is None else f"{value.astimezone(tz):%Y-%m-%d %H:%M}"


def format_table(found: list[Conflict], tz: tzinfo = UTC) -> str:
    """The conflicts as a plain text table, one line each, with a header line, what each
    clashes with, and a last line naming the zone of the times."""
    header = ("id", "detected", "room", "kind", "code", "start", "subject", "status", "clashes_with")
    lines = [header] + [
        (str(c.id), _short(c.detected_at, tz), _clean(c.room, 40), _clean(c.kind), _clean(c.code),
         _short(c.start, tz), _clean(c.subject, 40), _clean(c.status),
         _clean("; ".join(clash_summary(x, c.start, tz) for x in store.clashes_of(c)), 90))
        for c in found
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines) + f"\n(times in {zone_name(tz)})\n"


def cmd_conflicts_list(cfg: Any, args: Any) -> int:
    """`syncd conflicts list [--all]`: prints the open (or all) conflicts; gives 0."""
    include_resolved = bool(getattr(args, "all", False))
    with _session(cfg) as session:
        found = store.query(session, include_resolved=include_resolved, since=None)
    if not found:
        print("No conflicts." if include_resolved else "No open conflicts.")
        return 0
    sys.stdout.write(format_table(found, display_zone(cfg)))
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
    tz = display_zone(cfg)
    if since is not None:
        scope += f" first seen since {since.astimezone(tz):%Y-%m-%d %H:%M %Z}"
    text = render(fmt, report_rows, tz=tz, scope=scope)
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
