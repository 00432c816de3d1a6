"""The calendar backend a configuration names: `open_calendar(cfg)`.

The one place `syncd check`, `syncd reconcile` and `syncd run` build their RoomCalendar."""

from __future__ import annotations

from typing import Any

from syncd.calendars.base import RoomCalendar
from syncd.config.schema import Config


def open_calendar(cfg: Config, **options: Any) -> RoomCalendar:
    """The backend of `cfg.calendar.backend` (no network yet); `options` go to its constructor."""
    if cfg.calendar.backend == "graph":
        from syncd.calendars.graph.backend import GraphCalendar

        assert cfg.calendar.graph is not None   # checked by CalendarConfig
        return GraphCalendar(cfg.calendar.graph, sync_days=(cfg.sync.past_days, cfg.sync.future_days), **options)
    from syncd.calendars.ews.backend import EwsCalendar

    assert cfg.calendar.ews is not None
    return EwsCalendar(cfg.calendar.ews, **options)
