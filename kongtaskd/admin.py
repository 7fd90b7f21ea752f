"""The admin verbs' work: ``jobs``, ``status`` and ``cleanup`` against the database, and the
tables and JSON they print (``init`` is in ``kongtaskd.starter``). ``kongtaskd.cli`` parses
the flags and calls in, importing this module only for these verbs.

Everything that changes jobs goes through graphile-worker's own SQL functions
(``reschedule_jobs``, ``permanently_fail_jobs``, ``complete_jobs``), which leave alone jobs
a worker holds: the verbs are safe beside running kongtaskd daemons and Node workers alike.
Those functions treat a lock older than four hours as abandoned; a kongtaskd pool that is
still sending heartbeats is not, so jobs it holds are never handed to them.

Decisions worth knowing (the ``--help`` texts say the same):

* Ids that cannot be acted on (no such job, or a worker is running it) do not stop the
  others: the known jobs are changed, then one error line names every id left over and the
  exit code is 1. An operator retrying a list of ids wants the good ones done, and a script
  learns from the exit code that not all were.
* ``jobs retry`` resets ``attempts`` to 0 and ``run_at`` to now and keeps ``last_error``:
  it is the only record of why the job failed, and the next failure or the success
  replaces or deletes it anyway.
* ``jobs list --failed`` lists every job whose last attempt failed (``last_error`` set):
  retrying ones and permanently failed ones alike. ``--json`` includes the payload, which
  graphile-worker's public ``jobs`` view leaves out.
* ``jobs list --json`` has no default cap (scripts act on what they get, so a silent cap
  made them act on part of the queue) and streams: rows come from a server-side cursor a
  batch at a time and are written as they arrive. The table keeps a default of 100 rows.
* ``cleanup`` without flags runs graphile-worker's library default, GC_TASK_IDENTIFIERS and
  GC_JOB_QUEUES; deleting permanently failed jobs destroys their record and must be asked
  for (``--permafailed``). Task identifiers of the configuration are always kept.

All reads of one command happen in one transaction, so ``status`` shows one moment; every
command that changes something commits once, at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any, TextIO

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd import cancel, tunables
from kongtaskd.actions import (
    ActionResult,
    Lock,
    fail_jobs,
    remove_jobs,
    reschedule_jobs,
    retry_jobs,
)
from kongtaskd.actions import execute as _execute
from kongtaskd.actions import has_heartbeats as _has_heartbeats
from kongtaskd.actions import transaction as _transaction
from kongtaskd.cancel import CancelResult

__all__ = [
    "LIST_FILTERS",
    "ActionResult",
    "CleanupReport",
    "JobListing",
    "ListedJob",
    "Lock",
    "QueueCounts",
    "Status",
    "Written",
    "cancel_jobs",
    "cleanup",
    "fail_jobs",
    "format_cleanup",
    "format_jobs",
    "format_status",
    "list_jobs",
    "remove_jobs",
    "reschedule_jobs",
    "retry_jobs",
    "status",
    "to_json",
    "write_jobs_json",
]

#: ``jobs list`` filters: --failed, --locked, --scheduled.
LIST_FILTERS = ("failed", "locked", "scheduled")

# Width of the last_error column of `jobs list`: enough for "Type: message" to be
# recognisable; the whole text is one `--json` away.
ERROR_COLUMN_WIDTH = 60


# --- plumbing -------------------------------------------------------------------------------


def _when(moment: dt.datetime | None) -> str:
    """A timestamp for tables: ISO 8601, UTC, to the second."""
    if moment is None:
        return ""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    """45s, 12m05s, 3h02m, 2d04h: two units are enough to read at a glance."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _cell(value: object) -> str:
    """A table cell: None is empty, whitespace (newlines included) collapses to one space."""
    if value is None:
        return ""
    return " ".join(str(value).split())


