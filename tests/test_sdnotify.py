"""sd_notify over a real datagram socket, as systemd listens: a path and an abstract name."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from syncd.service.sdnotify import Notifier


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
        env_value = address
    else:
        name = f"syncd-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        env_value = "@" + name
    sock.settimeout(5)
    try:
        yield sock, env_value
    finally:
        sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_status_watchdog_stopping_reach_the_socket(listener):
    sock, address = listener
    n = Notifier({"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready("syncing 3 rooms")
    assert received(sock) == {"READY": "1", "STATUS": "syncing 3 rooms"}
    assert n.watchdog()
    assert received(sock) == {"WATCHDOG": "1"}
    assert n.status("Ultimo 12/5000 calls today")
    assert received(sock) == {"STATUS": "Ultimo 12/5000 calls today"}
    assert n.stopping()
    assert received(sock) == {"STOPPING": "1"}


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert n.watchdog_seconds is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only():
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_seconds == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_seconds == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_seconds is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_seconds is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_seconds is None
