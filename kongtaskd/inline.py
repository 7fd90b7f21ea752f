"""``kongtaskd.run_jobs``: run the ready jobs now, in the calling process (tests, scripts).

No supervisor, no fork, one job at a time, and nothing of its own about claims or
outcomes: every job is claimed and settled by ``sql/settle.sql`` through settle.py's typed
wrapper, the statement the daemon runs (so the claim is ``kongtaskd_claim``, queues are
serialised and a failure backs off exactly as in the daemon). The handler gets the
daemon's ``(payload, ctx)`` (context.py), and its error text is the child's
(``child.format_error``).

Two ways to hold the transaction:

* a connection (any :mod:`kongtaskd.drivers` accepts: psycopg2, psycopg 3, SQLAlchemy,
  Django): everything happens inside the caller's open transaction, which is never
  committed or rolled back here. Each job gets a savepoint: a failing handler's writes are
  rolled back to it, its failure is then recorded, still inside the caller's transaction.
  So jobs enqueued earlier in that transaction (a Django ``TestCase``, a test that rolls
  back at the end) are seen, and nothing run here outlives the caller's rollback.
* a DSN: an own connection; the claim is committed, then the handler's writes and its
  outcome commit together (a failure: its writes rolled back, the failure committed).

The settle statement is ``$n``-numbered for the supervisor's PREPARE; here it runs as
plain text on whatever driver, with ``$n`` turned into ``%(pn)s`` (:func:`pyformat`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from kongtaskd import settle as settle_sql
from kongtaskd.drivers import Fetch, quote_identifier, sync_kind, sync_target
from kongtaskd.job import Job
from kongtaskd.queries import bind, pyformat, source
from kongtaskd.registry import Handler, resolve

log = logging.getLogger("kongtaskd.inline")

#: The savepoint each job runs under when run_jobs works in the caller's transaction.
SAVEPOINT = "kongtaskd_run_jobs"


@dataclass
class RunSummary:
    """What ``run_jobs`` did: job ids by outcome, in the order they ran."""

    succeeded: list[int] = field(default_factory=list)
    #: Failed and will be retried (``run_at`` moved by graphile-worker's back-off).
    failed: list[int] = field(default_factory=list)
    #: Failed on its last attempt: the row stays as a permanently failed job.
    permanently_failed: list[int] = field(default_factory=list)
    #: job id -> the ``last_error`` written.
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def ran(self) -> int:
        return len(self.succeeded) + len(self.failed) + len(self.permanently_failed)

    def __str__(self) -> str:
        return (
            f"{self.ran} jobs: {len(self.succeeded)} succeeded, {len(self.failed)} failed, "
            f"{len(self.permanently_failed)} failed permanently"
        )


class FetchQueries:
    """What settle.py needs of ``Queries`` (``fetchall(name, *params)``) over a driver's
    :data:`~kongtaskd.drivers.Fetch`, without PREPARE: a caller's connection must not be
    left holding our prepared statements."""

    def __init__(self, fetch: Fetch, schema: str) -> None:
        self.fetch = fetch
        self.schema = schema
        self._texts: dict[str, str] = {}

    def text(self, name: str) -> str:
        if name not in self._texts:
            body = pyformat(source(name))
            self._texts[name] = bind(body, quote_identifier(self.schema), with_parameters=True)
        return self._texts[name]

    def fetchall(self, name: str, *params: Any) -> list[tuple[Any, ...]]:
        values = {f"p{number}": value for number, value in enumerate(params, start=1)}
        return [tuple(row.values()) for row in self.fetch(self.text(name), values)]


def _handlers(tasks: Mapping[str, Handler | str]) -> dict[str, Handler]:
    if not isinstance(tasks, Mapping) or not tasks:
        raise TypeError(
            "run_jobs: tasks must be a non-empty dict of task identifier -> callable "
            "or 'module:function'"
        )
    handlers: dict[str, Handler] = {}
    for identifier, handler in tasks.items():
        if not isinstance(identifier, str) or not identifier:
            raise TypeError(f"run_jobs: task identifier {identifier!r} is not a non-empty string")
        if isinstance(handler, str):
            handlers[identifier] = resolve(handler, identifier=identifier)
        elif callable(handler):
            handlers[identifier] = handler
        else:
            raise TypeError(
                f"run_jobs: the handler of task {identifier!r} is a "
                f"{type(handler).__name__}, not a callable or 'module:function'"
            )
    return handlers


def _refuse_autocommit(conn: Any) -> None:
    """A savepoint needs a transaction: a connection in autocommit mode has none to join."""
    kind = sync_kind(conn)  # TypeError naming what is accepted, for anything else
    target = conn.connection if kind in ("psycopg2-cursor", "psycopg-cursor") else conn
    if kind.startswith(("psycopg2", "psycopg")) and getattr(target, "autocommit", False):
        raise ValueError(
            "run_jobs: the connection is in autocommit mode, so there is no transaction to "
            "run the jobs in: turn autocommit off, or pass a DSN"
        )
    if kind == "django" and not getattr(conn, "in_atomic_block", True):
        raise ValueError(
            "run_jobs: Django's connection is in autocommit mode outside transaction.atomic(), "
            "so there is no transaction to run the jobs in: call it inside atomic() (a "
            "TestCase is), or pass a DSN"
        )


class _Runner:
    def __init__(
        self, fetch: Fetch, ctx_connection: Any, schema: str, handlers: dict[str, Handler]
    ) -> None:
        self.fetch = fetch
        self.ctx_connection = ctx_connection
        self.schema = schema
        self.handlers = handlers
        self.queries = FetchQueries(fetch, schema)
        # Its own pool id, as a daemon has: locked_by shows who holds a job, and outcomes
        # touch only rows this pool holds.
        self.pool_id = f"kongtaskd-run-jobs-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.settle = settle_sql.Settle(cast(Any, self.queries), self.pool_id)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.known_tasks: list[int] = []

    def task_ids(self) -> list[int]:
        text = bind(
            source("run_jobs_task_ids"), quote_identifier(self.schema), with_parameters=True
        )
        rows = self.fetch(text, {"identifiers": sorted(self.handlers)})
        return sorted(row["id"] for row in rows)

    def claim(self) -> int | None:
        """One ready job of ours, claimed by the daemon's statement; None when none is."""
        job_id = self.claim_of(self.known_tasks)
        if job_id is None:
            # A handler may have enqueued the first job of one of our tasks just now.
            fresh = self.task_ids()
            if fresh != self.known_tasks:
                self.known_tasks = fresh
                job_id = self.claim_of(fresh)
        return job_id

    def claim_of(self, task_ids: list[int]) -> int | None:
        if not task_ids:  # no task rows: none of ours has a job
            return None
        # 'more' with nothing claimed: the jobs it locked were behind one named queue's
        # head; the daemon claims again next turn, and so does this, once.
        for _ in range(2):
            result = self.settle.settle(settle_sql.Outcomes(), settle_sql.Want(1, task_ids))
            if result.claimed:
                return result.claimed[0].id
            if not result.more:
                break
        return None

    def load(self, job_id: int) -> Job:
        rows = self.fetch(
            bind(source("run_jobs_load"), quote_identifier(self.schema), with_parameters=True),
            {"id": job_id, "pool_id": self.pool_id},
        )
        row = rows[0]
        for column in ("payload", "flags"):  # json as text: decoded once, whatever the driver
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
        return Job.from_row(row)

    def call(self, job: Job) -> str | None:
        """Run the handler; None on success, else the error text the child would write."""
        from kongtaskd.child import format_error
        from kongtaskd.context import JobContext
        from kongtaskd.logs import job_context, job_finished, job_started

        handler = self.handlers[job.task_identifier]
        task_log = logging.getLogger(f"kongtaskd.task.{job.task_identifier}")
        job_log = logging.LoggerAdapter(task_log, {"job_id": job.id, "task": job.task_identifier})
        ctx = JobContext(
            job=job, logger=job_log, connection=self.ctx_connection, schema=self.schema
        )
        started = time.perf_counter()
        error: str | None = None
        with job_context(job.id, job.task_identifier):
            job_started(task_log, job)  # the daemon's lines, the same policy (logs.py)
            try:
                result = handler(job.payload, ctx)
                if inspect.isawaitable(result):
                    if self.loop is None:
                        self.loop = asyncio.new_event_loop()
                    self.loop.run_until_complete(result)
            except Exception as exc:  # a handler's failure is the job's, not ours
                error = format_error(exc)
            job_finished(task_log, job, time.perf_counter() - started, error)
        return error

    def record(self, job_id: int, error: str | None, summary: RunSummary) -> None:
        if error is None:
            self.settle.record(settle_sql.Outcomes(completed=[job_id]))
            summary.succeeded.append(job_id)
            return
        result = self.settle.record(settle_sql.Outcomes(failed={job_id: error}))
        summary.errors[job_id] = error
        if any(job.permanent for job in result.failed):
            summary.permanently_failed.append(job_id)
        else:
            summary.failed.append(job_id)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


