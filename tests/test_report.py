"""The conflict report: its rows, the three formats, and the atomic file write."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from syncd.commands import report
from syncd.core.model import CHANGED_ON_BOTH_SIDES, REJECTED_BY_ULTIMO, ROOM_UNAVAILABLE, ConflictInfo
from syncd.engine import conflicts
from syncd.errors import UsageError
from syncd.store.schema import Base

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ROOM = "room.c25@example.com"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'report.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def add(session: Session, *, room: str = ROOM, space_id: str = "C-25", now: datetime = T0, **kw) -> int:
    fields = dict(kind=ROOM_UNAVAILABLE, message="Space is not available", booking_key="uid-1", code="1015",
                  subject="Budget review", organizer="alice@example.com",
                  start=datetime(2026, 11, 23, 9, 0, tzinfo=UTC), end=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    fields.update(kw)
    cid = conflicts.record(session, room=room, space_id=space_id, info=ConflictInfo(**fields), link_id=None, now=now)
    session.commit()
    return cid


@pytest.fixture
def sample(session: Session) -> list[dict]:
    """Three conflicts with awkward text (commas, quotes, newlines, accents) and gaps."""
    add(session, ultimo_id="R-1001", subject='Team "sync", week 48\nsecond line', organizer="zoë@example.com")
    add(session, booking_key="uid-2", kind=CHANGED_ON_BOTH_SIDES, code=None, message="edited in both; kept as is",
        subject=None, organizer=None, now=T0 + timedelta(minutes=3))
    add(session, booking_key="uid-3", kind=REJECTED_BY_ULTIMO, code="1200", message="Applicant unknown",
        room="room.b12@example.com", space_id="B-12", ultimo_id="R-9", now=T0 + timedelta(minutes=5),
        start=datetime(2026, 11, 24, 22, 30, tzinfo=UTC), end=datetime(2026, 11, 25, 1, 0, tzinfo=UTC))
    conflicts.resolve(session, room="room.b12@example.com", booking_key="uid-3", now=T0 + timedelta(hours=1))
    session.commit()
    return report.rows(conflicts.query(session, include_resolved=True, since=None))


def test_rows_carry_exactly_the_interface_fields_with_offsets(sample: list[dict]) -> None:
    assert [list(r) for r in sample] == [list(report.FIELDS)] * 3
    assert report.FIELDS == ("id", "detected_at", "room", "space_id", "kind", "code", "message", "subject",
                             "organizer", "start", "end", "ultimo_id", "status", "clashes_with", "outcome")
    first = sample[0]
    assert first["detected_at"] == "2026-11-20T08:00:00+00:00"
    assert (first["start"], first["end"]) == ("2026-11-23T09:00:00+00:00", "2026-11-23T10:00:00+00:00")
    assert isinstance(first["id"], int)
    assert [r["status"] for r in sample] == ["open", "open", "resolved"]
    for r in sample:
        for name in ("detected_at", "start", "end"):
            assert datetime.fromisoformat(r[name]).utcoffset() == timedelta(0)


def test_csv_and_json_carry_the_same_fields_and_values(sample: list[dict]) -> None:
    text = report.to_csv(sample)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert reader.fieldnames == list(report.FIELDS)
    from_csv = list(reader)
    from_json = json.loads(report.to_json(sample))

    assert isinstance(from_json, list) and all(isinstance(o, dict) for o in from_json)
    assert len(from_csv) == len(from_json) == len(sample) == 3
    for c, j, r in zip(from_csv, from_json, sample, strict=True):
        assert list(j) == list(report.FIELDS)
        assert j == r
        assert c == {k: "" if v is None else report.clashes_text(v) if k == "clashes_with" else str(v)
                     for k, v in r.items()}
    assert from_json[1]["code"] is None and from_json[1]["subject"] is None
    assert from_csv[0]["subject"] == 'Team "sync", week 48\nsecond line'
    assert from_csv[0]["organizer"] == "zoë@example.com"


def test_csv_defuses_spreadsheet_formulas_but_json_stays_raw(session: Session) -> None:
    add(session, subject="=HYPERLINK(\"http://evil\",\"x\")", organizer="@SUM(A1)", message="+1 -2",
        ultimo_id="-5", code="\tcmd")
    [row] = report.rows(conflicts.query(session, include_resolved=False, since=None))
    [cells] = list(csv.DictReader(io.StringIO(report.to_csv([row]), newline="")))
    assert cells["subject"] == "'=HYPERLINK(\"http://evil\",\"x\")"
    assert cells["organizer"] == "'@SUM(A1)"
    assert cells["message"] == "'+1 -2"
    assert cells["ultimo_id"] == "'-5"
    assert cells["code"] == "'\tcmd"
    assert cells["detected_at"] == "2026-11-20T08:00:00+00:00"   # ordinary values untouched
    assert json.loads(report.to_json([row]))[0]["subject"] == "=HYPERLINK(\"http://evil\",\"x\")"


def test_empty_report_in_each_format() -> None:
    assert report.to_csv([]) == ",".join(report.FIELDS) + "\r\n"
    assert json.loads(report.to_json([])) == []
    page = report.to_html([], generated_at=T0, title="Conflicts")
    assert "No conflicts to report" in page
    assert "<table" not in page


class Page(HTMLParser):
    """Collects the tags, attributes and visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.text.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    return p


