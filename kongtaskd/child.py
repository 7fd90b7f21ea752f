"""The child loop: receive a job id -> load the row -> run the handler -> report the outcome.

A child is forked by the supervisor and never returns into the supervisor's code: it ends
in ``os._exit``. The supervisor's fork branch has already dropped what the child inherited
but does not own (the supervisor's database socket, the other children's pipes); the child
opens its own connection and imports the handler modules. It runs one job at a time and
only ever reads job rows; the supervisor writes every outcome (in batches, see
``supervisor.py``).

Signals: SIGINT (a terminal's Ctrl-C hits the whole process group) and SIGHUP are ignored;
shutdown is the supervisor's call. SIGTERM while a handler runs raises ``JobInterrupted``
inside the handler, so its ``finally`` blocks run and the failure is reported with a
traceback; SIGTERM while idle ends the child at once. The supervisor's death sends SIGTERM
(``PR_SET_PDEATHSIG``) and closes the pipe: the child then hands back to the queue itself,
attempts refunded, every job it holds (``Holdings``) and any RUN still unread in the pipe,
and exits.

Cancel (``kongtaskd jobs cancel``): the supervisor writes CANCEL (job id, grace, message)
into the pipe and sends SIGUSR1, because a child running a handler is not reading its pipe.
The SIGUSR1 handler takes the CANCELs out (``Channel.take``) and records them: the job's
``ctx.cancelled`` turns true at once, and ``JobCancelled`` (a ``JobInterrupted``) is raised
in the handler right away (grace 0) or when a SIGALRM timer of ``cancel_grace`` seconds
fires. A cancelled job that has not started is not started. Whatever the handler does, the
outcome reported is the failure with the cancel message; unlike SIGTERM the child lives on.

The child's fds 1 and 2 go into the log, line by line, with the job's id (``output.py``);
every exit goes through ``Child.leave`` so the last lines are not lost to ``os._exit``.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import datetime
import enum
import inspect
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import psycopg2
from psycopg2 import extensions
from setproctitle import setproctitle

from kongtaskd import logs, protocol, redact, tunables
from kongtaskd.context import JobContext
from kongtaskd.errors import KongtaskError
from kongtaskd.hooks import Hooks
from kongtaskd.hooks import build as build_hooks
from kongtaskd.integrations.otel import split_trace_context
from kongtaskd.job import Job
from kongtaskd.logs import job_context, job_finished, job_started
from kongtaskd.output import OutputCapture
from kongtaskd.queries import Queries
from kongtaskd.registry import Handler, load_handlers
from kongtaskd.settle import Outcomes, Settle

log = logging.getLogger("kongtaskd.child")

#: Exit statuses of a child, read by the supervisor's reaper.
EXIT_OK = 0
EXIT_FATAL = 3  # could not start (import or connection failure); already reported as FATAL
EXIT_INTERRUPTED = 4  # SIGTERM ended a running job (timeout, fast shutdown, supervisor gone)
EXIT_ORPHANED = 5  # the supervisor went away

_PR_SET_PDEATHSIG = 1

#: The statements a child runs (queries.py): PREPAREd on a direct connection, unprepared on
#: a ``child_connection`` (so each must also convert with ``queries.pyformat``: no inline
#: ``--`` comment, no ``%``; tests/integration/test_queries_modes.py checks).
CHILD_STATEMENTS = ("load_job", "load_jobs", "settle")


@dataclass(frozen=True)
class ChildSettings:
    """What a child needs to know, fixed when it is forked."""

    index: int
    pool_id: str
    #: ``child_connection`` if set, else ``connection``.
    dsn: str
    schema: str
    tasks: Mapping[str, str]
    task_modules: Sequence[str] = ()
    python_path: Sequence[str] = ()
    max_jobs: int | None = None
    max_memory_mib: int | None = None
    #: Django mode: the settings module set up before any handler import (contrib.django).
    django_settings: str | None = None
    #: The ``hooks:`` module (kongtaskd.hooks) and the ``sentry`` section (a SentryConfig).
    hooks: str | None = None
    sentry: Any = None
    #: ``dsn`` is ``child_connection`` (a pooler, maybe in transaction mode): no session
    #: state on it, so no PREPARE (queries.py runs the statements unprepared).
    pooled: bool = False


class Failure(NamedTuple):
    """A handler's failure: the ``last_error`` text, and the exception for the hooks."""

    text: str
    error: BaseException


