"""The supervisor: one process that owns the database side and a fleet of forked children.

This module is the loop, the signals, start and stop; the rest lives in its parts:

==============  ============================================================================
``fleet.py``    the children: spawn, read, reap, kill/murder, manage (back-off, crash loops)
``jobbook.py``  pure bookkeeping and dispatch policy: outcomes, prefetch, batch and claim size
``session.py``  the database connection: connect, reconnect, LISTEN, task ids
``settle.py``   the one round trip per loop turn, typed: ``settle(outcomes, want)``
==============  ============================================================================

The loop, top to bottom (``Supervisor.run``)::

    start            migrate, fork children, wait for their READY, connect, LISTEN
    loop:
      wait             sleep until a child writes, a NOTIFY lands, a signal or the earliest
                       deadline of any part (``next_timeout``)
      handle_signals   act on what the signal handlers recorded (they only record)
      fleet.read       take DONE / FAILED / READY / BYE messages off the children's pipes
      fleet.reap       waitpid: a dead child's job fails with how it died
      manage           respawn; SIGTERM, then SIGKILL, a job past its timeout; roll a reload;
                       drain deadline; prefetched jobs that waited too long go back
      dispatch         hand prefetched job ids to idle children (no database wait)
      settle           ONE round trip: write the collected outcomes, claim more jobs; its
                       wait reads outcomes and hands out jobs in hand (``overlap.py``)
      dispatch         hand out what was just claimed
      run_cron         add the jobs of cron ticks that are due (exactly once across the fleet)
      tick             heartbeat and sweeps, sd_notify, process title, reconnect when due;
                       cancels of jobs we hold (after a 'kongtaskd:cancel' NOTIFY, a
                       reconnect, a heartbeat): ``fleet.cancel`` tells the child
    stop             children gone, remaining outcomes written (retried), connection closed

Where outcomes are written: here, in batches, not in the children. A child reports an
outcome over its pipe (no database round trip in the child after the job), and the
supervisor writes everything it collected together with its next claim, in one statement
(``sql/settle.sql``): one round trip and one commit however many jobs finished. When a
child needs work, on a failure, at drain, the write happens in the turn the outcome
arrives; while every child has work it may wait ``OUTCOME_WRITE_DELAY`` (5 ms) for the
outcomes that follow (``JobBook.write_due``), so a daemon of few children does not pay a
round trip per job. The cost is a
window in which a completion exists only in the supervisor's memory: if the supervisor is
SIGKILLed inside it, the job stays locked by this pool, and another daemon's heartbeat
sweep fails it and it runs again (at-least-once, as always). Shutdown writes everything
before it exits, retrying for ``FINAL_FLUSH_DEADLINE`` seconds.

Claims are sized to the idle children plus, only while jobs are short, a prefetch, so a
child that finishes gets its next ids at once (``jobbook.py`` has the policy). A prefetched
job that waits longer than ``PREFETCH_MAX_WAIT`` is handed back. While jobs take well under
a couple of milliseconds, a child is handed a small batch of ids (about
``BATCH_TARGET_SECONDS`` of work): one pipe write, one row-load round trip in the child, and
a claim per turn that feeds every child at once. That is what takes no-op throughput from
about 3,000 to about 15,000 jobs/s on two cores (perf/results/). A batch never outlives a
drain: the child hands back the ids it has not started when told to stop.

Signals (handlers only enqueue; ``handle_signals`` acts in the loop): SIGTERM/SIGINT drain
(a second one: fast stop), SIGQUIT fast stop, SIGHUP reload, SIGTTIN/SIGTTOU one child more
or fewer, SIGCHLD only wakes the loop. Exit codes are ``errors.ExitCode``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import selectors
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import psycopg2
from setproctitle import setproctitle

from kongtaskd import tunables
from kongtaskd.config import Config
from kongtaskd.errors import DatabaseError, ExitCode, KongtaskError, TaskImportError
from kongtaskd.fleet import BUSY, IDLE, ChildProcess, Fleet
from kongtaskd.heartbeat import Heartbeat
from kongtaskd.jobbook import JobBook, Settled
from kongtaskd.logs import setup_logging
from kongtaskd.metrics import MetricsServer, NullMetrics
from kongtaskd.notify import Notifier
from kongtaskd.overlap import ServeWhileWaiting
from kongtaskd.protocol import FATAL_DATABASE
from kongtaskd.schema.check import require_current_schema
from kongtaskd.session import JOBS_CANCEL, JOBS_INSERT, STEER, WORKER_MIGRATE, Caps, Session
from kongtaskd.settle import Want
from kongtaskd.zygote import (
    DEGRADED,
    LOST,
    RELOAD_FAILED,
    RELOAD_READY,
    RESTORED,
    Event,
    HandlerSpec,
    ZygoteKeeper,
    become_subreaper,
)

if TYPE_CHECKING:
    from psycopg2 import extensions
    from psycopg2.extensions import Notify

    from kongtaskd.cron import CronItem, CronScheduler

log = logging.getLogger("kongtaskd.supervisor")

#: Signals the supervisor handles; the handlers only record them (see ``handle_signals``).
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


def crontab_of(config: Config, once: bool) -> list[CronItem]:
    """The configured crontab, parsed; none for ``--once`` (as graphile-worker) or when unset.

    ``kongtaskd.cron`` is imported only when there is a crontab: start-up pays for imports.
    """
    if once or (config.crontab is None and config.crontab_file is None):
        return []
    from kongtaskd.cron import load_crontab

    return load_crontab(config)


def new_pool_id(once: bool = False) -> str:
    """graphile-worker's pool id format: ``pool-`` (or ``otpool-`` for run-once) + 18 hex."""
    return ("otpool-" if once else "pool-") + secrets.token_hex(9)


