"""The fleet of children: spawn, reap, kill/murder, manage (gunicorn's arbiter vocabulary).

``Fleet`` owns the forked child processes and everything about them: their pipes, states
and jobs in hand, their births and deaths. The supervisor calls it from its loop:

    read      take DONE / FAILED / READY / FATAL / RETURNED / BYE off the children's pipes
    reap      waitpid: a dead child's running job fails with how it died, the rest go back
    manage    spawn the missing ones (with back-off), murder jobs past their timeout
              (SIGTERM, then SIGKILL after CHILD_KILL_GRACE)
    assign    send an idle child its job ids

Outcomes go into the supervisor's ``JobBook``; the fleet never touches the database. Two
things belong to the supervisor and are reached through hooks: which tasks to claim
(``on_tasks_changed``, the children's READY lists) and what a child's import failure means
during a reload (``on_fatal``).

A process is created in ONE place, ``fork_child(settings) -> (pid, channel)``: the
zygote (``zygote.py``: a template process that imported the handlers of the last
configuration that imported cleanly) forks it, and it becomes our child (the supervisor is a
subreaper). While no zygote is ready (a lost one is being replaced) nothing is spawned, and
the children that run carry on.

Crash loops: a child that dies within ``CHILD_RAPID_DEATH_WINDOW`` of its birth delays the
next spawn (doubling up to ``RESPAWN_BACKOFF_MAX``); ``CHILD_RAPID_DEATH_LIMIT`` such
deaths in a row end the daemon, except while the database is away or a reload was rolled
back.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kongtaskd import protocol, tunables
from kongtaskd.child import ChildSettings
from kongtaskd.config import Config, handler_specs
from kongtaskd.errors import KongtaskError, TaskImportError
from kongtaskd.jobbook import JobBook, PrefetchedJob
from kongtaskd.metrics import NullMetrics
from kongtaskd.zygote import ZygoteError, ZygoteKeeper

log = logging.getLogger("kongtaskd.supervisor")

# Child states.
STARTING, IDLE, BUSY, RETIRING = "starting", "idle", "busy", "retiring"

#: ``fatal_kind`` of a child whose import failure rolled a reload back (no crash loop).
FATAL_RELOAD = "reload"
#: What ``read(outcomes_only=True)`` acts on while the settle statement is in flight
#: (``overlap.py``): their handlers touch the job book and the child, never the database
#: (a READY may register tasks). The rest wait in ``ChildProcess.held``.
OUTCOME_KINDS = frozenset({protocol.Kind.DONE, protocol.Kind.FAILED, protocol.Kind.SKIPPED})


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
    #: The running job was cancelled: ``kill_at`` (SIGKILL) is the cancel's, dropped when
    #: its outcome arrives.
    cancel_kill_for: int | None = None
    #: Messages read while a statement was in flight and left for the next full ``read``
    #: (not in ``OUTCOME_KINDS``, or behind one that was not: a child's order is kept).
    held: list[protocol.Message] = field(default_factory=list)

    @property
    def job_id(self) -> int | None:
        """The job running now, if any."""
        return self.jobs[0][0] if self.jobs else None

    @property
    def task(self) -> str:
        return self.jobs[0][1] if self.jobs else ""

    def next_deadline(self) -> float | None:
        """Its job's timeout (until we act on it), or its SIGKILL after a SIGTERM."""
        deadlines = [self.kill_at]
        if not self.kill_reason:
            deadlines.append(self.deadline)
        return min((d for d in deadlines if d is not None), default=None)


