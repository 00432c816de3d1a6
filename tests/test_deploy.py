"""deploy/syncd.service: systemd accepts it, and it says what the service needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "syncd.service"
README = DEPLOY / "README.md"


def settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of the unit (keys may repeat), comments and sections left out."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's syncd (verify wants it to exist)."""
    syncd = Path(sys.executable).with_name("syncd")
    if not syncd.exists():
        pytest.skip(f"{syncd} is not installed (pip install -e .)")
    copy = tmp_path / "syncd.service"
    copy.write_text(UNIT.read_text().replace("/opt/syncd/venv/bin/syncd", str(syncd)))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = local_unit(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "syncd.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_the_unit_is_sandboxed(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = local_unit(tmp_path)
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    if "--offline" in done.stderr or "Unknown option" in done.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline")
    match = re.search(r"Overall exposure level for syncd\.service: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_the_unit_runs_as_a_notify_service_with_watchdog_restart_and_credentials():
    s = settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["ExecStart"][0].endswith(" run") and "--config /etc/syncd/config.yaml" in s["ExecStart"][0]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["2"]
    assert s.get("DynamicUser") == ["yes"] or s.get("User")
    assert s["StateDirectory"] == ["syncd"]
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes"}.items():
        assert s[key] == [value], key
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in s["SystemCallFilter"]
    # Stopping must outlast the service's own grace period (shutdown_grace_seconds, 10 s).
    assert int(s["TimeoutStopSec"][0].rstrip("s")) > 10


def test_credentials_match_the_secret_files_the_configuration_names():
    s = settings(UNIT.read_text())
    loaded = {v.split(":", 1)[0] for v in s["LoadCredential"]}
    assert loaded == {"ultimo-api-key", "ews-password"}
    readme = README.read_text()
    named = set(re.findall(r"_file: \$\{CREDENTIALS_DIRECTORY\}/([\w-]+)", readme))
    assert named == loaded
    for name in loaded:
        assert f"LoadCredential={name}:/etc/syncd/credentials/{name}" in readme   # the systemd-run lines


def test_readme_covers_install_configure_upgrade_uninstall():
    text = README.read_text()
    for heading in ("## Install", "## Configure", "## Upgrade", "## Uninstall"):
        assert heading in text
    upgrade = text.split("## Upgrade", 1)[1].split("## Uninstall", 1)[0]
    assert "syncd --config /etc/syncd/config.yaml db upgrade" in upgrade
    assert "systemctl stop syncd" in upgrade and "systemctl start syncd" in upgrade