def _in_transaction(runner: _Runner, limit: int | None, summary: RunSummary) -> None:
    """Jobs inside the caller's transaction, a savepoint around each handler."""
    while limit is None or summary.ran < limit:
        job_id = runner.claim()
        if job_id is None:
            return
        job = runner.load(job_id)
        runner.fetch(f"savepoint {SAVEPOINT}", {})
        error = runner.call(job)
        if error is None:
            runner.fetch(f"release savepoint {SAVEPOINT}", {})
        else:
            runner.fetch(f"rollback to savepoint {SAVEPOINT}", {})
            runner.fetch(f"release savepoint {SAVEPOINT}", {})
        runner.record(job_id, error, summary)


def _committing(conn: Any, runner: _Runner, limit: int | None, summary: RunSummary) -> None:
    """Jobs on our own connection: the claim commits, then the handler with its outcome."""
    while limit is None or summary.ran < limit:
        job_id = runner.claim()
        conn.commit()
        if job_id is None:
            return
        try:
            error = runner.call(runner.load(job_id))
        except BaseException:
            # Ctrl-C (or our own failure) mid-job: give the job back, attempt refunded, as a
            # drained daemon does, rather than leave it locked until the four-hour sweep.
            conn.rollback()
            runner.settle.hand_back([job_id])
            conn.commit()
            raise
        if error is not None:
            conn.rollback()  # the handler's writes go; the claim was committed before
        runner.record(job_id, error, summary)
        conn.commit()


