"""The loopback health endpoint, over real HTTP: /healthz status and body, /metrics in
the Prometheus text format (parsed by prometheus-client) with the figures an operator alerts on."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.errors import ConfigError
from syncd.service.health import (
    HealthServer,
    HealthSnapshot,
    RoomHealth,
    SystemHealth,
    parse_listen,
    render_metrics,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def snapshot(**kw) -> HealthSnapshot:
    base = dict(
        now=NOW, ready=True,
        systems=(SystemHealth("exchange", last_success=NOW - timedelta(seconds=30)),
                 SystemHealth("ultimo", last_success=NOW - timedelta(minutes=5))),
        rooms=(RoomHealth("c25@example.com", "C-25", exchange_at=NOW - timedelta(seconds=40),
                          ultimo_at=NOW - timedelta(minutes=10), ultimo_full_at=NOW - timedelta(hours=2),
                          open_conflicts=2),
               RoomHealth('odd"name\\@example.com', "C-26")),
        ultimo_calls_today=1234, ultimo_daily_budget=5000, ultimo_tokens=51.5,
        errors={"ultimo": 1, "room": 3}, syncs=17, writes={"ultimo_created": 4},
        calendar_throttle_waits=2, calendar_throttle_seconds=0.75,
    )
    base.update(kw)
    return HealthSnapshot(**base)


@pytest.fixture
def server():
    current = {"snap": snapshot()}
    srv = HealthServer("127.0.0.1:0", lambda: current["snap"]).start()
    try:
        yield srv, current
    finally:
        srv.stop()


def test_healthz_ok_when_ready_and_systems_answer(server):
    srv, _ = server
    r = httpx.get(f"{srv.url}/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["ready"] is True and body["reasons"] == []
    assert body["systems"]["exchange"]["last_success"] == (NOW - timedelta(seconds=30)).isoformat()
    assert body["systems"]["ultimo"]["consecutive_failures"] == 0
    assert body["ultimo_calls_today"] == 1234 and body["ultimo_daily_budget"] == 5000


def test_healthz_503_while_starting_or_a_system_keeps_failing(server):
    srv, current = server
    current["snap"] = snapshot(ready=False)
    r = httpx.get(f"{srv.url}/healthz")
    assert r.status_code == 503 and r.json()["reasons"] == ["starting"]

    failing = SystemHealth("ultimo", last_success=NOW - timedelta(hours=1), consecutive_failures=3,
                           backoff_until=NOW + timedelta(minutes=4), last_error="Ultimo unreachable")
    current["snap"] = snapshot(systems=(SystemHealth("exchange", last_success=NOW), failing))
    r = httpx.get(f"{srv.url}/healthz")
    assert r.status_code == 503
    assert r.json()["reasons"] == ["ultimo failing (3 times in a row): Ultimo unreachable"]
    assert r.json()["systems"]["ultimo"]["backoff_until"] == (NOW + timedelta(minutes=4)).isoformat()

    # One failure is a blip, not an outage.
    current["snap"] = snapshot(systems=(SystemHealth("ultimo", consecutive_failures=1),))
    assert httpx.get(f"{srv.url}/healthz").status_code == 200


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample as 'name{label="v",...}' -> value, parsed by prometheus-client's own
    parser (which refuses what is not exposition format); families keep their TYPE."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_metrics_exposition_format_and_values(server):
    srv, _ = server
    r = httpx.get(f"{srv.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(r.text)
    assert m['syncd_room_staleness_seconds{room="c25@example.com",side="exchange"}'] == 40
    assert m['syncd_room_staleness_seconds{room="c25@example.com",side="ultimo"}'] == 600
    assert m['syncd_room_staleness_seconds{room="c25@example.com",side="ultimo_full"}'] == 7200
    assert math.isinf(m['syncd_room_staleness_seconds{room="odd"name\\@example.com",side="ultimo"}'])
    assert m["syncd_ultimo_calls_today"] == 1234
    assert m["syncd_ultimo_daily_budget"] == 5000
    assert m['syncd_open_conflicts{room="c25@example.com"}'] == 2
    assert m['syncd_errors_total{kind="room"}'] == 3
    assert m['syncd_errors_total{kind="ultimo"}'] == 1
    assert m['syncd_system_up{system="ultimo"}'] == 1
    assert m["syncd_ready"] == 1 and m["syncd_healthy"] == 1
    assert m['syncd_writes_total{action="ultimo_created"}'] == 4
    assert m["syncd_calendar_throttle_waits_total"] == 2 and m["syncd_calendar_throttle_wait_seconds_total"] == 0.75
    kinds = families(r.text)
    assert kinds["syncd_errors"] == "counter" and kinds["syncd_room_staleness_seconds"] == "gauge"
    assert kinds["syncd_room_sync_duration_seconds"] == "histogram"
    # prometheus-client's process and Python metrics come along.
    assert m["process_resident_memory_bytes"] > 0 and "python_info" in kinds


def test_cycle_durations_are_a_histogram(server):
    srv, _ = server
    for seconds in (0.02, 0.3, 0.3, 7.0):
        srv.metrics.cycle_seconds.observe(seconds)
    m = parse_metrics(httpx.get(f"{srv.url}/metrics").text)
    assert m['syncd_room_sync_duration_seconds_bucket{le="0.05"}'] == 1
    assert m['syncd_room_sync_duration_seconds_bucket{le="0.5"}'] == 3
    assert m['syncd_room_sync_duration_seconds_bucket{le="+Inf"}'] == 4
    assert m["syncd_room_sync_duration_seconds_count"] == 4
    assert m["syncd_room_sync_duration_seconds_sum"] == pytest.approx(7.62)


def test_metrics_show_an_unhealthy_service():
    snap = snapshot(systems=(SystemHealth("exchange", consecutive_failures=5),))
    m = parse_metrics(render_metrics(snap))
    assert m["syncd_healthy"] == 0
    assert m['syncd_system_up{system="exchange"}'] == 0
    assert m['syncd_system_last_success_timestamp_seconds{system="exchange"}'] == 0


def test_unknown_path_and_method(server):
    srv, _ = server
    assert httpx.get(f"{srv.url}/").status_code == 404
    assert httpx.get(f"{srv.url}/status").status_code == 404      # no status function given
    r = httpx.post(f"{srv.url}/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert httpx.head(f"{srv.url}/healthz").status_code == 200


def test_a_failing_snapshot_answers_500_and_the_server_goes_on():
    calls = {"n": 0}

    def provider() -> HealthSnapshot:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return snapshot()

    srv = HealthServer("127.0.0.1:0", provider).start()
    try:
        assert httpx.get(f"{srv.url}/healthz").status_code == 500
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
    finally:
        srv.stop()


def test_listen_must_be_loopback():
    assert parse_listen("127.0.0.1:9310") == ("127.0.0.1", 9310)
    assert parse_listen("[::1]:9310") == ("::1", 9310)
    assert parse_listen("localhost:0") == ("localhost", 0)
    for bad in ("0.0.0.0:9310", "192.168.1.5:9310", "example.com:80", "127.0.0.1:http"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_a_taken_port_is_a_clear_error(server):
    srv, _ = server
    with pytest.raises(ConfigError, match="cannot listen"):
        HealthServer(srv.address, snapshot)
