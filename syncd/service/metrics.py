"""The service's Prometheus metrics, through prometheus-client.

    ServiceMetrics(provider)   a registry with the process and Python collectors, syncd's
                               series read from a `HealthSnapshot` at each scrape, and the
                               instruments the service observes as it runs (cycle durations)

syncd's series (all prefixed `syncd_`): ready, healthy, system_up / last success per
system, room_staleness_seconds per room and side, open_conflicts and room_failing per
room, ultimo_calls_today against ultimo_daily_budget, ultimo_tokens, errors_total by
kind, room_syncs_total, writes_total by action, calendar_throttle_waits_total and
calendar_throttle_wait_seconds_total, room_sync_duration_seconds (histogram).

To add a series: a field on `HealthSnapshot` (filled in `ServiceState.snapshot`) and a
family in `snapshot_families`, or an instrument on `ServiceMetrics` the service observes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from syncd.service.health import HealthSnapshot

# A room sync is one or two calendar calls and a few Ultimo calls: tens of milliseconds on a
# quiet room, seconds with writes, a minute when a system throttles.
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _age(now: datetime, t: datetime | None) -> float:
    return math.inf if t is None else max(0.0, (now - t).total_seconds())


def snapshot_families(snap: HealthSnapshot) -> list[Metric]:
    """syncd's own series for one snapshot."""
    now = snap.now
    out: list[Metric] = []

    def gauge(name: str, doc: str, labels: tuple[str, ...], samples: list[tuple[list[str], float]]) -> None:
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        for values, value in samples:
            family.add_metric(values, value)
        out.append(family)

    def counter(name: str, doc: str, labels: tuple[str, ...], samples: list[tuple[list[str], float]]) -> None:
        family = CounterMetricFamily(name, doc, labels=list(labels))
        for values, value in samples:
            family.add_metric(values, value)
        out.append(family)

    gauge("syncd_ready", "1 when the service has started and is syncing.", (), [([], float(snap.ready))])
    gauge("syncd_standby", "1 while a standby waits for the instance lock.", (), [([], float(snap.standby))])
    gauge("syncd_healthy", "1 when /healthz answers 200.", (), [([], float(snap.healthy))])
    gauge("syncd_system_up", "0 while a system is failing and backed off.", ("system",),
          [([s.name], float(s.consecutive_failures == 0)) for s in snap.systems])
    gauge("syncd_system_last_success_timestamp_seconds",
          "Unix time of the last successful call to the system (0: none yet).", ("system",),
          [([s.name], s.last_success.timestamp() if s.last_success else 0.0) for s in snap.systems])
    stale = []
    for r in snap.rooms:
        stale += [([r.mailbox, "exchange"], _age(now, r.exchange_at)), ([r.mailbox, "ultimo"], _age(now, r.ultimo_at)),
                  ([r.mailbox, "ultimo_full"], _age(now, r.ultimo_full_at))]
    gauge("syncd_room_staleness_seconds",
          "Seconds since the side was last read for the room (ultimo: the near-term window at least; "
          "ultimo_full: the whole window; +Inf: never).", ("room", "side"), stale)
    gauge("syncd_open_conflicts", "Open conflicts per room.", ("room",),
          [([r.mailbox], float(r.open_conflicts)) for r in snap.rooms])
    gauge("syncd_room_failing", "1 while the room's last sync failed or it is halted.", ("room",),
          [([r.mailbox], float(r.failing or r.halted is not None)) for r in snap.rooms])
    if snap.ultimo_calls_today is not None:
        gauge("syncd_ultimo_calls_today", "Ultimo calls counted today (UTC) by every syncd process.", (),
              [([], float(snap.ultimo_calls_today))])
    gauge("syncd_ultimo_daily_budget", "ultimo.daily_call_budget.", (), [([], float(snap.ultimo_daily_budget))])
    if snap.ultimo_tokens is not None:
        gauge("syncd_ultimo_tokens", "Ultimo calls the pacing allows right now.", (),
              [([], round(snap.ultimo_tokens, 3))])
    counter("syncd_errors", "Failures since start, by kind.", ("kind",),
            [([k], float(v)) for k, v in sorted(snap.errors.items())])
    counter("syncd_room_syncs", "Room syncs since start.", (), [([], float(snap.syncs))])
    counter("syncd_writes", "Writes since start, by action.", ("action",),
            [([k], float(v)) for k, v in sorted(snap.writes.items())])
    counter("syncd_calendar_throttle_waits", "Waits because the calendar server throttled syncd, since start.",
            (), [([], float(snap.calendar_throttle_waits))])
    counter("syncd_calendar_throttle_wait_seconds", "Seconds waited because the calendar server throttled syncd.",
            (), [([], float(snap.calendar_throttle_seconds))])
    return out


class SnapshotCollector(Collector):
    """syncd's series, built from a fresh snapshot at each scrape."""

    def __init__(self, provider: Callable[[], HealthSnapshot]) -> None:
        self._provider = provider

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_families(self._provider())


class ServiceMetrics:
    """The registry /metrics serves, and the instruments the service observes."""

    def __init__(self, provider: Callable[[], HealthSnapshot], *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.registry.register(SnapshotCollector(provider))
        self.cycle_seconds = Histogram(
            "syncd_room_sync_duration_seconds", "Seconds one room's sync took (reads, plan, writes).",
            buckets=CYCLE_BUCKETS, registry=self.registry)

    def exposition(self) -> bytes:
        """The Prometheus text format of everything in the registry."""
        return generate_latest(self.registry)


def render_metrics(snap: HealthSnapshot) -> str:
    """syncd's series for one snapshot in the Prometheus text format (no process metrics)."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snap))
    return generate_latest(registry).decode()
