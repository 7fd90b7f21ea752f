"""sd_notify against a real datagram socket bound by the test (path and abstract)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from kongtaskd.notify import Notifier


def bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_path_socket_gets_each_message(tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    with bound(path) as sock:
        env = {"NOTIFY_SOCKET": path, "OTHER": "kept"}
        notifier = Notifier(env)
        assert env == {"OTHER": "kept"}, "the variable must not leak into children"
        assert notifier.ready("2 idle")
        assert sock.recv(1024) == b"READY=1\nSTATUS=2 idle"
        assert notifier.stopping()
        assert sock.recv(1024) == b"STOPPING=1"
        assert notifier.extend_timeout(12.5)
        assert sock.recv(1024) == b"EXTEND_TIMEOUT_USEC=12500000"
        assert notifier.watchdog()
        assert sock.recv(1024) == b"WATCHDOG=1"


def test_abstract_namespace_socket():
    name = f"kongtaskd-test-{uuid.uuid4().hex}"
    with bound("\0" + name) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("hello")
        assert sock.recv(1024) == b"STATUS=hello"


def test_without_systemd_everything_is_a_quiet_no_op(tmp_path: Path):
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.ready() is False  # never raises


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid():
    mine = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 2.0
    other = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


def test_a_listener_that_stops_reading_never_blocks_the_sender(tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    with bound(path):  # bound, never read: its queue fills up
        notifier = Notifier({"NOTIFY_SOCKET": path})
        results = [notifier.status("x" * 1000) for _ in range(10_000)]
        assert results[0] is True and results[-1] is False  # full: dropped, not waited for
