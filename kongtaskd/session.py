"""The supervisor's database session: connect, reconnect with back-off, LISTEN, task ids.

One autocommit connection with the supervisor's statements PREPAREd (``queries.py``), the
settle round trip (``settle.Settle``), the task identifiers this daemon claims and their
ids in ``_private_tasks``, and the NOTIFYs that wake the loop. When a statement fails the
connection is dropped (``lost``) and ``maybe_reconnect`` opens a new one after a jittered,
doubling delay; the rest of the supervisor only asks ``connected``.
"""

from __future__ import annotations

import logging
import random
import secrets
import select
import selectors
import time

import psycopg2
from psycopg2 import extensions

from kongtaskd import tunables
from kongtaskd.config import Rate
from kongtaskd.errors import ConfigError, KongtaskError
from kongtaskd.queries import Queries
from kongtaskd.settle import Outcomes, Settle, SettleResult, Want

log = logging.getLogger("kongtaskd.supervisor")

#: What the supervisor PREPAREs on its connection.
SUPERVISOR_STATEMENTS = (
    "settle",
    "claim",
    "register_tasks",
    "heartbeat",
    "stats_add",
    "prune_stats",
    "prune_completed",
    "sweep",
    "sweep_expired",
    "forget_pool",
    "release_unknown",
    "queue_depth",
    "write_caps",
    "notify_steer",
    "pending_cancels",
)

#: The channels it LISTENs on (graphile-worker's): new jobs, and another process migrating.
JOBS_INSERT, WORKER_MIGRATE = "jobs:insert", "worker:migrate"
#: kongtaskd's own (migration 6): a capped task's slot came free, a pause or resume.
STEER = "kongtaskd:steer"

#: A task's caps as the config gives them: (concurrency, rate); (None, None) is "no cap".
Caps = tuple[int | None, "Rate | None"]
#: kongtaskd's own: a job some worker holds was cancelled (payload: the holder's id;
#: sql/cancel_jobs.sql sends it, sql/pending_cancels.sql reads what it is about).
JOBS_CANCEL = "kongtaskd:cancel"