def _error_cell(text: str | None, width: int = ERROR_COLUMN_WIDTH) -> str:
    """The first non-blank line of an error (kongtaskd puts 'Type: message' there), cut."""
    if not text:
        return ""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _cell(line)
    return line if len(line) <= width else line[: width - 3] + "..."


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """Aligned columns, two spaces apart; the columns in ``right`` (numbers) right-aligned,
    so counts line up by their last digit."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """The ``--json`` output: dataclasses as objects, timestamps ISO 8601 in UTC."""
    return json.dumps(_jsonable(value), indent=2, ensure_ascii=False)


# --- jobs list ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ListedJob:
    """One row of ``jobs list``: graphile-worker's ``jobs`` view, a state, maybe the payload.

    ``state``: ``locked`` (a worker holds it), ``failed`` (no attempts left), ``retrying``
    (failed before, will run again), ``scheduled`` (run_at ahead) or ``ready``.
    """

    id: int
    task_identifier: str
    queue_name: str | None
    state: str
    priority: int
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    key: str | None
    locked_at: dt.datetime | None
    locked_by: str | None
    revision: int
    flags: list[str] | None
    #: Only when asked for (``--json``); the view has no payload column.
    payload: Any = None


@dataclasses.dataclass(frozen=True)
class JobListing:
    jobs: list[ListedJob]
    #: How many jobs matched, before the limit.
    total: int
    filtered: bool


@dataclasses.dataclass(frozen=True)
class Written:
    """What :func:`write_jobs_json` wrote: ``shown`` jobs of ``total`` matching."""

    shown: int
    total: int

    @property
    def capped(self) -> bool:
        return self.total > self.shown


def _list_params(
    task: str | None, queue: str | None, only: str | None, limit: int | None, with_payload: bool
) -> dict[str, Any]:
    if only is not None and only not in LIST_FILTERS:
        raise ValueError(f"only must be one of {', '.join(LIST_FILTERS)} or None, got {only!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 or None, got {limit}")
    return {
        "task": task,
        "queue": queue,
        "only": only,
        # One more than asked for: whether it arrives tells whether the limit cut the list.
        "limit": None if limit is None else limit + 1,
        "with_payload": with_payload,
    }


def _matching(
    cur: Cursor, schema: str, params: Mapping[str, Any], batch: int
) -> Iterator[ListedJob]:
    """The jobs of ``admin_list_jobs.sql``, fetched ``batch`` rows at a time from a
    server-side cursor in ``cur``'s transaction: memory holds one batch, not the list."""
    with cur.connection.cursor(name="kongtaskd_jobs_list") as rows:
        rows.itersize = batch
        _execute(rows, "admin_list_jobs", schema, params)
        names: list[str] | None = None
        for row in rows:
            if names is None:
                names = [column.name for column in rows.description or ()]
            job = dict(zip(names, row, strict=True))
            flags = job["flags"]
            job["flags"] = sorted(flags) if isinstance(flags, dict) else flags
            yield ListedJob(**job)


def _total(cur: Cursor, schema: str, params: Mapping[str, Any]) -> int:
    _execute(cur, "admin_count_jobs", schema, params)
    row = cur.fetchone()
    return int(row[0]) if row else 0


def list_jobs(
    conn: Connection,
    schema: str,
    *,
    task: str | None = None,
    queue: str | None = None,
    only: str | None = None,
    limit: int | None = 100,
    with_payload: bool = False,
) -> JobListing:
    """Jobs oldest first (by id); ``only`` is one of :data:`LIST_FILTERS`; ``limit`` None: all.

    The list is built in memory (for the table); :func:`write_jobs_json` streams instead.
    """
    params = _list_params(task, queue, only, limit, with_payload)
    with _transaction(conn, schema, read_only=True) as cur:
        jobs = list(_matching(cur, schema, params, tunables.JOBS_LIST_BATCH))
        total = len(jobs)
        if limit is not None and total > limit:
            del jobs[limit:]
            total = _total(cur, schema, params)
    return JobListing(jobs, total, filtered=any(v is not None for v in (task, queue, only)))


def write_jobs_json(
    conn: Connection,
    schema: str,
    out: TextIO,
    *,
    task: str | None = None,
    queue: str | None = None,
    only: str | None = None,
    limit: int | None = None,
    batch: int = tunables.JOBS_LIST_BATCH,
) -> Written:
    """Write the matching jobs (payload included) to ``out`` as one JSON array, job by job
    as they arrive: the same text as ``to_json(list_jobs(...).jobs)``, in constant memory.

    ``limit`` None: every match. The result says how many were written of how many match,
    so the caller can say when the limit cut the list.
    """
    params = _list_params(task, queue, only, limit, with_payload=True)
    shown = 0
    capped = False
    with _transaction(conn, schema, read_only=True) as cur:
        # closing(): a cut list closes its server-side cursor now, inside the transaction.
        with closing(_matching(cur, schema, params, batch)) as jobs:
            for job in jobs:
                if limit is not None and shown == limit:
                    capped = True
                    break
                text = json.dumps(_jsonable(job), indent=2, ensure_ascii=False)
                out.write(("[\n" if shown == 0 else ",\n") + _indent(text))
                shown += 1
        out.write("\n]\n" if shown else "[]\n")
        total = _total(cur, schema, params) if capped else shown
    return Written(shown, total)


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.split("\n"))


