"""Runs the README's "Using it" commands in order, as a person would type them, and prints
what each did as JSON (for tests/test_readme.py, which runs this in a private network
namespace so that the commands' fixed port 127.0.0.1:9310 is free).

    python tests/readme_runner.py README.md WORKDIR

A line ending in `&` starts in the background (stopped with SIGTERM at the end, its exit
status reported); the command after it is repeated until it succeeds, for up to a minute,
as a person waits for a server to come up. Comments (`  # ...`) are dropped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RETRY_SECONDS = 60.0


def commands(readme: str) -> list[str]:
    """The lines of the first ```sh block under "## Using it"."""
    section = readme.split("\n## Using it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    if block is None:
        raise SystemExit("no ```sh block under ## Using it")
    out = []
    for line in block.group(1).splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def main() -> int:
    readme, workdir = Path(sys.argv[1]), Path(sys.argv[2])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: list[dict[str, Any]] = []
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    wait_for_previous = False
    try:
        for i, line in enumerate(commands(readme.read_text())):
            if line.endswith("&"):
                cmd = line[:-1].strip()
                log = workdir / f".bg{i}.log"
                with log.open("wb") as f:
                    proc = subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=workdir, env=env, stdout=f,
                                            stderr=subprocess.STDOUT)
                background.append((cmd, proc, log))
                wait_for_previous = True
                continue
            deadline = time.monotonic() + (RETRY_SECONDS if wait_for_previous else 0)
            tries = 0
            while True:
                tries += 1
                done = subprocess.run(["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True,
                                      timeout=300)
                if done.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            wait_for_previous = False
            results.append({"command": line, "status": done.returncode, "stdout": done.stdout,
                            "stderr": done.stderr[-4000:], "tries": tries})
    finally:
        for cmd, proc, log in reversed(background):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            results.append({"command": f"{cmd} &", "status": status, "stdout": log.read_text(errors="replace")[-8000:],
                            "stderr": "", "tries": 1})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
