"""`syncd sandbox --backend graph` and `syncd demo --backend graph`: the printed configuration
is valid and syncd itself (its Graph backend, real MSAL and httpx) works against it."""

from __future__ import annotations

import argparse
import io
import threading
import time
from pathlib import Path

import pytest
import yaml

from syncd.commands.cli import main
from syncd.config.schema import Config
from syncd.sandbox.serve import GRAPH_CLIENT_ID, cmd_sandbox, sandbox_config_yaml


def test_the_graph_configuration_is_valid(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    section = {"tenant_id": "8d3c1f7e-5b2a-4c6d-9e0f-1a2b3c4d5e6f", "client_id": GRAPH_CLIENT_ID,
               "client_secret": "s", "authority": "https://127.0.0.1:1", "graph_url": "https://127.0.0.1:1/v1.0",
               "ca_file": str(tmp_path / "ca.pem")}
    cfg = Config.model_validate(yaml.safe_load(sandbox_config_yaml("http://127.0.0.1:2/api/V1", None, graph=section)))
    assert cfg.calendar.backend == "graph" and cfg.calendar.graph is not None
    assert cfg.calendar.graph.graph_url == "https://127.0.0.1:1/v1.0"


@pytest.mark.slow
def test_syncd_checks_the_graph_sandbox_it_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, stop, result = io.StringIO(), threading.Event(), {}
    args = argparse.Namespace(host="127.0.0.1", ultimo_port=0, ews_port=0, graph_port=0, backend="graph")
    thread = threading.Thread(target=lambda: result.setdefault("rc", cmd_sandbox(args, out=out, stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while "Serving until" not in out.getvalue() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        text = out.getvalue()
        assert "Graph sandbox:" in text and "the same calendars as EWS" in text
        body = text.split("(save it as config.yaml):", 1)[1].split("Serving until", 1)[0]
        config = yaml.safe_load(body)
        ca_file = config["calendar"]["graph"]["ca_file"]
        assert Path(ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
        config["database"]["url"] = f"sqlite:///{tmp_path / 'syncd.db'}"
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        capsys.readouterr()
        assert main(["--config", str(path), "check"]) == 0
        checked = capsys.readouterr().out
        assert "room.c25@example.com" in checked and "Test-ServicePrincipalAuthorization" in checked
    finally:
        stop.set()
        thread.join(10)
    assert result["rc"] == 0
    assert not Path(ca_file).exists()        # the CA file goes with the sandbox


@pytest.mark.slow
def test_switching_the_sandbox_configuration_from_ews_to_graph_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, stop, result = io.StringIO(), threading.Event(), {}
    target = tmp_path / "config.yaml"
    args = argparse.Namespace(host="127.0.0.1", ultimo_port=0, ews_port=0, graph_port=0, backend="graph",
                              seed=True, write_config=str(target))
    thread = threading.Thread(target=lambda: result.setdefault("rc", cmd_sandbox(args, out=out, stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while "Serving until" not in out.getvalue() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        config = yaml.safe_load(target.read_text())
        assert config["calendar"]["backend"] == "graph" and "ews" in config["calendar"]
        config["database"]["url"] = f"sqlite:///{tmp_path / 'syncd.db'}"
        for backend in ("ews", "graph"):
            config["calendar"]["backend"] = backend
            (tmp_path / f"{backend}.yaml").write_text(yaml.safe_dump(config))
        capsys.readouterr()
        assert main(["--config", str(tmp_path / "ews.yaml"), "reconcile"]) == 0
        assert "Exchange 2 created" in capsys.readouterr().out     # synced through EWS first
        for _ in range(2):                                          # then through Graph: nothing to write
            assert main(["--config", str(tmp_path / "graph.yaml"), "reconcile"]) == 0
            lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("room.")]
            assert len(lines) == 2
            assert all("Ultimo 0 created, 0 moved, 0 cancelled; Exchange 0 created, 0 moved, 0 removed" in line
                       for line in lines), lines
    finally:
        stop.set()
        thread.join(10)
    assert result["rc"] == 0


@pytest.mark.slow
def test_the_demo_runs_on_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--backend", "graph", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Microsoft Graph https://127.0.0.1:" in out
    assert "Exchange 2 created" in out and "warning: the second reconcile wrote" not in out
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["calendar"]["backend"] == "graph"