def format_jobs(listing: JobListing) -> str:
    """The human table of ``jobs list``."""
    if not listing.jobs:
        return "no jobs match" if listing.filtered else "no jobs"
    headers = (
        "ID",
        "TASK",
        "QUEUE",
        "STATE",
        "ATTEMPTS",
        "PRIORITY",
        "RUN AT",
        "LOCKED BY",
        "LAST ERROR",
    )
    rows = [
        [
            str(job.id),
            _cell(job.task_identifier),
            _cell(job.queue_name),
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            str(job.priority),
            _when(job.run_at),
            _cell(job.locked_by),
            _error_cell(job.last_error),
        ]
        for job in listing.jobs
    ]
    lines = _table(headers, rows, right=(0, 5))
    if listing.total > len(listing.jobs):
        lines.append(
            f"(showing {len(listing.jobs)} of {listing.total} jobs; "
            "--limit N shows more, --limit 0 all)"
        )
    return "\n".join(lines)


# --- jobs retry / fail / remove / reschedule ------------------------------------------------
# These live in kongtaskd.actions, the one action layer the CLI, the dashboard and the
# Django admin share; the names stay importable from here for existing callers.


def cancel_jobs(
    conn: Connection, schema: str, ids: Sequence[int], *, stale_after: float = 60.0
) -> CancelResult:
    """``jobs cancel``: :func:`kongtaskd.cancel.cancel_jobs` in one committed transaction,
    by this process's ``user@host``."""
    with _transaction(conn, schema):
        return cancel.cancel_jobs(conn, ids, schema=schema, stale_after=stale_after)


