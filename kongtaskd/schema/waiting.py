"""How the migrator waits for the database: deaf to no signal, briefly, and saying on whom.

psycopg2 normally blocks inside libpq until a statement ends, and Python runs no signal
handler meanwhile: a migration queued behind another session's lock ignored SIGTERM,
SIGINT and SIGQUIT, and logged nothing, until the lock was free. While a :class:`Waiter`
is entered, psycopg2 waits through :meth:`Waiter.wait` instead (its *wait callback*; it is
process-wide, so it is installed for the migration only and the previous one restored
after, leaving the daemon's hot path alone). That is a select loop which looks at the stop
flag every ``MIGRATION_POLL_TICK``; a stop cancels the backend's statement, so its
transaction rolls back (both ledgers stay as they were: a migration and its ledger row
commit together or not at all), and raises :class:`MigrationInterrupted`.

Locks: a lock request that waits in PostgreSQL's queue holds up every later conflicting
request, the application's ``add_job`` included. So every migrator transaction runs with
a short ``lock_timeout`` (``MIGRATION_LOCK_TRY``) and, when it expires, is retried after a
back-off until ``migration_lock_timeout`` (:class:`MigrationLockTimeout`). While a
statement waits, a second connection (opened only then) asks ``pg_blocking_pids`` who
holds it up; after ``MIGRATION_LOCK_REPORT_AFTER`` seconds of waiting that is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import random
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd import tunables
from kongtaskd.errors import KongtaskError, MigrationInterrupted, MigrationLockTimeout

#: Returns why to stop (a signal's name) or None to go on.
StopCheck = Callable[[], "str | None"]
#: Opens the second connection that watches the migration's lock waits.
ObserverFactory = Callable[[], Connection]

T = TypeVar("T")

_LOCK_NOT_AVAILABLE = "55P03"
#: Signals that stop a migration (the daemon's drain and fast-shutdown signals).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclasses.dataclass(frozen=True)
class Blocker:
    """A session holding (or queued ahead for) the lock the migration waits for."""

    pid: int
    application_name: str | None
    state: str | None
    xact_start: dt.datetime | None
    query_start: dt.datetime | None

    def describe(self) -> str:
        parts = [f"application_name {self.application_name!r}"]
        if self.state is not None:
            parts.append(f"state {self.state!r}")
        if self.xact_start is not None:
            parts.append(f"transaction started {_when(self.xact_start)}")
        if self.query_start is not None:
            parts.append(f"query started {_when(self.query_start)}")
        return f"pid {self.pid} ({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class LockWait:
    """What the migrating backend waits for, and on whom (from :data:`lock_wait`)."""

    lock: str
    blockers: tuple[Blocker, ...]

    def describe(self) -> str:
        return f"{self.lock}, held by {'; '.join(b.describe() for b in self.blockers)}"


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_lock(locktype: str, mode: str, relation: str | None) -> str:
    if locktype == "relation" and relation:
        return f"{mode} on {relation}"
    if locktype == "tuple" and relation:
        return f"a row lock ({mode}) on {relation}"
    if locktype == "transactionid":
        return "another transaction's end (a row it wrote)"
    return f"{mode} ({locktype} lock)"


class _Abandoned(Exception):
    """A stop came while the observer waited: give up watching, the migration stops."""


class Waiter:
    """Runs the migrator's transactions: interruptible, with short lock waits, retried."""

    def __init__(
        self,
        conn: Connection,
        statements: dict[str, str],
        *,
        where: str,
        log: logging.Logger,
        lock_timeout: float | None,
        should_stop: StopCheck | None,
        observer: ObserverFactory | None,
    ) -> None:
        self.conn = conn
        self.statements = statements
        #: "schema "graphile_worker"": named in every message.
        self.where = where
        self.log = log
        #: migration_lock_timeout: None waits as long as it takes (still in short tries).
        self.lock_timeout = lock_timeout
        self.should_stop = should_stop
        self.observer_factory = observer
        self.observer: Connection | None = None
        self.backend_pid = conn.get_backend_pid()
        self.stop_reason: str | None = None
        #: What the current transaction does ("applying graphile-worker migration 000012").
        self.doing = ""
        #: Start of the current uninterrupted wait for locks; None while not waiting.
        self.waiting_since: float | None = None
        self.reported_at: float | None = None
        self.last_wait: LockWait | None = None
        self.retry_delay = tunables.MIGRATION_LOCK_RETRY_FIRST
        #: The waiter of an enclosing migration in this thread, restored on exit.
        self.enclosing: Waiter | None = None
        #: The callback is process-wide (``_dispatch``): other threads' connections wait
        #: plainly; only this thread's (the migration's and its observer's) come here.
        self.thread = threading.get_ident()

    def __enter__(self) -> Waiter:
        with _waiters_lock:
            if not _waiters:
                _saved_callback[0] = psycopg2.extensions.get_wait_callback()
                psycopg2.extensions.set_wait_callback(_dispatch)
            self.enclosing = _waiters.get(self.thread)  # a waiter this one nests in
            _waiters[self.thread] = self
        return self

    def __exit__(self, *exc: object) -> None:
        with _waiters_lock:
            if self.enclosing is not None:
                _waiters[self.thread] = self.enclosing
            else:
                _waiters.pop(self.thread, None)
            if not _waiters:
                psycopg2.extensions.set_wait_callback(_saved_callback[0])
                _saved_callback[0] = None
        if self.observer is not None:
            with contextlib.suppress(psycopg2.Error):
                self.observer.close()
            self.observer = None

    # -- transactions ----------------------------------------------------------------------

    def transaction(self, doing: str, body: Callable[[Cursor], T]) -> T:
        """Run ``body`` in one transaction (commit on return, roll back on any exception).

        A lock wait past the short try rolls back and runs ``body`` again, so ``body`` must
        do nothing outside the transaction. Raises MigrationLockTimeout past
        migration_lock_timeout, MigrationInterrupted on a stop; psycopg2 errors otherwise.
        """
        while True:
            self.check_stop(doing)
            self.doing = doing
            attempt_started = time.monotonic()
            try:
                try:
                    with self.conn.cursor() as cur:
                        cur.execute(
                            self.statements["set_lock_timeout"],
                            {"timeout": f"{max(1, round(self._try_seconds() * 1000))}ms"},
                        )
                        result = body(cur)
                    self.check_stop(doing)
                    self.conn.commit()
                except BaseException:
                    with contextlib.suppress(psycopg2.Error):
                        self.conn.rollback()
                    raise
            except psycopg2.Error as error:
                if self.stop_reason is not None:
                    raise self.interrupted(doing) from error
                if error.pgcode != _LOCK_NOT_AVAILABLE:
                    raise
                self._lock_try_failed(doing, attempt_started)
                continue
            finally:
                self.doing = ""
            self.waiting_since = self.reported_at = self.last_wait = None
            self.retry_delay = tunables.MIGRATION_LOCK_RETRY_FIRST
            return result

    def _try_seconds(self) -> float:
        """This attempt's lock_timeout: the short try, or what is left of the budget."""
        if self.lock_timeout is None:
            return tunables.MIGRATION_LOCK_TRY
        waited = 0.0 if self.waiting_since is None else time.monotonic() - self.waiting_since
        return max(0.001, min(tunables.MIGRATION_LOCK_TRY, self.lock_timeout - waited))

    def _lock_try_failed(self, doing: str, attempt_started: float) -> None:
        """Raise MigrationLockTimeout when the budget is spent, else back off."""
        if self.waiting_since is None:
            self.waiting_since = attempt_started
        waited = time.monotonic() - self.waiting_since
        if self.lock_timeout is not None and waited >= self.lock_timeout:
            holder = self.last_wait.describe() if self.last_wait else "the holder is unknown"
            raise MigrationLockTimeout(
                f"gave up {doing} in {self.where} after waiting {waited:.1f}s for a lock"
                f" (migration_lock_timeout {self.lock_timeout:g}s): {holder}; end that"
                f" session's transaction, or allow more time (migration_lock_timeout,"
                f" kongtaskd migrate --lock-timeout)"
            )
        delay = self.retry_delay * random.uniform(0.5, 1.0)
        if self.lock_timeout is not None:
            delay = min(delay, max(0.0, self.lock_timeout - waited))
        self.log.debug("%s in %s: lock not available, retrying in %.2fs", doing, self.where, delay)
        self.retry_delay = min(self.retry_delay * 2, tunables.MIGRATION_LOCK_RETRY_MAX)
        self.pause(delay, doing)

    # -- stopping ----------------------------------------------------------------------------

    def pause(self, seconds: float, doing: str) -> None:
        """Sleep, but end at once (MigrationInterrupted) on a stop."""
        until = time.monotonic() + seconds
        while True:
            self.check_stop(doing)
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, tunables.MIGRATION_POLL_TICK))

    def check_stop(self, doing: str) -> None:
        if self.stop_reason is None and self.should_stop is not None:
            self.stop_reason = self.should_stop()
        if self.stop_reason is not None:
            raise self.interrupted(doing)

    def interrupted(self, doing: str) -> MigrationInterrupted:
        return MigrationInterrupted(
            f"stopped by {self.stop_reason} while {doing} in {self.where}; the step in"
            " progress was cancelled and rolled back, nothing is half-applied"
        )

    # -- psycopg2's wait callback --------------------------------------------------------------

    def wait(self, conn: Connection) -> None:
        """Wait for ``conn``'s statement like libpq would, but looking up every tick."""
        if conn is not self.conn:
            self._wait_plainly(conn)
            return
        started = time.monotonic()
        next_probe = started + tunables.MIGRATION_LOCK_PROBE_AFTER
        cancelled_at: float | None = None
        while True:
            try:
                if _poll_once(conn):
                    return
            except KeyboardInterrupt:
                # Python's own SIGINT handler (a library caller installed none of ours).
                self.stop_reason = self.stop_reason or "SIGINT"
            now = time.monotonic()
            if cancelled_at is not None:
                if now - cancelled_at > tunables.MIGRATION_CANCEL_GRACE:
                    # psycopg2 closes the connection; the server rolls the transaction back.
                    raise self.interrupted(self.doing or "migrating")
                continue
            if self.stop_reason is None and self.should_stop is not None:
                self.stop_reason = self.should_stop()
            if self.stop_reason is not None:
                conn.cancel()
                cancelled_at = now
            elif self.doing and now >= next_probe and self.observer_factory is not None:
                self._look_at_lock(started, now)
                next_probe = time.monotonic() + tunables.MIGRATION_LOCK_PROBE_EVERY

    def _wait_plainly(self, conn: Connection) -> None:
        """The observer's (or another thread's connection's) wait; the observer gives up on
        a stop."""
        mine = threading.get_ident() == self.thread
        while not _poll_once(conn):
            if not mine:
                continue
            if self.stop_reason is None and self.should_stop is not None:
                self.stop_reason = self.should_stop()
            if self.stop_reason is not None:
                raise _Abandoned

    def _look_at_lock(self, statement_started: float, now: float) -> None:
        """Who holds up the migration's statement? Remembered, and logged when it is time."""
        try:
            if self.observer is None:
                assert self.observer_factory is not None
                self.observer = self.observer_factory()
                self.observer.autocommit = True
            with self.observer.cursor() as cur:
                cur.execute(self.statements["lock_wait"], {"pid": self.backend_pid})
                rows = cur.fetchall()
        except (psycopg2.Error, KongtaskError, _Abandoned) as error:
            # Watching is a courtesy; the migration goes on without it.
            self.log.debug("cannot see who holds the migration's lock: %s", error)
            self.observer_factory = None
            if self.observer is not None:
                with contextlib.suppress(psycopg2.Error):
                    self.observer.close()
                self.observer = None
            return
        if not rows:
            return  # running, not waiting (a long CREATE INDEX, say)
        locktype, mode, relation = rows[0][:3]
        self.last_wait = LockWait(
            describe_lock(locktype, mode, relation),
            tuple(Blocker(*row[3:]) for row in rows),
        )
        if self.waiting_since is None:
            self.waiting_since = statement_started
        waited = now - self.waiting_since
        if waited < tunables.MIGRATION_LOCK_REPORT_AFTER or (
            self.reported_at is not None
            and now - self.reported_at < tunables.MIGRATION_LOCK_REPORT_EVERY
        ):
            return
        self.reported_at = now
        limit = (
            "until it gets it"
            if self.lock_timeout is None
            else f"for up to migration_lock_timeout {self.lock_timeout:g}s"
        )
        self.log.warning(
            "%s in %s has waited %.0fs for %s; retrying %s (each try queues for at most %gs,"
            " so the application's statements are not held up behind it for long)",
            self.doing,
            self.where,
            waited,
            self.last_wait.describe(),
            limit,
            tunables.MIGRATION_LOCK_TRY,
        )


