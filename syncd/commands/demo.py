"""`syncd demo`: both sandboxes, seeded with example bookings, reconciled into a local
SQLite database; prints the outcome and where the conflict report was written.

Needs nothing but the installed package: the sandboxes run in this process on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

import yaml

from syncd.commands.reconcile import reconcile
from syncd.config.load import load_config
from syncd.sandbox.seed import ROOMS, ZONE, seed

USER, PASSWORD, API_KEY = "svc-syncd@example.com", "sandbox-password", "sandbox-key"
GRAPH_CLIENT_ID, GRAPH_SECRET = "5e1f0c2a-7b3d-4e8f-9a6b-2c4d6e8f0a1b", "sandbox-graph-secret"


def demo_config(ultimo_url: str, ews_url: str, db_path: Path, graph: dict | None = None) -> dict:
    """A complete syncd configuration pointing at the sandboxes (at the Graph one, given its
    `calendar.graph` section)."""
    config = {
        "database": {"url": f"sqlite:///{db_path.name}"},
        "ultimo": {"base_url": ultimo_url, "api_key": API_KEY, "timezone": "Europe/Amsterdam",
                   "daily_call_budget": 5000, "calls_per_10s": 50},
        "calendar": {"backend": "ews", "ews": {"endpoint": ews_url, "auth": "basic", "username": USER,
                                               "password": PASSWORD, "access": "impersonation",
                                               "server_version": "15.1.2507.6"}},
        "rooms": [{"mailbox": m, "space_id": s} for m, s in ROOMS],
        "applicants": {"default": "ULTIMO", "by_email": {"alice@example.com": "00042", "bob@example.com": "00043"}},
        "sync": {"interval_seconds": 60, "past_days": 1, "future_days": 14},
        "logging": {"level": "error"},
    }
    if graph is not None:
        config["calendar"] = {"backend": "graph", "graph": graph}
    return config


def cmd_demo(args: argparse.Namespace) -> int:
    from syncd.commands.report import render
    from syncd.commands.report import rows as report_rows
    from syncd.sandbox.ews.server import EwsSandbox
    from syncd.sandbox.ultimo.server import UltimoSandbox

    folder = Path(getattr(args, "dir", None) or "syncd-demo").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / "syncd-demo.db"
    for stale in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
        stale.unlink(missing_ok=True)
    backend = getattr(args, "backend", None) or "ews"
    with contextlib.ExitStack() as stack:
        ultimo = stack.enter_context(UltimoSandbox(api_keys=(API_KEY,)))
        ews = stack.enter_context(EwsSandbox(users={USER: PASSWORD}, auth="basic"))
        told = seed(ultimo, ews, datetime.now(UTC))
        graph_section, where = None, f"EWS {ews.url}"
        if backend == "graph":
            # The Graph sandbox serves the very calendars seeded through the EWS one.
            from syncd.sandbox.graph.server import GraphSandbox

            graph = stack.enter_context(GraphSandbox(store=ews.store))
            graph.register_app(GRAPH_CLIENT_ID, secret=GRAPH_SECRET, scope=[m for m, _ in ROOMS])
            graph_section = graph.calendar_config(GRAPH_CLIENT_ID, GRAPH_SECRET)
            where = f"Microsoft Graph {graph.graph_url}/v1.0 (the same calendars as EWS {ews.url})"
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(ultimo.url, ews.url, db_path, graph_section),
                                              sort_keys=False))
        cfg, _ = load_config(str(config_path))
        from syncd.logs import configure
        configure(getattr(args, "log_level", None) or cfg.logging.level, cfg.logging.format)

        print(f"Sandboxes: Ultimo {ultimo.url}  {where}")
        print("Seeded:")
        for line in told:
            print(f"  {line}")
        print("\nsyncd reconcile:")
        status, _ = reconcile(cfg, out=sys.stdout)
        print("\nsyncd reconcile, again at once (a second run writes nothing):")
        buf = io.StringIO()
        status2, results2 = reconcile(cfg, out=buf)
        print(buf.getvalue(), end="")
        second_writes = sum(sum(r.writes.values()) for r in results2)

        late_day = datetime.now(UTC).astimezone(ZONE) + timedelta(days=2)
        ews.book(ROOMS[0][0], subject="Late booking", start=_at(late_day, 15), end=_at(late_day, 16),
                 organizer="alice@example.com")
        print("\nNow someone books C-25 in Outlook for 'Late booking' the day after tomorrow 15:00-16:00,"
              "\nright after the 'Facility inspection' Ultimo has 14:00-15:00 (plus 10 min cleanup).")
        print("syncd reconcile (the room is managed now: it declines the clash, telling the organizer why):")
        status3, _ = reconcile(cfg, out=sys.stdout)
        for d in ews.declines(ROOMS[0][0]):
            print(f"  the organizer reads: {d['reason']}")

        print("\nAfterwards:")
        for mailbox, space in ROOMS:
            events = ews.occurrences(mailbox, datetime.now(UTC) - timedelta(days=1),
                                     datetime.now(UTC) + timedelta(days=14))
            reservations = ultimo.reservations(space)
            print(f"  {mailbox}: {len(events)} events in Exchange; {space}: {len(reservations)} reservations"
                  " in Ultimo")
        from syncd.engine import conflicts as store
        from syncd.store.db import make_engine, session_factory

        engine = make_engine(cfg.database.url)
        with session_factory(engine)() as s:
            rows = store.query(s, include_resolved=True, since=None)
            report = render("html", report_rows(rows), tz=cfg.display_zone, scope="all conflicts",
                            now=datetime.now(UTC))
            lines = [_conflict_text(c, cfg.display_zone) for c in rows]
        engine.dispose()
    report_path = folder / "conflicts.html"
    report_path.write_text(report, encoding="utf-8")
    print(f"\nConflicts: {len(rows)} (see `syncd --config {config_path} conflicts list`)")
    for line in lines:
        print(f"  {line}")
    print(f"Conflict report: {report_path}")
    print(f"Database: {db_path}")
    if second_writes:
        print(f"warning: the second reconcile wrote {second_writes} time(s)")
    return max(status, status2, status3)


def _at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day.date(), time(hour, minute), tzinfo=ZONE)


def _conflict_text(c: Any, tz: tzinfo) -> str:
    """One stored conflict for the terminal, with what is in the way."""
    from syncd.core.clashes import summary
    from syncd.core.plan import span
    from syncd.engine.conflicts import clashes_of

    text = f"#{c.id} {c.kind} ({c.code or '-'}) {c.room}: '{c.subject or ''}' {span(c.start, c.end, tz)}, {c.status}"
    ahead = [summary(x, c.start, tz) for x in clashes_of(c) if x.kind == "reservation"]
    if ahead:
        text += "\n      in the way: " + "; ".join(ahead)
    if c.outcome:
        text += f"\n      {c.outcome}"
    return text

