"""deploy/syncd.service: systemd accepts it, and it says what the service needs."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

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


# --- deploy/install.sh ----------------------------------------------------------------------

INSTALL = DEPLOY / "install.sh"


def run_install(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The package index is not needed: syncd comes from the wheel, its dependencies (for
    # running it below) from this test environment.
    full_env = {**os.environ, "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", **env}
    return subprocess.run(["sh", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=600, env=full_env)


def systemd_units(root: Path) -> None:
    """The host's unit files (not its symlinks) below `root`, for `systemd-analyze --root`."""
    target = root / "usr" / "lib" / "systemd" / "system"
    target.mkdir(parents=True, exist_ok=True)
    for unit in Path("/usr/lib/systemd/system").iterdir():
        if unit.is_file() and not unit.is_symlink():
            shutil.copy(unit, target / unit.name)


def installed_syncd(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SYNCD_CONFIG")}
    full_env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return subprocess.run([str(root / "opt/syncd/venv/bin/syncd"), *args], capture_output=True, text=True,
                          timeout=120, env={**full_env, **env}, cwd=root)


@pytest.mark.slow
def test_install_script_in_a_fresh_root_twice_and_the_unit_verifies(tmp_path: Path, built_wheel: Path) -> None:
    root = tmp_path / "root"
    done = run_install(root, str(built_wheel))
    assert done.returncode == 0, done.stderr
    venv = root / "opt" / "syncd" / "venv"
    assert (venv / "bin" / "syncd").is_file()
    assert os.readlink(root / "usr/local/bin/syncd") == "/opt/syncd/venv/bin/syncd"
    etc = root / "etc" / "syncd"
    assert stat.S_IMODE(etc.stat().st_mode) == 0o755
    assert stat.S_IMODE((etc / "credentials").stat().st_mode) == 0o700
    for secret in ("ultimo-api-key", "ews-password"):
        assert stat.S_IMODE((etc / "credentials" / secret).stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "config.yaml").stat().st_mode) == 0o644
    assert (root / "etc/systemd/system/syncd.service").read_text() == UNIT.read_text()

    # The installed configuration names the credentials the unit loads, and keeps the
    # database in the unit's state directory.
    installed = yaml.safe_load((etc / "config.yaml").read_text())
    assert installed["database"]["url"] == "sqlite:////var/lib/syncd/syncd.db"
    named = {installed["ultimo"]["api_key_file"].rsplit("/", 1)[1],
             installed["calendar"]["ews"]["password_file"].rsplit("/", 1)[1]}
    assert named == {v.split(":", 1)[0] for v in settings(UNIT.read_text())["LoadCredential"]}

    # Empty secrets are refused, filled ones make a valid configuration (validated offline).
    creds = {"CREDENTIALS_DIRECTORY": str(etc / "credentials")}
    checked = installed_syncd(root, "--config", str(etc / "config.yaml"), "config", "validate", **creds)
    assert checked.returncode == 2 and "ultimo.api_key_file" in checked.stderr and "is empty" in checked.stderr
    (etc / "credentials" / "ultimo-api-key").write_text("the-key-1234\n")
    (etc / "credentials" / "ews-password").write_text("the-password-1234\n")
    checked = installed_syncd(root, "--config", str(etc / "config.yaml"), "config", "validate", **creds)
    assert checked.returncode == 0, checked.stderr

    # A second run upgrades in place and keeps the operator's configuration and secrets.
    (etc / "config.yaml").write_text((etc / "config.yaml").read_text().replace("C-25", "C-26"))
    again = run_install(root, str(built_wheel))
    assert again.returncode == 0, again.stderr
    assert "keeping" in again.stdout and "C-26" in (etc / "config.yaml").read_text()
    assert (etc / "credentials" / "ultimo-api-key").read_text() == "the-key-1234\n"

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    systemd_units(root)
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "syncd.service"],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not [line for line in (verify.stdout + verify.stderr).splitlines() if "syncd.service" in line]
    # The check bites: without the program the unit runs, it fails.
    (venv / "bin" / "syncd").rename(venv / "bin" / "syncd.away")
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "syncd.service"],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode != 0 and "/opt/syncd/venv/bin/syncd is not executable" in verify.stderr


def test_install_script_names_what_is_missing(tmp_path: Path) -> None:
    old = tmp_path / "python-old"
    old.write_text("#!/bin/sh\nexit 1\n")
    old.chmod(0o755)
    done = run_install(tmp_path / "root", "--python", str(old))
    assert done.returncode == 2 and "needs Python 3.11 or newer" in done.stderr
    done = run_install(tmp_path / "root", "--python", "no-such-python")
    assert done.returncode == 2 and "no-such-python not found" in done.stderr
    done = run_install(tmp_path / "root", "--bogus")
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
    assert not (tmp_path / "root").exists()             # nothing half-installed
