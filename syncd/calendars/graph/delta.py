"""Change checks through `calendarView/delta`.

The state syncd keeps per room (in the database, where the EWS backend keeps its
SyncFolderItems state) is the round's `@odata.deltaLink` *and the window it was started
with*, as JSON: a delta link is bound to the window of its round's first request.

    check(state) -> SyncCheck
      no state, an unreadable one, or a window that slid (a new day)  -> a new round; changed
      the link answers 410 / SyncStateNotFound (also mid-round)        -> a new round; changed
      any item on any page (an `@removed` too: a hint, confirmed by the
      caller's full read, never taken as proof of a cancellation)       -> changed
      nothing                                                          -> unchanged (one request)

The window is whole UTC days covering the sync window (`past_days` back, `future_days`
ahead, plus the day in progress), so it slides once a day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from syncd.calendars.graph.convert import day_floor, iso
from syncd.calendars.graph.http import GraphError, GraphHttp
from syncd.core.model import SyncCheck
from syncd.errors import CalendarProtocolError
from syncd.logs import get_logger

log = get_logger("syncd.graph")

_VERSION = "graph-delta-1"
ROUND_ATTEMPTS = 3


@dataclass(frozen=True)
class DeltaState:
    link: str
    start: datetime
    end: datetime

    def dump(self) -> str:
        return json.dumps({"v": _VERSION, "link": self.link, "start": self.start.isoformat(),
                           "end": self.end.isoformat()})

    @classmethod
    def load(cls, text: str | None) -> DeltaState | None:
        """The state in `text`, or None when there is none or it is not one of ours
        (e.g. an EWS sync state left by the backend used before)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("link"), str):
                return None
            return cls(data["link"], datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"]))
        except (ValueError, TypeError, KeyError):
            return None


def delta_window(now: datetime, past_days: int, future_days: int) -> tuple[datetime, datetime]:
    """Whole UTC days covering [now - past_days, now + future_days]."""
    today = day_floor(now)
    return today - timedelta(days=past_days + 1), today + timedelta(days=future_days + 2)


def lost_round(e: GraphError) -> bool:
    """Graph says the round's state is gone: start a new round."""
    return e.status == 410 or e.code.lower() in ("syncstatenotfound", "syncstateinvalid", "resyncrequired")


class DeltaReader:
    """Rounds of calendarView/delta for one backend."""

    def __init__(self, http: GraphHttp) -> None:
        self._http = http

    def check(self, path: str, state: str | None, window: tuple[datetime, datetime]) -> SyncCheck:
        """Whether the calendar at `path` (`/users/{room}/calendar`) changed since `state`."""
        known = DeltaState.load(state)
        if known is None or (known.start, known.end) != window:
            if state and known is None:
                log.warning("graph_delta_state_unreadable", path=path)
            elif known is not None:
                log.info("graph_delta_window_slid", path=path, start=iso(window[0]), end=iso(window[1]))
            return SyncCheck(changed=True, state=self.new_round(path, window).dump())
        try:
            changed, link = self._follow(known.link)
        except GraphError as e:
            if not lost_round(e):
                raise
            log.warning("graph_delta_round_lost", path=path, status=e.status, code=e.code)
            return SyncCheck(changed=True, state=self.new_round(path, window).dump())
        return SyncCheck(changed=changed, state=DeltaState(link, known.start, known.end).dump())

    def new_round(self, path: str, window: tuple[datetime, datetime]) -> DeltaState:
        """A full round from scratch (every page); its delta link. A round lost while it
        is being read (410 on a page) is started again, up to ROUND_ATTEMPTS times in all."""
        params = {"startDateTime": iso(window[0]), "endDateTime": iso(window[1])}
        for attempt in range(1, ROUND_ATTEMPTS + 1):
            try:
                link = self._to_end(self._http.get_json(self._http.url(f"{path}/calendarView/delta"), params=params,
                                                        page_size=self._page_size()))[1]
                return DeltaState(link, window[0], window[1])
            except GraphError as e:
                if attempt == ROUND_ATTEMPTS or not lost_round(e):
                    raise
                log.warning("graph_delta_round_lost", path=path, status=e.status, code=e.code)
        raise AssertionError("unreachable")

    def _follow(self, link: str) -> tuple[bool, str]:
        return self._to_end(self._http.get_json(link, page_size=self._page_size()))

    def _to_end(self, page: dict[str, Any]) -> tuple[bool, str]:
        """Every page from `page` on: (any item seen, the round's delta link)."""
        changed = False
        seen: set[str] = set()
        while True:
            items = page.get("value")
            if not isinstance(items, list):
                raise CalendarProtocolError("Microsoft Graph sent a delta page without a value list")
            changed = changed or bool(items)
            if page.get("@odata.deltaLink"):
                # Checked before it is kept: a link that cannot be followed would fail every
                # later check until the window slides.
                return changed, self._http.next_link(page["@odata.deltaLink"], set())
            link = page.get("@odata.nextLink")
            if not link:
                raise CalendarProtocolError("Microsoft Graph sent a delta page with neither nextLink nor deltaLink")
            page = self._http.get_json(self._http.next_link(link, seen), page_size=self._page_size())

    def _page_size(self) -> int:
        return self._http.page_size
