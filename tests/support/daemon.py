"""Run a real kongtaskd daemon in a subprocess and watch it like systemd would.

The daemon gets a ``NOTIFY_SOCKET`` bound by the test, so tests wait for ``READY=1`` /
``STOPPING=1`` datagrams instead of sleeping, and a log file whose text tests can search.
Both live in a ``kt-daemon-*`` temporary directory that ``close()`` removes (``with`` calls
it also when the test fails; a Daemon nobody closed is cleaned up when it is collected, or
at the latest when the test process exits), keeping the log's text for later messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from tests.support import kill_process_group

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

#: The fixture handlers by task identifier.
TASKS = {
    name: f"handlers:{name}"
    for name in (
        "noop",
        "remember",
        "fail",
        "fail_then_succeed",
        "exit_hard",
        "kill_self",
        "segfault",
        "spin",
        "burn_cpu",
        "remember_async",
        "enqueue_follow_up",
        "stubborn",
        "hog",
        "garble_pipe",
        "cancellable",
        "polite",
        "cancellable_async",
        "deaf",
    )
}


def write_config(directory: Path, dsn: str, **overrides: Any) -> Path:
    """A YAML config for the fixture handlers; ``overrides`` replace or add keys."""
    config: dict[str, Any] = {
        "connection": dsn,
        "concurrency": 2,
        "poll_interval": 0.5,
        "python_path": [str(FIXTURES)],
        "tasks": dict(TASKS),
        "task_modules": ["handlers"],
        "log": {"level": "info", "format": "text"},
    }
    config.update(overrides)
    path = directory / "kongtask.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prepare_database(dsn: str) -> None:
    """Install the schema and the fixture handlers' kt_runs table."""
    from kongtaskd.schema import migrate
    from tests.fixtures.handlers import RUNS_TABLE

    conn = psycopg2.connect(dsn)
    try:
        migrate(conn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(RUNS_TABLE)
    finally:
        conn.close()


class Daemon:
    """``kongtaskd -c CONFIG`` as a child process of the test, with a notify socket."""

    def __init__(self, config: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kt-daemon-"))
        self.notify_path = str(self.dir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.messages: list[str] = []
        self.log_path = self.dir / "daemon.log"
        environ = dict(os.environ)
        environ.pop("DATABASE_URL", None)
        environ["NOTIFY_SOCKET"] = self.notify_path
        environ["PYTHONUNBUFFERED"] = "1"
        environ.update(env or {})
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kongtaskd", "-c", str(config), *args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=str(self.dir),
            start_new_session=True,  # a test's Ctrl-C must not reach it behind the test's back
        )
        #: The log's text once close() removed the directory.
        self.final_log: str | None = None
        # Runs at close(), at collection, or at interpreter exit, whichever comes first; it
        # holds no reference to self, or self would never be collected.
        self._cleanup = weakref.finalize(
            self, _clean_up, self.proc, self.log_file, self.sock, self.dir
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def notifications(self, timeout: float = 0.0) -> list[str]:
        """Read the datagrams that arrived (waiting up to ``timeout`` for the first)."""
        self.sock.settimeout(timeout if timeout > 0 else 0.0001)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.messages.append(data)
                self.sock.settimeout(0.0001)
        except (BlockingIOError, TimeoutError):
            pass
        return self.messages

    def wait_for_notification(self, field: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.notifications(timeout=0.05):
                if field in message.split("\n"):
                    return message
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before {field}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {field} within {timeout}s:\n{self.log()}")

    def wait_for_notification_prefix(self, prefix: str, timeout: float = 30.0) -> str:
        """The first datagram with a ``KEY=value`` line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.notifications(timeout=0.05):
                if any(line.startswith(prefix) for line in message.split("\n")):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix}... within {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = 30.0) -> str:
        return self.wait_for_notification("READY=1", timeout)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout}s:\n{self.log()}") from None

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of the daemon's child processes (not its zygotes), from /proc."""
        return [pid for pid in self.processes() if not _is_zygote(pid)]

    def zygotes(self) -> list[int]:
        """Pids of the daemon's zygotes (the template processes children fork from)."""
        return [pid for pid in self.processes() if _is_zygote(pid)]

    def processes(self) -> list[int]:
        """Pids of every process whose parent is the daemon, from /proc."""
        kids: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                kids.append(int(entry.name))
        return kids

    def close(self) -> None:
        """Kill the daemon (if still running), keep its log's text, remove its directory."""
        if self.final_log is None and self._cleanup.alive:
            kill_process_group(self.proc)
            self.final_log = self.log()
        self._cleanup()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_zygote(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"kongtaskd: zygote")
    except OSError:
        return False


def _clean_up(
    proc: subprocess.Popen[bytes], log_file: Any, sock: socket.socket, directory: Path
) -> None:
    kill_process_group(proc)
    log_file.close()
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def run_once(config: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``kongtaskd -c CONFIG --once``: run until no job is ready, return the finished process."""
    environ = dict(os.environ)
    environ.pop("DATABASE_URL", None)
    environ.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "kongtaskd", "-c", str(config), "--once", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def query(dsn: str, text: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement (text or ``psycopg2.sql``) in its own connection; its rows, if any."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