class JobInterrupted(BaseException):
    """Raised inside a running handler when the child receives SIGTERM.

    A BaseException, so that a handler's ``except Exception`` does not swallow it.
    """


class JobCancelled(JobInterrupted):
    """Raised inside a running handler whose job was cancelled (after ``cancel_grace``).

    A ``JobInterrupted``, so handlers need one ``except`` for every interruption; its text is
    the cancel message ('cancelled by <who> at <time>')."""


class Phase(enum.Enum):
    """Where the child is with the first of the jobs it holds."""

    STARTING = "starting"  # importing, connecting: nothing can be held yet
    IDLE = "idle"  # no jobs (unless a RUN waits unread in the pipe)
    HOLDING = "holding"  # jobs received, none running (row load, between two jobs)
    RUNNING = "running"  # the first job's handler runs: a SIGTERM interrupts it
    REPORTING = "reporting"  # the first job's outcome is being committed/sent: SIGTERM waits


class Holdings(NamedTuple):
    """The jobs this child owns, and what it is doing with the first: ONE immutable value.

    The SIGTERM handler decides from it what to hand back when the supervisor is gone.
    CPython runs a Python signal handler between two bytecodes, so the child never
    updates this in place: every transition builds a new value and stores it with one
    attribute assignment, and the handler reads the attribute once. Whatever line the
    signal lands on, the handler sees either the old holdings or the new, never half of
    each. A job stays in ``jobs`` from its RUN until its outcome has been sent (or written).
    """

    jobs: tuple[int, ...] = ()
    phase: Phase = Phase.IDLE

    # A NamedTuple, not a frozen dataclass: four new values per job, and a tuple is the
    # cheapest immutable value to build (0.2 us against 1 us).
    def entering(self, phase: Phase) -> Holdings:
        return Holdings(self.jobs, phase)

    def reported(self) -> Holdings:
        """The first job's outcome reached the supervisor: the rest is still ours."""
        rest = self.jobs[1:]
        return Holdings(rest, Phase.HOLDING if rest else Phase.IDLE)

    @property
    def rest(self) -> list[int]:
        """The jobs after the first: not started."""
        return list(self.jobs[1:])


NOTHING_HELD = Holdings()
STARTING = Holdings(phase=Phase.STARTING)


class SignalGate:
    """Holds the child's SIGTERM and SIGUSR1 handlers back for a step that cannot be one
    store: reading a RUN off the socket and recording its ids (SIGTERM's handler decides
    from the holdings), peeking at the socket (SIGUSR1's handler reads the same buffer).

    A handler that fires inside (``gated``) is only noted, and runs when the outermost step
    ends, in the order the signals came: what blocking them in the kernel did, without two
    ``pthread_sigmask`` calls per step (twice per job: a tenth of a short job's cost). Python
    runs signal handlers in the main thread between two bytecodes, so the count read here
    is the one the main thread last stored. Steps nest.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.waiting: list[tuple[Callable[[int, Any], None], int]] = []

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            while self.waiting:  # a signal from now on runs its handler itself
                handler, signum = self.waiting.pop(0)
                handler(signum, None)

    def gated(self, handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
        """``handler``, held back while a step is open."""

        def run_or_wait(signum: int, frame: Any) -> None:
            if self.depth:
                self.waiting.append((handler, signum))
            else:
                handler(signum, frame)

        return run_or_wait


_GATE = SignalGate()


def sigterm_deferred() -> SignalGate:
    """``with sigterm_deferred():`` the step's SIGTERM and SIGUSR1 wait (``SignalGate``)."""
    return _GATE


