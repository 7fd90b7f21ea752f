"""Migrations that wait on another session's lock: signals end them, the holder is named,
migration_lock_timeout ends the wait, and the application is not queued behind them. Also
a signal while the migration's connection waits for a server that never answers.

Real PostgreSQL, real ``kongtaskd`` processes (the daemon and ``kongtaskd migrate``), real
signals. The blocker is an open transaction holding a lock a migration needs, with its own
application_name so the log line can be checked for it. Waits are on events (log lines,
pg_locks, process exit) with generous bounds; the 2 s stop target is not asserted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.errors import ExitCode, MigrationInterrupted
from kongtaskd.schema import migrate
from kongtaskd.schema.files import load_migrations
from tests.support.daemon import Daemon, query, write_config

BLOCKER_APP = "kt-lock-blocker"
#: Generous for a loaded CI machine; the target (2 s) is reported, not asserted.
EXIT_BOUND = 10.0
#: The holder is logged after MIGRATION_LOCK_REPORT_AFTER (3 s) of waiting.
REPORT_BOUND = 40.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def migrate_in_process(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn)
    finally:
        conn.close()


def without_kongtaskd_migration_2(dsn: str) -> None:
    """A schema as kongtaskd with only its migration 1 left it: migration 2 builds an index
    on _private_jobs (a SHARE lock, which an application's open write transaction blocks),
    and the later ones follow it."""
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn, kongtaskd_target=1)
    finally:
        conn.close()
    assert kongtaskd_ledger(dsn) == [1]


#: Every kongtaskd migration this kongtaskd knows: what a completed migrate leaves.
ALL_KONGTASKD = [m.number for m in load_migrations("kongtaskd")]


def kongtaskd_ledger(dsn: str) -> list[int]:
    rows = query(dsn, "select id from graphile_worker._kongtaskd_migrations order by id")
    return [row[0] for row in rows]


def ready_index_exists(dsn: str) -> bool:
    rows = query(dsn, "select to_regclass('graphile_worker._kongtaskd_jobs_ready') is not null")
    return bool(rows[0][0])


class Blocker:
    """An open transaction of another application, holding what ``statement`` locks."""

    def __init__(self, dsn: str, statement: str) -> None:
        self.conn = psycopg2.connect(dsn, application_name=BLOCKER_APP)
        with self.conn.cursor() as cur:
            cur.execute(statement)  # psycopg2 opened a transaction; it stays open

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


@pytest.fixture()
def blockers() -> Iterator[Callable[[str, str], Blocker]]:
    made: list[Blocker] = []

    def make(dsn: str, statement: str) -> Blocker:
        made.append(Blocker(dsn, statement))
        return made[-1]

    yield make
    for blocker in made:
        blocker.release()


def migrating_backends(dsn: str) -> list[tuple[int, bool]]:
    """(pid, waiting for a lock) of every 'kongtaskd migrate' session on the database."""
    rows = query(
        dsn,
        "select a.pid, exists (select 1 from pg_locks l where l.pid = a.pid and not l.granted)"
        " from pg_stat_activity a"
        " where a.application_name = 'kongtaskd migrate' and a.datname = current_database()",
    )
    return [(pid, waiting) for pid, waiting in rows]


def waiting_for_lock(dsn: str) -> bool:
    return any(waiting for _, waiting in migrating_backends(dsn))


class MigrateVerb:
    """``kongtaskd migrate`` in a subprocess, its output in a file the test can read."""

    def __init__(self, dsn: str, *args: str, lock_timeout: float | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kt-migrate-"))
        self.out_path = self.dir / "out.log"
        environ = dict(os.environ)
        environ.pop("DATABASE_URL", None)
        environ["PYTHONUNBUFFERED"] = "1"
        if lock_timeout is not None:
            # The environment, not --lock-timeout: a kongtaskd without the setting ignores
            # it, so these tests fail on the behaviour they test, not on an unknown flag.
            environ["KONGTASK_MIGRATION_LOCK_TIMEOUT"] = str(lock_timeout)
        self.out = open(self.out_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kongtaskd", "migrate", "--connection", dsn, *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=str(self.dir),
            start_new_session=True,
        )

    def log(self) -> str:
        self.out.flush()
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        for entry in self.dir.iterdir():
            entry.unlink()
        self.dir.rmdir()


def wait_for_line(log: Callable[[], str], needle: str, timeout: float) -> str:
    found = wait_until(
        lambda: next((line for line in log().splitlines() if needle in line), None),
        f"a log line with {needle!r}",
        timeout,
    )
    return str(found)


def assert_holder_named(line: str) -> None:
    assert f"application_name '{BLOCKER_APP}'" in line, line
    assert "pid " in line and "state 'idle in transaction'" in line, line
    assert "query started" in line, line


def stop_and_time(proc: subprocess.Popen[bytes], signum: int, wait: Callable[[float], int]) -> int:
    sent = time.monotonic()
    os.kill(proc.pid, signum)
    code = wait(EXIT_BOUND)
    print(f"exit {code} {time.monotonic() - sent:.2f}s after {signal.Signals(signum).name}")
    return code


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT], ids=["SIGTERM", "SIGQUIT"])
def test_daemon_stops_on_a_signal_while_a_migration_waits_for_a_lock(
    fresh_dsn: str, tmp_path: Path, blockers: Callable[[str, str], Blocker], signum: int
) -> None:
    without_kongtaskd_migration_2(fresh_dsn)
    blocker = blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    with Daemon(write_config(tmp_path, fresh_dsn)) as daemon:
        line = wait_for_line(daemon.log, "has waited", REPORT_BOUND)
        assert_holder_named(line)
        assert "kongtaskd migration 000002" in line and "_private_jobs" in line, line
        code = stop_and_time(daemon.proc, signum, daemon.wait)
        log = daemon.log()
    assert code == ExitCode.INTERRUPTED, log
    name = signal.Signals(signum).name
    assert f"kongtaskd: stopped by {name} while applying kongtaskd migration 000002" in log
    assert "ready:" not in log
    # The cancelled step left nothing behind: no ledger row, no index, no session queued
    # behind the blocker.
    wait_until(lambda: not migrating_backends(fresh_dsn), "the migration's session to end")
    assert kongtaskd_ledger(fresh_dsn) == [1]
    blocker.release()
    assert not ready_index_exists(fresh_dsn)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_migrate_verb_stops_on_a_signal_while_it_waits_for_a_lock(
    fresh_dsn: str, blockers: Callable[[str, str], Blocker], signum: int
) -> None:
    without_kongtaskd_migration_2(fresh_dsn)
    blocker = blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    verb = MigrateVerb(fresh_dsn, lock_timeout=600)
    try:
        assert_holder_named(wait_for_line(verb.log, "has waited", REPORT_BOUND))
        code = stop_and_time(verb.proc, signum, verb.wait)
        log = verb.log()
    finally:
        verb.close()
    assert code == ExitCode.INTERRUPTED, log
    assert f"stopped by {signal.Signals(signum).name} while applying kongtaskd migration" in log
    wait_until(lambda: not migrating_backends(fresh_dsn), "the migration's session to end")
    assert kongtaskd_ledger(fresh_dsn) == [1]
    blocker.release()
    assert not ready_index_exists(fresh_dsn)
    # The ledger is consistent: the next migration picks up where this one stopped.
    migrate_in_process(fresh_dsn)
    assert kongtaskd_ledger(fresh_dsn) == ALL_KONGTASKD and ready_index_exists(fresh_dsn)


@pytest.mark.parametrize(
    ("runner", "signum"),
    [("daemon", signal.SIGTERM), ("migrate", signal.SIGTERM), ("migrate", signal.SIGINT)],
    ids=["daemon-SIGTERM", "migrate-SIGTERM", "migrate-SIGINT"],
)
def test_a_signal_ends_the_wait_before_any_report(
    fresh_dsn: str,
    tmp_path: Path,
    blockers: Callable[[str, str], Blocker],
    runner: str,
    signum: int,
) -> None:
    """The signal arrives as soon as the migration is queued for its lock (pg_locks)."""
    without_kongtaskd_migration_2(fresh_dsn)
    blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    process: Daemon | MigrateVerb = (
        Daemon(write_config(tmp_path, fresh_dsn)) if runner == "daemon" else MigrateVerb(fresh_dsn)
    )
    try:
        wait_until(lambda: waiting_for_lock(fresh_dsn), "the migration to wait for its lock")
        code = stop_and_time(process.proc, signum, process.wait)
        log = process.log()
    finally:
        process.close()
    assert code == ExitCode.INTERRUPTED, log
    assert f"stopped by {signal.Signals(signum).name} while applying kongtaskd migration" in log
    wait_until(lambda: not migrating_backends(fresh_dsn), "the migration's session to end")
    assert kongtaskd_ledger(fresh_dsn) == [1]


def test_migrate_verb_stops_while_a_fresh_install_waits_for_a_create_schema(
    fresh_dsn: str, blockers: Callable[[str, str], Blocker]
) -> None:
    blocker = blockers(fresh_dsn, "create schema graphile_worker")  # uncommitted
    verb = MigrateVerb(fresh_dsn)
    try:
        line = wait_for_line(verb.log, "has waited", REPORT_BOUND)
        assert "creating the migration ledger" in line, line
        assert_holder_named(line)
        code = stop_and_time(verb.proc, signal.SIGINT, verb.wait)
        log = verb.log()
    finally:
        verb.close()
    assert code == ExitCode.INTERRUPTED, log
    assert "stopped by SIGINT while creating the migration ledger" in log
    blocker.release()
    assert query(fresh_dsn, "select to_regnamespace('graphile_worker')") == [(None,)]
    migrate_in_process(fresh_dsn)
    assert kongtaskd_ledger(fresh_dsn) == ALL_KONGTASKD


def test_daemon_with_migrate_false_stops_while_the_schema_check_waits(
    fresh_dsn: str, tmp_path: Path, blockers: Callable[[str, str], Blocker]
) -> None:
    migrate_in_process(fresh_dsn)
    blockers(fresh_dsn, "lock table graphile_worker.migrations in access exclusive mode")
    with Daemon(write_config(tmp_path, fresh_dsn, migrate=False)) as daemon:
        assert_holder_named(wait_for_line(daemon.log, "has waited", REPORT_BOUND))
        code = stop_and_time(daemon.proc, signal.SIGTERM, daemon.wait)
        log = daemon.log()
    assert code == ExitCode.INTERRUPTED, log
    assert "stopped by SIGTERM while checking the schema's version" in log


def test_lock_timeout_expiry_names_the_holder(
    fresh_dsn: str, blockers: Callable[[str, str], Blocker]
) -> None:
    without_kongtaskd_migration_2(fresh_dsn)
    blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    verb = MigrateVerb(fresh_dsn, "--lock-timeout", "2")
    try:
        code = verb.wait(60)
        log = verb.log()
    finally:
        verb.close()
    assert code == ExitCode.LOCK_TIMEOUT, log
    (line,) = [line for line in log.splitlines() if line.startswith("kongtaskd: ")]
    assert "gave up applying kongtaskd migration 000002" in line, line
    assert "(migration_lock_timeout 2s)" in line, line
    assert "ShareLock on graphile_worker._private_jobs" in line, line
    assert_holder_named(line)
    assert kongtaskd_ledger(fresh_dsn) == [1]


def test_daemon_lock_timeout_from_the_config(
    fresh_dsn: str, tmp_path: Path, blockers: Callable[[str, str], Blocker]
) -> None:
    without_kongtaskd_migration_2(fresh_dsn)
    blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    with Daemon(write_config(tmp_path, fresh_dsn, migration_lock_timeout=1.5)) as daemon:
        code = daemon.wait(60)
        log = daemon.log()
    assert code == ExitCode.LOCK_TIMEOUT, log
    assert "(migration_lock_timeout 1.5s)" in log and BLOCKER_APP in log, log


def test_add_job_is_not_queued_behind_a_waiting_migration(
    fresh_dsn: str, blockers: Callable[[str, str], Blocker]
) -> None:
    without_kongtaskd_migration_2(fresh_dsn)
    # An application transaction that wrote to the jobs table and stays open: the index
    # build (SHARE) waits for it; new add_job calls (ROW EXCLUSIVE) do not conflict with
    # it, only with a SHARE request queued ahead of them.
    blocker = blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    verb = MigrateVerb(fresh_dsn, lock_timeout=600)
    try:
        wait_until(lambda: waiting_for_lock(fresh_dsn), "the migration to wait for its lock")
        added = threading.Event()
        failure: list[BaseException] = []

        def add_job() -> None:
            try:
                # A bound, so that a stall fails the test instead of hanging it.
                conn = psycopg2.connect(fresh_dsn, options="-c statement_timeout=20s")
                conn.autocommit = True
                try:
                    with conn.cursor() as cur:
                        cur.execute("select graphile_worker.add_job('noop', '{}'::json)")
                finally:
                    conn.close()
                added.set()
            except BaseException as error:  # reported by the assertion below
                failure.append(error)

        thread = threading.Thread(target=add_job)
        thread.start()
        thread.join(60)
        assert added.is_set(), f"add_job did not complete: {failure}"
        # It completed while the migration was still waiting: nothing applied yet, the
        # migrator still running.
        assert verb.proc.poll() is None, verb.log()
        assert kongtaskd_ledger(fresh_dsn) == [1]
        blocker.release()
        assert verb.wait(60) == ExitCode.OK, verb.log()
    finally:
        verb.close()
    assert kongtaskd_ledger(fresh_dsn) == ALL_KONGTASKD
    assert ready_index_exists(fresh_dsn)
    assert query(fresh_dsn, "select count(*) from graphile_worker.jobs")[0][0] == 1


class SilentServer:
    """A TCP server that accepts connections and never answers: libpq's connect waits."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def wait_for_client(self, timeout: float = 30.0) -> None:
        """Until a client connected and sent its first bytes (libpq's SSL or startup packet)."""
        self.listener.settimeout(timeout)
        client, _ = self.listener.accept()
        self.accepted.append(client)
        client.settimeout(timeout)
        assert client.recv(8), "the client closed without sending anything"

    def close(self) -> None:
        for client in self.accepted:
            client.close()
        self.listener.close()


@pytest.mark.parametrize("runner", ["daemon", "migrate"])
def test_a_signal_ends_a_connect_that_gets_no_answer(tmp_path: Path, runner: str) -> None:
    server = SilentServer()
    dsn = f"host=127.0.0.1 port={server.port} dbname=x user=x connect_timeout=120 sslmode=disable"
    try:
        process: Daemon | MigrateVerb = (
            Daemon(write_config(tmp_path, dsn)) if runner == "daemon" else MigrateVerb(dsn)
        )
        try:
            server.wait_for_client()
            code = stop_and_time(process.proc, signal.SIGTERM, process.wait)
            log = process.log()
        finally:
            process.close()
    finally:
        server.close()
    assert code == ExitCode.INTERRUPTED, log
    assert "kongtaskd: stopped by SIGTERM while connecting to the database" in log, log


def test_library_migrate_stops_on_request_and_leaves_no_wait_callback(
    fresh_dsn: str, blockers: Callable[[str, str], Blocker]
) -> None:
    """migrate(should_stop=...) in-process: the statement is cancelled (the connection stays
    usable, outside any transaction), and psycopg2's process-wide wait callback is the
    caller's again. The watching thread's own queries run while the callback is installed."""
    without_kongtaskd_migration_2(fresh_dsn)
    blockers(fresh_dsn, "lock table graphile_worker._private_jobs in row exclusive mode")
    stop = threading.Event()

    def watch() -> None:
        wait_until(lambda: waiting_for_lock(fresh_dsn), "the migration to wait for its lock")
        stop.set()

    watcher = threading.Thread(target=watch)
    conn = psycopg2.connect(fresh_dsn, application_name="kongtaskd migrate")
    try:
        watcher.start()
        with pytest.raises(MigrationInterrupted, match="stopped by request while applying"):
            migrate(conn, should_stop=lambda: "request" if stop.is_set() else None)
        watcher.join()
        assert psycopg2.extensions.get_wait_callback() is None
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with conn.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert kongtaskd_ledger(fresh_dsn) == [1]