class Session:
    """The supervisor's connection and what hangs off it."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        pool_id: str,
        selector: selectors.BaseSelector,
        *,
        listen: bool,
        tasks: list[str],
        caps: dict[str, Caps] | None = None,
    ) -> None:
        self.dsn, self.schema, self.pool_id = dsn, schema, pool_id
        self.selector = selector
        self.listen = listen
        self.conn: extensions.connection | None = None
        self.conn_fd: int | None = None
        self.queries: Queries | None = None
        self.round_trip: Settle | None = None
        #: Task identifiers to claim, and their ids in _private_tasks.
        self.wanted_tasks: list[str] = sorted(tasks)
        self.task_ids: dict[str, int] = {}
        self.task_names: dict[int, str] = {}
        self.claimable_task_ids: list[int] = []
        #: Caps of the tasks this daemon runs (any task absent: no cap), written to the
        #: database for every task it claims at connect and whenever they change.
        self.caps: dict[str, Caps] = dict(caps or {})
        self.reconnect_at = 0.0
        self.reconnect_delay = tunables.RECONNECT_BACKOFF_FIRST
        #: The ``keep_completed`` config key is set: settles write history records.
        self.keep_completed = False

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def next_deadline(self) -> float | None:
        """The next reconnect attempt, while there is no connection."""
        return None if self.connected else self.reconnect_at

    # ---- connect --------------------------------------------------------------------------
    def connect(self, known_ids: list[int]) -> extensions.connection:
        """(Re)open the connection: PREPARE, register tasks, hand back unknown claims, LISTEN.

        ``known_ids``: every job the supervisor holds; any other job locked by this pool is
        a claim whose answer was lost with the old connection, and goes back to the queue.
        """
        from kongtaskd.dsn import connect

        conn = connect(self.dsn, application_name="kongtaskd supervisor", autocommit=True)
        try:
            with conn.cursor() as cur:
                # Only our own statements run on this session, each planned once (generic
                # plans: the settle's array parameters made the planner re-plan it on every
                # call, 0.7 ms of planning per turn). Planned once, a plan must not depend on
                # the table's size at that moment: a daemon starting on an empty jobs table
                # made sequential-scan plans for the settle's lookups by id and kept them
                # while a burst filled the table (10 ms per settle at 60,000 jobs, against
                # 0.8 ms). Sequential scans are priced out (a table with no usable index is
                # still scanned), and JIT is off: the priced-out scans' cost would start it
                # on statements of a millisecond (18 ms of compiling per claim, measured).
                # (kongtaskd_claim's own statements need neither: planned on an empty table
                # they already use indexes only; tests/integration/test_plans.py checks both.)
                cur.execute(
                    "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
                    "SET jit = off"
                )
            queries = Queries(conn, self.schema, names=SUPERVISOR_STATEMENTS)
            self.conn, self.queries = conn, queries
            self.round_trip = Settle(queries, self.pool_id)
            self.conn_fd = conn.fileno()  # kept: a broken connection cannot tell it any more
            self.register_tasks()
            self.write_caps()
            self.release_unknown(known_ids)
            if self.listen:
                with conn.cursor() as cur:
                    cur.execute(
                        f'LISTEN "{JOBS_INSERT}"; LISTEN "{WORKER_MIGRATE}"; LISTEN "{STEER}"; '
                        f'LISTEN "{JOBS_CANCEL}"'
                    )
                self.selector.register(conn.fileno(), selectors.EVENT_READ, "database")
        except BaseException:
            self.close()
            conn.close()  # also when it failed before it became self.conn
            raise
        return conn

    def check_listen(self, child_dsn: str | None = None) -> None:
        """At start-up, before any child exists: refuse a ``connection`` on which LISTEN
        hears nothing, and a ``child_connection`` (``child_dsn``) that does not lead to the
        same database (see ``check_notifications_arrive``)."""
        from kongtaskd.dsn import connect

        conn = connect(self.dsn, application_name="kongtaskd supervisor (check)", autocommit=True)
        try:
            self.check_notifications_arrive(conn)
            if child_dsn is not None:
                self.check_notifications_arrive(conn, sender_dsn=child_dsn)
        finally:
            conn.close()

    def check_notifications_arrive(
        self, conn: extensions.connection, *, sender_dsn: str | None = None
    ) -> None:
        """Refuse a connection on which LISTEN hears nothing.

        A pooler in transaction mode (PgBouncer's usual setting) hands the session's server
        connection to other clients between transactions: the LISTEN stays on a server
        connection we no longer hold, and every NOTIFY (new jobs, cancels, pauses) is lost
        without an error; the daemon would only notice new jobs at each poll (and the
        supervisor's PREPAREd statements would vanish the same way). So: LISTEN here,
        NOTIFY from a second connection (as an application would), and wait for it, with no
        query in flight on this one (a pooler then holds no server connection for us).

        ``sender_dsn`` (``child_connection``): send the NOTIFY through it instead. NOTIFY is
        per database, so hearing it proves the children reach the database the supervisor
        claims in; a pooler in transaction mode delivers a NOTIFY like any write.
        """
        from kongtaskd.dsn import connect

        channel, token = "kongtaskd:listen-check", secrets.token_hex(8)
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{channel}"')
        try:
            other = connect(
                self.dsn if sender_dsn is None else sender_dsn,
                application_name="kongtaskd supervisor (check)",
                autocommit=True,
            )
            try:
                with other.cursor() as cur:
                    cur.execute("select pg_notify(%s, %s)", (channel, token))
            finally:
                other.close()
        except (KongtaskError, psycopg2.Error) as exc:
            if sender_dsn is None:
                raise
            message = exc.message if isinstance(exc, KongtaskError) else str(exc).strip()
            raise type(exc)(f"child_connection: {message}") from None  # name the key
        deadline = time.monotonic() + tunables.LISTEN_CHECK_SECONDS
        while True:
            conn.poll()
            heard = any(n.channel == channel and n.payload == token for n in conn.notifies)
            conn.notifies[:] = [n for n in conn.notifies if n.channel != channel]
            if heard:
                with conn.cursor() as cur:
                    cur.execute(f'UNLISTEN "{channel}"')
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigError(self.unheard_message(sender_dsn is not None))
            select.select([conn], [], [], left)

    @staticmethod
    def unheard_message(through_child_connection: bool) -> str:
        """The one line that says why the check failed and what to set."""
        seconds = f"{tunables.LISTEN_CHECK_SECONDS:g} s"
        if through_child_connection:
            return (
                "child_connection: a NOTIFY sent through it never reached the supervisor's "
                f"`connection` within {seconds}: they lead to different databases, and the "
                "children would find none of the jobs the supervisor claims; point "
                "`child_connection` at the database `connection` names (through the pooler)"
            )
        return (
            f"connection: a NOTIFY sent to this connection never arrived within {seconds}: "
            "is it a pooler in transaction mode (PgBouncer)? The supervisor LISTENs for new "
            "jobs, cancels and pauses and PREPAREs its statements, so it needs a session of "
            "its own: point `connection` at PostgreSQL itself (or at a pooler in session "
            "mode) and put the pooler's DSN in `child_connection`, which the children use"
        )

    def release_unknown(self, known_ids: list[int]) -> None:
        """Hand back jobs locked by this pool that we do not know of (a claim's lost answer)."""
        assert self.queries is not None
        rows = self.queries.fetchall("release_unknown", self.pool_id, known_ids)
        if rows:
            log.warning("handed back %d jobs claimed for this pool but never started", len(rows))

    def register_tasks(self) -> None:
        """Make sure our task identifiers exist in _private_tasks and learn their ids."""
        assert self.queries is not None
        identifiers = self.wanted_tasks
        for _ in range(2):  # a concurrent insert can hide a row from our snapshot; re-read once
            rows = self.queries.fetchall("register_tasks", identifiers)
            self.task_ids = {name: task_id for task_id, name in rows}
            if len(self.task_ids) >= len(set(identifiers)):
                break
        self.task_names = {task_id: name for name, task_id in self.task_ids.items()}
        self.claimable_task_ids = sorted(self.task_names)

    def want_tasks(self, wanted: list[str], caps: dict[str, Caps] | None = None) -> None:
        """Claim these tasks from now on, with these caps (written at once when connected)."""
        if wanted == self.wanted_tasks and (caps is None or caps == self.caps):
            return
        tasks_changed = wanted != self.wanted_tasks
        self.wanted_tasks = wanted
        if caps is not None:
            self.caps = dict(caps)
        if self.queries is not None:
            try:
                if tasks_changed:
                    self.register_tasks()
                self.write_caps()
            except psycopg2.Error as exc:
                self.lost(exc)

    def capped(self, task: str) -> bool:
        """The task has a fleet-wide cap or rate in this daemon's config."""
        concurrency, rate = self.caps.get(task, (None, None))
        return concurrency is not None or rate is not None

    def write_caps(self) -> None:
        """Write the caps of every task we claim ("no cap" too): the last writer wins, and
        the log says when this write changed what another daemon (or config) had set."""
        assert self.queries is not None
        names = sorted(self.task_ids)
        limits = [self.caps.get(name, (None, None)) for name in names]
        rows = self.queries.fetchall(
            "write_caps",
            names,
            [concurrency for concurrency, _ in limits],
            [rate.count if rate else None for _, rate in limits],
            [rate.seconds if rate else None for _, rate in limits],
            self.pool_id,
        )
        for name, concurrency, rate_limit, rate_seconds, written_by in rows:
            mine = self.caps.get(name, (None, None))
            log.warning(
                "task %s: caps were concurrency=%s rate=%s (written by %s), now "
                "concurrency=%s rate=%s (this daemon's config and @kongtaskd.task; the last "
                "writer wins)",
                name,
                concurrency if concurrency is not None else "none",
                str(Rate(rate_limit, rate_seconds)) if rate_limit else "none",
                written_by,
                mine[0] if mine[0] is not None else "none",
                str(mine[1]) if mine[1] else "none",
            )

    def notify_steer(self, why: str) -> None:
        """Wake every daemon's claim (a capped task's slot came free)."""
        if self.queries is None:
            return
        try:
            self.queries.fetchall("notify_steer", why)
        except psycopg2.Error as exc:
            self.lost(exc)

    def settle(self, outcomes: Outcomes, want: Want) -> SettleResult:
        """The loop turn's round trip (``settle.Settle.settle``); psycopg2.Error when it fails."""
        assert self.round_trip is not None, "settle() without a connection"
        return self.round_trip.settle(outcomes, want, keep_completed=self.keep_completed)

    def pending_cancels(self) -> list[tuple[int, str]]:
        """(job id, cancel message) of every job this pool holds that was cancelled;
        psycopg2.Error when it fails."""
        assert self.queries is not None, "pending_cancels() without a connection"
        return [(row[0], row[1]) for row in self.queries.fetchall("pending_cancels", self.pool_id)]

    # ---- lose and reconnect ---------------------------------------------------------------
    def lost(self, exc: BaseException) -> None:
        """A statement failed: drop the connection; ``maybe_reconnect`` opens a new one."""
        log.error(
            "database connection lost: %s", str(exc).strip().splitlines()[0] if str(exc) else exc
        )
        self.close()
        self.schedule_reconnect()

    def close(self) -> None:
        if self.conn_fd is not None:
            try:
                self.selector.unregister(self.conn_fd)
            except (KeyError, ValueError):
                pass
            self.conn_fd = None
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = self.queries = self.round_trip = None

    def schedule_reconnect(self) -> None:
        jitter = 0.5 + random.random() / 2
        self.reconnect_at = time.monotonic() + self.reconnect_delay * jitter
        self.reconnect_delay = min(self.reconnect_delay * 2, tunables.RECONNECT_BACKOFF_MAX)

    def reconnect_now(self) -> None:
        """Shutdown's last attempts: no back-off wait before the next try."""
        self.reconnect_at = 0.0

    def reconnect_due(self) -> bool:
        return self.conn is None and time.monotonic() >= self.reconnect_at

    def reconnect_failed(self, exc: KongtaskError | psycopg2.Error) -> None:
        message = exc.message if isinstance(exc, KongtaskError) else str(exc).strip()
        log.warning("reconnect failed: %s", message)
        self.schedule_reconnect()

    def reconnected(self) -> None:
        log.info("database connection re-established")
        self.reconnect_delay = tunables.RECONNECT_BACKOFF_FIRST

    # ---- notifications --------------------------------------------------------------------
    def poll(self) -> list[extensions.Notify]:
        """The socket is readable: read it and return the NOTIFYs that arrived."""
        if self.conn is None:
            return []
        try:
            self.conn.poll()
        except psycopg2.Error as exc:
            self.lost(exc)
            return []
        return self.notifications()

    def steering_pending(self) -> bool:
        """A pause/resume or cancel NOTIFY has arrived and not been taken yet."""
        if self.conn is None or not self.conn.notifies:
            return False
        return any(note.channel in (STEER, JOBS_CANCEL) for note in self.conn.notifies)

    def notifications(self) -> list[extensions.Notify]:
        """NOTIFYs that arrived with the last statement's answer (taken: each is seen once)."""
        if self.conn is None or not self.conn.notifies:
            return []
        notes = list(self.conn.notifies)
        self.conn.notifies.clear()
        return notes