def test_html_shows_the_same_values_readably(sample: list[dict]) -> None:
    page = report.to_html(sample, generated_at=T0, title="Conflict report", tz=ZoneInfo("Europe/Amsterdam"))
    seen = "".join(parse(page).text)
    for r in sample:
        for name in ("id", "room", "space_id", "message", "ultimo_id", "organizer", "subject", "status"):
            if r[name] is not None:
                assert str(r[name]) in seen, name
    # Friendly kinds, readable local times (UTC 09:00 is 10:00 in Amsterdam in November).
    assert "Room not available (Ultimo 1015)" in seen
    assert "Changed in both systems" in seen
    assert "Rejected by Ultimo (Ultimo 1200)" in seen
    assert "Mon 23 Nov 2026 10:00 – 11:00 CET" in seen
    assert "Tue 24 Nov 2026 23:30 CET – Wed 25 Nov 2026 02:00 CET" in seen   # spans midnight
    assert "times in Europe/Amsterdam" in seen
    assert "Generated Fri 20 Nov 2026 09:00 CET" in seen


def test_html_summary_counts_open_per_room_and_kind_and_names_the_oldest(sample: list[dict]) -> None:
    page = report.to_html(sample, generated_at=T0 + timedelta(days=3), title="t")
    text = [t.strip() for t in parse(page).text if t.strip()]
    # cards: 2 open, 1 resolved, then the oldest open one
    assert text[text.index("Summary") + 1: text.index("Summary") + 5] == ["2", "open", "1", "resolved"]
    oldest = text.index("#1")
    assert "first seen Fri 20 Nov 2026 08:00 UTC (3 days ago)" in text[oldest - 1]
    assert text[oldest + 1].startswith('Team "sync"')
    i = text.index("Open per room")
    assert text[i + 1: i + 3] == [ROOM, "2"]                  # room.b12's only conflict is resolved
    i = text.index("Open per kind")
    assert text[i + 1: i + 5] == ["Changed in both systems", "1", "Room not available (Ultimo 1015)", "1"]
    # Each kind is explained once, with what to do, however many rows it has.
    assert sum(t == "What to do:" for t in text) == 3


HOSTILE = {
    "subject": '<script>alert("x")</script> & "quoted" \'single\'',
    "organizer": '"><img src=x onerror=alert(1)>@evil.example',
    "message": "</td></tr></table><h1>pwned</h1> R&D",
    "ultimo_id": "R&D<1>",
    "code": "<b>1015</b>",
}


def test_html_escapes_hostile_text_from_both_systems(session: Session) -> None:
    add(session, room='room"<i>@example.com', space_id="C&<25>", kind="<u>odd_kind</u>", **HOSTILE)
    add(session, booking_key="uid-2", kind=REJECTED_BY_ULTIMO, code='1"><script>x</script>',
        message="<style>body{display:none}</style>")
    rows = report.rows(conflicts.query(session, include_resolved=True, since=None))
    page = report.to_html(rows, generated_at=T0, title="<Report & co>")

    assert page.lower().count("<script") == 1           # only our own few lines
    assert page.lower().count("<style") == 1            # only our own stylesheet
    p = parse(page)
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "div", "b", "br",
               "span", "code", "ul", "li", "a", "section", "article", "form", "label", "select", "option",
               "script", "svg", "defs", "pattern", "rect", "line", "text"}
    assert set(p.tags) <= allowed
    assert not any(name.startswith("on") or name in ("src", "srcdoc") for name, _ in p.attrs)
    assert not any("alert" in (v or "") or "onerror" in (v or "") for name, v in p.attrs if name != "data-kind")
    # The hostile text is shown as text, character for character.
    seen = "".join(p.text)
    for value in [*HOSTILE.values(), 'room"<i>@example.com', "C&<25>", "<style>body{display:none}</style>",
                  "<Report & co>"]:
        assert value in seen
    assert "&lt;script&gt;" in page and "&amp;" in page and "&quot;" in page


