"""Installing and upgrading the schema: graphile-worker's ledger protocol, then kongtaskd's.

graphile-worker keeps ``<schema>.migrations(id, ts, breaking)`` and has no lock around
migrating: every migration runs in its own transaction that *first* inserts its ledger row.
A second migrator inserting the same id blocks on the first one's row until that commits,
then gets a unique violation, which it takes as "someone else did it". kongtaskd follows the
same protocol step by step, so kongtaskd and graphile-worker processes may start against one
database together, in any mix.

One deliberate difference: on a *fresh* database kongtaskd applies migrations 1..11 in a
single transaction. Its files 1..10 are no-ops and its 11 builds the 0.14.0 layout directly,
which is only correct when no graphile-worker has run its real 1..10 in between. One
transaction makes that all-or-nothing: a graphile-worker racing us either waits on our row 1
and then finds 1..11 done, or wins row 1 itself, in which case we wait for *its* 1..11 and
only then take part in the race for 12..20, whose files are faithful deltas either way.

The same race explains why a ledger at 1..10 is not refused at first sight: it may be a
graphile-worker installing a fresh database right now. kongtaskd watches the ledger; only if
it stands still for a second with nobody holding an uncommitted ledger row is the database
declared too old (graphile-worker < 0.14) for kongtaskd to upgrade.

kongtaskd's own objects use a second ledger, ``<schema>._kongtaskd_migrations(id, ts)``,
with the same insert-first protocol, applied after graphile-worker's. graphile-worker never
reads it.

Every transaction here goes through :class:`kongtaskd.schema.waiting.Waiter`: a short
``lock_timeout`` per attempt, retried until ``lock_timeout`` (migration_lock_timeout), and
a stop (``should_stop``: SIGTERM, SIGINT, SIGQUIT) cancels the statement in flight. The
protocol is unchanged by it: a retried attempt is a whole transaction again, ledger row
first, and waiting on a peer's uncommitted ledger row is a lock wait like any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import time
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from kongtaskd.errors import DatabaseError, SchemaTooNewError, SchemaTooOldError
from kongtaskd.schema.files import (
    BREAKING_GRAPHILE_MIGRATIONS,
    Migration,
    bind,
    load_migrations,
    load_statements,
)
from kongtaskd.schema.waiting import ObserverFactory, StopCheck, Waiter

#: The newest graphile-worker migration kongtaskd ships (graphile-worker 0.18.0).
LATEST_GRAPHILE_MIGRATION = 20
#: graphile-worker's own floor: generated columns and the claim query need PostgreSQL 12.
MIN_SERVER_VERSION = 120000
#: The first migration kongtaskd can build on (graphile-worker 0.14.0); older ledgers refused.
FIRST_UPGRADABLE = 11

#: "Does not exist": no ledger table, or a ledger without the ``breaking`` column.
_NX_CODES = frozenset({"42P01", "42703"})
#: "Someone else created it": concurrent bootstrap or concurrent ledger insert.
_CLASH_CODES = frozenset({"23505", "42P06", "42P07", "42710"})
_INSUFFICIENT_PRIVILEGE = "42501"
#: A ledger at 1..10 that has not moved for this long, with no migration in progress, is
#: an old database rather than one graphile-worker is installing (its gap between two
#: migrations is milliseconds). Only the too-old error pays this delay.
_STALL_TIMEOUT = 1.0
_PEER_POLL = 0.05

_log = logging.getLogger("kongtaskd.schema")


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    """What one :func:`migrate` call did."""

    #: graphile-worker migrations this call applied (not those a concurrent process did).
    applied: list[int]
    #: kongtaskd's own migrations this call applied.
    applied_kongtaskd: list[int]
    #: graphile-worker migrations in the database newer than this kongtaskd, none breaking.
    newer_non_breaking: list[int]


def migrate(
    conn: psycopg2.extensions.connection,
    schema: str = "graphile_worker",
    *,
    logger: logging.Logger | None = None,
    target: int = LATEST_GRAPHILE_MIGRATION,
    kongtaskd_target: int | None = None,
    lock_timeout: float | None = None,
    should_stop: StopCheck | None = None,
    observer: ObserverFactory | None = None,
) -> MigrationReport:
    """Bring ``schema`` to graphile-worker migration ``target`` (default: the latest) and
    install kongtaskd's own objects.

    ``conn`` must not be inside a transaction; migrate runs its own transactions and restores
    the connection's autocommit and isolation settings afterwards. ``target`` below the
    latest (tests, staged upgrades) stops early and skips kongtaskd's own migrations, which
    need the latest layout. ``kongtaskd_target`` stops kongtaskd's own migrations after that
    number (tests of an upgrade from an older kongtaskd; None: all of them).

    ``lock_timeout``: seconds one step may wait for a lock in all (None: as long as it
    takes); the wait itself is a series of short tries, so the application's statements are
    not held up behind it. ``should_stop`` is asked every ``MIGRATION_POLL_TICK`` while
    waiting and returns why to stop (a signal's name) or None. ``observer`` opens a second
    connection to see who holds a lock the migration waits for (logged, and named in the
    timeout's message); without it the holder is not named.

    Raises :class:`MigrationInterrupted` on a stop and :class:`MigrationLockTimeout` when
    ``lock_timeout`` expired (the step in progress rolled back in both cases),
    :class:`SchemaTooOldError` for a ledger at 1..10, :class:`SchemaTooNewError` when the
    database has a breaking migration newer than ours, :class:`DatabaseError` for anything
    else the database refuses (permissions included), each with a one-line message.
    """
    if not FIRST_UPGRADABLE <= target <= LATEST_GRAPHILE_MIGRATION:
        raise ValueError(f"target must be {FIRST_UPGRADABLE}..{LATEST_GRAPHILE_MIGRATION}")
    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise DatabaseError(
            "migrate() needs a connection outside any transaction; commit or roll back first"
        )
    saved_autocommit, saved_isolation = conn.autocommit, conn.isolation_level
    # Explicit transactions, and READ COMMITTED so that a migrator blocked on another's
    # ledger row sees that row once it is committed (the protocol relies on it).
    conn.autocommit = False
    conn.isolation_level = psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED
    try:
        migrator = _Migrator(conn, schema, logger or _log)
        with Waiter(
            conn,
            migrator.statements,
            where=f"schema {migrator.quoted}",
            log=migrator.log,
            lock_timeout=lock_timeout,
            should_stop=should_stop,
            observer=observer,
        ) as waiter:
            migrator.waiter = waiter
            return migrator.run(target, kongtaskd_target)
    finally:
        # On a broken connection there is nothing left to restore; the error that broke it
        # is the one to report.
        with contextlib.suppress(psycopg2.Error):
            if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                conn.rollback()
            conn.isolation_level = saved_isolation
            conn.autocommit = saved_autocommit


class _AppliedElsewhere(Exception):
    """Another migrator inserted this ledger row first: the migration is (being) done."""


class _PeerIsMigrating(Exception):
    """Another process holds (or has committed) ledger row 1 of a fresh install."""


class _Migrator:
    def __init__(
        self, conn: psycopg2.extensions.connection, schema: str, log: logging.Logger
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.log = log
        self.quoted = sql.Identifier(schema).as_string(conn)
        self.statements = {
            name: bind(text, self.quoted, with_parameters=True)
            for name, text in load_statements().items()
        }
        self.waiter: Waiter  # set by migrate()

    # -- the whole run --------------------------------------------------------------------

    def run(self, target: int, kongtaskd_target: int | None = None) -> MigrationReport:
        latest, latest_breaking = self._read_ledger()
        newer_non_breaking: list[int] = []
        if latest is not None and latest > LATEST_GRAPHILE_MIGRATION:
            newer_non_breaking = self._check_newer(latest_breaking)

        applied: list[int] = []
        migrations = load_migrations("graphile")
        # Below 11 is either a fresh database, an old one, or one that another migrator is
        # installing right now (graphile-worker commits 1..10 one by one).
        while latest is None or latest < FIRST_UPGRADABLE:
            if latest is None and self._install_fresh(migrations[:FIRST_UPGRADABLE]):
                applied += [m.number for m in migrations[:FIRST_UPGRADABLE]]
                latest = FIRST_UPGRADABLE
            else:
                latest = self._await_progress(latest)
        for migration in migrations[latest:target]:
            if self._apply(migration):
                applied.append(migration.number)

        applied_kongtaskd: list[int] = []
        if target == LATEST_GRAPHILE_MIGRATION:
            applied_kongtaskd = self._apply_kongtaskd(kongtaskd_target)
        return MigrationReport(applied, applied_kongtaskd, newer_non_breaking)

    # -- graphile-worker's ledger ------------------------------------------------------------

    def _read_ledger(self) -> tuple[int | None, int | None]:
        """(latest id, latest breaking id) of the ledger, creating the ledger if missing."""
        try:
            return self._query_ledger()
        except psycopg2.Error as error:
            if error.pgcode not in _NX_CODES:
                raise self._failure("reading the migration ledger", error) from error
        try:
            self._bootstrap()
        except psycopg2.Error as error:
            if error.pgcode not in _CLASH_CODES:
                raise self._failure("creating the migration ledger", error) from error
            # Another process bootstrapped at the same moment; give its transaction time to
            # become visible (graphile-worker waits the same 400-600 ms), then read again.
            self.waiter.pause(random.uniform(0.4, 0.6), "creating the migration ledger")
        try:
            return self._query_ledger()
        except psycopg2.Error as error:
            raise self._failure("reading the migration ledger", error) from error

    def _query_ledger(self) -> tuple[int | None, int | None]:
        def body(cur: psycopg2.extensions.cursor) -> tuple[int, int | None, int | None]:
            cur.execute(self.statements["read_graphile_ledger"], {})
            row: tuple[int, int | None, int | None] = cur.fetchone()
            return row

        server_version, latest, latest_breaking = self.waiter.transaction(
            "reading the migration ledger", body
        )
        self._check_server_version(server_version)
        return latest, latest_breaking

    def _check_server_version(self, server_version: int) -> None:
        if server_version < MIN_SERVER_VERSION:
            raise DatabaseError(
                f"PostgreSQL {server_version // 10000} is too old for the graphile-worker"
                f" schema: version 12 or newer is needed (server_version_num={server_version})"
            )

    def _bootstrap(self) -> None:
        self._check_server_version(self.conn.server_version)
        self.waiter.transaction("creating the migration ledger", self._bootstrap_in)

    def _bootstrap_in(self, cur: psycopg2.extensions.cursor) -> None:
        try:
            cur.execute(self.statements["create_schema"], {})
        except psycopg2.Error as error:
            if error.pgcode == _INSUFFICIENT_PRIVILEGE:
                raise DatabaseError(
                    f"cannot create schema {self.quoted}: role {self._role()} lacks the"
                    f" CREATE privilege on database {self._database()} (grant it, or"
                    f" have a role that has it run `kongtaskd migrate` once)"
                ) from error
            raise
        try:
            cur.execute(self.statements["create_graphile_ledger"], {})
            cur.execute(self.statements["add_breaking_column"], {})
        except psycopg2.Error as error:
            if error.pgcode == _INSUFFICIENT_PRIVILEGE:
                raise DatabaseError(
                    f"cannot create the migration ledger in schema {self.quoted}: role"
                    f" {self._role()} lacks the CREATE privilege on that schema"
                    f" ({_message(error)})"
                ) from error
            raise
        cur.execute(self.statements["mark_breaking"], {"ids": sorted(BREAKING_GRAPHILE_MIGRATIONS)})

    def _check_newer(self, latest_breaking: int | None) -> list[int]:
        """Refuse a database with newer breaking migrations; list the non-breaking ones."""

        def body(cur: psycopg2.extensions.cursor) -> list[tuple[int, bool]]:
            cur.execute(
                self.statements["newer_graphile_migrations"],
                {"latest": LATEST_GRAPHILE_MIGRATION},
            )
            rows: list[tuple[int, bool]] = cur.fetchall()
            return rows

        try:
            newer = self.waiter.transaction("reading the migration ledger", body)
        except psycopg2.Error as error:
            raise self._failure("reading the migration ledger", error) from error
        breaking = [number for number, is_breaking in newer if is_breaking]
        if breaking or (latest_breaking or 0) > LATEST_GRAPHILE_MIGRATION:
            raise SchemaTooNewError(
                f"schema {self.quoted} has breaking graphile-worker migration(s)"
                f" {', '.join(map(str, breaking))} newer than this kongtaskd knows (up to"
                f" {LATEST_GRAPHILE_MIGRATION}); it would be unsafe to run: upgrade kongtaskd"
            )
        numbers = [number for number, _ in newer]
        self.log.warning(
            "schema %s has graphile-worker migration(s) %s newer than this kongtaskd knows"
            " (up to %d); none is breaking, so continuing",
            self.quoted,
            ", ".join(map(str, numbers)),
            LATEST_GRAPHILE_MIGRATION,
        )
        return numbers

    def _install_fresh(self, block: tuple[Migration, ...]) -> bool:
        """Apply 1..11 in one transaction; False if another process got ledger row 1 first."""

        def body(cur: psycopg2.extensions.cursor) -> None:
            for migration in block:
                if not self._claim(cur, migration):
                    raise _PeerIsMigrating
            for migration in block:
                self._run_file(cur, migration)
            for migration in block:
                self._notify(cur, migration)

        doing = f"installing graphile-worker migrations 1-{block[-1].number}"
        try:
            self.waiter.transaction(doing, body)
        except _PeerIsMigrating:
            self.log.debug("another process is installing schema %s; waiting", self.quoted)
            return False
        except psycopg2.Error as error:
            raise self._failure(doing, error) from error
        for migration in block:
            self._log_applied(migration)
        return True

    def _await_progress(self, seen: int | None) -> int | None:
        """Wait until the ledger moves on from ``seen`` and return where it got to.

        Progress means another migrator is at work. The ledger standing still while nobody
        holds an uncommitted ledger row means nobody is: a database left at 1..10 is then
        too old for us, and an empty one (a peer that gave up) is returned for us to install.
        """
        stalled_since = time.monotonic()
        while True:
            self.waiter.pause(_PEER_POLL, "waiting for another migrator")
            latest, _ = self._read_ledger()
            if latest != seen:
                return latest
            if self._ledger_in_use():
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > _STALL_TIMEOUT:
                if seen is None:
                    return None
                raise SchemaTooOldError(
                    f"schema {self.quoted} is at graphile-worker migration {seen} (graphile-worker"
                    f" < 0.14), older than kongtaskd can upgrade: run graphile-worker 0.14 or"
                    f" newer once with --schema-only (no jobs may be locked) to upgrade it, or"
                    f" drop the schema to start afresh"
                )

    def _ledger_in_use(self) -> bool:
        """Does another session hold an uncommitted write to the ledger (a migration)?"""

        def body(cur: psycopg2.extensions.cursor) -> bool:
            cur.execute(self.statements["ledger_in_use"], {"schema": self.schema})
            (in_use,) = cur.fetchone()
            return bool(in_use)

        try:
            in_use = self.waiter.transaction("reading the migration ledger's locks", body)
        except psycopg2.Error as error:
            raise self._failure("reading the migration ledger's locks", error) from error
        return bool(in_use)

    def _apply(self, migration: Migration) -> bool:
        """Apply one migration; False if another process applied it first."""

        def body(cur: psycopg2.extensions.cursor) -> None:
            if not self._claim(cur, migration):
                raise _AppliedElsewhere
            self._run_file(cur, migration)
            self._notify(cur, migration)

        doing = f"applying graphile-worker migration {migration.name}"
        try:
            self.waiter.transaction(doing, body)
        except _AppliedElsewhere:
            self.log.debug(
                "graphile-worker migration %s was applied by another process", migration.name
            )
            return False
        except psycopg2.Error as error:
            raise self._failure(doing, error) from error
        self._log_applied(migration)
        return True

    def _claim(self, cur: psycopg2.extensions.cursor, migration: Migration) -> bool:
        """Insert the ledger row first; False when another migrator has (or holds) it."""
        statement = "insert_graphile_migration"
        params: dict[str, Any] = {"id": migration.number, "breaking": migration.breaking}
        if migration.kind == "kongtaskd":
            statement, params = "insert_kongtaskd_migration", {"id": migration.number}
        try:
            cur.execute(self.statements[statement], params)
        except psycopg2.Error as error:
            if error.pgcode in _CLASH_CODES:
                return False
            raise
        return True

    def _run_file(self, cur: psycopg2.extensions.cursor, migration: Migration) -> None:
        if not migration.is_noop:
            # No parameters: psycopg2 then leaves "%" in the file and the name alone.
            cur.execute(bind(migration.text, self.quoted, with_parameters=False))

    def _notify(self, cur: psycopg2.extensions.cursor, migration: Migration) -> None:
        # Byte-for-byte what graphile-worker sends (JSON.stringify of the same object).
        payload = json.dumps(
            {"migrationNumber": migration.number, "breaking": migration.breaking},
            separators=(",", ":"),
        )
        cur.execute(self.statements["notify_migrate"], {"payload": payload})

    def _log_applied(self, migration: Migration) -> None:
        self.log.info("applied graphile-worker migration %s", migration.name)

    # -- kongtaskd's ledger ------------------------------------------------------------------

    def _apply_kongtaskd(self, upto: int | None = None) -> list[int]:
        known = load_migrations("kongtaskd")
        migrations = known[:upto]
        latest = self._read_kongtaskd_ledger()
        if latest > len(known):
            self.log.warning(
                "schema %s has kongtaskd migration %d, newer than this kongtaskd knows (%d);"
                " continuing",
                self.quoted,
                latest,
                len(known),
            )
        applied: list[int] = []
        for migration in migrations[latest:]:

            def body(cur: psycopg2.extensions.cursor, migration: Migration = migration) -> None:
                if not self._claim(cur, migration):
                    raise _AppliedElsewhere
                self._run_file(cur, migration)

            doing = f"applying kongtaskd migration {migration.name}"
            try:
                self.waiter.transaction(doing, body)
            except _AppliedElsewhere:
                continue
            except psycopg2.Error as error:
                raise self._failure(doing, error) from error
            self.log.info("applied kongtaskd migration %s", migration.name)
            applied.append(migration.number)
        return applied

    def _read_kongtaskd_ledger(self) -> int:
        def read(cur: psycopg2.extensions.cursor) -> int:
            cur.execute(self.statements["read_kongtaskd_ledger"], {})
            (latest,) = cur.fetchone()
            return int(latest or 0)

        def bootstrap(cur: psycopg2.extensions.cursor) -> None:
            cur.execute(self.statements["bootstrap_kongtaskd_ledger"], {})

        for attempt in range(2):
            try:
                return self.waiter.transaction("reading kongtaskd's migration ledger", read)
            except psycopg2.Error as error:
                if attempt or error.pgcode not in _NX_CODES:
                    raise self._failure("reading kongtaskd's migration ledger", error) from error
            creating = "creating kongtaskd's migration ledger"
            try:
                self.waiter.transaction(creating, bootstrap)
            except psycopg2.Error as error:
                if error.pgcode not in _CLASH_CODES:
                    raise self._failure(creating, error) from error
                self.waiter.pause(random.uniform(0.4, 0.6), creating)
        raise AssertionError("unreachable")

    # -- plumbing ----------------------------------------------------------------------------

    def _role(self) -> str:
        return sql.Identifier(self.conn.info.user).as_string(self.conn)

    def _database(self) -> str:
        return sql.Identifier(self.conn.info.dbname).as_string(self.conn)

    def _failure(self, doing: str, error: psycopg2.Error) -> DatabaseError:
        """One line naming the schema, the step and what PostgreSQL said."""
        if isinstance(error, psycopg2.OperationalError) and error.pgcode is None:
            return DatabaseError(
                f"lost the database connection while {doing} in schema {self.quoted}:"
                f" {_message(error)}"
            )
        if error.pgcode == _INSUFFICIENT_PRIVILEGE:
            return DatabaseError(
                f"permission denied while {doing} in schema {self.quoted}: {_message(error)};"
                f" role {self._role()} must own the schema's objects (graphile-worker expects to"
                f" run as their owner)"
            )
        return DatabaseError(
            f"{doing} in schema {self.quoted} failed: {_message(error)} (SQLSTATE {error.pgcode})"
        )


def _message(error: psycopg2.Error) -> str:
    """PostgreSQL's primary message, on one line."""
    diag: Any = getattr(error, "diag", None)
    text = (diag.message_primary if diag is not None else None) or str(error)
    return " ".join(text.split())