class Fleet:
    """The children of one supervisor."""

    def __init__(
        self,
        config: Config,
        *,
        pool_id: str,
        selector: selectors.BaseSelector,
        book: JobBook,
        metrics: NullMetrics,
        on_tasks_changed: Callable[[], None],
        on_fatal: Callable[[ChildProcess], bool],
        forget_in_child: Callable[[], None],
        zygotes: ZygoteKeeper,
        on_other_exit: Callable[[int, int], None] = lambda pid, status: None,
    ) -> None:
        self.config = config
        # Where the database is cannot change under a running daemon: fixed at birth.
        self.pool_id, self.dsn, self.schema = pool_id, config.child_dsn, config.schema
        self.pooled = config.pooled_children
        self.selector = selector
        self.book = book
        self.metrics = metrics
        self.on_tasks_changed = on_tasks_changed
        self.on_fatal = on_fatal
        self.forget_supervisor_in_child = forget_in_child
        self.zygotes = zygotes
        #: ``waitpid`` also collects what is not a child of ours: a zygote, an orphan a
        #: handler left behind (we are a subreaper).
        self.on_other_exit = on_other_exit
        self.children: dict[int, ChildProcess] = {}  # by pid
        self.next_index = 0
        #: Bumped by each reload: children of an older generation are replaced.
        self.generation = 0
        #: No more spawning; idle children are told to leave, busy ones when done.
        self.draining = False
        self.respawn_at = 0.0
        self.respawn_delay = tunables.RESPAWN_BACKOFF_FIRST
        self.rapid_deaths = 0
        self.last_fatal = ""
        self.jobs_done = 0
        #: Jobs of our children that were cancelled: id -> the cancel message, their
        #: outcome's text (kongtaskd jobs cancel; sent to the child as CANCEL).
        self.cancels: dict[int, str] = {}
        #: What each message from a child means (built once: it runs for every job).
        self.handlers: dict[protocol.Kind, Callable[[ChildProcess, protocol.Message], None]] = {
            protocol.Kind.DONE: self.on_done,
            protocol.Kind.FAILED: self.on_failed,
            protocol.Kind.SKIPPED: self.on_skipped,
            protocol.Kind.READY: self.on_ready,
            protocol.Kind.FATAL: self.on_child_fatal,
            protocol.Kind.RETURNED: self.on_returned,
            protocol.Kind.BYE: self.on_bye,
        }

    # ---- who is there ---------------------------------------------------------------------
    def __bool__(self) -> bool:
        return bool(self.children)

    def __len__(self) -> int:
        return len(self.children)

    def live(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if c.state != RETIRING]

    def idle(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if c.state == IDLE]

    def busy(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if c.state == BUSY]

    def starting(self) -> bool:
        return any(c.state == STARTING for c in self.children.values())

    def holding(self) -> bool:
        """Some child's messages were held while a statement was in flight (``read``)."""
        return any(child.held for child in self.children.values())

    def job_ids(self) -> list[int]:
        """Every job a child holds (running or waiting in its batch)."""
        return [job_id for c in self.children.values() for job_id, _ in c.jobs]

    def next_deadline(self) -> float | None:
        """The next respawn (while children are missing), job timeout or SIGKILL."""
        deadlines = [c.next_deadline() for c in self.children.values()]
        # Without a ready zygote the next spawn waits for its report, not for a timer.
        missing = len(self.children) < self.config.concurrency
        if missing and not self.draining and self.can_spawn():
            deadlines.append(self.respawn_at)
        return min((d for d in deadlines if d is not None), default=None)

    # ---- spawn ----------------------------------------------------------------------------
    def spawn(self) -> ChildProcess | None:
        """Fork one child of the current generation; it says READY (or FATAL) on its pipe.

        None when no zygote can fork right now (a lost one is being replaced)."""
        index = self.next_index
        try:
            pid, channel = self.fork_child(self.child_settings(index))
        except ZygoteError as exc:
            log.warning("cannot start a child now: %s", exc)
            return None
        self.next_index += 1
        child = ChildProcess(
            index=index, pid=pid, channel=channel, born=time.monotonic(), generation=self.generation
        )
        self.children[pid] = child
        self.selector.register(channel.fileno(), selectors.EVENT_READ, child)
        log.info("child %d started (pid %d)", index, pid)
        return child

    def fork_child(self, settings: ChildSettings) -> tuple[int, protocol.Channel]:
        """Create the process: the one place a child is born (by the current zygote)."""
        return self.zygotes.spawn(settings)

    def can_spawn(self) -> bool:
        return self.zygotes.can_spawn()

    def child_settings(self, index: int) -> ChildSettings:
        max_jobs = self.config.max_jobs_per_child
        if max_jobs is not None:
            max_jobs += int(max_jobs * tunables.RECYCLE_JITTER * random.random())
        return ChildSettings(
            index=index,
            pool_id=self.pool_id,
            dsn=self.dsn,
            schema=self.schema,
            tasks=handler_specs(self.config.tasks),
            task_modules=tuple(self.config.task_modules),
            python_path=tuple(str(p) for p in self.config.python_path),
            max_jobs=max_jobs,
            max_memory_mib=self.config.max_memory_per_child,
            django_settings=self.config.django_settings,
            hooks=self.config.hooks,
            sentry=self.config.sentry,
            pooled=self.pooled,
        )

    def forget_in_child(self) -> None:
        """In a fresh fork (a zygote): close the children's pipes, then the supervisor's fds."""
        for other in self.children.values():
            os.close(other.channel.sock.detach())
        self.forget_supervisor_in_child()

    # ---- read -----------------------------------------------------------------------------
    def read(self, *, outcomes_only: bool = False) -> None:
        """Act on every complete message the children wrote; with ``outcomes_only``, only
        on outcomes (the rest are held, in order, for the next full read)."""
        for child in list(self.children.values()):
            try:
                if not outcomes_only and child.held:
                    held, child.held = child.held, []
                    for message in held:
                        self.on_message(child, message)
                for message in child.channel.messages():
                    if outcomes_only and (child.held or message.kind not in OUTCOME_KINDS):
                        child.held.append(message)
                    else:
                        self.on_message(child, message)
            except protocol.ProtocolError as exc:
                # Something else wrote on its pipe: it can no longer be trusted. The reaper
                # fails its job like any other death.
                log.error("child %d sent garbage (%s); killing it", child.index, exc)
                child.kill_reason = child.kill_reason or f"child {child.index} broke protocol"
                self.kill(child, signal.SIGKILL)

    def on_message(self, child: ChildProcess, message: protocol.Message) -> None:
        handler = self.handlers.get(message.kind)
        if handler is not None:
            handler(child, message)

    def on_done(self, child: ChildProcess, message: protocol.Message) -> None:
        cancelled = self.cancels.get(message.job_id)
        if cancelled is not None:  # it returned after all: a cancel still ends it failed
            self.on_failed(child, protocol.Message(protocol.Kind.FAILED, message.job_id, text=""))
            return
        self.metrics.job_succeeded(child.task, message.seconds)
        self.book.succeeded(message.job_id, child.task, message.seconds)
        self.job_finished(child, message.job_id)

    def on_failed(self, child: ChildProcess, message: protocol.Message) -> None:
        text = message.text
        if message.job_id in self.cancels:
            text = self.cancels[message.job_id]
        elif child.kill_reason:
            text = f"{child.kill_reason}; {text}"
        self.metrics.job_failed(child.task, message.seconds)
        self.book.failed(message.job_id, child.task, text, message.seconds)
        self.job_finished(child, message.job_id)

    def on_skipped(self, child: ChildProcess, message: protocol.Message) -> None:
        log.warning("job %d skipped by child %d: %s", message.job_id, child.index, message.text)
        self.book.skipped(message.job_id)
        self.job_finished(child, message.job_id)

    def on_ready(self, child: ChildProcess, message: protocol.Message) -> None:
        if child.state == STARTING:
            child.state = IDLE
        self.respawn_delay = tunables.RESPAWN_BACKOFF_FIRST
        self.rapid_deaths = 0
        child.tasks = frozenset(message.data.get("tasks", []))
        self.on_tasks_changed()

    def on_returned(self, child: ChildProcess, message: protocol.Message) -> None:
        # These never started (told to stop mid-batch, or no database to load them
        # from): back to the queue, attempt refunded.
        returned = set(message.job_ids)
        log.info("child %d handed back %d jobs it had not started", child.index, len(returned))
        child.jobs = collections.deque(j for j in child.jobs if j[0] not in returned)
        for job_id in returned:  # a cancelled one stays failed: migration 7's trigger
            self.cancels.pop(job_id, None)
        self.book.hand_back(message.job_ids)
        if not child.jobs:
            self.child_free(child)

    def on_bye(self, child: ChildProcess, message: protocol.Message) -> None:
        log.info("child %d is leaving: %s", child.index, message.text)
        # Ids sent after its last outcome crossed its BYE on the pipe: it will never
        # read them, so they go back to the queue unharmed.
        unread = [job_id for job_id, _ in child.jobs]
        if unread:
            self.book.hand_back(unread)
            child.jobs.clear()
            child.deadline = None
        child.state = RETIRING
        child.recycled = True

    def on_child_fatal(self, child: ChildProcess, message: protocol.Message) -> None:
        child.fatal = str(message.data.get("error", "unknown error"))
        child.fatal_kind = str(message.data.get("kind", protocol.FATAL_IMPORT))
        log.error("child %d could not start: %s", child.index, child.fatal)
        if child.fatal_kind != protocol.FATAL_IMPORT:
            return
        if self.on_fatal(child):  # a broken deploy rolled back: must not take the daemon down
            child.fatal_kind = FATAL_RELOAD
        else:
            self.last_fatal = child.fatal

    def job_finished(self, child: ChildProcess, job_id: int) -> None:
        """An outcome arrived: the child's next job (if it has a batch) starts now."""
        self.cancels.pop(job_id, None)
        if child.cancel_kill_for == job_id:
            child.cancel_kill_for = None
            if not child.kill_reason:  # a timeout's or shutdown's SIGKILL stays armed
                child.kill_at = None
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

    def timeout_for(self, task: str) -> float | None:
        spec = self.config.tasks.get(task)
        if spec is not None and spec.timeout is not None:
            return float(spec.timeout)
        return self.config.job_timeout

    # ---- assign ---------------------------------------------------------------------------
    def assign(self, child: ChildProcess, batch: list[PrefetchedJob]) -> None:
        """Send an idle child its job ids (one, or a batch run in order), each with the row
        this turn's claim read when it has one (``jobbook``'s "Inline rows")."""
        ids = [job.id for job in batch]
        if not self.send(child, run_frame(batch)):
            # The child died under us; it never saw the jobs, so give them back unharmed.
            self.book.hand_back(ids)
            return
        child.jobs.extend((job.id, job.task) for job in batch)
        child.state = BUSY
        self.start_clock(child)
        self.book.assigned(batch)
        for job in batch:
            self.metrics.job_started(job.task)

    def send(self, child: ChildProcess, frame: bytes) -> bool:
        try:
            child.channel.send(frame)
            return True
        except (BlockingIOError, OSError):
            return False

    # ---- reap -----------------------------------------------------------------------------
    def reap(self) -> None:
        """Collect every child that exited (never blocks)."""
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
            else:
                self.on_other_exit(pid, status)

    def reap_all(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every child to leave, then SIGKILL the rest."""
        deadline = time.monotonic() + timeout
        while self.children and time.monotonic() < deadline:
            self.read()
            self.reap()
            if self.children:
                time.sleep(0.01)
        if self.children:
            self.kill_all(signal.SIGKILL, "kongtaskd is exiting")
            while self.children:
                pid, status = os.waitpid(-1, 0)
                child = self.children.pop(pid, None)
                if child is not None:
                    self.on_child_exit(child, status)
                else:
                    self.on_other_exit(pid, status)

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
        self.on_tasks_changed()
        how = describe_status(status)
        self.count_restart(child)
        if child.job_id is not None:
            self.fail_running_job(child, how)
        elif child.state == RETIRING and os.waitstatus_to_exitcode(status) == 0:
            log.info("child %d exited", child.index)
        else:
            log.warning("child %d %s", child.index, how)
        if (
            time.monotonic() - child.born < tunables.CHILD_RAPID_DEATH_WINDOW
            and child.state != RETIRING
            and not self.draining  # deaths during shutdown are expected, never a crash loop
        ):
            self.died_young(child)

    def fail_running_job(self, child: ChildProcess, how: str) -> None:
        """Its running job failed with how the child died; the rest of its batch goes back."""
        assert child.job_id is not None
        self.metrics.job_failed(child.task, None)
        reason = child.kill_reason or f"child process {child.index} (pid {child.pid}) {how}"
        text = self.cancels.pop(child.job_id, None) or (
            f"{reason} while running job {child.job_id} ({child.task}); "
            "the handler may have run partly"
        )
        self.book.failed(child.job_id, child.task, text)
        log.error("child %d %s while running job %d", child.index, how, child.job_id)
        # The rest of its batch never started: back to the queue, attempt refunded.
        self.book.hand_back([job_id for job_id, _ in list(child.jobs)[1:]])
        child.jobs.clear()

    def died_young(self, child: ChildProcess) -> None:
        """Back off the next spawn; too many such deaths in a row end the daemon."""
        self.respawn_at = time.monotonic() + self.respawn_delay
        self.respawn_delay = min(self.respawn_delay * 2, tunables.RESPAWN_BACKOFF_MAX)
        if child.fatal_kind in (protocol.FATAL_DATABASE, FATAL_RELOAD):
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
        """Metrics: why a child is being replaced (drains and scale-downs replace nothing).

        The reasons are ``metrics.RESTART_REASONS`` (exported at 0 from start-up)."""
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

    # ---- manage ---------------------------------------------------------------------------
    def manage(self) -> None:
        """Replace missing children (after the back-off) and murder jobs past their timeout."""
        self.spawn_missing()
        self.murder_timed_out()

    def spawn_missing(self) -> None:
        if self.draining or time.monotonic() < self.respawn_at:
            return
        while len(self.live()) < self.config.concurrency and self.can_spawn():
            if self.spawn() is None:
                return

    def murder_timed_out(self) -> None:
        """SIGTERM a job past its timeout; SIGKILL a child past its grace period."""
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.kill_at is not None and now >= child.kill_at:
                self.kill(child, signal.SIGKILL)
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

    def retire(self, child: ChildProcess) -> None:
        """Tell an idle child to exit."""
        self.send(child, protocol.encode_stop())
        child.state = RETIRING

    def retire_one(self) -> None:
        """One child fewer: an idle one now, else the first busy one once its job is done."""
        candidates = [c for c in self.live() if not c.retire_when_done]
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

    def drain(self) -> None:
        """No more spawning: idle children leave now, busy ones after their job."""
        self.draining = True
        for child in list(self.children.values()):
            if child.state in (IDLE, STARTING):
                self.retire(child)
            elif len(child.jobs) > 1:  # mid-batch: it hands back what it has not started
                self.send(child, protocol.encode_stop())

    # ---- cancel ---------------------------------------------------------------------------
    def cancel(self, job_id: int, message: str, grace: float) -> bool:
        """A job one of our children holds was cancelled: tell it (CANCEL + SIGUSR1). Running,
        its handler gets JobCancelled after ``grace`` seconds, and the child SIGKILL
        ``CHILD_KILL_GRACE`` seconds after that if the job is still not over. False: no
        child of ours holds the job."""
        if job_id in self.cancels:
            return True  # told already
        for child in self.children.values():
            held = [held_id for held_id, _ in child.jobs]
            if job_id not in held:
                continue
            self.cancels[job_id] = message
            log.warning("job %d (%s) on child %d: %s", job_id, child.task, child.index, message)
            if self.send(child, protocol.encode_cancel(job_id, grace, message)):
                self.kill(child, signal.SIGUSR1)
            if held[0] == job_id and child.kill_at is None:
                child.cancel_kill_for = job_id
                child.kill_at = time.monotonic() + grace + tunables.CHILD_KILL_GRACE
            return True
        return False

    # ---- kill -----------------------------------------------------------------------------
    def terminate(self, child: ChildProcess, reason: str) -> None:
        """SIGTERM now (the handler gets JobInterrupted), SIGKILL after the grace period."""
        child.kill_reason = reason
        child.kill_at = time.monotonic() + tunables.CHILD_KILL_GRACE
        self.kill(child, signal.SIGTERM)

    def kill_all(self, signum: int, reason: str) -> None:
        for child in list(self.children.values()):
            if signum == signal.SIGTERM:
                if child.job_id is not None:
                    self.terminate(child, reason)
                else:
                    self.kill(child, signal.SIGTERM)
            else:
                child.kill_reason = child.kill_reason or reason
                self.kill(child, signum)

    def kill(self, child: ChildProcess, signum: int) -> None:
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass


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


def run_frame(batch: list[PrefetchedJob]) -> bytes:
    """The RUN frame of a batch: each row as ``task identifier NUL row text`` (the row
    leaves the identifier to us, see ``sql/settle.sql``; neither can hold a NUL), passed on
    undecoded, up to ``INLINE_ROWS_MAX_FRAME_BYTES`` in all (the rest go without: the
    child loads them)."""
    if all(job.row is None for job in batch):
        return protocol.encode_run(*(job.id for job in batch))
    budget = tunables.INLINE_ROWS_MAX_FRAME_BYTES
    jobs: list[tuple[int, bytes | None]] = []
    for job in batch:
        row = b"%s\0%s" % (job.task.encode(), job.row.encode()) if job.row is not None else None
        if row is not None:
            budget -= len(row)
            if budget < 0:
                row = None
        jobs.append((job.id, row))
    return protocol.encode_run_rows(jobs)