class Child:
    def __init__(self, settings: ChildSettings, channel: protocol.Channel) -> None:
        self.settings = settings
        self.channel = channel
        self.supervisor_pid = os.getppid()
        #: Every job this child owns; replaced whole, never mutated (see ``Holdings``).
        self.holdings = STARTING
        self.stop_after_report = False
        self.handlers: dict[str, Handler] = {}
        self.conn: extensions.connection | None = None
        self.queries: Queries | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.jobs_done = 0
        #: fds 1 and 2 of this child, into the log (output.py); None until ``start``.
        self.output: OutputCapture | None = None
        #: The job hooks and integrations (kongtaskd.hooks); empty until ``start``.
        self.hooks = Hooks()
        #: Cancelled jobs among those held: job id -> the cancel message. Written by the
        #: SIGUSR1 handler (one store per job), read by the run path and ``ctx.cancelled``.
        self.cancels: dict[int, str] = {}
        #: The running job a SIGALRM (the end of its cancel_grace) interrupts, or None.
        self.cancel_alarm_for: int | None = None
        #: The running async handler's task (a cancel cancels it), or None.
        self.async_task: asyncio.Future[Any] | None = None

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        self.watch_parent()
        self.output = OutputCapture.start()  # before the imports: their prints are caught too
        logs.defer_flushes()  # flushed at each job's end and before exit (logs.py)
        self.set_title("starting")
        self.install_signals()
        try:
            if self.settings.django_settings:  # before any handler import: models need it
                from kongtaskd.contrib.django import runtime

                runtime.setup(self.settings.django_settings)
            self.handlers = load_handlers(
                self.settings.tasks, self.settings.task_modules, self.settings.python_path
            )
            self.hooks = build_hooks(
                self.settings.hooks,
                django_settings=self.settings.django_settings,
                sentry=self.settings.sentry,
            )
        except KongtaskError as exc:
            self.die(exc.message, protocol.FATAL_IMPORT)
        except Exception as exc:  # an import can raise anything; report it, don't hang
            self.die(f"{type(exc).__name__}: {exc}", protocol.FATAL_IMPORT)
        try:
            self.connect()
        except (KongtaskError, psycopg2.Error) as exc:
            message = exc.message if isinstance(exc, KongtaskError) else str(exc).strip()
            self.die(message, protocol.FATAL_DATABASE)
        # From READY on the supervisor may send work: an orphan must look in the pipe.
        self.holdings = NOTHING_HELD
        self.channel.send(protocol.encode_ready(os.getpid(), sorted(self.handlers)))

    def watch_parent(self) -> None:
        # Forked by a zygote (kongtaskd.zygote: a double fork), we become the supervisor's
        # child only when the intermediate process exits, a moment from now: wait for that
        # (bounded), since PDEATHSIG is about whoever is our parent when it is set.
        from kongtaskd.zygote import adopter

        supervisor = adopter()
        if supervisor is not None:
            self.supervisor_pid = supervisor
            deadline = time.monotonic() + tunables.CHILD_ADOPTION_WAIT
            while os.getppid() != supervisor and time.monotonic() < deadline:
                time.sleep(0.001)
        # Ask the kernel to SIGTERM us when the supervisor dies, then make sure it has not
        # died already (the request only covers deaths after it is made).
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # not Linux: pipe EOF still tells us
        if os.getppid() != self.supervisor_pid:
            os._exit(EXIT_ORPHANED)

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, _GATE.gated(self.on_sigterm))
        signal.signal(signal.SIGUSR1, _GATE.gated(self.on_cancel_signal))
        signal.signal(signal.SIGALRM, self.on_cancel_alarm)
        # The supervisor's wake-up fd was closed above; don't write to it from here.
        signal.set_wakeup_fd(-1)

    def on_sigterm(self, signum: int, frame: object) -> None:
        held = self.holdings  # one read: a consistent view, whatever line we interrupted
        if held.phase is Phase.RUNNING:
            raise JobInterrupted(signal.Signals(signum).name)
        if held.phase is Phase.REPORTING:
            self.stop_after_report = True
            return
        if held.phase is not Phase.STARTING and os.getppid() != self.supervisor_pid:
            # Jobs received but not started (held, or still unread in the pipe), and nobody
            # left to return them: a live supervisor knows what it sent us, a dead one not.
            # Handed back from right here: no code runs on a half-done step afterwards.
            self.leave_orphaned(held)
        self.leave(EXIT_INTERRUPTED)

    def on_cancel_signal(self, signum: int, frame: object) -> None:
        """SIGUSR1: CANCELs wait in the pipe. Idle, the loop reads (and ignores) them itself."""
        held = self.holdings  # one read, as in on_sigterm
        if held.phase in (Phase.STARTING, Phase.IDLE):
            return
        for message in self.channel.take(protocol.Kind.CANCEL):
            if message.job_id not in held.jobs:
                continue  # already reported: the supervisor converts what it receives
            self.cancels = {**self.cancels, message.job_id: message.text}
            log.warning("job %d: %s", message.job_id, message.text)
            if held.phase is Phase.RUNNING and held.jobs[0] == message.job_id:
                if message.seconds > 0:
                    self.cancel_alarm_for = message.job_id
                    signal.setitimer(signal.ITIMER_REAL, message.seconds)
                else:
                    self.interrupt_cancelled(message.text)

    def on_cancel_alarm(self, signum: int, frame: object) -> None:
        """SIGALRM: a cancelled job's cancel_grace is over; interrupt it if it still runs."""
        held = self.holdings
        job_id = self.cancel_alarm_for
        if job_id is None or held.phase is not Phase.RUNNING or held.jobs[0] != job_id:
            return
        self.cancel_alarm_for = None
        self.interrupt_cancelled(self.cancels.get(job_id, "cancelled"))

    def forget_cancel(self, job_id: int) -> None:
        """The job's outcome is out: no alarm may outlive it."""
        if self.cancel_alarm_for == job_id:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.cancel_alarm_for = None
        if job_id in self.cancels:
            self.cancels = {k: v for k, v in self.cancels.items() if k != job_id}

    def leave_orphaned(self, held: Holdings) -> NoReturn:
        """Hand back what we hold and what the dead supervisor sent that we never read."""
        unread = [
            job_id
            for message in self.channel.unread()
            if message.kind is protocol.Kind.RUN
            for job_id in message.job_ids
        ]
        jobs = list(dict.fromkeys([*held.jobs, *unread]))
        if not jobs:
            self.leave(EXIT_ORPHANED)
        self.hand_back(jobs)

    def connect(self) -> None:
        """Open this child's connection. Through a pooler (``pooled``) it carries no session
        state: nothing is SET after connecting, and the statements run unprepared.
        application_name goes in the startup packet, and there it is the same for every
        child: PgBouncer tracks it per client and SETs it on a server connection whenever
        the next transaction comes from a client with another value, which with one name
        per child would be a SET before most transactions."""
        from kongtaskd.dsn import connect

        name = "kongtaskd child"
        self.conn = connect(
            self.settings.dsn,
            application_name=name if self.settings.pooled else f"{name} {self.settings.index}",
            autocommit=True,
        )
        self.queries = Queries(
            self.conn,
            self.settings.schema,
            names=CHILD_STATEMENTS,
            prepared=not self.settings.pooled,
        )

    def ensure_connection(self) -> None:
        """Reconnect after a lost connection, with back-off, for ``CHILD_DB_RETRY_SECONDS``."""
        if self.conn is not None and not self.conn.closed and self.queries is not None:
            return
        deadline = time.monotonic() + tunables.CHILD_DB_RETRY_SECONDS
        delay = tunables.RECONNECT_BACKOFF_FIRST
        while True:
            try:
                self.connect()
                return
            except (KongtaskError, psycopg2.Error) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "child %d cannot reach the database (%s); retrying", self.settings.index, exc
                )
                time.sleep(delay)
                delay = min(delay * 2, tunables.RECONNECT_BACKOFF_MAX)

    def broken(self) -> None:
        """Forget a connection that failed; the next use reconnects."""
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = None
        self.queries = None

    def die(self, error: str, kind: str) -> NoReturn:
        try:
            self.channel.send(protocol.encode_fatal(error, kind))
        except OSError:
            pass
        self.leave(EXIT_FATAL)

    # -- the loop --------------------------------------------------------------------------
    def serve(self) -> NoReturn:
        """Run jobs as their ids arrive until told to stop or the supervisor goes away."""
        while True:
            self.serve_next()

    def serve_next(self) -> None:
        """Wait for one message from the supervisor and act on it."""
        self.set_title("idle")
        logs.flush()  # nothing logged waits while we do (end-of-job hooks' lines, errors)
        self.channel.wait()  # idle: a SIGTERM here ends the child at once
        with sigterm_deferred():  # the ids leave the socket and enter the holdings together
            message = self.channel.receive()
            if message is not None and message.kind is protocol.Kind.RUN and message.job_ids:
                self.holdings = Holdings(message.job_ids, Phase.HOLDING)
        if message is None:  # EOF: the supervisor is gone
            self.leave(EXIT_ORPHANED)
        if message.kind is protocol.Kind.STOP:
            self.exit(EXIT_OK)
        if message.kind is protocol.Kind.RUN and message.job_ids:
            self.run_batch(message.rows)
            if self.stop_after_report:
                self.exit(EXIT_INTERRUPTED)
            self.recycle_if_due()

    def run_batch(self, inline: tuple[bytes | None, ...] = ()) -> None:
        """The jobs held (one, or a few short ones handed over together): load all, run in
        order. Each leaves the holdings only once its outcome is reported. ``inline``: the
        rows that came with the ids (same order; None: load that one).

        Between two jobs a STOP from the supervisor (a drain) is honoured at once: the jobs
        not started yet go back to it, to be handed back to the queue.
        """
        first = self.holdings.jobs[0]
        rows = self.load_held(inline)
        while rows is not None and self.holdings.jobs:
            job_id = self.holdings.jobs[0]
            if job_id != first and self.stop_requested():
                self.report_returned()
                self.exit(EXIT_OK)
            if self.conn is None or self.conn.closed:
                # The job before lost the connection (a failover, a restart): the rest are
                # read again on the new one, so a job the server we now talk to does not
                # show as ours is skipped, as at the batch's start. No inline rows here: a
                # row vouches for ownership only on the server whose claim read it.
                rows = self.load_held()
                if rows is None:
                    return
            self.run_job(job_id, rows.get(job_id))
            if self.stop_after_report:  # interrupted (SIGTERM): the rest never starts
                if self.holdings.jobs:
                    self.report_returned()
                return

    def load_held(self, inline: tuple[bytes | None, ...] = ()) -> dict[int, tuple[Any, ...]] | None:
        """The rows of the jobs held (``load``; ``inline``: the rows that came with them, in
        the same order); None when the database stayed out of reach, after giving them all
        back: none of them ran, none loses an attempt."""
        try:
            return self.load(self.holdings.jobs, inline)
        except (KongtaskError, psycopg2.Error) as exc:
            log.error(
                "child %d could not load jobs %s: %s", self.settings.index, self.holdings.jobs, exc
            )
            self.report_returned()
            return None

    def stop_requested(self) -> bool:
        with sigterm_deferred():  # SIGUSR1's handler must not read the buffer meanwhile
            message = self.channel.peek()
        return message is not None and message.kind is protocol.Kind.STOP

    def run_job(self, job_id: int, row: tuple[Any, ...] | None) -> None:
        """One job, phase by phase: its row (loaded), run the handler, report the outcome."""
        started = time.perf_counter()
        # 1. The row, read only while this pool still held the job (a sweeper may have
        #    taken it back): here, or by the claim of the supervisor's turn that sent it.
        if row is None:
            self.report(protocol.encode_skipped(job_id, "the job is gone or no longer ours"))
            return
        if job_id in self.cancels:  # cancelled before it started: it never starts
            self.report_failed(job_id, 0.0, self.cancels[job_id])
            self.forget_cancel(job_id)
            return
        job = Job(*row[:-1], flags=sorted(row[-1]) if row[-1] else None)
        # The trace context kongtaskd.add_job stored in the payload is ours, not the app's.
        payload, trace = split_trace_context(job.payload)
        if trace is not None:
            job = dataclasses.replace(job, payload=payload)
        handler = self.handlers.get(job.task_identifier)
        if handler is None:  # the supervisor only claims tasks every child has
            self.report_failed(job_id, 0.0, f"no handler for task {job.task_identifier!r}")
            return
        # 2. Run, in the handler's own transaction on this child's connection.
        self.set_title(f"running {job.task_identifier}#{job.id}")
        task_log = logging.getLogger(f"kongtaskd.task.{job.task_identifier}")
        job_log = logging.LoggerAdapter(task_log, {"job_id": job.id, "task": job.task_identifier})
        output = self.output
        with job_context(job.id, job.task_identifier):  # every log record names the job
            job_started(task_log, job)
            if output is not None:
                output.set_job((job.id, job.task_identifier))  # its prints name it too
            failure = self.call(handler, job, job_log, trace)
            if output is not None:
                output.set_job(None)
            seconds = time.perf_counter() - started
            self.jobs_done += 1
            job_finished(task_log, job, seconds, failure.text if failure else None)
            logs.flush()  # this job's lines and output are out before its outcome
        # 3. Report. The supervisor writes the outcome (batched with other children's).
        # A cancelled job ends as the cancel's failure, also when its handler swallowed the
        # JobCancelled and returned (the trigger of kongtaskd migration 7 writes the message).
        cancel_message = self.cancels.get(job_id)
        if cancel_message is not None and (failure is None or failure.text != cancel_message):
            failure = Failure(
                cancel_message, failure.error if failure else JobCancelled(cancel_message)
            )
        if failure is None:
            self.report_done(job_id, seconds)
        else:
            self.report_failed(job_id, seconds, failure.text)
        self.forget_cancel(job_id)
        # 4. The end-of-job hooks, once the outcome is on its way: a slow hook delays the
        #    next job only, and nothing a hook does can change this one's outcome. A SIGTERM
        #    waits for them (REPORTING): ending the child from the signal handler while a
        #    hook holds Sentry's or a span processor's lock would deadlock the exit flush.
        if self.hooks:
            held = self.holdings
            self.holdings = held.entering(Phase.REPORTING)
            try:
                with job_context(job.id, job.task_identifier):
                    if output is not None:
                        output.set_job((job.id, job.task_identifier))
                    if failure is None:
                        self.hooks.succeeded(job, seconds)
                    else:
                        self.hooks.failed(job, failure.error, job.attempts < job.max_attempts)
                    if output is not None:
                        output.set_job(None)
            finally:
                self.holdings = held

    def load(
        self, job_ids: tuple[int, ...], inline: tuple[bytes | None, ...] = ()
    ) -> dict[int, tuple[Any, ...]]:
        """The job rows: those that came with their ids (``inline``, same order), the others
        read, riding out a lost connection for ``CHILD_DB_RETRY_SECONDS``."""
        found: dict[int, tuple[Any, ...]] = {}
        if inline:
            for job_id, data in zip(job_ids, inline, strict=False):
                row = decode_row(data)
                if row is not None:
                    found[job_id] = row
            job_ids = tuple(job_id for job_id in job_ids if job_id not in found)
            if not job_ids:
                return found
        deadline = time.monotonic() + tunables.CHILD_DB_RETRY_SECONDS
        while True:
            try:
                self.ensure_connection()
                assert self.queries is not None
                if len(job_ids) == 1:  # the common case when idle: a cheaper plan
                    rows = self.queries.fetchall("load_job", job_ids[0], self.settings.pool_id)
                else:
                    rows = self.queries.fetchall("load_jobs", list(job_ids), self.settings.pool_id)
                found.update((row[0], row) for row in rows)
                return found
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self.broken()
                if time.monotonic() > deadline:
                    raise
                time.sleep(tunables.RECONNECT_BACKOFF_FIRST)

    def call(
        self,
        handler: Handler,
        job: Job,
        job_log: logging.LoggerAdapter[Any],
        trace: Mapping[str, str] | None = None,
    ) -> Failure | None:
        """Run the handler in its transaction, inside the integrations' ``around`` (Django's
        atomic block, the job's span). Returns None on success, else the failure."""
        conn = self.conn
        assert conn is not None
        ctx = JobContext(
            job=job,
            logger=job_log,
            connection=conn,
            schema=self.settings.schema,
            django=bool(self.settings.django_settings),
            cancel_check=lambda: job.id in self.cancels,
        )
        conn.autocommit = False
        try:
            # From this store on a SIGTERM interrupts the handler, whose except clause below
            # hands the jobs back if the supervisor is gone.
            self.holdings = self.holdings.entering(Phase.RUNNING)
            try:
                with self.hooks.around(job, trace):
                    if job.id in self.cancels:  # a SIGUSR1 that landed just before RUNNING
                        raise JobCancelled(self.cancels[job.id])
                    self.hooks.started(job)  # in the job's span and Django transaction
                    result = handler(job.payload, ctx)
                    if inspect.isawaitable(result):
                        result = self.run_awaitable(job.id, result)
            finally:
                self.holdings = self.holdings.entering(Phase.REPORTING)
            if conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE:
                conn.commit()
            return None
        except JobCancelled as exc:
            self.end_transaction()  # a cancel ends the job, not the child
            self.forget_event_loop()
            return Failure(format_error(exc), exc)
        except JobInterrupted as exc:
            self.stop_after_report = True
            self.end_transaction()
            if os.getppid() != self.supervisor_pid:
                self.hand_back(list(self.holdings.jobs))  # this job and the rest
            return Failure(format_error(exc, f"job interrupted by {exc}"), exc)
        except BaseException as exc:
            self.end_transaction()
            return Failure(format_error(exc), exc)
        finally:
            self.restore_autocommit()

    def run_awaitable(self, job_id: int, awaitable: Any) -> Any:
        """An async handler, to completion in the child's loop, as a task a cancel can reach:
        raising from a signal handler would stop the loop, not the coroutine, so a cancel
        cancels the task (the coroutine sees ``asyncio.CancelledError``, asyncio's way) and
        the child reports the JobCancelled."""
        loop = self.event_loop()
        task = asyncio.ensure_future(awaitable, loop=loop)
        self.async_task = task
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if job_id in self.cancels:
                raise JobCancelled(self.cancels[job_id]) from None
            raise
        finally:
            self.async_task = None

    def interrupt_cancelled(self, message: str) -> None:
        """The running job's cancel takes effect now: JobCancelled (sync handler), or its
        task cancelled through the loop's self-pipe (async handler; wakes the loop)."""
        task = self.async_task
        if task is not None and self.loop is not None and not task.done():
            self.loop.call_soon_threadsafe(task.cancel, message)
            return
        raise JobCancelled(message)

    def forget_event_loop(self) -> None:
        """An async handler interrupted inside its loop left tasks behind that must never
        resume under the next job: cancel them and start the next job on a fresh loop."""
        loop, self.loop = self.loop, None
        if loop is not None:
            for task in asyncio.all_tasks(loop):
                task.cancel()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def end_transaction(self) -> None:
        """Roll back what a failed handler did; a dead connection is dropped for later."""
        if self.conn is None:
            return
        try:
            self.conn.rollback()
        except psycopg2.Error:
            self.broken()

    def restore_autocommit(self) -> None:
        if self.conn is None:
            return
        try:
            if self.conn.closed:
                self.broken()
                return
            if self.conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE:
                self.conn.rollback()  # the handler left a transaction open after an error
            self.conn.autocommit = True
        except psycopg2.Error:
            self.broken()

    def hand_back(self, job_ids: list[int]) -> NoReturn:
        """The supervisor is gone: put the jobs back in the queue ourselves, attempts refunded."""
        self.holdings = self.holdings.entering(Phase.REPORTING)  # a second SIGTERM waits
        try:
            self.restore_autocommit()  # we may still be inside the handler's transaction
            self.ensure_connection()
            assert self.queries is not None
            Settle(self.queries, self.settings.pool_id).hand_back(job_ids)
            log.warning("supervisor gone: returned jobs %s to the queue", job_ids)
        except Exception as exc:
            log.error("supervisor gone and jobs %s could not be returned: %s", job_ids, exc)
        self.leave(EXIT_ORPHANED)

    def report_done(self, job_id: int, seconds: float) -> None:
        self.report(protocol.encode_done(job_id, seconds), completed=[job_id])

    def report_failed(self, job_id: int, seconds: float, error: str) -> None:
        self.report(protocol.encode_failed(job_id, seconds, error), failed=(job_id, error))

    def report(
        self,
        frame: bytes,
        completed: list[int] | None = None,
        failed: tuple[int, str] | None = None,
    ) -> None:
        """Send the first held job's outcome up the pipe (the job then leaves the holdings).
        If the supervisor is gone, write it ourselves and hand back the rest."""
        self.holdings = self.holdings.entering(Phase.REPORTING)
        try:
            self.channel.send(frame)
        except OSError:
            self.record_orphaned(completed or [], failed, self.holdings.rest)
        self.holdings = self.holdings.reported()

    def report_returned(self) -> None:
        """Give every held job back to the supervisor (none started); if it is gone, to the
        queue."""
        self.holdings = self.holdings.entering(Phase.REPORTING)
        try:
            self.channel.send(protocol.encode_returned(list(self.holdings.jobs)))
        except OSError:
            self.record_orphaned([], None, list(self.holdings.jobs))
        self.holdings = NOTHING_HELD

    def record_orphaned(
        self, completed: list[int], failed: tuple[int, str] | None, unstarted: list[int]
    ) -> NoReturn:
        """The supervisor died while we ran a job: the outcome still reaches the database,
        and the jobs we never started go back to the queue, attempts refunded."""
        self.holdings = self.holdings.entering(Phase.REPORTING)  # a second SIGTERM waits
        try:
            self.ensure_connection()
            assert self.queries is not None
            failed_ids = [failed[0]] if failed else []
            Settle(self.queries, self.settings.pool_id).record(
                Outcomes(
                    completed=list(completed),
                    failed=dict([failed]) if failed else {},
                    released=list(unstarted),
                )
            )
            if completed or failed_ids:
                log.warning(
                    "supervisor gone: recorded the outcome of job %s ourselves",
                    (completed or failed_ids),
                )
            if unstarted:
                log.warning("supervisor gone: returned jobs %s to the queue", unstarted)
        except Exception as exc:
            log.error("supervisor gone and the outcome could not be recorded: %s", exc)
        self.leave(EXIT_ORPHANED)

    def recycle_if_due(self) -> None:
        limit = self.settings.max_jobs
        if limit is not None and self.jobs_done >= limit:
            self.say_bye(f"recycled after {self.jobs_done} jobs")
        mib_limit = self.settings.max_memory_mib
        if mib_limit is not None:
            rss = rss_mib()
            if rss > mib_limit:
                self.say_bye(f"recycled at {rss:.0f} MiB resident (limit {mib_limit} MiB)")

    def say_bye(self, reason: str) -> NoReturn:
        try:
            self.channel.send(protocol.encode_bye(reason))
        except OSError:
            pass
        self.exit(EXIT_OK)

    def exit(self, code: int) -> NoReturn:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.leave(code)

    def leave(self, code: int) -> NoReturn:
        """End the process (``os._exit``: no finalisers, no atexit), after flushing what the
        hooks' integrations buffer and logging its last output."""
        hooks, self.hooks = self.hooks, Hooks()  # once, even if a flush is interrupted
        hooks.flush()
        if self.output is not None:
            self.output.close()
        else:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
        logs.flush()
        os._exit(code)

    def set_title(self, what: str) -> None:
        setproctitle(f"kongtaskd: child {self.settings.index} {what}")


