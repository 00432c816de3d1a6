"""The package as a user installs it: a wheel built from the tree, installed into a clean
virtual environment, runs `syncd demo` through its console script and `python -m syncd`.

The clean environment gets syncd from the wheel only; its dependencies come from the
test environment's site-packages through PYTHONPATH (no network, no editable checkout:
.pth files are not read from PYTHONPATH entries)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_wheel_installs_into_a_clean_environment_and_the_demo_runs(tmp_path: Path, built_wheel: Path) -> None:
    venv = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "-q", str(built_wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SYNCD_CONFIG")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    where = subprocess.run([str(python), "-c", "import syncd; print(syncd.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(venv)), where.stdout      # the wheel's copy, not the checkout

    version = subprocess.run([str(python), "-m", "syncd", "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("syncd "), version

    demo_dir = tmp_path / "demo"
    done = subprocess.run([str(venv / "bin" / "syncd"), "demo", "--dir", str(demo_dir)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert (demo_dir / "syncd-demo.db").exists() and (demo_dir / "conflicts.html").exists()
    assert "Conflict report:" in done.stdout
