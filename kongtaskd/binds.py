"""The listening sockets a configuration asks for, checked before the daemon does anything.

A port that cannot be bound (taken, privileged, an address of another machine, a host name
that does not resolve) is a configuration error: exit code 2, one line naming the key and
where it was set (``kongtask.yaml:12: metrics.port 19464: address already in use``), found
before the schema is migrated and before a child is forked. As an OSError at start-up it was
an "internal error", exit 1, which systemd's ``Restart=on-failure`` turns into a restart loop
that cannot succeed until a human edits something.

The check binds exactly as the server will (``socket.create_server((host, port))``), then
closes the socket: a listening socket with no connection leaves no TIME_WAIT behind, so the
server can bind it again at once. What remains is the window until the server binds (the
migration runs in between), in which another process could take the port; the server's own
bind then still fails, as before. :func:`listen` closes that window once the server binds
through it before migrating (then its error is this module's one line too).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from kongtaskd.config import Config
from kongtaskd.errors import ConfigError

#: Why a bind failed, by errno, and which sub-key the user should change.
_PROBLEMS: dict[int, tuple[str, str]] = {
    errno.EADDRINUSE: ("port", "address already in use"),
    errno.EACCES: (
        "port",
        "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    ),
    errno.EADDRNOTAVAIL: ("host", "not an address of this machine"),
}

#: Resolver errors of a name or address that is not IPv4 (``::1``).
_WRONG_FAMILY = {
    getattr(socket, name) for name in ("EAI_ADDRFAMILY", "EAI_FAMILY") if hasattr(socket, name)
}


def check_bind(host: str, port: int, key: str, where: Callable[[str], str]) -> None:
    """Raise ConfigError unless a TCP server can listen on ``host:port`` right now.

    ``key`` is the configuration section (``metrics``, later ``web``) whose ``host`` and
    ``port`` these are; ``where(path)`` says where a key path was set (``Config.where``).
    """
    listen(host, port, key, where).close()


def listen(host: str, port: int, key: str, where: Callable[[str], str]) -> socket.socket:
    """A listening TCP socket on ``host:port``, or ConfigError naming ``key`` and its line.

    What a server should bind with, so its errors read like :func:`check_bind`'s.
    """
    try:
        return _listen(host, port)
    except socket.gaierror as error:
        path = f"{key}.host"
        if error.errno in _WRONG_FAMILY:
            problem = "not an IPv4 address or host name (the endpoint listens on IPv4)"
        else:
            problem = f"unknown host ({error.strerror})"
        raise ConfigError(f"{where(path)}: {path} {host}: {problem}") from None
    except OSError as error:
        sub, problem = _PROBLEMS.get(error.errno or 0, ("port", f"cannot listen: {error.strerror}"))
        path = f"{key}.{sub}"
        value = host if sub == "host" else port
        raise ConfigError(f"{where(path)}: {path} {value}: {problem}") from None


def _listen(host: str, port: int) -> socket.socket:
    """What ``socket.create_server((host, port))`` does (IPv4, SO_REUSEADDR on POSIX),
    written out because create_server rewraps a resolver error as a plain OSError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def check_binds(config: Config) -> None:
    """Check every listening socket ``config`` asks for (today the metrics endpoint)."""
    if config.metrics is not None:
        check_bind(config.metrics.host, config.metrics.port, "metrics", config.where)