#: Positions of the timestamps in a job row (``sql/load_job.sql``'s columns): run_at,
#: created_at, updated_at, locked_at.
_ROW_TIMESTAMPS = (5, 9, 10, 12)


def decode_row(data: bytes | None) -> tuple[Any, ...] | None:
    """A row that came with its id (the task identifier, NUL, ``sql/settle.sql``'s JSON
    array) as the tuple ``load_job`` returns: the payload and flags decoded as psycopg2
    decodes ``json`` and ``jsonb``, timestamps as aware datetimes. None when there is none,
    or when it is not what we expect (a timestamp Python cannot hold): then the child loads
    the job."""
    if data is None:
        return None
    task, nul, text = data.partition(b"\0")
    if not nul:
        return None
    try:
        values = json.loads(text)
        values[1] = task.decode()
        for index in _ROW_TIMESTAMPS:
            if values[index] is not None:
                values[index] = datetime.datetime.fromisoformat(values[index])
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    if len(values) != 16:
        return None
    return tuple(values)


def rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_error(exc: BaseException, headline: str | None = None) -> str:
    """The ``last_error`` text: ``Type: message`` then the traceback, bounded in size."""
    # Scrubbed: last_error is shown by `kongtaskd jobs` and graphile-worker's tools alike.
    head = redact.scrub(headline or f"{type(exc).__name__}: {exc}")
    text = head + "\n\n" + redact.scrub("".join(traceback.format_exception(exc)).rstrip())
    limit = tunables.ERROR_TEXT_MAX_CHARS
    if len(text) <= limit:
        return text
    cut = "\n[... traceback shortened ...]\n"
    keep_head = min(len(head), limit // 4)
    return text[:keep_head] + cut + text[-(limit - keep_head - len(cut)) :]


def child_main(settings: ChildSettings, channel: protocol.Channel) -> NoReturn:
    """Entry point in the forked process; never returns."""
    code = EXIT_FATAL
    child: Child | None = None
    try:
        child = Child(settings, channel)
        child.start()
        child.serve()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_FATAL
    except BaseException:
        log.critical("child %d crashed", settings.index, exc_info=True)
    finally:
        if child is not None:
            child.leave(code)
        os._exit(code)