@contextmanager
def _own_connection(dsn: str) -> Iterator[Any]:
    from kongtaskd.dsn import connect

    conn = connect(dsn, application_name="kongtaskd run_jobs")
    try:
        yield conn
    finally:
        if conn.info.transaction_status != 0:  # a failure of ours midway: nothing half-done
            conn.rollback()
        conn.close()


def run_jobs(
    conn_or_dsn: Any,
    tasks: Mapping[str, Callable[..., Any] | str],
    *,
    limit: int | None = None,
    schema: str = "graphile_worker",
) -> RunSummary:
    """Run the ready jobs of ``tasks`` now, here, one at a time; return what happened.

    ``tasks``: identifier -> callable or ``"module:function"``; only those tasks' jobs are
    claimed. Jobs not ready yet (``run_at`` in the future, a failed job's back-off) stay.
    ``limit``: stop after that many jobs (a job its own handler enqueues counts too).
    A connection's open transaction is used and never committed; a DSN commits per job.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"run_jobs: limit must be a positive integer or None, got {limit!r}")
    handlers = _handlers(tasks)
    summary = RunSummary()
    if isinstance(conn_or_dsn, str):
        with _own_connection(conn_or_dsn) as conn, sync_target(conn) as fetch:
            runner = _Runner(fetch, conn, schema, handlers)
            try:
                _committing(conn, runner, limit, summary)
            finally:
                runner.close()
        return summary
    _refuse_autocommit(conn_or_dsn)
    with sync_target(conn_or_dsn) as fetch:
        runner = _Runner(fetch, conn_or_dsn, schema, handlers)
        try:
            _in_transaction(runner, limit, summary)
        finally:
            runner.close()
    return summary