#: psycopg2's wait callback is one per process, but migrations may run in several threads
#: at once (an application migrating two schemas): one dispatcher is installed while any
#: runs, and sends each connection's wait to the waiter of the thread it is used in (its
#: migration and observer connections), or waits plainly. Each waiter saving and restoring
#: "the" callback itself would leave a finished migration's callback installed for good
#: whenever two overlap.
_waiters: dict[int, Waiter] = {}
_waiters_lock = threading.Lock()
#: The callback that was installed before the first waiter (restored after the last).
_saved_callback: list[Any] = [None]


def _dispatch(conn: Connection) -> None:
    waiter = _waiters.get(threading.get_ident())
    if waiter is not None:
        waiter.wait(conn)
    elif _saved_callback[0] is not None:
        _saved_callback[0](conn)
    else:
        while not _poll_once(conn):
            pass


def _poll_once(conn: Connection) -> bool:
    """One step of psycopg2's asynchronous protocol: True when the statement is done."""
    state = conn.poll()
    if state == psycopg2.extensions.POLL_OK:
        return True
    fd = conn.fileno()
    if state == psycopg2.extensions.POLL_READ:
        select.select([fd], [], [], tunables.MIGRATION_POLL_TICK)
    elif state == psycopg2.extensions.POLL_WRITE:
        select.select([], [fd], [], tunables.MIGRATION_POLL_TICK)
    else:  # pragma: no cover - psycopg2 documents no other state
        raise psycopg2.OperationalError(f"unexpected poll state {state}")
    return False


