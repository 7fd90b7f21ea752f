"""The supervisor: one process that owns the database side and a fleet of forked children.

The loop, top to bottom (``Supervisor.run``)::

    start            migrate, fork children, wait for their READY, connect, LISTEN
    loop:
      wait             sleep until a child writes, a NOTIFY lands, a signal or a timer fires
      handle_signals   act on what the signal handlers recorded (they only record)
      read_children    take DONE / FAILED / READY / BYE messages off the children's pipes
      reap             waitpid: a dead child's job fails with how it died
      manage_children  respawn; SIGTERM, then SIGKILL, a job past its timeout; drain deadline
      dispatch         hand prefetched job ids to idle children (no database wait)
      settle           ONE round trip: write the collected outcomes, claim more jobs
      dispatch         hand out what was just claimed
      run_cron         add the jobs of cron ticks that are due (exactly once across the fleet)
      tick             heartbeat and sweeps, sd_notify, process title, reconnect when due
    stop             children gone, remaining outcomes written (retried), connection closed

Where outcomes are written: here, in batches, not in the children. A child reports an
outcome over its pipe (no database round trip in the child after the job), and the
supervisor writes everything it collected during one loop turn together with its next
claim, in one statement (``sql/settle.sql``): one round trip and one commit per turn,
however many jobs finished. Under load a turn carries many outcomes; when idle it carries
one and nothing waits (the write happens in the turn the outcome arrives). The cost is a
window in which a completion exists only in the supervisor's memory: if the supervisor is
SIGKILLed inside it, the job stays locked by this pool, and another daemon's heartbeat
sweep fails it and it runs again (at-least-once, as always). Shutdown writes everything
before it exits, retrying for ``FINAL_FLUSH_DEADLINE`` seconds.

Claims are sized to the idle children plus, only while jobs are short, a prefetch, so a
child that finishes gets its next ids at once. A claimed job never waits for a child while
another is idle (idle children are served first, best jobs first, shared out evenly), and a
prefetched job that waits longer than ``PREFETCH_MAX_WAIT`` is handed back. While jobs take
well under a couple of milliseconds, a child is handed a small batch of ids (about
``BATCH_TARGET_SECONDS`` of work): one pipe write, one row-load round trip in the child, and
a claim per turn that feeds every child at once. That is what takes no-op throughput from
about 3,000 to about 15,000 jobs/s on two cores (perf/results/). A batch never outlives a
drain: the child hands back the ids it has not started when told to stop.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import random
import secrets
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg2
from psycopg2 import extensions
from setproctitle import setproctitle

from kongtaskd import protocol, tunables
from kongtaskd.child import EXIT_FATAL, ChildSettings, child_main
from kongtaskd.config import Config
from kongtaskd.errors import DatabaseError, ExitCode, KongtaskError, TaskImportError
from kongtaskd.heartbeat import Heartbeat
from kongtaskd.logs import setup_logging
from kongtaskd.metrics import MetricsServer, NullMetrics
from kongtaskd.notify import Notifier
from kongtaskd.queries import Queries
from kongtaskd.schema.check import require_current_schema

if TYPE_CHECKING:
    from kongtaskd.cron import CronItem, CronScheduler

log = logging.getLogger("kongtaskd.supervisor")

# Child states.
STARTING, IDLE, BUSY, RETIRING = "starting", "idle", "busy", "retiring"

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


@dataclass
class ChildProcess:
    """The supervisor's view of one child."""

    index: int
    pid: int
    channel: protocol.Channel
    born: float
    state: str = STARTING
    #: Jobs handed to this child as (id, task), in order: the first is running, the rest
    #: (a batch of short jobs) wait their turn inside the child.
    jobs: collections.deque[tuple[int, str]] = field(default_factory=collections.deque)
    #: When the running job started (for a batch: when the previous one ended).
    job_started: float = 0.0
    deadline: float | None = None
    #: Why we sent SIGTERM (timeout, shutdown); prefixed to the job's last_error.
    kill_reason: str = ""
    kill_at: float | None = None
    fatal: str = ""
    fatal_kind: str = ""
    jobs_done: int = 0
    #: Bumped by each SIGHUP; children of an older generation are replaced one by one.
    generation: int = 0
    #: Exit after the current job (a reload or SIGTTOU found no idle child to stop).
    retire_when_done: bool = False
    #: Task identifiers the child can run (from its READY), None until then.
    tasks: frozenset[str] | None = None
    #: It left by itself after max_jobs_per_child / max_memory_per_child.
    recycled: bool = False

    @property
    def job_id(self) -> int | None:
        """The job running now, if any."""
        return self.jobs[0][0] if self.jobs else None

    @property
    def task(self) -> str:
        return self.jobs[0][1] if self.jobs else ""


@dataclass(frozen=True, slots=True)
class PrefetchedJob:
    """A job claimed for this pool that no child has started yet."""

    id: int
    task: str
    priority: int
    run_at: object
    claimed_at: float


@dataclass
class Outcomes:
    """Outcomes reported by children and not yet written to the database."""

    completed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    released: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed or self.released)


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


