"""The HTML conflict report in a real headless Chromium (tests/browser.py, DevTools over a
loopback websocket): it renders at desktop and phone widths, its script groups, filters
and sorts through the page's own controls, it reads fully without script, and text from
either system stays inert. Screenshots go to tmp_path only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from browser import CHROMIUM, Browser, Page
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from syncd.commands import report
from syncd.core.model import CHANGED_ON_BOTH_SIDES, ROOM_UNAVAILABLE, Clash, ConflictInfo
from syncd.engine import conflicts
from syncd.store.schema import Base

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")

ZONE = ZoneInfo("Europe/Amsterdam")
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
C25, D12, B12 = "room.c25@example.com", "room.d12@example.com", "room.b12@example.com"
HOSTILE = ("<script>document.title='pwned';window.pwned=1</script>"
           "<img src=x onerror=\"window.pwned=2\"> Budget & plans")


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZONE)


def reservation(uid: str, description: str, start: datetime, end: datetime, *, buffer_only: bool) -> Clash:
    return Clash(kind="reservation", ultimo_id=uid, description=description, origin="ultimo", start=start, end=end,
                 buffer_only=buffer_only, preparation_minutes=10, cleanup_minutes=10)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report with four conflicts in three rooms, one of them hostile."""
    folder = tmp_path_factory.mktemp("report")
    engine = create_engine(f"sqlite:///{folder / 'report.db'}")
    Base.metadata.create_all(engine)
    entries = [
        (C25, "C-25", ConflictInfo(kind=ROOM_UNAVAILABLE, code="1015", message="meeting room is not available",
                                   booking_key="k1", subject="Customer call", organizer="bob@example.com",
                                   start=local(23, 13, 30), end=local(23, 14, 30), clashes_with=(
                                       reservation("R-1", "Board preparation", local(23, 13), local(23, 14),
                                                   buffer_only=False),))),
        (D12, "D-12", ConflictInfo(kind=ROOM_UNAVAILABLE, code="1015", message="meeting room is not available",
                                   booking_key="k2", subject="Retrospective", organizer="bob@example.com",
                                   start=local(23, 15), end=local(23, 16), clashes_with=(
                                       reservation("R-2", "Design review", local(23, 14), local(23, 15),
                                                   buffer_only=True),))),
        (D12, "D-12", ConflictInfo(kind=CHANGED_ON_BOTH_SIDES, message="changed on both sides",
                                   booking_key="k3", subject="Planning", start=local(24, 9), end=local(24, 10),
                                   ultimo_id="R-3", clashes_with=(
                                       Clash(kind="exchange_version", start=local(24, 9), end=local(24, 10)),
                                       Clash(kind="ultimo_version", start=local(24, 11), end=local(24, 12),
                                             ultimo_id="R-3")))),
        (B12, "B-12", ConflictInfo(kind=ROOM_UNAVAILABLE, code="1015", message=HOSTILE, booking_key="k4",
                                   subject=HOSTILE, organizer=HOSTILE, start=local(25, 9), end=local(25, 10),
                                   clashes_with=(reservation("R-<4>", HOSTILE, local(25, 8), local(25, 9, 30),
                                                             buffer_only=False),))),
    ]
    with Session(engine) as s:
        for i, (room, space, info) in enumerate(entries):
            conflicts.record(s, room=room, space_id=space, info=info, link_id=None, now=T0 + timedelta(minutes=i))
        s.commit()
        rows = report.rows(conflicts.query(s, include_resolved=True, since=None))
    engine.dispose()
    path = folder / "conflicts.html"
    path.write_text(report.to_html(rows, generated_at=T0 + timedelta(hours=1), title="Conflicts", tz=ZONE),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.page()
    try:
        yield p
    finally:
        p.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


VISIBLE_ROOMS = ("Array.from(document.querySelectorAll('section.room'))"
                 ".filter(s => s.checkVisibility()).map(s => s.dataset.room)")
VISIBLE_CARDS = ("Array.from(document.querySelectorAll('article.conflict'))"
                 ".filter(a => a.checkVisibility()).map(a => a.querySelector('h4').firstChild.textContent)")


@pytest.mark.parametrize("width", [1400, 400])
def test_screenshots_at_desktop_and_phone_width_without_sideways_scrolling(
        page: Page, page_file: Path, tmp_path: Path, width: int) -> None:
    page.open(page_file.as_uri(), width=width)
    shot = page.screenshot(tmp_path / f"report-{width}.png")
    w, h = png_size(shot)
    assert w == width and h > 800
    # Nothing is wider than the screen: no sideways scrolling, no cut columns.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # (Inside a timeline a long label is clipped at the strip's edge, which is within the page.)
    widest = page.evaluate("Math.max(...Array.from(document.querySelectorAll('body *'))"
                           ".filter(e => !e.parentElement.closest('svg')).map(e => e.getBoundingClientRect().right))")
    assert widest <= width
    # Each timeline is drawn inside the page's width, with its bars.
    strips = page.evaluate("Array.from(document.querySelectorAll('svg.timeline'))"
                           ".map(s => [s.getBoundingClientRect().width, s.querySelectorAll('rect.bar').length])")
    assert len(strips) == 4 and all(0 < sw <= width and bars >= 2 for sw, bars in strips)


def test_the_rendered_page_groups_conflicts_by_room_then_day(page: Page, page_file: Path) -> None:
    page.open(page_file.as_uri(), width=1400)
    assert page.evaluate(VISIBLE_ROOMS) == [B12, C25, D12]
    grouping = page.evaluate("Array.from(document.querySelectorAll('article.conflict')).map(a => "
                             "[a.closest('section.room').dataset.room, a.closest('section.day').dataset.day, "
                             "a.dataset.room])")
    assert sorted(grouping) == [[B12, "2026-11-25", B12], [C25, "2026-11-23", C25],
                                [D12, "2026-11-23", D12], [D12, "2026-11-24", D12]]
    assert page.evaluate("document.getElementById('filters').hidden") is False   # the script ran
    assert page.evaluate("document.getElementById('shown').textContent") == "4 of 4 conflicts shown"
    # The buffer-only clash is shown as such, beside its strip with the buffers drawn.
    d12 = page.evaluate("document.querySelector('section.room[data-room=\"room.d12@example.com\"]').innerText")
    assert "clashes only through the buffers" in d12 and "Design review" in d12
    assert page.evaluate("document.querySelectorAll('section.day[data-day=\"2026-11-23\"] rect.buffer').length") >= 4


def test_a_filter_through_the_page_controls_hides_the_other_rooms(page: Page, page_file: Path) -> None:
    page.open(page_file.as_uri(), width=1400)
    page.evaluate("(() => { const s = document.querySelector('#filters select[name=room]');"
                  f" s.value = '{D12}'; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()")
    assert page.evaluate(VISIBLE_ROOMS) == [D12]
    assert sorted(page.evaluate(VISIBLE_CARDS)) == ["Planning", "Retrospective"]
    assert page.evaluate("document.getElementById('shown').textContent") == "2 of 4 conflicts shown"
    assert page.evaluate("location.hash") == "#room=room.d12%40example.com"
    # Kind on top of room, then sorting by most open conflicts.
    page.evaluate("(() => { const s = document.querySelector('#filters select[name=kind]');"
                  " s.value = 'changed_on_both_sides'; s.dispatchEvent(new Event('change', {bubbles: true})); })()")
    assert page.evaluate(VISIBLE_CARDS) == ["Planning"]
    page.evaluate("(() => { const f = document.getElementById('filters'); f.elements.room.value = '';"
                  " f.elements.kind.value = ''; f.elements.sort.value = 'open';"
                  " f.elements.sort.dispatchEvent(new Event('change', {bubbles: true})); })()")
    assert page.evaluate(VISIBLE_ROOMS) == [D12, B12, C25]


def test_a_filter_in_the_address_is_applied_on_opening(page: Page, page_file: Path) -> None:
    page.open(page_file.as_uri() + "#kind=changed_on_both_sides&day=2026-11-24", width=400)
    assert page.evaluate(VISIBLE_CARDS) == ["Planning"]
    assert page.evaluate("document.querySelector('#filters select[name=kind]').value") == "changed_on_both_sides"


def test_without_script_every_conflict_is_shown(page: Page, page_file: Path) -> None:
    page.open(page_file.as_uri(), width=400, script=False)
    assert len(page.evaluate(VISIBLE_CARDS)) == 4
    assert page.evaluate("document.getElementById('filters').checkVisibility()") is False


def test_a_subject_with_a_script_stays_inert_text(page: Page, page_file: Path) -> None:
    page.open(page_file.as_uri(), width=1400)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.evaluate("document.title") == "Conflicts"
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.images.length") == 0
    b12 = page.evaluate("document.querySelector('section.room[data-room=\"room.b12@example.com\"]').innerText")
    assert "<script>document.title='pwned'" in b12 and "<img src=x" in b12


def test_the_page_prints(page: Page, page_file: Path) -> None:
    page.open(page_file.as_uri(), width=1400)
    pdf = page.pdf()
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