def connect_interruptibly(
    open_connection: Callable[[], Connection], should_stop: StopCheck | None
) -> Connection:
    """``open_connection()``, given up on a stop (MigrationInterrupted): a server that
    accepts but never answers would otherwise hold the start-up for connect_timeout, deaf
    to signals.

    The connect runs in a short-lived thread (psycopg2 releases the GIL while libpq
    connects) while this thread looks at the stop flag; a blocking connect, not
    psycopg2's asynchronous one, because only the blocking one's errors name the server
    (``connection to server at "host", port N failed: ...``). A thread given up on is
    left to its connect_timeout; the process is on its way out.
    """
    outcome: list[tuple[Connection | None, BaseException | None]] = []

    def attempt() -> None:
        try:
            outcome.append((open_connection(), None))
        except BaseException as error:  # handed to the waiting thread
            outcome.append((None, error))

    thread = threading.Thread(target=attempt, name="kongtaskd-connect", daemon=True)
    thread.start()
    while True:
        thread.join(tunables.MIGRATION_POLL_TICK)
        if not thread.is_alive():
            break
        reason = should_stop() if should_stop is not None else None
        if reason is not None:
            raise MigrationInterrupted(
                f"stopped by {reason} while connecting to the database; nothing was migrated"
            )
    conn, error = outcome[0]
    if error is not None:
        raise error
    assert conn is not None
    return conn


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopCheck]:
    """For a command-line migration: SIGTERM, SIGINT and SIGQUIT are recorded (not acted
    on in the handler) and the returned check names the first; old handlers restored."""
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    saved = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield lambda: signal.Signals(received[0]).name if received else None
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def stop_check(pending: Callable[[], Iterable[int]]) -> StopCheck:
    """A check for the daemon: the first stop signal among those its handlers recorded."""

    def check() -> str | None:
        # A snapshot: a signal handler may append while we look (tuple() copies in C,
        # where no Python handler runs).
        for signum in tuple(pending()):
            if signum in STOP_SIGNALS:
                return signal.Signals(signum).name
        return None

    return check
