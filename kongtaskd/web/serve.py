"""``kongtaskd web``: the dashboard process, and ``kongtaskd web hash-password``.

Start-up, in order, each failure one line and exit code 2 (configuration) or 1 (runtime):
the settings (``web:`` with ``--host``/``--port`` on top), the refusal to serve a
non-loopback address without ``web.auth`` (unless ``--insecure-no-auth``), the token file
and its permissions, one connection to the database, then the listening socket
(:func:`kongtaskd.binds.listen`, so a taken port names ``web.port`` and its line). Then
READY=1 for systemd (the web unit's own; the rule that only the supervisor talks to
systemd is about the daemon's processes), and waitress serves until SIGTERM or SIGINT,
after which STOPPING=1 is sent and the pool closed.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType

import waitress.server

from kongtaskd import tunables
from kongtaskd.binds import listen
from kongtaskd.config import WEB_KEYS, Config, WebConfig
from kongtaskd.dsn import connect
from kongtaskd.errors import ConfigError, ExitCode
from kongtaskd.notify import Notifier
from kongtaskd.web.app import Dashboard, is_loopback
from kongtaskd.web.auth import hash_password, load_tokens
from kongtaskd.web.data import Data, Pool

log = logging.getLogger("kongtaskd.web")


def settings_of(config: Config, host: str | None, port: int | None) -> WebConfig:
    """``web:`` of the configuration (its defaults when the file has none), with the
    command line's --host and --port on top."""
    settings = config.web
    if settings is None:
        settings = WebConfig(**{key.name: _default(key.name) for key in WEB_KEYS})
    if host is not None:
        settings = dataclasses.replace(settings, host=host)
    if port is not None:
        settings = dataclasses.replace(settings, port=port)
    return settings


def _default(name: str) -> object:
    key = next(key for key in WEB_KEYS if key.name == name)
    if name == "trusted_proxies":
        return tuple(key.default)
    return key.default


def where_of(config: Config, host: str | None, port: int | None) -> Callable[[str], str]:
    """Where a ``web.*`` key was set, for errors: the flag that overrode it, else its line."""

    def where(path: str) -> str:
        if path == "web.host" and host is not None:
            return "--host"
        if path == "web.port" and port is not None:
            return "--port"
        return config.where(path)

    return where


def serve(config: Config, *, host: str | None, port: int | None, insecure_no_auth: bool) -> int:
    settings = settings_of(config, host, port)
    where = where_of(config, host, port)
    if settings.auth is None and not is_loopback(settings.host) and not insecure_no_auth:
        raise ConfigError(
            f"{where('web.host')}: web.host {settings.host} is not a loopback address and "
            "web.auth is not set: anyone reaching the port could read payloads and act on "
            "jobs; configure web.auth, or pass --insecure-no-auth if something in front "
            "already guards it"
        )
    tokens = None
    if settings.auth is not None and settings.auth.token_file is not None:
        tokens = load_tokens(settings.auth.token_file, where("web.auth"))
    # One connection now: a wrong DSN or a database that is down is one line at start-up,
    # not an error page on the first request.
    connect(config.dsn, application_name="kongtaskd web").close()
    sock = listen(settings.host, settings.port, "web", where)
    pool = Pool(config.dsn)
    data = Data(
        pool,
        config.schema,
        refresh=settings.refresh,
        stale_after=config.stale_after,
        heartbeat_interval=config.heartbeat_interval,
    )
    app = Dashboard(data, settings, tokens=tokens)
    server = waitress.server.create_server(
        app,
        sockets=[sock],
        threads=tunables.WEB_THREADS,
        ident="kongtaskd",
        url_prefix="",
        clear_untrusted_proxy_headers=False,
    )
    notifier = Notifier()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    prefix = "" if settings.base_path == "/" else settings.base_path
    shown = f"http://{settings.host}:{settings.port}{prefix}/"
    log.info(
        "dashboard on %s (schema %s, auth %s%s)",
        shown,
        config.schema,
        settings.auth.kind if settings.auth else "none",
        ", read-only" if settings.read_only else "",
    )
    notifier.ready(f"dashboard on {shown}")
    try:
        server.run()
    finally:
        notifier.stopping("dashboard stopping")
        log.info("dashboard stopping")
        server.close()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        pool.close()
    return ExitCode.OK


def hash_password_command() -> int:
    """Read a password (twice from a terminal, else one line of stdin); print its hash."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("web hash-password: the two passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        raise ConfigError("web hash-password: the password is empty")
    print(hash_password(first))
    return ExitCode.OK
