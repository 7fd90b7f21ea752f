"""Read the data behind the dashboard: statistics, completed-job history, daemon details.

A small typed API over kongtaskd migration 5's tables (docs/statistics.md has their shape)
for the dashboard, the CLI or anyone with a psycopg2 connection. Every query is bounded: a
range of an index, LIMITed; none scans the jobs table. Nothing here writes: the supervisor
writes these tables (``tally.py``, ``heartbeat.py``, ``sql/settle.sql``).

* ``per_task_minutes(conn, schema, since)``: the per-minute rows (``MinuteStats``);
* ``task_summaries(conn, schema, since)``: per task over a window: counts, failure rate,
  run-time p50/p95 estimated from the histogram (``percentile``);
* ``completed(conn, schema, job_id)``: did job 4711 run, when, how long, on which host;
* ``recent_completed(conn, schema, ...)``: newest completed jobs, keyset-paginated;
* ``daemons(conn, schema)``: heartbeat rows with their published details.

The statistics count kongtaskd's work only: jobs run by graphile-worker workers on the same
database appear in none of these tables.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extensions import connection as Connection

from kongtaskd import tunables
from kongtaskd.queries import statement

#: Upper bounds (seconds) of the histogram's buckets; one more bucket holds the rest.
BUCKETS: tuple[float, ...] = tunables.STATS_BUCKETS

#: Most rows any one call returns unless asked for fewer: a week of one task is 10,080.
MAX_ROWS = 50_000


def _fetch(conn: Connection, name: str, schema: str, **params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement(name, schema, conn), params)
        return cur.fetchall()


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) of a run-time histogram, as its bucket's upper bound
    (within one bucket of the truth); ``math.inf`` in the open last bucket; None if empty."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank and count:
            return BUCKETS[index] if index < len(BUCKETS) else float("inf")
    return float("inf")


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """One task's outcomes in one minute (all daemons added together)."""

    minute: datetime.datetime
    task: str
    succeeded: int
    #: Failed attempts that were the job's last (now permanently failed).
    failed: int
    #: Failed attempts that will be retried.
    retried: int
    run_seconds_sum: float
    histogram: tuple[int, ...]

    @property
    def attempts(self) -> int:
        return self.succeeded + self.failed + self.retried


@dataclass
class TaskSummary:
    """One task over a window: totals, failure rate, run-time estimates."""

    task: str
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    run_seconds_sum: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    @property
    def attempts(self) -> int:
        return self.succeeded + self.failed + self.retried

    @property
    def failure_rate(self) -> float | None:
        """Failed attempts (retried or final) per attempt; None without attempts."""
        return (self.failed + self.retried) / self.attempts if self.attempts else None

    @property
    def p50(self) -> float | None:
        return percentile(self.histogram, 0.5)

    @property
    def p95(self) -> float | None:
        return percentile(self.histogram, 0.95)

    @property
    def mean_seconds(self) -> float | None:
        timed = sum(self.histogram)
        return self.run_seconds_sum / timed if timed else None


@dataclass(frozen=True, slots=True)
class CompletedJob:
    """The history record of one completed job (``keep_completed``)."""

    id: int
    task: str
    queue: str | None
    key: str | None
    attempts: int
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime
    run_seconds: float | None
    pool_id: str
    #: From the pool's heartbeat row: None once that daemon has exited.
    hostname: str | None


@dataclass(frozen=True, slots=True)
class Daemon:
    """A kongtaskd pool's heartbeat row, with what it publishes in ``details``."""

    pool_id: str
    hostname: str
    pid: int
    version: str
    concurrency: int
    busy: int
    jobs_done: int
    started_at: datetime.datetime
    last_beat_at: datetime.datetime
    stale: bool
    last_reload_at: datetime.datetime | None
    last_reload_error: str | None
    degraded: str | None
    #: ``{"children": [...], "children_count", "config": {...}, "cron": {...} | None}``;
    #: None for daemons older than migration 5. See docs/statistics.md.
    details: dict[str, Any] | None

    @property
    def children(self) -> list[dict[str, Any]]:
        return list((self.details or {}).get("children") or [])

    @property
    def cron(self) -> list[dict[str, Any]]:
        return list(((self.details or {}).get("cron") or {}).get("items") or [])


def per_task_minutes(
    conn: Connection,
    schema: str,
    since: datetime.datetime,
    until: datetime.datetime | None = None,
    *,
    task: str | None = None,
    limit: int = MAX_ROWS,
) -> list[MinuteStats]:
    """Statistics rows with ``since <= minute < until`` (of one ``task``), oldest first."""
    rows = _fetch(conn, "stats_minutes", schema, since=since, until=until, task=task, limit=limit)
    return [
        MinuteStats(minute, name, ok, failed, retried, seconds, tuple(histogram))
        for minute, name, ok, failed, retried, seconds, histogram in rows
    ]


def summarise(rows: Sequence[MinuteStats]) -> list[TaskSummary]:
    """Per task totals of ``rows`` (sorted by task). Pure: tests and callers can feed it."""
    summaries: dict[str, TaskSummary] = {}
    for row in rows:
        summary = summaries.get(row.task)
        if summary is None:
            summary = summaries[row.task] = TaskSummary(row.task)
        summary.succeeded += row.succeeded
        summary.failed += row.failed
        summary.retried += row.retried
        summary.run_seconds_sum += row.run_seconds_sum
        for index, count in enumerate(row.histogram[: len(summary.histogram)]):
            summary.histogram[index] += count
    return [summaries[name] for name in sorted(summaries)]


def task_summaries(
    conn: Connection, schema: str, since: datetime.datetime, *, limit: int = MAX_ROWS
) -> list[TaskSummary]:
    """Per task since ``since`` (the last hour, the last day): counts, rates, p50/p95."""
    return summarise(per_task_minutes(conn, schema, since, limit=limit))


def _completed_job(row: tuple[Any, ...]) -> CompletedJob:
    return CompletedJob(*row)


def completed(conn: Connection, schema: str, job_id: int) -> CompletedJob | None:
    """The newest history record of ``job_id``, or None (never kept, or pruned)."""
    rows = _fetch(conn, "stats_completed", schema, job_id=job_id, limit=1)
    return _completed_job(rows[0]) if rows else None


def recent_completed(
    conn: Connection,
    schema: str,
    *,
    task: str | None = None,
    before: tuple[datetime.datetime, int] | None = None,
    limit: int = 50,
) -> list[CompletedJob]:
    """Completed jobs newest first; ``before`` = (finished_at, id) of the last row of the
    previous page (keyset pagination, no OFFSET)."""
    before_at, before_id = before if before is not None else (None, None)
    rows = _fetch(
        conn,
        "stats_recent_completed",
        schema,
        task=task,
        before_at=before_at,
        before_id=before_id,
        limit=min(limit, MAX_ROWS),
    )
    return [_completed_job(row) for row in rows]


def daemons(
    conn: Connection, schema: str, *, stale_after: float = 60.0, limit: int = 1000
) -> list[Daemon]:
    """Every kongtaskd pool's heartbeat row (stale: no beat for ``stale_after`` seconds)."""
    rows = _fetch(conn, "stats_daemons", schema, stale_after=stale_after, limit=limit)
    return [Daemon(*row) for row in rows]