def caps_of(config: Config, code: Mapping[str, Caps] | None = None) -> dict[str, Caps]:
    """The fleet-wide caps of the tasks (only tasks that have any): the config's, and those
    ``@kongtaskd.task`` gave in code (``code``, from the zygote's report). Each of the two
    limits a ``tasks:`` entry sets wins over the decorator's; one it leaves unset keeps the
    decorator's (a config can tighten or loosen a cap in code, not remove it)."""
    caps: dict[str, Caps] = dict(code or {})
    for name, spec in config.tasks.items():
        coded = caps.get(name, (None, None))
        merged = (
            spec.concurrency if spec.concurrency is not None else coded[0],
            spec.rate if spec.rate is not None else coded[1],
        )
        if merged != (None, None):
            caps[name] = merged
    return caps


def caps_conflicts(config: Config, code: Mapping[str, Caps]) -> list[str]:
    """Where a ``tasks:`` entry and ``@kongtaskd.task`` give one task different caps: one
    line each, for the log (the config's value is the one used)."""
    lines = []
    for name, (code_concurrency, code_rate) in sorted(code.items()):
        spec = config.tasks.get(name)
        if spec is None:
            continue
        for key, mine, theirs in (
            ("concurrency", spec.concurrency, code_concurrency),
            ("rate", spec.rate, code_rate),
        ):
            if mine is not None and theirs is not None and mine != theirs:
                lines.append(
                    f"task {name}: {key} is {theirs} in @kongtaskd.task and {mine} under "
                    f"tasks: at {spec.where or 'the configuration'}; the configuration's wins"
                )
    return lines