class Supervisor:
    def __init__(
        self, config: Config, *, once: bool = False, reload: Callable[[], Config] | None = None
    ) -> None:
        self.config = config
        self.reload = reload
        # Where the database is cannot change under a running daemon (its locks carry
        # this pool's id on that database): a reload that changes it is refused.
        self.dsn = config.dsn
        self.schema = config.schema
        self.once = once
        self.pool_id = new_pool_id(once)
        self.heartbeat = Heartbeat(self.pool_id, config.heartbeat_interval, config.stale_after)
        self.notifier = Notifier()
        self.generation = 0
        self.reloading = False
        self.previous_config: Config | None = None
        self.next_extend = 0.0
        self.next_status = 0.0
        self.status_sent = ""
        self.children: dict[int, ChildProcess] = {}  # by pid
        self.selector = selectors.DefaultSelector()
        self.signal_queue: collections.deque[int] = collections.deque()
        self.wake_r, self.wake_w = os.pipe()
        self.conn: extensions.connection | None = None
        self.conn_fd: int | None = None
        # Parsed before any fork, so a bad crontab stops the start (exit 2).
        self.cron: CronScheduler | None = None
        self.replace_cron(crontab_of(config, once), config.timezone)
        self.metrics: NullMetrics = NullMetrics()
        if config.metrics:
            from kongtaskd.metrics import Metrics  # imports prometheus_client

            self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self.queue_depth_at = 0.0
        #: Task of every job between its claim and the write of its outcome (for metrics).
        self.job_tasks: dict[int, str] = {}
        self.queries: Queries | None = None
        self.outcomes = Outcomes()
        self.wanted_tasks: list[str] = sorted(config.tasks)
        self.task_ids: dict[str, int] = {}
        self.task_names: dict[int, str] = {}
        self.claimable_task_ids: list[int] = []
        self.forbidden_flags = list(config.forbidden_flags) or None
        self.prefetched: collections.deque[PrefetchedJob] = collections.deque()
        self.average_job_seconds: float | None = None
        #: The same per task: batches are cut at a task that is slow or not yet measured.
        self.task_seconds: dict[str, float] = {}
        self.want_claim = True
        self.next_poll = 0.0
        self.draining = False
        self.drain_deadline: float | None = None
        self.fast = False
        self.exit_code = ExitCode.OK
        self.reconnect_at = 0.0
        self.reconnect_delay = tunables.RECONNECT_BACKOFF_FIRST
        self.respawn_at = 0.0
        self.respawn_delay = tunables.RESPAWN_BACKOFF_FIRST
        self.rapid_deaths = 0
        self.last_fatal = ""
        self.next_index = 0
        self.jobs_done = 0
        self.jobs_failed = 0
        self.title = ""
        self.next_watchdog = 0.0

    # ======================================================================================
    # The loop
    # ======================================================================================
    def run(self) -> int:
        try:
            self.start()
            while not self.finished():
                self.wait()
                self.handle_signals()
                self.read_children()
                self.reap()
                self.manage_children()
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
        return self.draining and not self.children

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
        if self.config.metrics is not None:
            self.metrics_server = MetricsServer(
                self.metrics,
                self.config.metrics.host,
                self.config.metrics.port,
                self.selector,
                self.refresh_queue_depth,
            )
        for _ in range(self.config.concurrency):
            self.spawn()
        self.await_children()
        self.connect()
        self.beat()
        self.notifier.ready(self.status_line())
        log.info(
            "ready: %d children, tasks %s%s",
            len(self.children),
            ", ".join(self.wanted_tasks),
            "" if self.once else f"; listening, polling every {self.config.poll_interval}s",
        )

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

    def await_children(self) -> None:
        """Wait until every first-generation child said READY; a FATAL ends the start."""
        deadline = time.monotonic() + tunables.CHILD_START_TIMEOUT
        while any(c.state == STARTING for c in self.children.values()):
            if time.monotonic() > deadline:
                raise KongtaskError(
                    f"children did not start within {tunables.CHILD_START_TIMEOUT:.0f}s "
                    "(slow handler imports or an unreachable database?)"
                )
            self.wait(timeout=0.5)
            self.handle_signals()
            if self.draining:
                return
            self.read_children()
            for child in self.children.values():
                if child.fatal:
                    raise self.start_failure(child)
            self.reap()
            if self.last_fatal:
                raise TaskImportError(f"a child could not start: {self.last_fatal}")

    def start_failure(self, child: ChildProcess) -> KongtaskError:
        if child.fatal_kind == protocol.FATAL_DATABASE:
            return DatabaseError(f"a child could not connect to the database: {child.fatal}")
        return TaskImportError(f"a child could not start: {child.fatal}")

    def connect(self) -> None:
        """(Re)open the supervisor's connection: PREPARE, register tasks, LISTEN."""
        from kongtaskd.dsn import connect

        conn = connect(self.dsn, application_name="kongtaskd supervisor", autocommit=True)
        try:
            with conn.cursor() as cur:
                # The claim's array parameters make the planner re-plan it on every call
                # (custom plans); the generic plan is as good and halves the round trip.
                cur.execute("SET plan_cache_mode = force_generic_plan")
            names = (
                "settle",
                "register_tasks",
                "heartbeat",
                "sweep",
                "sweep_expired",
                "forget_pool",
                "release_unknown",
                "queue_depth",
            )
            queries = Queries(conn, self.schema, names=names)
            self.conn, self.queries = conn, queries
            self.conn_fd = conn.fileno()  # kept: a broken connection cannot tell it any more
            self.register_tasks()
            self.release_unknown()
            if self.cron is not None:
                self.cron.start(conn)
            self.heartbeat.next_beat = 0.0  # beat (and sweep) at once, before READY=1
            if not self.once:
                with conn.cursor() as cur:
                    cur.execute('LISTEN "jobs:insert"; LISTEN "worker:migrate"')
                self.selector.register(conn.fileno(), selectors.EVENT_READ, "database")
        except BaseException:
            self.conn = self.queries = None
            conn.close()
            raise
        self.want_claim = True  # anything queued while we were away is waiting

    def release_unknown(self) -> None:
        """Hand back jobs locked by this pool that we do not know of (a claim's lost answer)."""
        assert self.queries is not None
        known = [job_id for c in self.children.values() for job_id, _ in c.jobs]
        known += [job.id for job in self.prefetched]
        known += self.outcomes.completed + list(self.outcomes.failed) + self.outcomes.released
        rows = self.queries.fetchall("release_unknown", self.pool_id, known)
        if rows:
            log.warning("handed back %d jobs claimed for this pool but never started", len(rows))

    def refresh_tasks(self) -> None:
        """Claim only tasks every live child can run (they differ for a moment during a reload)."""
        known = [c.tasks for c in self.live_children() if c.tasks is not None]
        wanted = sorted(frozenset.intersection(*known)) if known else sorted(self.config.tasks)
        if wanted != self.wanted_tasks:
            self.wanted_tasks = wanted
            if self.queries is not None:
                try:
                    self.register_tasks()
                except psycopg2.Error as exc:
                    self.connection_lost(exc)

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

    # ======================================================================================
    # Wait and signals
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
                self.read_notifications()
            elif key.data is self.metrics_server and self.metrics_server is not None:
                key.data.on_readable(key.fileobj)  # type: ignore[arg-type]
            else:
                child: ChildProcess = key.data
                if not child.channel.feed():
                    self.selector.unregister(child.channel.fileno())

    def next_timeout(self) -> float:
        """Seconds until the next thing the loop must do by itself (0 = go on at once)."""
        now = time.monotonic()
        if self.conn is not None and not self.draining and self.want_claim and self.claim_size():
            return 0.0
        deadlines = [self.next_poll if not self.once else now + 1.0]
        if self.prefetched:
            deadlines.append(self.prefetched[0].claimed_at + tunables.PREFETCH_MAX_WAIT)
        if self.conn is None:
            deadlines.append(self.reconnect_at)
        if self.drain_deadline is not None:
            deadlines.append(self.drain_deadline)
        if len(self.children) < self.config.concurrency and not self.draining:
            deadlines.append(self.respawn_at)
        if self.outcomes:
            deadlines.append(self.reconnect_at)
        for child in self.children.values():
            if child.deadline is not None and not child.kill_reason:
                deadlines.append(child.deadline)
            if child.kill_at is not None:
                deadlines.append(child.kill_at)
        if self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        if self.conn is not None:
            deadlines.append(self.heartbeat.next_beat)
        if self.draining:
            deadlines.append(self.next_extend)
        if self.cron is not None and self.conn is not None and not self.draining:
            deadlines.append(now + self.cron.seconds_until_due())
        return max(tunables.MIN_POLL_INTERVAL, min(deadlines) - now) if deadlines else 1.0

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

    def resize(self, delta: int) -> None:
        """SIGTTIN / SIGTTOU: one child more or fewer (never fewer than one)."""
        new = max(1, self.config.concurrency + delta)
        if new == self.config.concurrency:
            return
        self.config = dataclasses.replace(self.config, concurrency=new)
        log.info("concurrency is now %d", new)
        if delta < 0:  # one more is forked by spawn_missing()
            self.retire_one()

    def retire_one(self) -> None:
        """One child fewer: an idle one now, else the first busy one once its job is done."""
        candidates = [c for c in self.live_children() if not c.retire_when_done]
        if not candidates:
            return
        # Prefer the old generation (a reload is replacing it anyway), then idle, then newest.
        victim = min(
            candidates, key=lambda c: (c.generation, c.state not in (IDLE, STARTING), -c.index)
        )
        if victim.state in (IDLE, STARTING):
            self.retire(victim)
        else:
            victim.retire_when_done = True

    def reload_config(self) -> None:
        """SIGHUP: read the configuration again; if valid, replace the children one by one."""
        if self.reload is None:
            log.warning("SIGHUP: there is no configuration file to read again")
            return
        self.notifier.reloading(time.monotonic_ns() // 1000)
        try:
            fresh = self.reload()
            cron_items = crontab_of(fresh, self.once)
        except KongtaskError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc.message)
            self.notifier.ready(self.status_line())
            return
        if (fresh.dsn, fresh.schema) != (self.dsn, self.schema):
            log.warning("SIGHUP: connection and schema changes take effect only after a restart")
        self.previous_config = self.config
        self.apply_config(fresh)
        self.replace_cron(cron_items, fresh.timezone)
        log.info("SIGHUP: configuration read again; replacing children one by one")

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
        if self.conn is not None:
            try:
                self.cron.start(self.conn)
            except psycopg2.Error as exc:
                self.connection_lost(exc)

    def apply_config(self, config: Config) -> None:
        """Make ``config`` current; children of older generations are then replaced."""
        self.config = config
        self.forbidden_flags = list(config.forbidden_flags) or None
        self.heartbeat.interval = config.heartbeat_interval
        self.heartbeat.stale_after = config.stale_after
        setup_logging(config.log.level, config.log.format)
        self.generation += 1
        self.reloading = True

    def abort_reload(self, child: ChildProcess) -> None:
        """A child of the new configuration cannot import its handlers: go back to the old one."""
        assert self.previous_config is not None
        log.error(
            "SIGHUP: the new configuration's handlers cannot be imported (%s); "
            "going back to the previous configuration",
            child.fatal,
        )
        previous, self.previous_config = self.previous_config, None
        self.apply_config(previous)
        try:
            self.replace_cron(crontab_of(previous, self.once), previous.timezone)
        except KongtaskError as exc:  # its crontab file changed since: keep the current one
            log.error("SIGHUP: keeping the current crontab: %s", exc.message)

    def roll_children(self) -> None:
        """After a reload: a new child comes up before each old one leaves; no job is cut."""
        if not self.reloading:
            return
        old = [c for c in self.live_children() if c.generation < self.generation]
        if not old:
            if any(c.generation < self.generation for c in self.children.values()):
                return  # the last old children are on their way out
            self.reloading = False
            self.previous_config = None
            log.info("reload complete: all children run the new configuration")
            self.notifier.ready(self.status_line())
            return
        if any(c.state == STARTING for c in self.children.values()):
            return  # wait until the replacement is up
        if any(c.retire_when_done for c in old):
            return  # wait until the old child finishes its job
        if len(self.live_children()) > self.config.concurrency:
            self.retire_one()
        elif not self.draining:
            self.spawn()

    def retire(self, child: ChildProcess) -> None:
        """Tell an idle child to exit."""
        self.send(child, protocol.encode_stop())
        child.state = RETIRING

    def begin_drain(self, why: str) -> None:
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.config.shutdown_timeout
        busy = sum(1 for c in self.children.values() if c.state == BUSY)
        log.info(
            "%s: draining (%d jobs running, shutdown_timeout %ss)",
            why,
            busy,
            self.config.shutdown_timeout,
        )
        self.notifier.stopping(f"draining: {busy} jobs running")
        for child in list(self.children.values()):
            if child.state in (IDLE, STARTING):
                self.retire(child)
            elif len(child.jobs) > 1:  # mid-batch: it hands back what it has not started
                self.send(child, protocol.encode_stop())

    def begin_fast_stop(self, why: str) -> None:
        if self.fast:
            return
        self.fast = True
        log.warning("%s: fast shutdown, killing running jobs", why)
        self.kill_children(signal.SIGTERM, f"kongtaskd shut down fast ({why})")

    # ======================================================================================
    # Children: spawn, read, reap, kill
    # ======================================================================================
    def spawn(self) -> ChildProcess:
        index = self.next_index
        self.next_index += 1
        parent_end, child_end = protocol.channel_pair()
        settings = self.child_settings(index)
        pid = os.fork()
        if pid == 0:  # ---- in the child: drop the supervisor's things, never return ----
            try:
                parent_end.sock.close()
                self.forget_in_child()
                child_main(settings, child_end)
            finally:
                os._exit(EXIT_FATAL)
        child_end.close()
        parent_end.sock.setblocking(False)
        child = ChildProcess(
            index=index,
            pid=pid,
            channel=parent_end,
            born=time.monotonic(),
            generation=self.generation,
        )
        self.children[pid] = child
        self.selector.register(parent_end.fileno(), selectors.EVENT_READ, child)
        log.info("child %d started (pid %d)", index, pid)
        return child

    def child_settings(self, index: int) -> ChildSettings:
        max_jobs = self.config.max_jobs_per_child
        if max_jobs is not None:
            max_jobs += int(max_jobs * tunables.RECYCLE_JITTER * random.random())
        return ChildSettings(
            index=index,
            pool_id=self.pool_id,
            dsn=self.dsn,
            schema=self.schema,
            tasks={name: spec.handler for name, spec in self.config.tasks.items()},
            task_modules=tuple(self.config.task_modules),
            python_path=tuple(str(p) for p in self.config.python_path),
            max_jobs=max_jobs,
            max_memory_mib=self.config.max_memory_per_child,
        )

    def forget_in_child(self) -> None:
        """In a fresh fork: let go of every fd the supervisor owns, without using them.

        The database socket is the dangerous one: finalising the inherited psycopg2
        connection would send a Terminate message on the supervisor's session. So the fd is
        closed underneath it and the object is kept alive (by ``self``) and never used; the
        child ends in ``os._exit``, which runs no finalisers.
        """
        if self.conn_fd is not None:
            try:
                os.close(self.conn_fd)
            except OSError:
                pass
        for other in self.children.values():
            os.close(other.channel.sock.detach())
        if self.metrics_server is not None:
            self.metrics_server.forget_in_child()
        self.selector.close()
        # Detach the wake-up fd first: a signal arriving before the child installs its own
        # handlers would otherwise be written to a closed (or reused!) descriptor.
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def read_children(self) -> None:
        for child in list(self.children.values()):
            try:
                for message in child.channel.messages():
                    self.on_message(child, message)
            except protocol.ProtocolError as exc:
                # Something else wrote on its pipe: it can no longer be trusted. The reaper
                # fails its job like any other death.
                log.error("child %d sent garbage (%s); killing it", child.index, exc)
                child.kill_reason = child.kill_reason or f"child {child.index} broke protocol"
                self.signal_child(child, signal.SIGKILL)

    def on_message(self, child: ChildProcess, message: protocol.Message) -> None:
        kind = message.kind
        if kind is protocol.Kind.DONE:
            self.outcomes.completed.append(message.job_id)
            self.metrics.job_succeeded(child.task, message.seconds)
            self.job_finished(child, message.job_id, message.seconds)
        elif kind is protocol.Kind.FAILED:
            text = message.text
            if child.kill_reason:
                text = f"{child.kill_reason}; {text}"
            self.outcomes.failed[message.job_id] = text
            self.metrics.job_failed(child.task, message.seconds)
            self.job_finished(child, message.job_id, message.seconds)
        elif kind is protocol.Kind.SKIPPED:
            log.warning("job %d skipped by child %d: %s", message.job_id, child.index, message.text)
            self.job_tasks.pop(message.job_id, None)
            self.job_finished(child, message.job_id)
        elif kind is protocol.Kind.READY:
            if child.state == STARTING:
                child.state = IDLE
            self.respawn_delay = tunables.RESPAWN_BACKOFF_FIRST
            self.rapid_deaths = 0
            child.tasks = frozenset(message.data.get("tasks", []))
            self.refresh_tasks()
        elif kind is protocol.Kind.FATAL:
            child.fatal = str(message.data.get("error", "unknown error"))
            child.fatal_kind = str(message.data.get("kind", protocol.FATAL_IMPORT))
            log.error("child %d could not start: %s", child.index, child.fatal)
            if child.fatal_kind != protocol.FATAL_IMPORT:
                return
            if self.previous_config is not None and child.generation == self.generation:
                self.abort_reload(child)  # a broken deploy must not take the daemon down
                child.fatal_kind = "reload"
            else:
                self.last_fatal = child.fatal
        elif kind is protocol.Kind.RETURNED:
            # These never started (told to stop mid-batch, or no database to load them
            # from): back to the queue, attempt refunded.
            returned = set(message.job_ids)
            log.info("child %d handed back %d jobs it had not started", child.index, len(returned))
            child.jobs = collections.deque(j for j in child.jobs if j[0] not in returned)
            self.outcomes.released.extend(message.job_ids)
            if not child.jobs:
                self.child_free(child)
        elif kind is protocol.Kind.BYE:
            log.info("child %d is leaving: %s", child.index, message.text)
            # Ids sent after its last outcome crossed its BYE on the pipe: it will never
            # read them, so they go back to the queue unharmed.
            unread = [job_id for job_id, _ in child.jobs]
            if unread:
                self.outcomes.released.extend(unread)
                child.jobs.clear()
                child.deadline = None
            child.state = RETIRING
            child.recycled = True

    def job_finished(self, child: ChildProcess, job_id: int, seconds: float | None = None) -> None:
        """An outcome arrived: the child's next job (if it has a batch) starts now."""
        if seconds is not None:
            self.average_job_seconds = ewma(self.average_job_seconds, seconds)
            self.task_seconds[child.task] = ewma(self.task_seconds.get(child.task), seconds)
        if child.jobs and child.jobs[0][0] == job_id:
            child.jobs.popleft()
        else:  # cannot happen with an honest child; keep the books right anyway
            log.warning("child %d reported job %d out of turn", child.index, job_id)
            child.jobs = collections.deque(j for j in child.jobs if j[0] != job_id)
        child.jobs_done += 1
        self.jobs_done += 1
        if child.jobs:
            self.start_clock(child)
        else:
            self.child_free(child)

    def child_free(self, child: ChildProcess) -> None:
        """The child has nothing left to run: idle, or told to leave if it should."""
        child.deadline = None
        if child.state == BUSY:
            child.state = IDLE
        if child.state == IDLE and (self.draining or child.retire_when_done):
            self.retire(child)

    def start_clock(self, child: ChildProcess) -> None:
        """The child's first queued job starts now: its timeout runs from here."""
        now = time.monotonic()
        child.job_started = now
        timeout = self.timeout_for(child.task)
        child.deadline = now + timeout if timeout else None

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self.on_child_exit(child, status)

    def on_child_exit(self, child: ChildProcess, status: int) -> None:
        # Whatever the child wrote before dying is still in the pipe: read it first, so a
        # job that finished right before the death is recorded as finished.
        child.channel.drain()
        try:
            for message in child.channel.messages():
                self.on_message(child, message)
        except protocol.ProtocolError:
            pass  # already reported; what follows garbage cannot be trusted
        try:
            self.selector.unregister(child.channel.fileno())
        except (KeyError, ValueError):
            pass
        child.channel.close()
        self.refresh_tasks()
        how = describe_status(status)
        self.count_restart(child)
        if child.job_id is not None:
            self.metrics.job_failed(child.task, None)
            reason = child.kill_reason or f"child process {child.index} (pid {child.pid}) {how}"
            self.outcomes.failed[child.job_id] = (
                f"{reason} while running job {child.job_id} ({child.task}); "
                "the handler may have run partly"
            )
            log.error("child %d %s while running job %d", child.index, how, child.job_id)
            # The rest of its batch never started: back to the queue, attempt refunded.
            self.outcomes.released.extend(job_id for job_id, _ in list(child.jobs)[1:])
            child.jobs.clear()
        elif child.state == RETIRING and os.waitstatus_to_exitcode(status) == 0:
            log.info("child %d exited", child.index)
        else:
            log.warning("child %d %s", child.index, how)
        if (
            time.monotonic() - child.born < tunables.CHILD_RAPID_DEATH_WINDOW
            and child.state != RETIRING
            and not self.draining  # deaths during shutdown are expected, never a crash loop
        ):
            self.respawn_at = time.monotonic() + self.respawn_delay
            self.respawn_delay = min(self.respawn_delay * 2, tunables.RESPAWN_BACKOFF_MAX)
            if child.fatal_kind in (protocol.FATAL_DATABASE, "reload"):
                return  # the database may come back; a failed reload was rolled back
            self.rapid_deaths += 1
            if self.rapid_deaths >= tunables.CHILD_RAPID_DEATH_LIMIT:
                detail = f": {self.last_fatal}" if self.last_fatal else ""
                error_type = TaskImportError if self.last_fatal else KongtaskError
                raise error_type(
                    f"children keep dying right after they start ({self.rapid_deaths} in a row)"
                    f"{detail}; giving up"
                )

    def count_restart(self, child: ChildProcess) -> None:
        """Metrics: why a child is being replaced (drains and scale-downs replace nothing)."""
        if self.draining:
            return
        if child.fatal:
            reason = "start_failed"
        elif child.kill_reason.startswith("job timed out"):
            reason = "timeout"
        elif child.state != RETIRING:
            reason = "died"
        elif child.recycled:
            reason = "recycled"
        elif child.generation < self.generation:
            reason = "reload"
        else:
            return
        self.metrics.child_restarted(reason)

    def manage_children(self) -> None:
        self.spawn_missing()
        self.roll_children()
        self.enforce_timeouts()
        self.expire_prefetched()

    def spawn_missing(self) -> None:
        if self.draining or time.monotonic() < self.respawn_at:
            return
        while len(self.live_children()) < self.config.concurrency:
            self.spawn()

    def live_children(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if c.state != RETIRING]

    def idle_children(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if c.state == IDLE]

    def busy_children(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if c.state == BUSY]

    def enforce_timeouts(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.kill_at is not None and now >= child.kill_at:
                self.signal_child(child, signal.SIGKILL)
                child.kill_at = None
            elif child.deadline is not None and not child.kill_reason and now >= child.deadline:
                limit = child.deadline - child.job_started
                log.warning(
                    "job %d (%s) timed out after %.0fs; stopping child %d",
                    child.job_id,
                    child.task,
                    limit,
                    child.index,
                )
                self.metrics.job_timed_out(child.task)
                self.terminate(child, f"job timed out after {limit:g}s")
        if self.drain_deadline is not None and now >= self.drain_deadline and not self.fast:
            self.begin_fast_stop(f"shutdown_timeout of {self.config.shutdown_timeout:g}s expired")

    def terminate(self, child: ChildProcess, reason: str) -> None:
        """SIGTERM now (the handler gets JobInterrupted), SIGKILL after the grace period."""
        child.kill_reason = reason
        child.kill_at = time.monotonic() + tunables.CHILD_KILL_GRACE
        self.signal_child(child, signal.SIGTERM)

    def kill_children(self, signum: int, reason: str) -> None:
        for child in list(self.children.values()):
            if signum == signal.SIGTERM:
                if child.job_id is not None:
                    self.terminate(child, reason)
                else:
                    self.signal_child(child, signal.SIGTERM)
            else:
                child.kill_reason = child.kill_reason or reason
                self.signal_child(child, signum)

    def signal_child(self, child: ChildProcess, signum: int) -> None:
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    def reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.children and time.monotonic() < deadline:
            self.read_children()
            self.reap()
            if self.children:
                time.sleep(0.01)
        if self.children:
            self.kill_children(signal.SIGKILL, "kongtaskd is exiting")
            while self.children:
                pid, status = os.waitpid(-1, 0)
                child = self.children.pop(pid, None)
                if child is not None:
                    self.on_child_exit(child, status)

    def send(self, child: ChildProcess, frame: bytes) -> bool:
        try:
            child.channel.send(frame)
            return True
        except (BlockingIOError, OSError):
            return False

    # ======================================================================================
    # Database: notifications, flush, dispatch
    # ======================================================================================
    def read_notifications(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.poll()
        except psycopg2.Error as exc:
            self.connection_lost(exc)
            return
        self.take_notifications()

    def take_notifications(self) -> None:
        if self.conn is None or not self.conn.notifies:
            return
        for note in self.conn.notifies:
            if note.channel == "jobs:insert":
                self.want_claim = True
                self.metrics.notified()
            elif note.channel == "worker:migrate":
                self.on_migrate_notice(note.payload)
        self.conn.notifies.clear()

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

    def dispatch(self) -> None:
        """Hand prefetched jobs to idle children, best first. No database round trip.

        Each idle child gets one job, or, while jobs are very short, a batch of up to
        ``batch_size()`` (shared out evenly so no child idles while another holds a batch).
        """
        idle = self.idle_children()
        if not self.prefetched or not idle:
            return
        share = min(self.batch_size(), -(-len(self.prefetched) // len(idle)))
        for child in idle:
            batch = self.take_batch(share)
            if not batch:
                break
            self.assign(child, batch)

    def take_batch(self, most: int) -> list[PrefetchedJob]:
        """Up to ``most`` prefetched jobs for one child, about ``BATCH_TARGET_SECONDS`` of work.

        Judged per task: a job whose task is slow, or not yet measured, ends the batch, so
        nothing ever waits behind it while another child could have run it.
        """
        batch: list[PrefetchedJob] = []
        budget = tunables.BATCH_TARGET_SECONDS
        while self.prefetched and len(batch) < most:
            job = self.prefetched.popleft()
            batch.append(job)
            seconds = self.task_seconds.get(job.task)
            if seconds is None or seconds > tunables.BATCH_MAX_AVERAGE_JOB_SECONDS:
                break
            budget -= seconds
            if budget <= 0:
                break
        return batch

    def settle(self) -> None:
        """One round trip: write every collected outcome and claim what the children need.

        See ``sql/settle.sql``. Claims are sized to the idle children plus a small prefetch
        (``prefetch_target``) so a child that finishes gets its next id without waiting for
        the database. Failed writes stay in ``self.outcomes`` and are retried next turn.
        """
        if self.conn is None or self.queries is None:
            return
        now = time.monotonic()
        if now >= self.next_poll:
            self.want_claim = True
            self.next_poll = now + self.config.poll_interval
        if self.draining:
            self.release_prefetched("draining")
        want = self.claim_size() if self.want_claim and not self.draining else 0
        outcomes = self.outcomes
        if not outcomes and want == 0:
            return
        failed_ids = list(outcomes.failed)
        try:
            rows = self.queries.fetchall(
                "settle",
                outcomes.completed,
                failed_ids,
                [outcomes.failed[i] for i in failed_ids],
                outcomes.released,
                self.pool_id,
                self.claimable_task_ids,
                self.forbidden_flags,
                want,
            )
        except psycopg2.Error as exc:
            self.connection_lost(exc)
            return
        self.outcomes = Outcomes()
        claimed: list[PrefetchedJob] = []
        written: set[int] = set()
        more = False
        for kind, job_id, task_id, priority, run_at, attempts, max_attempts in rows:
            if kind == "more":
                more = True
                continue
            if kind == "claimed":
                task = self.task_names.get(task_id, str(task_id))
                claimed.append(PrefetchedJob(job_id, task, priority, run_at, now))
                continue
            written.add(job_id)
            task = self.job_tasks.pop(job_id, "")
            if kind == "failed":
                self.jobs_failed += 1
                if attempts >= max_attempts:
                    log.error("job %d failed permanently after %d attempts", job_id, attempts)
                else:
                    self.metrics.job_retried(task)
                    log.info("job %d will be retried at %s", job_id, run_at.isoformat())
        lost = (set(outcomes.completed) | set(failed_ids) | set(outcomes.released)) - written
        if lost:
            log.warning("jobs %s were no longer held by this pool; outcome dropped", sorted(lost))
            for job_id in lost:
                self.job_tasks.pop(job_id, None)
        settled = bool(outcomes.completed or outcomes.failed or outcomes.released)
        if want:
            self.metrics.claimed(len(claimed))
            # A short claim means nothing more was ready for us, as this statement saw it,
            # unless it says that it left ready jobs behind.
            self.want_claim = len(claimed) >= want or more
            claimed.sort(key=lambda job: (job.priority, job.run_at, job.id))
            self.prefetched.extend(claimed)
            # --once ends on an empty claim, but only one that saw every unlock.
            idle_fleet = not self.prefetched and not self.busy_children()
            if self.once and not claimed and not settled and idle_fleet:
                self.begin_drain("no more ready jobs (--once)")
        if settled:
            # The claim in this statement could not see the queues these outcomes unlocked
            # (one snapshot): claim again next turn, or a queue's next job would wait for
            # the next poll.
            self.want_claim = True
        self.take_notifications()

    def claim_size(self) -> int:
        """Work for the idle children, plus the prefetch target, minus what is in hand."""
        wanted = len(self.idle_children()) * self.batch_size() + self.prefetch_target()
        return max(0, wanted - len(self.prefetched))

    def batch_size(self) -> int:
        """Jobs per hand-over: 1, or while jobs take well under a millisecond or two, as
        many as fill ``BATCH_TARGET_SECONDS`` of work (capped). One batch costs the child a
        single row-load round trip and the supervisor a single pipe write."""
        average = self.average_job_seconds
        if average is None or average > tunables.BATCH_MAX_AVERAGE_JOB_SECONDS:
            return 1
        fill = int(tunables.BATCH_TARGET_SECONDS / max(average, 1e-6))
        return max(1, min(tunables.BATCH_MAX_JOBS, fill))

    def prefetch_target(self) -> int:
        """How many claimed-but-unstarted jobs to keep in hand.

        Only when jobs are short: then a child frees up within milliseconds and a job in
        hand starts "soon". With long jobs a prefetched job would sit locked while another
        daemon could have run it, so then we claim only for idle children.
        """
        average = self.average_job_seconds
        if average is None or average > tunables.PREFETCH_MAX_AVERAGE_JOB_SECONDS:
            return 0
        return self.config.concurrency * self.batch_size()

    def release_prefetched(self, why: str) -> None:
        """Give back jobs claimed but not started (attempt refunded on the next settle)."""
        if self.prefetched:
            log.info(
                "returning %d claimed jobs that no child started (%s)", len(self.prefetched), why
            )
            self.outcomes.released.extend(job.id for job in self.prefetched)
            self.prefetched.clear()

    def expire_prefetched(self) -> None:
        """A prefetched job that waited too long (children got slow) goes back to the queue."""
        if not self.prefetched:
            return
        oldest = self.prefetched[0].claimed_at
        if time.monotonic() - oldest > tunables.PREFETCH_MAX_WAIT:
            self.release_prefetched("no child became free in time")

    def assign(self, child: ChildProcess, batch: list[PrefetchedJob]) -> None:
        """Send an idle child its job ids (one, or a batch run in order)."""
        ids = [job.id for job in batch]
        if not self.send(child, protocol.encode_run(*ids)):
            # The child died under us; it never saw the jobs, so give them back unharmed.
            self.outcomes.released.extend(ids)
            return
        child.jobs.extend((job.id, job.task) for job in batch)
        child.state = BUSY
        self.start_clock(child)
        for job in batch:
            self.job_tasks[job.id] = job.task
            self.metrics.job_started(job.task)

    def timeout_for(self, task: str) -> float | None:
        spec = self.config.tasks.get(task)
        if spec is not None and spec.timeout is not None:
            return float(spec.timeout)
        return self.config.job_timeout

    def connection_lost(self, exc: BaseException) -> None:
        log.error(
            "database connection lost: %s", str(exc).strip().splitlines()[0] if str(exc) else exc
        )
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
        self.conn = self.queries = None
        self.schedule_reconnect()

    def schedule_reconnect(self) -> None:
        jitter = 0.5 + random.random() / 2
        self.reconnect_at = time.monotonic() + self.reconnect_delay * jitter
        self.reconnect_delay = min(self.reconnect_delay * 2, tunables.RECONNECT_BACKOFF_MAX)

    def maybe_reconnect(self) -> None:
        if self.conn is not None or time.monotonic() < self.reconnect_at:
            return
        try:
            self.connect()
        except (KongtaskError, psycopg2.Error) as exc:
            message = exc.message if isinstance(exc, KongtaskError) else str(exc).strip()
            log.warning("reconnect failed: %s", message)
            self.schedule_reconnect()
            return
        log.info("database connection re-established")
        self.metrics.reconnected()
        self.reconnect_delay = tunables.RECONNECT_BACKOFF_FIRST

    # ======================================================================================
    # Tick: status, watchdog, title
    # ======================================================================================
    def tick(self) -> None:
        """Housekeeping after each turn: reconnect, heartbeat, systemd, process title."""
        self.maybe_reconnect()
        now = time.monotonic()
        if self.heartbeat.due(now):
            self.beat()
        busy = len(self.busy_children())
        self.metrics.set_children(busy, len(self.idle_children()))
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
            self.next_status = now + 1.0
        # Tied to loop progress on purpose: a stuck loop must starve the watchdog.
        if self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_interval
        if self.draining and self.drain_deadline is not None and now >= self.next_extend:
            # Ask systemd for the rest of the drain plus the kill grace, so a shutdown_timeout
            # longer than the unit's TimeoutStopSec is honoured.
            left = max(0.0, self.drain_deadline - now) + tunables.CHILD_KILL_GRACE + 5.0
            self.notifier.extend_timeout(left)
            self.next_extend = now + tunables.EXTEND_TIMEOUT_EVERY

    def refresh_queue_depth(self) -> None:
        """Called by a scrape: re-count jobs by state, at most every METRICS_QUEUE_DEPTH_EVERY."""
        now = time.monotonic()
        if self.queries is None or now < self.queue_depth_at:
            return
        self.queue_depth_at = now + tunables.METRICS_QUEUE_DEPTH_EVERY
        try:
            ((ready, scheduled, locked),) = self.queries.fetchall("queue_depth")
        except psycopg2.Error as exc:
            self.connection_lost(exc)
            return
        self.metrics.set_queue_depth(ready, scheduled, locked)

    def run_cron(self) -> None:
        """Schedule the cron ticks that are due (a few quick statements at most)."""
        if self.cron is None or self.conn is None or self.draining:
            return
        if time.time() < self.cron.next_due():
            return
        try:
            added = self.cron.run_due(self.conn)
        except psycopg2.Error as exc:
            self.connection_lost(exc)
            return
        if added:
            self.want_claim = True
        self.take_notifications()

    def beat(self) -> None:
        if self.queries is None:
            return
        try:
            # Re-registering is one cheap query; it heals a `cleanup --tasks` that deleted
            # (and so renumbered) a task row under a running daemon.
            self.register_tasks()
            self.heartbeat.beat(
                self.queries,
                concurrency=self.config.concurrency,
                busy=len(self.busy_children()),
                jobs_done=self.jobs_done,
            )
        except psycopg2.Error as exc:
            self.connection_lost(exc)
        else:
            self.take_notifications()

    def status_line(self) -> str:
        busy = sum(1 for c in self.children.values() if c.state == BUSY)
        idle = sum(1 for c in self.children.values() if c.state == IDLE)
        return f"{busy} busy, {idle} idle; {self.jobs_done} jobs done, {self.jobs_failed} failed"

    # ======================================================================================
    # Stop
    # ======================================================================================
    def stop(self) -> None:
        """Whatever happened: children gone, every outcome written (or logged), connection shut."""
        if self.children:
            self.begin_drain("exiting")
            self.kill_children(signal.SIGTERM, "kongtaskd is exiting")
            self.reap_all(timeout=tunables.CHILD_KILL_GRACE)
        self.final_flush()
        if self.queries is not None and not self.outcomes:
            # Holding nothing any more: remove the heartbeat row. (With outcomes still
            # unwritten it stays, so other daemons' sweeps recover those jobs soon.)
            try:
                self.heartbeat.forget(self.queries)
            except psycopg2.Error as exc:
                log.warning("could not remove this pool's heartbeat row: %s", exc)
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        if self.metrics_server is not None:
            self.metrics_server.close()
        signal.set_wakeup_fd(-1)
        log.info("kongtaskd supervisor stopped (%d jobs done)", self.jobs_done)

    def final_flush(self) -> None:
        """Write what is left (outcomes, unstarted claims), retrying while the database is away."""
        self.draining = True
        self.release_prefetched("exiting")
        deadline = time.monotonic() + tunables.FINAL_FLUSH_DEADLINE
        while self.outcomes and time.monotonic() < deadline:
            if self.conn is None:
                self.reconnect_at = 0.0
                self.maybe_reconnect()
            self.settle()
            if self.outcomes:
                time.sleep(min(1.0, self.reconnect_delay))
        if self.outcomes:
            for job_id in self.outcomes.completed:
                log.error("could not record success of job %d: the database is unreachable", job_id)
            for job_id, text in self.outcomes.failed.items():
                log.error("could not record failure of job %d: %s", job_id, text.splitlines()[0])
            for job_id in self.outcomes.released:
                log.error("could not hand back unstarted job %d", job_id)


def ewma(previous: float | None, value: float) -> float:
    """Moving average of job durations: recent jobs count most, one outlier does not rule."""
    return value if previous is None else 0.8 * previous + 0.2 * value


def describe_status(status: int) -> str:
    """'exited with code 3' / 'was killed by signal SIGKILL' from a waitpid status."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"was killed by signal {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def run(config: Config, *, once: bool = False, reload: Callable[[], Config] | None = None) -> int:
    """Run the daemon until it is told to stop; return the process exit code.

    ``reload`` reads the configuration again (SIGHUP); without it SIGHUP is ignored.
    """
    return Supervisor(config, once=once, reload=reload).run()
