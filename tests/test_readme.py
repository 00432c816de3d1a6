"""The README's "Using it" commands run as written, in order, against
`syncd sandbox --seed --write-config` (tests/readme_runner.py types them), so the README
cannot drift from what works.

They use the fixed port 127.0.0.1:9310, so they run in a private network namespace of their
own (`unshare --net`, as root), where nothing else listens; without one, only when the
port is free here."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "readme_runner.py"


def private_network() -> list[str] | None:
    """A command prefix giving a fresh network namespace with loopback up, or None."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True)
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"] if probe.returncode == 0 else None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    prefix = private_network()
    if prefix is None and not port_free(9310):
        pytest.skip("no private network namespace here, and 127.0.0.1:9310 is taken")
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCD_CONFIG",)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"   # this checkout's syncd
    done = subprocess.run([*(prefix or []), sys.executable, str(RUNNER), str(REPO / "README.md"), str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    by = {r["command"].split("  ")[0]: r for r in results}
    for r in results:
        assert r["status"] == 0, f"{r['command']} exited {r['status']}:\n{r['stdout'][-2000:]}\n{r['stderr']}"
        assert "Traceback" not in r["stdout"] + r["stderr"], r["command"]

    order = [r["command"] for r in results]
    assert order[0] == "syncd config validate" and order[-1].startswith("syncd sandbox --seed --write-config")
    assert "config.yaml: valid" in by["syncd config validate"]["stdout"]
    assert "<redacted from" in by["syncd config show"]["stdout"]
    assert "sandbox-key" not in by["syncd config show"]["stdout"]
    checked = by["syncd check"]["stdout"]
    assert checked.count("ultimo ok") == 2 and checked.count("calendar ok") == 2
    assert "2 reservations in window" in checked          # the seeded bookings are there
    assert "dry run: nothing was written" in by["syncd reconcile --dry-run"]["stdout"]
    assert "Exchange 2 created" in by["syncd reconcile"]["stdout"]      # the two seeded Ultimo reservations
    assert "room_unavailable" in by["syncd conflicts list"]["stdout"]
    assert (tmp_path / "conflicts.html").read_text().lstrip().lower().startswith("<!doctype html")
    health = json.loads(by["curl -s 127.0.0.1:9310/healthz"]["stdout"])
    assert health["rooms"] == 2 and "systems" in health
    status = by["syncd status"]["stdout"]
    assert "room.c25@example.com" in status and "Service: running" in status
    service = next(r for r in results if r["command"].startswith("syncd run"))
    assert service["status"] == 0                         # stopped by SIGTERM, cleanly
