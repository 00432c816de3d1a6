"""`calendarView/delta` for the Graph sandbox: rounds, opaque skip and delta tokens, sparse
occurrences and ``@removed`` tombstones.

A round starts with ``startDateTime``/``endDateTime`` (the window is bound to every token that
follows, as in Graph). Its answer is computed once, when the round starts or a delta token is
redeemed, and served page by page through ``$skiptoken`` links; the last page carries a
``$deltatoken`` link from which the next round reports what changed since.

What a page holds:

- the first round: every single and exception in the window in full, every occurrence sparse
  (id, type, seriesMasterId, start, end only), and each series' master once;
- later rounds: each item written since the token: in full (a series: its master and its
  instances in the window) when it is in the window, else ``@removed`` with reason ``deleted``
  (deleted items, and changes outside the window, as Graph reports them).

Tokens are kept server side, like Graph's delta token cache: `cache_size` tokens at most
(oldest forgotten first); a forgotten or unknown token answers 410 ``SyncStateNotFound``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..ews.model import Item, Occurrence
from ..ews.store import Store

__all__ = ["DeltaRound", "DeltaTokens", "compute_entries", "in_window"]


@dataclass
class DeltaRound:
    """A materialised answer: its pages, the window, and the store sequence it stands for."""

    mailbox: str
    start: datetime
    end: datetime
    pages: list[list[dict[str, Any]]]
    seq: int


@dataclass(frozen=True)
class _DeltaState:
    mailbox: str
    start: datetime
    end: datetime
    seq: int


class DeltaTokens:
    """The server-side table behind skip and delta tokens."""

    def __init__(self, cache_size: int = 1000) -> None:
        self.cache_size = cache_size
        self._skip: OrderedDict[str, tuple[DeltaRound, int]] = OrderedDict()
        self._delta: OrderedDict[str, _DeltaState] = OrderedDict()

    def _remember(self, table: OrderedDict[str, Any], value: Any) -> str:
        token = secrets.token_urlsafe(24)
        table[token] = value
        while len(table) > self.cache_size:
            table.popitem(last=False)
        return token

    def skip_token(self, round_: DeltaRound, page: int) -> str:
        return self._remember(self._skip, (round_, page))

    def delta_token(self, round_: DeltaRound) -> str:
        return self._remember(self._delta, _DeltaState(round_.mailbox, round_.start, round_.end, round_.seq))

    def page(self, token: str, mailbox: str) -> tuple[DeltaRound, int] | None:
        found = self._skip.get(token)
        return found if found is not None and found[0].mailbox == mailbox else None

    def state(self, token: str, mailbox: str) -> _DeltaState | None:
        found = self._delta.get(token)
        return found if found is not None and found.mailbox == mailbox else None

    def forget_all(self) -> None:
        """Every token is unknown from now on (the delta token cache was flushed)."""
        self._skip.clear()
        self._delta.clear()


def in_window(target: Item | Occurrence, start: datetime, end: datetime) -> bool:
    """Whether an item or occurrence overlaps the window (one ending at its start does not)."""
    if target.start == target.end:
        return start <= target.start < end
    return target.start < end and target.end > start


def _instances(store: Store, item: Item, start: datetime, end: datetime) -> list[Item | Occurrence]:
    if item.recurrence is None:
        return [item] if in_window(item, start, end) else []
    found: list[Item | Occurrence] = []
    for occ in store.pattern(item):
        if occ.original_start in item.deleted:
            continue
        if in_window(occ, start, end):
            found.append(occ)
        elif occ.original_start >= end and all(o < occ.original_start for o in item.overrides):
            break
    return found


def compute_entries(
    store: Store,
    mailbox: str,
    start: datetime,
    end: datetime,
    since: int | None,
    render: Any,
    *,
    occurrence_deletions: str = "series",
    tombstone_type: bool = True,
) -> list[dict[str, Any]]:
    """The entries of one delta answer, in order. `render(target, sparse)` renders an event;
    `occurrence_deletions` says what a write that only deleted an occurrence shows: "series"
    (the master and its remaining instances), "tombstone" (that plus ``@removed`` for every
    deleted occurrence in the window) or "none" (nothing)."""
    out: list[dict[str, Any]] = []

    def tombstone(target: Item | Occurrence) -> None:
        entry: dict[str, Any] = {"@odata.type": "#microsoft.graph.event", "id": render(target, True)["id"],
                                 "@removed": {"reason": "deleted"}}
        if tombstone_type:
            if isinstance(target, Occurrence):
                entry["type"] = "occurrence"
            else:
                entry["type"] = "seriesMaster" if target.recurrence is not None else "singleInstance"
        out.append(entry)

    def series(item: Item, instances: list[Item | Occurrence]) -> None:
        if item.recurrence is not None:
            out.append(render(item, False))
        for target in instances:
            sparse = isinstance(target, Occurrence) and target.override is None
            out.append(render(target, sparse))

    if since is None:
        items = sorted(store.mailbox(mailbox).values(), key=lambda i: (i.start, i.key))
        for item in items:
            instances = _instances(store, item, start, end)
            if instances:
                series(item, instances)
        return out
    for _first, kind, item in store.changes_since(mailbox, since):
        if kind == "Delete":
            tombstone(item)
            continue
        later = [s for s in item.history if s > since]
        only_deletions = kind == "Update" and all(s in item.occurrence_deletions for s in later)
        if only_deletions and occurrence_deletions == "none":
            continue
        instances = _instances(store, item, start, end)
        if not instances:
            tombstone(item)
            continue
        series(item, instances)
        if only_deletions and occurrence_deletions == "tombstone":
            for original in sorted(item.deleted):
                ghost = Occurrence(item, 0, original, original, original + (item.end - item.start), None)
                if in_window(ghost, start, end):
                    tombstone(ghost)
    return out


def paginate(entries: list[dict[str, Any]], size: int, duplicate: bool) -> list[list[dict[str, Any]]]:
    """`entries` in pages of `size` (at least one page); with `duplicate`, the last entry of the
    first page shows up again at the top of the second (or twice in a lone page)."""
    size = max(1, size)
    pages = [entries[i:i + size] for i in range(0, len(entries), size)] or [[]]
    if duplicate and pages[0]:
        if len(pages) > 1:
            pages[1].insert(0, dict(pages[0][-1]))
        else:
            pages[0].append(dict(pages[0][0]))
    return pages
