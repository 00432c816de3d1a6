"""`syncd reconcile [--room ROOM]... [--dry-run]`: one full sync of the rooms, then exit.

Exit status (interface.md): 0 done (conflicts are reported, not failures); 1 some rooms or
actions failed and will be retried next time; 3 a system could not be reached or refused
the credentials; 2 a bad room name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from typing import TextIO

from sqlalchemy import Engine

from syncd.commands.report_html import kind_label, zone_name
from syncd.config.schema import Config
from syncd.core.clashes import summary as clash_summary
from syncd.core.model import ConflictInfo, Room
from syncd.core.plan import span
from syncd.engine.cycle import RoomResult, SyncEngine, finish_run, start_run
from syncd.errors import UsageError
from syncd.service.lock import acquire
from syncd.store.db import open_database


@contextmanager
def instance_lock(engine: Engine) -> Iterator[None]:
    """Hold the one-instance-per-database lock while writing (a running service holds it
    too). Raises AnotherInstanceRunning."""
    with acquire(engine):
        yield


def select_rooms(sync: SyncEngine, names: list[str] | None) -> list[Room]:
    """The rooms named on the command line (mailbox or space id), or all; UsageError for an unknown one."""
    if not names:
        return list(sync.rooms)
    chosen: list[Room] = []
    unknown: list[str] = []
    for name in names:
        try:
            room = sync.room(name)
        except KeyError:
            unknown.append(name)
            continue
        if room not in chosen:
            chosen.append(room)
    if unknown:
        raise UsageError(f"--room {', '.join(unknown)}: not a configured room mailbox or space id")
    return chosen


def summary_line(r: RoomResult) -> str:
    """One line per room: what was done on each side, conflicts and calls."""
    w = r.writes
    sides = []
    if r.ultimo_read or any(w.get(k) for k in ("ultimo_created", "ultimo_moved", "ultimo_cancelled")):
        sides.append(f"Ultimo {w['ultimo_created']} created, {w['ultimo_moved']} moved, "
                     f"{w['ultimo_cancelled']} cancelled")
    else:
        sides.append("Ultimo not read")
    if r.exchange_read:
        sides.append(f"Exchange {w['exchange_created']} created, {w['exchange_moved']} moved, "
                     f"{w['exchange_removed']} removed, {w['exchange_declined']} declined")
    else:
        sides.append("Exchange not read")
    if w.get("linked"):
        sides.append(f"{w['linked']} linked")
    sides.append(f"conflicts {r.conflicts_new} new, {r.conflicts_open} open"
                 + (f", {r.resolved} resolved" if r.resolved else ""))
    sides.append(f"{r.ultimo_calls} Ultimo / {r.calendar_calls} calendar calls")
    return f"{r.room.mailbox} ({r.room.space_id}): " + "; ".join(sides)


def conflict_line(c: ConflictInfo, tz: tzinfo) -> str:
    """One new conflict for the terminal: the booking, what happened, what it clashes with."""
    what = kind_label(c.kind, c.code)
    subject = f"'{c.subject}' " if c.subject else ""
    line = f"conflict: {subject}{span(c.start, c.end, tz)}: {what}"
    ahead = [clash_summary(x, c.start, tz) for x in c.clashes_with if x.kind == "reservation"]
    if ahead:
        line += "; in the way: " + "; ".join(ahead)
    if c.outcome:
        line += f" ({c.outcome.split(':', 1)[0]})"
    return "".join(ch if ch.isprintable() else " " for ch in line)


def print_results(results: list[RoomResult], *, dry_run: bool, out: TextIO, tz: tzinfo = UTC) -> None:
    for r in results:
        if dry_run:
            print(f"{r.room.mailbox} ({r.room.space_id}): plan"
                  + ("" if r.plan_lines else ": nothing to do"), file=out)
            for line in r.plan_lines:
                print(f"  - {line}", file=out)
        else:
            print(summary_line(r), file=out)
        if r.halted:
            print(f"  HALTED: {r.halted}. Nothing was done for this room. If the room really is empty, run "
                  f"`syncd reconcile --room {r.room.mailbox} --accept-empty`", file=out)
        if r.deferred_cancellations:
            print(f"  {r.deferred_cancellations} cancellation(s) held back by sync.max_cancellations_per_cycle",
                  file=out)
        for c in r.new_conflicts:
            print(f"  {conflict_line(c, tz)}", file=out)
        for e in r.errors:
            print(f"  error: {e}", file=out)
    if dry_run:
        print("dry run: nothing was written to Ultimo, Exchange or the links", file=out)
    print(f"(times in {zone_name(tz)})", file=out)


def sync_rooms(sync: SyncEngine, rooms: list[Room], *, dry_run: bool, accept_empty: bool) -> list[RoomResult]:
    """Sync each room in turn. Once a system cannot be reached or refuses the credentials,
    the remaining rooms are not tried against it: one cause, one message, no wasted calls."""
    results: list[RoomResult] = []
    down: str | None = None
    for room in rooms:
        if down is not None:
            skipped = RoomResult(room, unreachable=True)
            skipped.errors.append(f"not synced: {down} is unavailable (see above)")
            results.append(skipped)
            continue
        result = sync.sync_room(room, dry_run=dry_run, accept_empty=accept_empty)
        if result.unreachable and result.failed_system:
            down = "Ultimo" if result.failed_system == "ultimo" else "Exchange"
        results.append(result)
    return results


def exit_status(results: list[RoomResult]) -> int:
    if any(r.unreachable for r in results):
        return 3
    if any(not r.ok for r in results):
        return 1
    return 0


def reconcile(cfg: Config, *, rooms: list[str] | None = None, dry_run: bool = False, accept_empty: bool = False,
              out: TextIO | None = None, sync: SyncEngine | None = None) -> tuple[int, list[RoomResult]]:
    """Run one reconcile; gives the exit status and the per-room results (printed to `out`,
    standard output by default)."""
    out = out if out is not None else sys.stdout
    engine = sync.engine if sync is not None else open_database(cfg)
    own = sync is None
    sync = sync or SyncEngine.from_config(cfg, engine)
    try:
        chosen = select_rooms(sync, rooms)
        if dry_run:
            results = sync_rooms(sync, chosen, dry_run=True, accept_empty=accept_empty)
        else:
            with instance_lock(engine):
                run_id = start_run(engine, "reconcile", datetime.now(UTC))
                sync.executor.run_id = run_id
                results = sync_rooms(sync, chosen, dry_run=False, accept_empty=accept_empty)
                finish_run(engine, run_id, results, datetime.now(UTC))
    finally:
        if own:
            sync.close()
            engine.dispose()
    print_results(results, dry_run=dry_run, out=out, tz=cfg.display_zone)
    return exit_status(results), results


def cmd_reconcile(cfg: Config, args: argparse.Namespace) -> int:
    status, _ = reconcile(cfg, rooms=getattr(args, "room", None), dry_run=bool(getattr(args, "dry_run", False)),
                          accept_empty=bool(getattr(args, "accept_empty", False)))
    return status