# --- status ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pool:
    """A kongtaskd daemon, from its heartbeat row."""

    pool_id: str
    hostname: str
    pid: int
    version: str
    concurrency: int
    busy: int
    idle: int
    jobs_done: int
    started_at: dt.datetime
    last_beat_at: dt.datetime
    uptime_seconds: float
    seconds_since_beat: float
    #: No heartbeat for longer than stale_after: presumed dead; the next sweep of a live
    #: daemon fails and releases its jobs.
    stale: bool
    locked_jobs: int
    #: When its last reload (SIGHUP) finished, None if it had none; and the reason it was
    #: refused (the handlers' import error), None if it succeeded.
    last_reload_at: dt.datetime | None = None
    last_reload_error: str | None = None
    #: Why it cannot fork replacement children (None: it can); its children keep running.
    degraded: str | None = None


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Someone holding jobs or queues without a kongtaskd heartbeat row: a graphile-worker
    pool (which writes none), or a kongtaskd pool already swept as dead."""

    locked_by: str
    jobs: int
    queues: int
    since: dt.datetime | None
    #: The oldest lock is older than graphile-worker's four hours: any running worker's
    #: stale-lock sweep will release it.
    expired: bool


@dataclasses.dataclass(frozen=True)
class Counts:
    """Jobs of one task in four disjoint states (their sum is ``total``)."""

    name: str
    ready: int
    scheduled: int
    locked: int
    failed: int
    total: int


@dataclasses.dataclass(frozen=True)
class QueueCounts(Counts):
    """Jobs of one named queue, and who holds the queue (it runs one job at a time)."""

    locked_by: str | None = None
    locked_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Status:
    schema: str
    #: The database's clock when the snapshot was taken.
    now: dt.datetime
    stale_after: float
    #: False when the schema has no kongtaskd heartbeat table (only Node workers ran
    #: migrations there): no daemon can be listed, only lock holders.
    heartbeats: bool
    pools: list[Pool]
    other_lock_holders: list[LockHolder]
    tasks: list[Counts]
    queues: list[QueueCounts]
    totals: Counts
    #: Tasks and named queues paused fleet-wide (``kongtaskd pause``, migration 6).
    pauses: list[PauseRow] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PauseRow:
    kind: str  # "task" or "queue"
    name: str
    paused_at: dt.datetime
    paused_by: str
    #: The task (queue) exists in the database yet; a pause may come before any job.
    known: bool


#: The locked_by of a paused queue's row (kongtaskd_pause_marker(), migration 6).
PAUSE_MARKER = "kongtaskd pause"


def _has_pauses(cur: Cursor, schema: str) -> bool:
    name = sql.Identifier(schema, "_kongtaskd_pauses").as_string(cur.connection)
    cur.execute("select to_regclass(%s) is not null", (name,))
    row = cur.fetchone()
    return bool(row and row[0])


def _counts(name: str, ready: int, scheduled: int, locked: int, failed: int) -> Counts:
    return Counts(name, ready, scheduled, locked, failed, ready + scheduled + locked + failed)


def status(conn: Connection, schema: str, *, stale_after: float = 60.0) -> Status:
    """Live daemons, other lock holders and job counts per task and queue, in one snapshot."""
    with _transaction(conn, schema, read_only=True) as cur:
        cur.execute("select now()")
        (now,) = cur.fetchone() or (None,)
        heartbeats = _has_heartbeats(cur, schema)
        pools: list[Pool] = []
        if heartbeats:
            _execute(cur, "admin_status_pools", schema, {"stale_after": stale_after})
            for row in cur.fetchall():
                (pool_id, hostname, pid, version, concurrency, busy, done) = row[:7]
                pools.append(
                    Pool(
                        pool_id=pool_id,
                        hostname=hostname,
                        pid=pid,
                        version=version,
                        concurrency=concurrency,
                        busy=busy,
                        idle=max(0, concurrency - busy),
                        jobs_done=done,
                        started_at=row[7],
                        last_beat_at=row[8],
                        uptime_seconds=row[9],
                        seconds_since_beat=row[10],
                        stale=row[11],
                        locked_jobs=row[12],
                        last_reload_at=row[13],
                        last_reload_error=row[14],
                        degraded=row[15],
                    )
                )
        _execute(
            cur,
            "admin_status_holders",
            schema,
            {"stale_lock_seconds": tunables.STALE_LOCK_SECONDS},
        )
        known = {pool.pool_id for pool in pools}
        holders = [
            LockHolder(*row)
            for row in cur.fetchall()
            if row[0] not in known and row[0] != PAUSE_MARKER  # shown as pauses instead
        ]
        paused: list[PauseRow] = []
        if _has_pauses(cur, schema):
            _execute(cur, "steer_list", schema, {})
            paused = [PauseRow(*row) for row in cur.fetchall()]
        _execute(cur, "admin_status_tasks", schema, {})
        tasks = [_counts(*row) for row in cur.fetchall()]
        _execute(cur, "admin_status_queues", schema, {})
        queues = [
            QueueCounts(
                name, ready, scheduled, locked, failed, ready + scheduled + locked + failed, by, at
            )
            for name, ready, scheduled, locked, failed, by, at in cur.fetchall()
        ]
    totals = _counts(
        "total",
        sum(t.ready for t in tasks),
        sum(t.scheduled for t in tasks),
        sum(t.locked for t in tasks),
        sum(t.failed for t in tasks),
    )
    return Status(
        schema=schema,
        now=now,
        stale_after=stale_after,
        heartbeats=heartbeats,
        pools=pools,
        other_lock_holders=holders,
        tasks=tasks,
        queues=queues,
        totals=totals,
        pauses=paused,
    )


def _count_rows(counts: Sequence[Counts]) -> list[list[str]]:
    return [
        [_cell(c.name), str(c.ready), str(c.scheduled), str(c.locked), str(c.failed), str(c.total)]
        for c in counts
    ]


def format_status(report: Status) -> str:
    """The human form of ``status``: daemons, other lock holders, jobs by task and queue."""
    lines = [f"schema {report.schema} at {_when(report.now)}", ""]
    lines.append(f"daemons (kongtaskd heartbeats; stale after {report.stale_after:g}s):")
    if not report.heartbeats:
        lines.append("  (no heartbeat table: kongtaskd has not migrated this schema)")
    elif not report.pools:
        lines.append("  (none)")
    else:
        rows = [
            [
                pool.pool_id,
                str(pool.busy),
                str(pool.idle),
                str(pool.jobs_done),
                str(pool.locked_jobs),
                _cell(pool.hostname),
                str(pool.pid),
                _cell(pool.version),
                _duration(pool.uptime_seconds),
                f"{_duration(pool.seconds_since_beat)} ago",
                "STALE" if pool.stale else "live",
            ]
            for pool in report.pools
        ]
        headers = ("POOL", "BUSY", "IDLE", "DONE", "LOCKED", "HOST", "PID", "VERSION")
        headers += ("UPTIME", "LAST BEAT", "STATE")
        lines += ["  " + line for line in _table(headers, rows, right=range(1, 5))]
        for pool in report.pools:
            if pool.last_reload_error is not None:
                lines.append(
                    f"  {pool.pool_id}: reload refused at {_when(pool.last_reload_at)}, still "
                    f"running the previous configuration: {_cell(pool.last_reload_error)}"
                )
            if pool.degraded is not None:
                lines.append(f"  {pool.pool_id}: DEGRADED: {_cell(pool.degraded)}")
    if report.pauses:
        lines += ["", "paused (fleet-wide: no new job of these starts until resumed):"]
        for pause in report.pauses:
            line = (
                f"  {pause.kind} {_cell(pause.name)} since {_when(pause.paused_at)} "
                f"by {_cell(pause.paused_by)}"
            )
            if not pause.known:
                line += f" (no such {pause.kind} in the database yet)"
            lines.append(line)
    if report.other_lock_holders:
        lines += ["", "other lock holders:"]
    for holder in report.other_lock_holders:
        held = _plural(holder.jobs, "job")
        if holder.queues:
            held += f" and {_plural(holder.queues, 'queue')}"
        line = (
            f"  {holder.locked_by} (no heartbeat: graphile-worker?) holding {held} "
            f"since {_when(holder.since)}"
        )
        if holder.expired:
            line += " (older than 4 h: the stale-lock sweep will release them)"
        lines.append(line)
    lines += ["", "jobs by task:"]
    headers = ("TASK", "READY", "SCHEDULED", "LOCKED", "FAILED", "TOTAL")
    if report.tasks:
        lines += [
            "  " + line for line in _table(headers, _count_rows(report.tasks), right=range(1, 6))
        ]
    else:
        lines.append("  (no jobs)")
    if report.queues:
        lines += ["", "jobs by named queue:"]
        rows = _count_rows(report.queues)
        for row, queue in zip(rows, report.queues, strict=True):
            row.append(_cell(queue.locked_by))
        table = _table(("QUEUE", *headers[1:], "HELD BY"), rows, right=range(1, 6))
        lines += ["  " + line for line in table]
    t = report.totals
    lines += [
        "",
        f"total: {t.ready} ready, {t.scheduled} scheduled, {t.locked} locked, {t.failed} failed",
    ]
    return "\n".join(lines)


# --- cleanup --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CleanupReport:
    """What ``cleanup`` deleted; None for a kind that was not asked for."""

    permafailed_jobs: int | None
    task_identifiers: list[str] | None
    queues: list[str] | None


def cleanup(
    conn: Connection,
    schema: str,
    *,
    tasks: bool = False,
    queues: bool = False,
    permafailed: bool = False,
    keep_tasks: Sequence[str] = (),
) -> CleanupReport:
    """graphile-worker's cleanup tasks, in its order and with its conditions, in one transaction.

    ``permafailed`` (DELETE_PERMAFAILED_JOBS) deletes permanently failed, unlocked jobs;
    ``tasks`` (GC_TASK_IDENTIFIERS) deletes task identifiers no job uses, except
    ``keep_tasks``; ``queues`` (GC_JOB_QUEUES) deletes unlocked queues no job uses. Failed
    jobs go first, so the identifiers and queues only they used go in the same run.
    """
    deleted_jobs: int | None = None
    deleted_tasks: list[str] | None = None
    deleted_queues: list[str] | None = None
    with _transaction(conn, schema) as cur:
        if permafailed:
            _execute(cur, "admin_cleanup_permafailed", schema, {})
            row = cur.fetchone()
            deleted_jobs = int(row[0]) if row else 0
        if tasks:
            _execute(cur, "admin_cleanup_tasks", schema, {"keep": sorted(set(keep_tasks))})
            deleted_tasks = [row[0] for row in cur.fetchall()]
        if queues:
            _execute(cur, "admin_cleanup_queues", schema, {})
            deleted_queues = [row[0] for row in cur.fetchall()]
    return CleanupReport(deleted_jobs, deleted_tasks, deleted_queues)


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(_cell(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def format_cleanup(report: CleanupReport) -> str:
    lines = []
    if report.permafailed_jobs is not None:
        lines.append(f"deleted {_plural(report.permafailed_jobs, 'permanently failed job')}")
    if report.task_identifiers is not None:
        line = f"deleted {_plural(len(report.task_identifiers), 'unused task identifier')}"
        if report.task_identifiers:
            line += f": {_names(report.task_identifiers)}"
        lines.append(line)
    if report.queues is not None:
        line = f"deleted {_plural(len(report.queues), 'unused queue')}"
        if report.queues:
            line += f": {_names(report.queues)}"
        lines.append(line)
    return "\n".join(lines)
