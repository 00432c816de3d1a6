"""`syncd sandbox --seed --write-config FILE`: both systems hold the demo's bookings, the file
is a working configuration with a `service:` section, and the banner says in three lines
what to run next; the commands it names work against it."""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd import logs
from syncd.commands.cli import main
from syncd.config.load import load_config
from syncd.sandbox.serve import cmd_sandbox


def serve(args: argparse.Namespace) -> Iterator[tuple[io.StringIO, dict[str, Any]]]:
    out, stop, result = io.StringIO(), threading.Event(), {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", cmd_sandbox(args, out=out, stop=stop)))
    thread.start()
    deadline = time.monotonic() + 20
    while "Serving until" not in out.getvalue() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield out, result
    finally:
        stop.set()
        thread.join(10)


def sandbox_args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"host": "127.0.0.1", "ultimo_port": 0, "ews_port": 0, "graph_port": 0,
                                 "backend": "ews", "seed": False, "write_config": None, **kw})


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sandbox" / "syncd.yaml"
    path.parent.mkdir()
    served = serve(sandbox_args(seed=True, write_config=str(path)))
    out, result = next(served)
    yield path, out.getvalue()
    next(served, None)                  # stops the sandboxes
    assert result["rc"] == 0
    logs.configure("info", "auto")


@pytest.mark.slow
def test_seeded_sandbox_with_its_configuration_in_a_file(seeded, capsys: pytest.CaptureFixture[str]) -> None:
    path, banner = seeded
    assert "database:" not in banner and "api_key" not in banner       # the configuration is in the file only
    assert f"Configuration: {path}" in banner
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Next: "))
    steps = lines[start:start + 3]
    assert lines[start + 3].startswith("Serving until")
    assert [s.split("#")[0].split()[-1] for s in steps] == ["check", "reconcile", "run"]
    assert all(f"syncd --config {path} " in s for s in steps)

    raw = yaml.safe_load(path.read_text())
    assert raw["service"] == {"health_listen": "127.0.0.1:9310"}
    cfg, _ = load_config(str(path))
    assert cfg.database.url == f"sqlite:///{path.parent / 'syncd-sandbox.db'}"

    # What the banner names works, and sees the demo's bookings.
    capsys.readouterr()
    assert main(["--config", str(path), "check"]) == 0
    out = capsys.readouterr().out
    c25 = next(line for line in out.splitlines() if line.startswith("room.c25@example.com"))
    d12 = next(line for line in out.splitlines() if line.startswith("room.d12@example.com"))
    # C-25: two Ultimo reservations; in Exchange 3 singles + the stand-up's 4 remaining days.
    assert "ultimo ok (2 reservations in window, 1 call)" in c25 and "calendar ok (7 events in window" in c25
    assert "ultimo ok (1 reservation in window, 1 call)" in d12 and "calendar ok (3 events in window" in d12
    assert main(["--config", str(path), "reconcile"]) == 0
    capsys.readouterr()
    assert main(["--config", str(path), "conflicts", "list"]) == 0
    listed = capsys.readouterr().out
    assert "room_unavailable" in listed and "Customer call" in listed


def test_write_config_to_a_folder_that_does_not_exist_is_2(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "config.yaml"
    rc = cmd_sandbox(sandbox_args(write_config=str(target)), out=io.StringIO(), stop=threading.Event())
    assert rc == 2
    assert f"cannot write {target}" in capsys.readouterr().err and not target.exists()


def test_printed_configuration_has_the_service_section() -> None:
    for out, _ in serve(sandbox_args()):
        text = out.getvalue()
        assert text.count("\nNext: ") == 1 and "syncd check" in text
        body = text.split("(save it as config.yaml):", 1)[1].split("Serving until", 1)[0]
        assert yaml.safe_load(body)["service"]["health_listen"] == "127.0.0.1:9310"
