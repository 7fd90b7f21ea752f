"""sd_notify(3): tell systemd about readiness, status, watchdog keep-alives and stopping.

Only the supervisor talks to systemd (the unit's ``NotifyAccess=main``). The
:class:`Notifier` takes ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` out of the
process environment when it is built, so forked children and the handlers they run never
see them. Each call sends one datagram on a fresh socket (no fd to leak into a fork) to
a path or, for ``@name``, the abstract namespace. Without ``NOTIFY_SOCKET`` every call is
a no-op, so the daemon behaves the same outside systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        taken = {name: env.pop(name) for name in _VARIABLES if name in env}
        address = taken.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(taken)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram. Returns whether it was delivered."""
        if self.address is None or not fields:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                # Never wait: a listener that stops reading must not freeze the supervisor's
                # loop. A full queue drops this datagram (the next STATUS replaces it).
                sock.send("\n".join(fields).encode(), socket.MSG_DONTWAIT)
        except OSError:  # includes BlockingIOError: queue full
            return False  # systemd gone or socket unusable: never take the daemon down for it
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, monotonic_usec: int) -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")


def _watchdog_interval(env: MutableMapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the timeout, as sd_watchdog_enabled(3) says)."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None
