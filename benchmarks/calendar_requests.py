"""Calendar requests per room, EWS beside Microsoft Graph: what one change check of an
unchanged room costs (goal: one request), what a full read of the sync window costs, and what
the first check (Graph: a whole delta round) costs, for rooms holding more and more bookings.

Both backends run their real clients (exchangelib; MSAL + httpx) against the sandboxes, which
serve the same calendars (one store, two protocols); requests are counted by the sandboxes.
Figures, not assertions.

    python benchmarks/calendar_requests.py                     # 10, 100 and 1000 bookings
    python benchmarks/calendar_requests.py --bookings 50 500
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from syncd.calendars.ews.backend import EwsCalendar
from syncd.calendars.graph.backend import GraphCalendar
from syncd.config.schema import EwsConfig, GraphConfig
from syncd.core.model import TimeWindow
from syncd.logs import configure
from syncd.sandbox.ews.server import EwsSandbox, Recurrence
from syncd.sandbox.graph.server import GraphSandbox

ZONE = ZoneInfo("Europe/Amsterdam")
USER, PASSWORD = "svc-syncd@example.com", "bench-password"
CLIENT_ID, SECRET = "5f0c7a1e-3b2d-4c8e-9a6f-0e1d2c3b4a59", "bench-Secret~value"
PAST_DAYS, FUTURE_DAYS = 1, 30


def seed(ews: EwsSandbox, mailbox: str, bookings: int) -> None:
    """`bookings` bookings over the next 30 days: one in ten a daily series of 5."""
    base = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    made = 0
    slot = 0
    while made < bookings:
        day, quarter = divmod(slot, 40)          # 40 quarter hours a day, 08:00-18:00
        start = base + timedelta(days=day % 30, hours=8, minutes=15 * quarter)
        if slot % 10 == 9 and bookings - made >= 5:
            ews.book(mailbox, subject=f"Series {slot}", start=start, end=start + timedelta(minutes=15),
                     recurrence=Recurrence(kind="daily", count=5))
            made += 5
        else:
            ews.book(mailbox, subject=f"Meeting {slot}", start=start, end=start + timedelta(minutes=15))
            made += 1
        slot += 1 if day < 29 else 41


def measure(bookings: int) -> dict[str, float]:
    mailbox = f"room{bookings}@example.com"
    graph = GraphSandbox(timezone="Europe/Amsterdam").start()
    graph.register_app(CLIENT_ID, secret=SECRET)
    ews = EwsSandbox(users={USER: PASSWORD}, auth="basic", store=graph.store).start()
    try:
        ews.add_mailbox(mailbox)
        seed(ews, mailbox, bookings)
        now = datetime.now(UTC)
        window = TimeWindow(now - timedelta(days=PAST_DAYS), now + timedelta(days=FUTURE_DAYS))
        e_cal = EwsCalendar(EwsConfig(endpoint=ews.url, auth="basic", username=USER, password=SecretStr(PASSWORD),
                                      server_version="15.1.2507.6"))
        g_cal = GraphCalendar(GraphConfig(tenant_id=graph.tenant_id, client_id=CLIENT_ID,
                                          client_secret=SecretStr(SECRET), authority=graph.url,
                                          graph_url=f"{graph.graph_url}/v1.0", ca_file=graph.ca_file),
                              sync_days=(PAST_DAYS, FUTURE_DAYS))
        out: dict[str, float] = {}
        for name, cal, calls in (("ews", e_cal, lambda: ews.calls(mailbox=mailbox)),
                                 ("graph", g_cal, lambda: graph.calls(mailbox=mailbox))):
            cal.probe(mailbox)                   # connection set up, folder known, token obtained
            c0 = calls()
            state = cal.check_changes(mailbox, None).state
            out[f"{name}_first_check"] = calls() - c0
            c0 = calls()
            t = time.perf_counter()
            for _ in range(10):
                state = cal.check_changes(mailbox, state).state
            out[f"{name}_check_s"] = (time.perf_counter() - t) / 10
            out[f"{name}_check"] = (calls() - c0) / 10
            c0 = calls()
            t = time.perf_counter()
            events = cal.list_events(mailbox, window)
            out[f"{name}_read_s"] = time.perf_counter() - t
            out[f"{name}_read"] = calls() - c0
            out[f"{name}_events"] = len(events)
            cal.close()
        return out
    finally:
        ews.stop()
        graph.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    configure("error", "console")
    print(f"Calendar requests per room (window {PAST_DAYS} + {FUTURE_DAYS} days; Graph page size 100)")
    print("| bookings | events read | unchanged check EWS | Graph | full read EWS | Graph "
          "| first check EWS | Graph | check ms EWS | Graph | read ms EWS | Graph |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.bookings:
        r = measure(n)
        print(f"| {n} | {r['graph_events']:.0f} | {r['ews_check']:g} | {r['graph_check']:g} | {r['ews_read']:.0f} "
              f"| {r['graph_read']:.0f} | {r['ews_first_check']:.0f} | {r['graph_first_check']:.0f} "
              f"| {r['ews_check_s'] * 1000:.0f} | {r['graph_check_s'] * 1000:.0f} "
              f"| {r['ews_read_s'] * 1000:.0f} | {r['graph_read_s'] * 1000:.0f} |")


if __name__ == "__main__":
    main()
