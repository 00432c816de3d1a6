"""The service's endpoint as an operator scrapes it: `syncd run` (the real command, against
both sandboxes) serves /metrics through prometheus-client with syncd's series labelled,
/healthz, and /status equal to what `syncd status` prints; `syncd status` asks the service
when it cannot read the database itself."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from syncharness import ROOMS, World, at

from syncd import logs
from syncd.commands.cli import main
from syncd.config.schema import Config, ServiceConfig
from syncd.service.status import collect_status, render_status
from syncd.store.db import make_engine

C25, D12 = ROOMS[0][0], ROOMS[1][0]


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_endpoint_is_on_by_default_and_a_key_turns_it_off() -> None:
    assert ServiceConfig().health_listen == "127.0.0.1:9310"
    for off in (False, "off", None):
        assert ServiceConfig.model_validate({"health_listen": off}).health_listen is None
    assert yaml.safe_load("health_listen: off") == {"health_listen": False}     # what YAML hands over


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[World, Path, str, subprocess.Popen[str]]]:
    with World(tmp_path) as world:
        port = free_port()
        raw = json.loads(json.dumps(world.raw))
        raw["sync"]["interval_seconds"] = 5
        raw["service"] = {"health_listen": f"127.0.0.1:{port}"}
        raw["logging"] = {"level": "info", "format": "json"}
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(raw))
        world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
        world.ultimo.reserve("C-25", at(1, 9, 30), at(1, 10, 30), description="Clash")     # a conflict
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            yield world, config, f"http://127.0.0.1:{port}", proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()


def scrape(url: str) -> dict[str, Any]:
    """/metrics parsed by prometheus-client: family name -> (type, {labels tuple: value})."""
    text = httpx.get(f"{url}/metrics").text
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        samples = {}
        for s in family.samples:
            samples[(s.name, *sorted(s.labels.items()))] = s.value
        out[family.name] = (family.type, samples)
    return out


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def normalised(text: str) -> str:
    """Status text without the parts that move with the clock."""
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d [A-Z]{2,5} \([^)]*ago\)", "<time>", text)


@pytest.mark.slow
def test_metrics_healthz_and_status_of_the_running_service(service, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    world, config, url, proc = service
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    eventually(lambda: healthy(url) or proc.poll() is not None, what="/healthz 200")
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    eventually(lambda: world.open_conflicts(C25), what="the clash to be recorded")
    m = eventually(lambda: (s := scrape(url))["syncd_room_sync_duration_seconds"][1].get(
        ("syncd_room_sync_duration_seconds_count",), 0) >= 2 and s, what="two room syncs")

    kind, stale = m["syncd_room_staleness_seconds"]
    assert kind == "gauge"
    for room in (C25, D12):
        for side in ("exchange", "ultimo", "ultimo_full"):
            assert ("syncd_room_staleness_seconds", ("room", room), ("side", side)) in stale
    assert stale[("syncd_room_staleness_seconds", ("room", C25), ("side", "exchange"))] < 60
    assert m["syncd_open_conflicts"][1][("syncd_open_conflicts", ("room", C25))] == 1
    assert m["syncd_ultimo_calls_today"][1][("syncd_ultimo_calls_today",)] >= 2
    assert m["syncd_ultimo_daily_budget"][1][("syncd_ultimo_daily_budget",)] == 10000
    assert m["syncd_errors"][0] == "counter" and m["syncd_calendar_throttle_waits"][0] == "counter"
    assert m["syncd_room_sync_duration_seconds"][0] == "histogram"
    assert m["process_resident_memory_bytes"][1][("process_resident_memory_bytes",)] > 0
    assert "python_info" in m

    # /status: the data `syncd status` prints; rendered, it is the same text.
    data = httpx.get(f"{url}/status").json()
    assert data["service"].startswith("Service: running, started")
    assert [r["mailbox"] for r in data["rooms"]] == [C25, D12] and data["open_conflicts"] == 1
    served, local = io.StringIO(), io.StringIO()
    render_status(data, served)
    cfg = Config.model_validate(yaml.safe_load(config.read_text()))
    from datetime import datetime

    engine = make_engine(cfg.database.url)
    try:
        render_status(collect_status(cfg, engine, now=datetime.fromisoformat(data["now"])), local)
    finally:
        engine.dispose()
    assert served.getvalue() == local.getvalue()
    assert main(["--config", str(config), "status"]) == 0
    assert normalised(capsys.readouterr().out) == normalised(served.getvalue())

    # An operator who cannot open the database (the service's state directory is its own)
    # nor read the secrets (systemd's credentials) gets the same from the service.
    raw = yaml.safe_load(config.read_text())
    raw["database"]["url"] = f"sqlite:///{world.folder / 'not-mine' / 'syncd.db'}"
    del raw["ultimo"]["api_key"], raw["calendar"]["ews"]["password"]
    raw["ultimo"]["api_key_file"] = "${CREDENTIALS_DIRECTORY}/ultimo-api-key"
    raw["calendar"]["ews"]["password_file"] = "/nonexistent/ews-password"
    theirs = config.with_name("operator.yaml")
    theirs.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(theirs), "status"]) == 0
    out, err = capsys.readouterr()
    assert normalised(out) == normalised(served.getvalue())
    assert "the database is not readable here" in err and f"{url}/status" in err

    proc.send_signal(signal.SIGTERM)
    _, log = proc.communicate(timeout=20)
    assert proc.returncode == 0, log[-3000:]
    # Nothing answers now: the database error stands, with what was tried.
    assert main(["--config", str(theirs), "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("syncd: error: ") and "no service answered at" in err and "Traceback" not in err
    logs.configure("info", "auto")
