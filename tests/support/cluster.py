"""A primary and its synchronous streaming standby: two throwaway PostgreSQL clusters.

``ReplicatedPair`` makes the primary with ``initdb``, the standby with ``pg_basebackup -R``
from it, and waits until ``pg_stat_replication`` shows the standby streaming as ``sync``
(``synchronous_standby_names`` names its application_name, ``synchronous_commit=on``): from
then on no COMMIT is acknowledged to a client before the standby has the WAL, which is what
a failover test relies on to call an acknowledged completion "kept".

``fsync=off`` on both (start-up and the run are faster): it does not weaken what the test
proves. The fault is ``pg_ctl stop -m immediate``, a killed server, not a lost machine:
WAL written to the kernel survives a killed process with or without fsync; and the
synchronous acknowledgment (the primary's COMMIT waits for the standby's reported flush
position) is the walsender protocol's, which fsync does not change.

The binaries refuse to run as root: when we are root they run as the ``postgres`` OS user
in a temporary directory chowned to it (``tests/support/pgcluster.py`` does the same for a
single cluster; its helpers are reused). Everything is stopped and removed by ``destroy``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

from tests.support import wait_for
from tests.support.pgcluster import _bindir, _free_port

#: The standby's application_name, which synchronous_standby_names names.
STANDBY_NAME = "kt_standby"

#: Settings of both servers: small and quick to start; the replication ones are PG15's
#: defaults (wal_level=replica, max_wal_senders=10), said anyway because the test needs them.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # see the module docstring: the test's claims do not depend on it
    "shared_buffers": "16MB",
    "max_connections": "60",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "hot_standby": "on",
    "synchronous_commit": "on",
}


class Server:
    """One data directory run by pg_ctl on its own port."""

    def __init__(self, pair: ReplicatedPair, name: str) -> None:
        self.pair = pair
        self.data = pair.dir / name
        self.log = pair.dir / f"{name}.log"
        self.port = _free_port()
        self.running = False

    def options(self, extra: dict[str, str]) -> str:
        settings = {**SETTINGS, **extra, "port": str(self.port)}
        return " ".join(f"-c {key}={value}" for key, value in settings.items()) + (
            f" -k {self.pair.dir}"
        )

    def start(self, **extra: str) -> None:
        self.pair.run(
            "pg_ctl", "-D", str(self.data), "-o", self.options(extra), "-l", str(self.log), "-w",
            "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``mode="immediate"``: the fault (every server process killed, no checkpoint)."""
        self.pair.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"


class ReplicatedPair:
    """A primary and a synchronous streaming standby; ``failover()`` is the fault."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_basebackup) are not installed")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="kt-pgpair-"))
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb and pg_ctl refuse to run as root
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.primary = Server(self, "primary")
        self.standby = Server(self, "standby")
        try:
            self.run("initdb", "-D", str(self.primary.data), "-U", "postgres", "--auth=trust", "-N")
            self.primary.start(synchronous_standby_names=STANDBY_NAME)
            # -R writes primary_conninfo (with our application_name) and standby.signal.
            self.run(
                "pg_basebackup", "-D", str(self.standby.data), "-R", "-X", "stream",
                "-c", "fast", "-d",
                f"host=127.0.0.1 port={self.primary.port} user=postgres "
                f"application_name={STANDBY_NAME}",
            )  # fmt: skip
            self.standby.start(cluster_name=STANDBY_NAME)
            wait_for(self.streaming_sync, timeout=30, what="the standby streaming as sync")
        except BaseException:
            self.destroy()
            raise

    def run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            raise AssertionError(
                f"{tool} failed ({exc.returncode}): {exc.stderr.decode(errors='replace')}"
            ) from None

    def streaming_sync(self) -> bool:
        conn = psycopg2.connect(self.primary.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "select sync_state from pg_stat_replication "
                    "where application_name = %s and state = 'streaming'",
                    (STANDBY_NAME,),
                )
                return [row[0] for row in cur.fetchall()] == ["sync"]
        finally:
            conn.close()

    @property
    def dsn(self) -> str:
        """Both servers, the writable one chosen by libpq: what the daemon is given."""
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
            "user=postgres dbname=postgres target_session_attrs=read-write"
        )

    def failover(self) -> float:
        """Kill the primary (``-m immediate``), promote the standby; return the
        ``time.monotonic()`` at which the promotion finished (the standby accepts writes)."""
        self.primary.stop("immediate")
        self.run("pg_ctl", "-D", str(self.standby.data), "-w", "promote")
        return time.monotonic()

    def destroy(self) -> None:
        for server in (self.standby, self.primary):
            if server.data.exists():
                try:
                    server.stop("immediate")
                except AssertionError:
                    pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)