class Supervisor:
    def __init__(
        self, config: Config, *, once: bool = False, reload: Callable[[], Config] | None = None
    ) -> None:
        self.config = config
        self.reload = reload
        # Where the database is cannot change under a running daemon (its locks carry
        # this pool's id on that database): a reload that changes it is refused.
        self.dsn = config.dsn
        self.child_dsn = config.child_dsn  # the children's (fleet.py fixes it at birth too)
        self.schema = config.schema
        self.once = once
        self.pool_id = new_pool_id(once)
        self.exit_code = ExitCode.OK
        self.selector = selectors.DefaultSelector()
        self.signal_queue: collections.deque[int] = collections.deque()
        self.wake_r, self.wake_w = os.pipe()
        # The parts: jobs in hand, the database session, the children.
        self.book = JobBook()
        self.session = Session(
            self.dsn,
            self.schema,
            self.pool_id,
            self.selector,
            listen=not once,
            tasks=sorted(config.tasks),
            caps=caps_of(config),
        )
        self.book.capped = frozenset(caps_of(config))
        #: The caps ``@kongtaskd.task`` gave (the current zygote's report; kept while a lost
        #: zygote is replaced).
        self.code_caps: dict[str, Caps] = {}
        # Parsed before any fork, so a bad crontab stops the start (exit 2).
        self.cron: CronScheduler | None = None
        self.replace_cron(crontab_of(config, once), config.timezone)
        self.metrics: NullMetrics = NullMetrics()
        if config.metrics:
            from kongtaskd.metrics import Metrics  # imports prometheus_client

            self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self.queue_depth_at = 0.0
        # The handlers are imported by a zygote, never here; children fork from it.
        self.zygotes = ZygoteKeeper(
            forget=lambda: self.fleet.forget_in_child(),
            watch=self.watch_zygote,
            unwatch=self.unwatch_zygote,
        )
        self.fleet = Fleet(
            config,
            pool_id=self.pool_id,
            selector=self.selector,
            book=self.book,
            metrics=self.metrics,
            on_tasks_changed=self.refresh_tasks,
            on_fatal=self.on_child_fatal,
            forget_in_child=self.forget_in_child,
            zygotes=self.zygotes,
            on_other_exit=self.on_other_exit,
        )
        self.forbidden_flags = list(config.forbidden_flags) or None
        #: The settle's wait for its answer also serves the children (``overlap.py``).
        self.overlap = ServeWhileWaiting(self.watched_children, self.serve_children)
        self.heartbeat = Heartbeat(
            self.pool_id,
            config.heartbeat_interval,
            config.stale_after,
            stats_retention=config.stats_retention,
            keep_completed=config.keep_completed,
        )
        self.session.keep_completed = config.keep_completed is not None
        self.drain_deadline: float | None = None
        self.fast = False
        self.jobs_failed = 0
        # Reload (see "Reload" below).
        self.reloading = False
        #: A reload's configuration (and crontab) while its zygote imports the handlers.
        self.pending: tuple[Config, list[CronItem]] | None = None
        # Housekeeping: systemd and the process title.
        self.notifier = Notifier()
        self.next_extend = 0.0
        self.next_status = 0.0
        self.status_sent = ""
        self.title = ""
        #: Read the cancels of jobs we hold (kongtaskd jobs cancel) at the next tick: set by
        #: their NOTIFY, a (re)connect (a NOTIFY sent meanwhile is lost) and each heartbeat.
        self.cancels_due = True
        self.next_watchdog = 0.0
        #: Jobs whose outcome went out in a round trip that got no answer (the connection
        #: died: a failover, a restart). The retry finds those the lost COMMIT had written
        #: no longer held: expected, not the warning a job swept from under us deserves.
        self.unanswered: set[int] = set()

    @property
    def draining(self) -> bool:
        """Shutting down: no claims, no spawns; ends when every child is gone."""
        return self.fleet.draining

    # ======================================================================================
    # The loop
    # ======================================================================================
    def run(self) -> int:
        try:
            self.start()
            while not self.finished():
                self.wait()
                self.handle_signals()
                self.fleet.read()
                self.fleet.reap()
                self.manage()
                self.dispatch()
                self.settle()
                self.dispatch()
                self.run_cron()
                self.tick()
        finally:
            self.stop()  # also on errors: children gone, outcomes written, then re-raise
        return int(self.exit_code)

    def finished(self) -> bool:
        """Done when draining and every child is gone; ``stop()`` writes what is left."""
        return self.draining and not self.fleet

    # ======================================================================================
    # Start
    # ======================================================================================
    def start(self) -> None:
        log.info(
            "kongtaskd supervisor starting: pool %s, %d children, schema %s",
            self.pool_id,
            self.config.concurrency,
            self.schema,
        )
        self.install_signals()
        self.migrate()
        # A transaction pooler would hear no NOTIFY and lose our PREPAREs (also --once):
        # refuse it; and a child_connection must reach this database.
        self.session.check_listen(self.config.child_connection)
        if self.config.metrics is not None:
            self.metrics_server = MetricsServer(
                self.metrics,
                self.config.metrics.host,
                self.config.metrics.port,
                self.selector,
                self.refresh_queue_depth,
            )
        self.metrics.know_tasks(self.config.tasks)
        self.handle_signals()  # a stop that came while migrating: no child is forked
        if not self.draining:
            self.start_zygote()  # the handlers' one import check; a stop may come meanwhile
        if not self.draining:
            for _ in range(self.config.concurrency):
                self.fleet.spawn()
            # Our session connects while the children connect: start-up is on the clock of
            # every `--once` run. (They fork from the zygote: no fd of it reaches them.)
            self.connect()
            self.await_children()
        if not self.session.connected:
            self.connect()
        self.beat()
        self.announce_ready()

    def announce_ready(self) -> None:
        """READY=1 and the "ready" line, unless a stop came during start-up: then the loop
        only drains, and telling systemd (or a reader of the log) "serving" would be false."""
        self.handle_signals()
        if self.draining:
            return
        self.notify_ready()
        log.info(
            "ready: %d children, tasks %s%s",
            len(self.fleet),
            ", ".join(self.session.wanted_tasks),
            "" if self.once else f"; listening, polling every {self.config.poll_interval}s",
        )

    def notify_ready(self) -> None:
        """READY=1 (start-up done, a reload done or refused): never once draining began."""
        if not self.draining:
            self.notifier.ready(self.status_line())

    def install_signals(self) -> None:
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self.record_signal)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")

    def record_signal(self, signum: int, frame: object) -> None:
        self.signal_queue.append(signum)

    def migrate(self) -> None:
        """Install or upgrade the schema (``migrate: true``), or check that it is current.

        Its connection is closed before any fork: none crosses into a child.
        """
        from kongtaskd.dsn import connect
        from kongtaskd.schema import migrate
        from kongtaskd.schema.waiting import connect_interruptibly, stop_check

        # The signal handlers only record; the migration's waits look at what they recorded,
        # so SIGTERM/SIGINT/SIGQUIT cancel a migration stuck behind a lock (exit 130).
        should_stop = stop_check(lambda: self.signal_queue)
        lock_timeout = self.config.migration_lock_timeout

        def observer() -> extensions.connection:
            return connect(self.dsn, application_name="kongtaskd migrate (lock watch)")

        conn = connect_interruptibly(
            lambda: connect(self.dsn, application_name="kongtaskd migrate"), should_stop
        )
        try:
            if self.config.migrate:
                migrate(
                    conn,
                    self.schema,
                    logger=log,
                    lock_timeout=lock_timeout,
                    should_stop=should_stop,
                    observer=observer,
                )
            else:
                require_current_schema(
                    conn,
                    self.schema,
                    logger=log,
                    lock_timeout=lock_timeout,
                    should_stop=should_stop,
                    observer=observer,
                )
        finally:
            conn.close()

    def start_zygote(self) -> None:
        """Import the handlers once, in a zygote: an import error ends the start here (exit
        2), reported once, before any child exists. The supervisor itself imports none."""
        become_subreaper()  # the zygote's children (double-forked) become ours
        self.zygotes.launch(HandlerSpec.of(self.config))
        deadline = time.monotonic() + tunables.CHILD_START_TIMEOUT
        while not self.zygotes.await_ready(timeout=0.5):
            self.handle_signals()
            if self.draining:
                return
            if time.monotonic() > deadline:
                raise KongtaskError(
                    f"the handlers did not import within {tunables.CHILD_START_TIMEOUT:.0f}s "
                    "(a hanging import?)"
                )
        self.learn_code_caps(self.config)

    def learn_code_caps(self, config: Config) -> None:
        """The current zygote's report of the caps in code: merged with ``config``'s, logged
        where they disagree, and used from now on (written when the session next writes)."""
        zygote = self.zygotes.current
        if zygote is None:
            return
        self.code_caps = dict(zygote.caps)
        for line in caps_conflicts(config, self.code_caps):
            log.warning("%s", line)
        self.session.want_tasks(self.session.wanted_tasks, self.caps_of(config))
        self.book.capped = frozenset(self.caps_of(config))

    def caps_of(self, config: Config) -> dict[str, Caps]:
        return caps_of(config, self.code_caps)

    def await_children(self) -> None:
        """Wait until every first-generation child said READY; a FATAL ends the start."""
        deadline = time.monotonic() + tunables.CHILD_START_TIMEOUT
        while self.fleet.starting():
            if time.monotonic() > deadline:
                raise KongtaskError(
                    f"children did not start within {tunables.CHILD_START_TIMEOUT:.0f}s "
                    "(slow handler imports or an unreachable database?)"
                )
            self.wait(timeout=tunables.CHILD_START_CHECK_EVERY)
            self.handle_signals()
            if self.draining:
                return
            self.fleet.read()
            for child in self.fleet.children.values():
                if child.fatal:
                    raise self.start_failure(child)
            self.fleet.reap()
            if self.fleet.last_fatal:
                raise TaskImportError(f"a child could not start: {self.fleet.last_fatal}")

    def start_failure(self, child: ChildProcess) -> KongtaskError:
        if child.fatal_kind == FATAL_DATABASE:
            return DatabaseError(f"a child could not connect to the database: {child.fatal}")
        return TaskImportError(f"a child could not start: {child.fatal}")

    def connect(self) -> None:
        """(Re)open the database session; the crontab catches up; claim and beat at once."""
        conn = self.session.connect(self.known_job_ids())
        try:
            if self.cron is not None:
                self.cron.start(conn)
        except BaseException:
            self.session.close()
            raise
        # Rows in hand were read on the session before: they vouch for nothing on this one
        # (a promoted standby may not have those claims).
        self.book.forget_rows()
        self.heartbeat.next_beat = 0.0  # beat (and sweep) at once, before READY=1
        self.book.want_claim = True  # anything queued while we were away is waiting
        self.cancels_due = True  # a cancel made while we were away: its NOTIFY is lost

    def known_job_ids(self) -> list[int]:
        """Every job this supervisor holds: with a child, prefetched, or with an outcome."""
        return self.fleet.job_ids() + self.book.known_ids()

    def forget_in_child(self) -> None:
        """In a fresh fork (after the fleet closed its pipes): let go of the supervisor's fds.

        The database socket is the dangerous one: finalising the inherited psycopg2
        connection would send a Terminate message on the supervisor's session. So the fd is
        closed underneath it and the object is kept alive (by ``self``) and never used; the
        child ends in ``os._exit``, which runs no finalisers.
        """
        if self.session.conn_fd is not None:
            try:
                os.close(self.session.conn_fd)
            except OSError:
                pass
        if self.metrics_server is not None:
            self.metrics_server.forget_in_child()
        self.selector.close()
        # Detach the wake-up fd first: a signal arriving before the child installs its own
        # handlers would otherwise be written to a closed (or reused!) descriptor.
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)

    # ======================================================================================
    # Wait: until something happens or the earliest deadline of any part
    # ======================================================================================
    def wait(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.next_timeout()
        for key, _ in self.selector.select(max(0.0, timeout)):
            if key.data == "signal":
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif key.data == "database":
                self.on_notifications(self.session.poll())
            elif key.data == "zygote":
                self.on_zygote_events(self.zygotes.poll())
            elif key.data is self.metrics_server and self.metrics_server is not None:
                key.data.on_readable(key.fileobj)  # type: ignore[arg-type]
            else:
                self.feed(key.data)

    def feed(self, child: ChildProcess) -> None:
        """Read what a child wrote on its pipe (acted on by ``fleet.read``)."""
        if not child.channel.feed():
            self.selector.unregister(child.channel.fileno())

    def next_timeout(self) -> float:
        """Seconds until the loop must act by itself: 0 while a claim would find work."""
        if self.claim_due() or self.fleet.holding():
            return 0.0
        now = time.monotonic()
        soonest = min(d for d in self.deadlines(now) if d is not None)
        if soonest > now:  # a deadline ahead (an outcome's write delay): wake for it
            return max(tunables.MIN_WAKE_AHEAD, soonest - now)
        return tunables.MIN_POLL_INTERVAL

    def deadlines(self, now: float) -> Iterator[float | None]:
        """Each part's next deadline (None: nothing due). The first is never None."""
        yield self.settle_deadline(now)
        yield self.book.next_deadline()
        yield self.session.next_deadline()
        yield self.fleet.next_deadline()
        yield self.zygotes.next_deadline()
        yield self.drain_deadline
        yield self.housekeeping_deadline()
        yield self.heartbeat.next_deadline() if self.session.connected else None
        if self.cron is not None and self.session.connected and not self.draining:
            yield now + self.cron.seconds_until_due()

    # ======================================================================================
    # Signals
    # ======================================================================================
    def handle_signals(self) -> None:
        while self.signal_queue:
            signum = self.signal_queue.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.draining:
                    self.begin_fast_stop(signal.Signals(signum).name)
                else:
                    self.begin_drain(f"received {signal.Signals(signum).name}")
            elif signum == signal.SIGQUIT:
                self.begin_drain("received SIGQUIT")
                self.begin_fast_stop("SIGQUIT")
            elif signum == signal.SIGTTIN:
                self.resize(+1)
            elif signum == signal.SIGTTOU:
                self.resize(-1)
            elif signum == signal.SIGHUP:
                self.reload_config()
            # SIGCHLD only wakes us; reap() runs every turn.

    def begin_drain(self, why: str) -> None:
        if self.draining:
            return
        self.drain_deadline = time.monotonic() + self.config.shutdown_timeout
        busy = len(self.fleet.busy())
        log.info(
            "%s: draining (%d jobs running, shutdown_timeout %ss)",
            why,
            busy,
            self.config.shutdown_timeout,
        )
        self.notifier.stopping(f"draining: {busy} jobs running")
        self.fleet.drain()
        self.zygotes.stop()  # nothing is forked from here on (nor a lost zygote replaced)

    def begin_fast_stop(self, why: str) -> None:
        if self.fast:
            return
        self.fast = True
        log.warning("%s: fast shutdown, killing running jobs", why)
        self.fleet.kill_all(signal.SIGTERM, f"kongtaskd shut down fast ({why})")

    def resize(self, delta: int) -> None:
        """SIGTTIN / SIGTTOU: one child more or fewer (never fewer than one)."""
        new = max(1, self.config.concurrency + delta)
        if new == self.config.concurrency:
            return
        self.use_config(dataclasses.replace(self.config, concurrency=new))
        log.info("concurrency is now %d", new)
        if delta < 0:  # one more is forked by fleet.spawn_missing()
            self.fleet.retire_one()

    # ======================================================================================
    # Manage: the children, the drain deadline, prefetched jobs
    # ======================================================================================
    def manage(self) -> None:
        now = time.monotonic()
        if self.zygotes.due(now):
            self.on_zygote_events(self.zygotes.poll())
        self.fleet.manage()
        self.roll_children()
        if self.drain_deadline is not None and now >= self.drain_deadline and not self.fast:
            self.begin_fast_stop(f"shutdown_timeout of {self.config.shutdown_timeout:g}s expired")
        expired = self.book.expire(now)
        if expired:
            log.info(
                "returning %d claimed jobs that no child started (%s)",
                expired,
                "no child became free in time",
            )

    def refresh_tasks(self) -> None:
        """Claim only tasks every live child can run (they differ for a moment during a reload)."""
        known = [c.tasks for c in self.fleet.live() if c.tasks is not None]
        wanted = sorted(frozenset.intersection(*known)) if known else sorted(self.config.tasks)
        self.session.want_tasks(wanted, self.caps_of(self.config))
        self.book.capped = frozenset(self.caps_of(self.config))
        self.metrics.know_tasks(frozenset().union(*known))  # also those of task_modules

    # ======================================================================================
    # Dispatch and settle: the job book meets the children and the database
    # ======================================================================================
    def dispatch(self) -> None:
        """Hand prefetched jobs to idle children, best first. No database round trip.

        Each idle child gets one job, or, while jobs are very short, a batch of up to
        ``batch_size()`` (shared out evenly so no child idles while another holds a batch).
        """
        idle = self.fleet.idle()
        if not self.session.connected:  # the session that read the rows in hand is gone
            self.book.forget_rows()
        batches = self.book.deal(len(idle), time.monotonic())
        for child, batch in zip(idle, batches, strict=False):  # may be fewer
            self.fleet.assign(child, batch)

    def claim_size(self) -> int:
        return self.book.claim_size(len(self.fleet.idle()), self.config.concurrency)

    def claim_due(self) -> bool:
        """A claim would find work for someone now: the loop must not sleep."""
        return (
            self.session.connected
            and not self.draining
            and self.book.claim_due(
                len(self.fleet.idle()), self.config.concurrency, time.monotonic()
            )
        )

    def write_due(self, now: float) -> bool:
        """The outcomes in hand go to the database this turn (``JobBook.write_due``): at
        once while draining or when a capped task's slot comes free, else by the book."""
        if self.draining:
            return bool(self.book.outcomes)
        return self.book.write_due(
            now, len(self.fleet.idle()), self.config.concurrency, urgent=self.frees_slot()
        )

    def frees_slot(self) -> bool:
        """Some outcome in hand ends a capped task's job: it frees a slot any daemon may
        take, so it is written at once and the other daemons are told."""
        return bool(self.book.capped) and any(
            self.session.capped(self.book.job_task(job_id)) for job_id in self.book.outcomes.ids()
        )

    def settle_deadline(self, now: float) -> float:
        """When the next settle is due by itself: when the outcomes in hand are due (at once,
        or within ``OUTCOME_WRITE_DELAY`` while every child has work), else a poll."""
        if self.book.outcomes and self.session.connected:
            if self.write_due(now):
                return now
            return self.book.write_deadline() or now
        # --once does not LISTEN: it looks at least every second.
        return now + tunables.ONCE_RECHECK_EVERY if self.once else self.book.next_poll

    def settle(self) -> None:
        """One round trip: write every collected outcome and claim what the children need.

        See ``settle.py``. Claims are sized by the job book (idle children plus a small
        prefetch) so a child that finishes gets its next id without waiting for the
        database. Failed writes stay in the book and are retried next turn.
        """
        if not self.session.connected:
            return
        now = time.monotonic()
        self.book.poll(now, self.config.poll_interval)
        if self.draining:
            self.release_prefetched("draining")
        want = self.claim_size() if self.book.want_claim and not self.draining else 0
        outcomes = self.book.outcomes
        if not outcomes and want == 0:
            return
        if outcomes:
            # Written with the next outcomes while every child has work (the claim rides
            # along with them); at once when someone needs the claim or the write.
            self.book.note_outcomes(now)
            if not self.write_due(now):
                return
        # Rows for every job claimed: those handed out within INLINE_ROW_MAX_AGE go with
        # theirs (jobbook's "Inline rows"), in this turn's dispatch or from the hand.
        # None for pooled children (child_connection): their row load is where a child waits
        # for a server connection, riding out PgBouncer's query_wait_timeout by reconnecting;
        # without it the handler's first query would wait, and a drop would cost an attempt.
        rows = 0 if self.fleet.pooled else want
        claim = Want(
            want,
            self.session.claimable_task_ids,
            self.forbidden_flags,
            rows,
            async_commit=tunables.CLAIM_ASYNC_COMMIT,
        )
        # Tell the other daemons of a freed slot (one extra statement, only then; uncapped
        # tasks pay nothing).
        frees_slot = self.frees_slot()
        since = self.book.outcomes_since
        self.book.take_outcomes()  # those arriving while it is in flight go out next time
        try:
            with self.serving_children():
                result = self.session.settle(outcomes, claim)
        except psycopg2.Error as exc:
            self.book.restore_outcomes(outcomes, since)
            self.unanswered |= outcomes.ids()
            self.session.lost(exc)
            return
        except BaseException:
            self.book.restore_outcomes(outcomes, since)  # stop() writes them
            raise
        if frees_slot:
            self.session.notify_steer("slot")
        if result.wait_until is not None:
            # A rate-limited task's next token: claim then rather than at the next poll.
            delay = max(0.0, result.wait_until.timestamp() - time.time())
            self.book.next_poll = min(self.book.next_poll, now + delay)
        settled = self.book.settled(outcomes, want, result, self.session.task_names, now)
        self.record_settled(settled)
        if self.unanswered:
            self.unanswered -= outcomes.ids()
        if want:
            self.metrics.claimed(settled.claimed)
            # --once ends on an empty claim, but only one that saw every unlock (outcomes
            # read while it was in flight, overlap.py, are not written yet).
            idle_fleet = not self.book.prefetched and not self.fleet.busy()
            quiet = not settled.claimed and not settled.wrote and not self.book.outcomes
            if self.once and quiet and idle_fleet:
                self.begin_drain("no more ready jobs (--once)")
        self.take_notifications()

    def serving_children(self) -> contextlib.AbstractContextManager[None]:
        """While the settle is in flight, a child that finishes is served (``overlap.py``):
        only when some child is running a job, else nobody can finish meanwhile."""
        if tunables.SERVE_CHILDREN_DURING_SETTLE and self.fleet.busy():
            return self.overlap.serving()
        return contextlib.nullcontext()

    def watched_children(self) -> dict[int, Callable[[], None]]:
        """The children's pipes the loop reads, each with its reader (``overlap.py``)."""
        return {
            key.fd: functools.partial(self.feed, key.data)
            for key in self.selector.get_map().values()
            if isinstance(key.data, ChildProcess)
        }

    def serve_children(self) -> None:
        """A child wrote while the settle was in flight: its outcomes into the book (the
        rest of what it said waits for the loop), and jobs in hand to idle children."""
        self.fleet.read(outcomes_only=True)
        # A pause or a cancel that arrived with the statement's answer so far is acted on
        # by the loop first (jobs in hand of a paused task go back, never start).
        if not self.draining and not self.session.steering_pending():
            self.dispatch()

    def record_settled(self, settled: Settled) -> None:
        """Log and count what a round trip wrote."""
        at = time.time()  # the statistics' minute: when the outcomes reached the database
        for task, kind, seconds in settled.finished:
            self.heartbeat.tally.add(task, kind, seconds, at)
        for job, task in settled.failed:
            self.jobs_failed += 1
            if job.permanent:
                log.error("job %d failed permanently after %d attempts", job.id, job.attempts)
            else:
                self.metrics.job_retried(task)
                log.info("job %d will be retried at %s", job.id, job.run_at.isoformat())
        rewritten = [job for job in settled.lost if job in self.unanswered]
        swept = [job for job in settled.lost if job not in self.unanswered]
        if rewritten:
            log.info(
                "jobs %s were no longer held by this pool when their outcome was written "
                "again after a lost answer (most likely the lost round trip had written it)",
                rewritten,
            )
        if swept:
            log.warning("jobs %s were no longer held by this pool; outcome dropped", swept)

    def release_prefetched(self, why: str) -> None:
        """Give back jobs claimed but not started (attempt refunded on the next settle)."""
        count = self.book.release_prefetched()
        if count:
            log.info("returning %d claimed jobs that no child started (%s)", count, why)

    # ======================================================================================
    # Notifications and cron
    # ======================================================================================
    def take_notifications(self) -> None:
        self.on_notifications(self.session.notifications())

    def on_notifications(self, notes: list[Notify]) -> None:
        for note in notes:
            if note.channel == JOBS_INSERT:
                self.book.want_claim = True
                self.metrics.notified()
            elif note.channel == STEER:
                self.book.want_claim = True
                if note.payload == "pause":
                    # Jobs in hand were claimed before the pause: none may start after it.
                    self.release_prefetched("a pause was committed")
            elif note.channel == WORKER_MIGRATE:
                self.on_migrate_notice(note.payload)
            elif note.channel == JOBS_CANCEL and note.payload == self.pool_id:
                self.cancels_due = True

    def on_migrate_notice(self, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if data.get("breaking"):
            log.error(
                "another process applied breaking migration %s; draining and exiting",
                data.get("migrationNumber"),
            )
            self.exit_code = ExitCode.SCHEMA_TOO_NEW
            self.begin_drain("breaking schema migration")

    def run_cron(self) -> None:
        """Schedule the cron ticks that are due (a few quick statements at most)."""
        conn = self.session.conn
        if self.cron is None or conn is None or self.draining:
            return
        if time.time() < self.cron.next_due():
            return
        try:
            added = self.cron.run_due(conn)
        except psycopg2.Error as exc:
            self.session.lost(exc)
            return
        if added:
            self.book.want_claim = True
        self.take_notifications()

    # ======================================================================================
    # Tick: reconnect, heartbeat, systemd, process title, metrics
    # ======================================================================================
    def tick(self) -> None:
        """Housekeeping after each turn: reconnect, heartbeat, systemd, process title."""
        self.maybe_reconnect()
        now = time.monotonic()
        if self.heartbeat.due(now):
            self.beat()
        if self.cancels_due:
            self.apply_cancels()
        busy = len(self.fleet.busy())
        self.metrics.set_children(busy, len(self.fleet.idle()))
        if self.metrics_server is not None:
            self.metrics_server.expire()
        title = f"kongtaskd: supervisor [{self.pool_id}] [{busy}/{self.config.concurrency} busy]"
        if title != self.title:
            self.title = title
            setproctitle(title)
        if now >= self.next_status:
            status = self.status_line()
            if status != self.status_sent:
                self.notifier.status(status)
                self.status_sent = status
            self.next_status = now + tunables.STATUS_EVERY
        # Tied to loop progress on purpose: a stuck loop must starve the watchdog.
        if self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_interval
        if self.draining and self.drain_deadline is not None and now >= self.next_extend:
            # Ask systemd for the rest of the drain plus the kill grace, so a shutdown_timeout
            # longer than the unit's TimeoutStopSec is honoured.
            left = max(0.0, self.drain_deadline - now) + tunables.CHILD_KILL_GRACE
            left += tunables.EXTEND_TIMEOUT_MARGIN
            self.notifier.extend_timeout(left)
            self.next_extend = now + tunables.EXTEND_TIMEOUT_EVERY

    def housekeeping_deadline(self) -> float | None:
        """systemd's watchdog, and while draining its stop-timeout extension."""
        deadlines = []
        if self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        if self.draining:
            deadlines.append(self.next_extend)
        return min(deadlines, default=None)

    def maybe_reconnect(self) -> None:
        if not self.session.reconnect_due():
            return
        try:
            self.connect()
        except (KongtaskError, psycopg2.Error) as exc:
            self.session.reconnect_failed(exc)
            return
        self.session.reconnected()
        self.metrics.reconnected()

    def beat(self) -> None:
        queries = self.session.queries
        if queries is None:
            return
        try:
            # Re-registering is one cheap query; it heals a `cleanup --tasks` that deleted
            # (and so renumbered) a task row under a running daemon.
            self.session.register_tasks()
            self.heartbeat.beat(
                queries,
                concurrency=self.config.concurrency,
                busy=len(self.fleet.busy()),
                jobs_done=self.fleet.jobs_done,
                children=self.fleet.children.values(),
                config=self.config,
                cron=self.cron,
            )
        except psycopg2.Error as exc:
            self.session.lost(exc)
        else:
            self.cancels_due = True  # the backstop of a lost NOTIFY, and of --once
            self.take_notifications()

    def apply_cancels(self) -> None:
        """Act on the cancels of jobs this pool holds (sql/pending_cancels.sql): a child's
        job is interrupted (``fleet.cancel``); a prefetched one is failed with the cancel
        message at the next settle, never started. Jobs whose outcome is already in the book
        need nothing: the trigger of kongtaskd migration 7 fails them when it is written."""
        if not self.session.connected:
            return
        try:
            pending = self.session.pending_cancels()
        except psycopg2.Error as exc:
            self.session.lost(exc)
            return
        self.cancels_due = False
        for job_id, message in pending:
            if self.fleet.cancel(job_id, message, self.config.cancel_grace):
                continue
            for job in list(self.book.prefetched):
                if job.id == job_id:
                    self.book.prefetched.remove(job)
                    self.book.failed(job_id, job.task, message)
                    log.warning("job %d (%s), claimed, not started: %s", job_id, job.task, message)
        self.take_notifications()

    def refresh_queue_depth(self) -> None:
        """Called by a scrape: re-count jobs by state, at most every METRICS_QUEUE_DEPTH_EVERY."""
        now = time.monotonic()
        queries = self.session.queries
        if queries is None or now < self.queue_depth_at:
            return
        self.queue_depth_at = now + tunables.METRICS_QUEUE_DEPTH_EVERY
        try:
            ((ready, scheduled, locked),) = queries.fetchall("queue_depth")
        except psycopg2.Error as exc:
            self.session.lost(exc)
            return
        self.metrics.set_queue_depth(ready, scheduled, locked)

    def status_line(self) -> str:
        children = self.fleet.children.values()
        busy = sum(1 for c in children if c.state == BUSY)
        idle = sum(1 for c in children if c.state == IDLE)
        return (
            f"{busy} busy, {idle} idle; {self.fleet.jobs_done} jobs done, {self.jobs_failed} failed"
        )

    # ======================================================================================
    # Reload (SIGHUP): everything about replacing the configuration lives here
    # ======================================================================================
    def reload_config(self) -> None:
        """SIGHUP: read the configuration again and import its handlers in a new zygote.

        Nothing is replaced yet: only when that zygote reports that every handler imported
        (``on_zygote_events``) is the configuration applied and are the children replaced
        one by one. If it cannot import them, the reload is refused and every child keeps
        running; so do the replacements of children that leave later (they fork from the
        last good zygote). The loop never waits for an import.
        """
        if self.reload is None:
            log.warning("SIGHUP: there is no configuration file to read again")
            return
        if self.draining:  # nothing left to reload: the children only finish their jobs
            log.warning("SIGHUP: ignored, kongtaskd is draining")
            return
        self.notifier.reloading(time.monotonic_ns() // 1000)
        try:
            fresh = self.reload()
            cron_items = crontab_of(fresh, self.once)
        except KongtaskError as exc:
            self.reload_refused(exc.message)
            return
        if (fresh.dsn, fresh.child_dsn, fresh.schema) != (
            self.dsn,
            self.child_dsn,
            self.schema,
        ):
            log.warning(
                "SIGHUP: connection, child_connection and schema changes take effect only "
                "after a restart"
            )
        self.pending = (fresh, cron_items)
        self.zygotes.propose(HandlerSpec.of(fresh))
        log.info("SIGHUP: configuration read again; importing its handlers before any change")

    def reload_refused(self, why: str) -> None:
        """Keep everything as it is, and say so: log, heartbeat row (``status``), systemd."""
        log.error("reload refused: %s; every child keeps running the previous configuration", why)
        self.heartbeat.reloaded(why)
        self.notify_ready()

    def on_zygote_events(self, events: list[Event]) -> None:
        """What the zygotes reported: a reload's import result, a lost or restored zygote."""
        for event in events:
            if event.kind == RELOAD_READY and self.pending is not None and not self.draining:
                fresh, cron_items = self.pending
                self.pending = None
                self.apply_config(fresh)
                self.replace_cron(cron_items, fresh.timezone)
                log.info("SIGHUP: the new handlers imported; replacing children one by one")
            elif event.kind == RELOAD_FAILED:
                self.pending = None
                self.reload_refused(f"the handlers cannot be imported: {event.error}")
            elif event.kind == LOST:
                log.warning("%s; starting a new one (children keep running)", event.error)
            elif event.kind == RESTORED:
                log.info("a new zygote is ready; children can be replaced again")
                self.heartbeat.set_degraded(None)
                # It imported the code on disk now: its children run the caps it reports.
                self.learn_code_caps(self.config)
            elif event.kind == DEGRADED:
                log.error(
                    "degraded: %s; %d children keep running, retrying",
                    event.error,
                    len(self.fleet.live()),
                )
                self.heartbeat.set_degraded(event.error)

    def watch_zygote(self, fd: int) -> None:
        self.selector.register(fd, selectors.EVENT_READ, "zygote")

    def unwatch_zygote(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def on_other_exit(self, pid: int, status: int) -> None:
        """``waitpid`` found a process that is not a child: a zygote, or an orphan of a
        handler's that was handed to us (a subreaper) and needs nothing but reaping."""
        if self.zygotes.exited(pid, status):
            self.on_zygote_events(self.zygotes.poll())

    def use_config(self, config: Config) -> None:
        """``config`` is current for the supervisor and its fleet."""
        self.config = config
        self.fleet.config = config

    def apply_config(self, config: Config) -> None:
        """Make ``config`` current; children of older generations are then replaced."""
        self.use_config(config)
        self.metrics.know_tasks(config.tasks)
        # Caps are written now, whether or not the tasks changed ("no cap" lifts one); the
        # new zygote (current since its RELOAD_READY) reports the caps in the new code.
        self.learn_code_caps(config)
        self.forbidden_flags = list(config.forbidden_flags) or None
        self.heartbeat.interval = config.heartbeat_interval
        self.heartbeat.stale_after = config.stale_after
        self.heartbeat.stats_retention = config.stats_retention
        self.heartbeat.keep_completed = config.keep_completed
        self.session.keep_completed = config.keep_completed is not None
        setup_logging(config.log.level, config.log.format)
        self.fleet.generation += 1
        self.reloading = True

    def replace_cron(self, items: list[CronItem], timezone: str) -> None:
        """A reload's crontab: the scheduler keeps its place in time across the change."""
        if not items:
            self.cron = None
            return
        if self.cron is None:
            from kongtaskd.cron import CronScheduler

            self.cron = CronScheduler(items, schema=self.schema, timezone=timezone)
        else:
            self.cron.reconfigure(items, timezone=timezone)
        conn = self.session.conn
        if conn is not None:
            try:
                self.cron.start(conn)
            except psycopg2.Error as exc:
                self.session.lost(exc)

    def on_child_fatal(self, child: ChildProcess) -> bool:
        """A child could not import its handlers. Children fork from a zygote that has
        imported them already, so this is a real fault (counted towards a crash loop), never
        a reload's: a reload whose handlers do not import is refused before any spawn."""
        return False

    def roll_children(self) -> None:
        """After a reload: a new child comes up before each old one leaves; no job is cut."""
        if not self.reloading or self.draining:
            return  # a drain ends every child anyway: no roll, no "complete", no READY
        fleet = self.fleet
        old = [c for c in fleet.live() if c.generation < fleet.generation]
        if not old:
            if any(c.generation < fleet.generation for c in fleet.children.values()):
                return  # the last old children are on their way out
            self.reloading = False
            log.info("reload complete: all children run the new configuration")
            self.heartbeat.reloaded(None)
            self.notify_ready()
            return
        if fleet.starting():
            return  # wait until the replacement is up
        if any(c.retire_when_done for c in old):
            return  # wait until the old child finishes its job
        if len(fleet.live()) > self.config.concurrency:
            fleet.retire_one()
        elif not self.draining:
            fleet.spawn()

    # ======================================================================================
    # Stop
    # ======================================================================================
    def stop(self) -> None:
        """Whatever happened: children gone, every outcome written (or logged), connection shut."""
        if self.fleet:
            self.begin_drain("exiting")
            self.fleet.kill_all(signal.SIGTERM, "kongtaskd is exiting")
            self.fleet.reap_all(timeout=tunables.CHILD_KILL_GRACE)
        self.stop_zygotes()
        self.final_flush()
        queries = self.session.queries
        if queries is not None:
            try:  # the last turns' counts; the heartbeat row may stay (below), they may not
                self.heartbeat.write_stats(queries)
            except psycopg2.Error as exc:
                log.warning("could not write the last statistics: %s", exc)
        if queries is not None and not self.book.outcomes:
            # Holding nothing any more: remove the heartbeat row. (With outcomes still
            # unwritten it stays, so other daemons' sweeps recover those jobs soon.)
            try:
                self.heartbeat.forget(queries)
            except psycopg2.Error as exc:
                log.warning("could not remove this pool's heartbeat row: %s", exc)
        self.session.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        signal.set_wakeup_fd(-1)
        log.info("kongtaskd supervisor stopped (%d jobs done)", self.fleet.jobs_done)

    def stop_zygotes(self) -> None:
        """The zygotes hold nothing worth a clean exit: SIGKILL, and reap them."""
        pids = self.zygotes.pids()
        self.zygotes.stop()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def final_flush(self) -> None:
        """Write what is left (outcomes, unstarted claims), retrying while the database is away."""
        self.fleet.draining = True  # no claims from here on, even when no drain was begun
        self.release_prefetched("exiting")
        deadline = time.monotonic() + tunables.FINAL_FLUSH_DEADLINE
        while self.book.outcomes and time.monotonic() < deadline:
            if not self.session.connected:
                self.session.reconnect_now()
                self.maybe_reconnect()
            self.settle()
            if self.book.outcomes:
                time.sleep(min(tunables.FINAL_FLUSH_RETRY_MAX, self.session.reconnect_delay))
        outcomes = self.book.outcomes
        for job_id in outcomes.completed:
            log.error("could not record success of job %d: the database is unreachable", job_id)
        for job_id, text in outcomes.failed.items():
            log.error("could not record failure of job %d: %s", job_id, text.splitlines()[0])
        for job_id in outcomes.released:
            log.error("could not hand back unstarted job %d", job_id)


def run(config: Config, *, once: bool = False, reload: Callable[[], Config] | None = None) -> int:
    """Run the daemon until it is told to stop; return the process exit code.

    ``reload`` reads the configuration again (SIGHUP); without it SIGHUP is ignored.
    """
    return Supervisor(config, once=once, reload=reload).run()