def test_since_is_a_utc_instant() -> None:
    assert report.since_utc(None) is None
    assert report.since_utc(date(2026, 11, 20)) == datetime(2026, 11, 20, tzinfo=UTC)
    assert report.since_utc(datetime(2026, 11, 20, 9, 30)) == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    aware = datetime(2026, 11, 20, 9, 30, tzinfo=ZoneInfo("Europe/Amsterdam"))
    assert report.since_utc(aware) == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    assert report.since_utc("2026-11-20") == datetime(2026, 11, 20, tzinfo=UTC)
    with pytest.raises(UsageError):
        report.since_utc("last tuesday")


def test_text_table_blanks_terminal_control_characters(session: Session) -> None:
    add(session, subject="\x1b[2J\x1b]0;owned\x07Board meeting")
    table = report.format_table(conflicts.query(session, include_resolved=False, since=None))
    assert "\x1b" not in table and "\x07" not in table
    header, line, zone = table.splitlines()
    assert header.split() == ["id", "detected", "room", "kind", "code", "start", "subject", "status", "clashes_with"]
    assert "Board meeting" in line and "2026-11-20 08:00" in line and "room_unavailable" in line
    assert zone == "(times in UTC)"


# --- writing the file -------------------------------------------------------------------


def test_write_creates_the_file_with_no_temp_left(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    report.write_atomically(target, "a,b\r\n1,2\r\n")
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"
    assert os.listdir(tmp_path) == ["report.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_replaces_an_old_report_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o640)
    report.write_atomically(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["report.html"]


@pytest.mark.parametrize("where", ["missing-folder/report.csv", "a-folder"])
def test_unwritable_path_is_a_usage_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder" / "keep.txt").write_text("keep")
    with pytest.raises(UsageError) as err:
        report.write_atomically(tmp_path / where, "data")
    assert err.value.exit_status == 2
    assert "cannot write the report to" in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["a-folder"]
    assert os.listdir(tmp_path / "a-folder") == ["keep.txt"]


def test_failed_write_leaves_the_old_report_intact(tmp_path: Path) -> None:
    """A write that fails half way (here: the file size limit, as on a full disk) leaves
    the previous report whole and no temporary file behind."""
    target = tmp_path / "report.json"
    target.write_text('["old report"]')
    script = textwrap.dedent("""
        import resource, signal, sys
        from pathlib import Path
        from syncd.errors import UsageError
        from syncd.commands.report import write_atomically
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            write_atomically(Path(sys.argv[1]), "x" * 100_000)
        except UsageError as e:
            print(e.exit_status, e)
            sys.exit(0)
        sys.exit("no error raised")
    """)
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 cannot write the report to")
    assert target.read_text() == '["old report"]'
    assert os.listdir(tmp_path) == ["report.json"]


# --- the commands, on a real SQLite database opened by syncd.store.db ---------------------------


@pytest.fixture
def cfg(tmp_path: Path):
    return SimpleNamespace(database=SimpleNamespace(url=f"sqlite:///{tmp_path / 'syncd.db'}"),
                           ultimo=SimpleNamespace(timezone="Europe/Amsterdam"))


@pytest.fixture
def db(cfg) -> Iterator[Session]:
    from syncd.store.db import open_database, session_factory

    engine = open_database(cfg)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


def args(**kw):
    base = dict(all=False, since=None, output=None, format="csv")
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def stored(db: Session) -> dict[str, int]:
    ids = {
        "old": add(db, booking_key="old", subject="Old meeting", now=T0 - timedelta(days=3)),
        "fixed": add(db, booking_key="fixed", subject="Fixed meeting", now=T0 - timedelta(days=1)),
        "new": add(db, booking_key="new", subject="New meeting", now=T0),
    }
    conflicts.resolve(db, room=ROOM, booking_key="fixed", now=T0)
    db.commit()
    return ids


def test_list_says_so_when_nothing_is_open(cfg, db: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.cmd_conflicts_list(cfg, args()) == 0
    assert capsys.readouterr().out == "No open conflicts.\n"


def test_list_shows_open_and_with_all_resolved(cfg, stored, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.cmd_conflicts_list(cfg, args()) == 0
    out = capsys.readouterr().out
    assert "Old meeting" in out and "New meeting" in out and "Fixed meeting" not in out
    assert "2026-11-20 09:00" in out              # detected_at of "new", in the site's zone, named
    assert out.endswith("(times in Europe/Amsterdam)\n")
    assert report.cmd_conflicts_list(cfg, args(all=True)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "Fixed meeting" in lines[2] and lines[2].rstrip().endswith("resolved")


def export(cfg, capsys: pytest.CaptureFixture[str], **kw) -> list[dict]:
    assert report.cmd_conflicts_export(cfg, args(format="json", **kw)) == 0
    return json.loads(capsys.readouterr().out)


def test_export_all_and_since(cfg, stored, capsys: pytest.CaptureFixture[str]) -> None:
    ids = lambda found: [r["id"] for r in found]  # noqa: E731
    assert ids(export(cfg, capsys)) == [stored["old"], stored["new"]]
    assert ids(export(cfg, capsys, all=True)) == [stored["old"], stored["fixed"], stored["new"]]
    # A date is its UTC midnight; a naive time is UTC; an aware one is its instant.
    assert ids(export(cfg, capsys, all=True, since=date(2026, 11, 19))) == [stored["fixed"], stored["new"]]
    assert ids(export(cfg, capsys, all=True, since=datetime(2026, 11, 19, 8, 0, 1))) == [stored["new"]]
    amsterdam = datetime(2026, 11, 19, 9, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))   # 08:00 UTC
    assert ids(export(cfg, capsys, all=True, since=amsterdam)) == [stored["fixed"], stored["new"]]
    assert export(cfg, capsys, since=date(2026, 12, 1)) == []


def test_export_each_format_to_stdout(cfg, stored, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.cmd_conflicts_export(cfg, args(format="csv")) == 0
    out = capsys.readouterr()
    assert out.out.startswith(",".join(report.FIELDS) + "\r\n") and out.err == ""
    assert len(list(csv.DictReader(io.StringIO(out.out, newline="")))) == 2
    assert report.cmd_conflicts_export(cfg, args(format="html")) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and "New meeting" in page and "times in Europe/Amsterdam" in page
    with pytest.raises(UsageError):
        report.cmd_conflicts_export(cfg, args(format="xml"))


def test_export_to_a_file_reports_where_and_how_many(cfg, stored, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "conflicts.csv"
    target.parent.mkdir()
    assert report.cmd_conflicts_export(cfg, args(format="csv", output=str(target), all=True)) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip() == f"Wrote 3 conflicts to {target} (csv)."
    assert len(list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))) == 3
    assert os.listdir(target.parent) == ["conflicts.csv"]


def test_export_to_an_unwritable_path_fails_with_status_2(cfg, stored, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        report.cmd_conflicts_export(cfg, args(format="html", output=str(tmp_path / "no-such-dir" / "r.html")))
    assert err.value.exit_status == 2
    assert str(tmp_path / "no-such-dir" / "r.html") in str(err.value)


# --- through the command line --------------------------------------------------------------

CONFIG = """\
database:
  url: sqlite:///syncd.db
ultimo:
  base_url: http://127.0.0.1:9/api/V1
  api_key: not-a-real-key
  timezone: Europe/Amsterdam
calendar:
  ews:
    endpoint: http://127.0.0.1:9/EWS/Exchange.asmx
    auth: basic
    username: svc@example.com
    password: not-a-real-password
rooms:
  - mailbox: room.c25@example.com
    space_id: C-25
applicants:
  default: ULTIMO
"""


def test_cli_list_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.commands.cli import main
    from syncd.store.db import open_database, session_factory

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    base = ["--config", str(config), "conflicts"]
    assert main([*base, "list"]) == 0
    assert capsys.readouterr().out == "No open conflicts.\n"

    # The relative SQLite path is next to the configuration file.
    engine = open_database(SimpleNamespace(database=SimpleNamespace(url=f"sqlite:///{tmp_path / 'syncd.db'}")))
    with session_factory(engine)() as s:
        add(s, subject="<b>Quarterly</b> & more", now=datetime.now(UTC))
    engine.dispose()

    target = tmp_path / "report.html"
    assert main([*base, "export", "--format", "html", "--output", str(target), "--since", "2000-01-01"]) == 0
    assert "Wrote 1 conflict to" in capsys.readouterr().err
    assert "&lt;b&gt;Quarterly&lt;/b&gt; &amp; more" in target.read_text(encoding="utf-8")

    # An unwritable report path: one line, status 2, the old report untouched.
    bad = tmp_path / "missing" / "report.csv"
    assert main([*base, "export", "--format", "csv", "--output", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the report to" in err[0] and str(bad) in err[0]
    assert main([*base, "export", "--format", "json", "--since", "2999-01-01"]) == 0
    assert json.loads(capsys.readouterr().out) == []
