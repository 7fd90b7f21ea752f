"""The dashboard's data layer: every query its pages run, typed, bounded and cached.

Each query is a ``web/sql/<name>.sql`` file bound to the schema by
:func:`kongtaskd.queries.bind_schema` (the one binder), run on a connection of this process's
small pool, and its answer kept for one refresh interval in a cache shared by every viewer:
ten open tabs, or a hundred, cost the database what one does. Concurrent requests for the
same answer wait for the one query in flight instead of sending their own ("single
flight"). Every query that reaches the database is logged at debug level as
``query NAME`` (the test that counts queries reads those lines) and counted in
:attr:`Data.queries`.

Bounds: nothing here scans the jobs table whole. Counts of waiting jobs come from the claim
index (kongtaskd migration 000002), each capped at :data:`~kongtaskd.tunables.WEB_COUNT_CAP`;
what no index serves (running and failed jobs, free-text search in errors, sorts other than
by id) looks at the newest :data:`~kongtaskd.tunables.WEB_WINDOW_ROWS` jobs and the page
says so. The statistics and completed-job history (kongtaskd migration 5) are read through
:mod:`kongtaskd.stats`, cached the same way; in a schema without them (graphile-worker
only) :meth:`Data.task_stats` and :meth:`Data.history` answer :data:`NO_STATISTICS` / None.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from kongtaskd import stats, steer, tunables
from kongtaskd.dsn import connect
from kongtaskd.errors import DatabaseError
from kongtaskd.queries import bind_schema

log = logging.getLogger("kongtaskd.web.data")

T = TypeVar("T")

#: kongtaskd-owned tables the pages read when they exist (names fixed here, the one place).
HEARTBEATS = "_kongtaskd_heartbeats"
READY_INDEX = "_kongtaskd_jobs_ready"
#: Per task per minute statistics, written by the supervisors with the heartbeat (a later
#: kongtaskd migration): until it exists the charts say "no statistics yet".
STATS_TABLE = "_kongtaskd_stats"
#: Completed-job history (``keep_completed``, kongtaskd migration 5).
HISTORY_TABLE = "_kongtaskd_completed_jobs"


@functools.cache
def _source(name: str) -> str:
    return resources.files("kongtaskd.web").joinpath("sql", f"{name}.sql").read_text("utf-8")


# --- the pool -------------------------------------------------------------------------------


class Pool:
    """At most ``size`` connections, opened on demand through :func:`kongtaskd.dsn.connect`
    (one-line, password-free errors), shared by the server's threads. A connection that
    broke (the database restarted) is dropped, and the next request opens a fresh one."""

    def __init__(self, dsn: str, size: int = tunables.WEB_POOL_MAX) -> None:
        self._dsn = dsn
        self._idle: list[Connection] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    def _open(self) -> Connection:
        conn = connect(self._dsn, application_name="kongtaskd web")
        with conn, conn.cursor() as cur:
            # A page query that runs away is cut off instead of holding a connection.
            cur.execute("set statement_timeout = %s", (tunables.WEB_STATEMENT_TIMEOUT_MS,))
        return conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        self._slots.acquire()
        conn: Connection | None = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._open()
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if conn is not None:
                conn.close()
            conn = None
            raise
        finally:
            if conn is not None and not conn.closed:
                if conn.status != psycopg2.extensions.STATUS_READY:
                    conn.rollback()
                with self._lock:
                    self._idle.append(conn)
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            while self._idle:
                self._idle.pop().close()


# --- the cache ------------------------------------------------------------------------------


class Cache:
    """Answers by key for ``ttl`` seconds; one computation per key at a time."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]  # type: ignore[no-any-return]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                hit = self._values.get(key)
                if hit is not None and hit[0] > self._clock():
                    return hit[1]  # type: ignore[no-any-return]
            value = compute()
            with self._lock:
                self._values[key] = (self._clock() + self.ttl, value)
                self._prune()
            return value

    def _prune(self) -> None:
        # Keys carry user input (filters): drop expired answers so the cache stays small.
        if len(self._values) < tunables.WEB_CACHE_ENTRIES:
            return
        now = self._clock()
        for key in [k for k, (expires, _) in self._values.items() if expires <= now]:
            del self._values[key]
            self._locks.pop(key, None)
        while len(self._values) >= tunables.WEB_CACHE_ENTRIES:
            key = next(iter(self._values))
            del self._values[key]
            self._locks.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


# --- the answers ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Probe:
    """What the database holds, and its clock."""

    now: dt.datetime
    heartbeats: bool
    ready_index: bool
    stats: bool
    history: bool
    reload_columns: bool


@dataclasses.dataclass(frozen=True)
class Count:
    """A count that may have stopped at a cap: shown as ``10,000+``."""

    value: int
    capped: bool = False

    def __add__(self, other: Count) -> Count:
        return Count(self.value + other.value, self.capped or other.capped)

    def __str__(self) -> str:
        return f"{self.value:,}" + ("+" if self.capped else "")


@dataclasses.dataclass
class TaskRow:
    """One task on the overview."""

    task: str
    ready: Count = Count(0)
    scheduled: Count = Count(0)
    retrying: Count = Count(0)
    #: Running and permanently failed: among the newest window of jobs.
    running: int = 0
    failed: int = 0
    oldest_due: dt.datetime | None = None
    #: Of the window's jobs of this task, how many failed their last attempt.
    with_error: int = 0
    in_window: int = 0


@dataclasses.dataclass(frozen=True)
class Window:
    """The newest jobs a bounded page looked at: how many, and down to which id."""

    rows: int
    low: int | None
    size: int

    @property
    def whole_table(self) -> bool:
        """The window held fewer jobs than it could: it is every job there is."""
        return self.rows < self.size


@dataclasses.dataclass(frozen=True)
class QueueRow:
    name: str
    waiting: int
    running: int
    failed: int
    total: int
    locked_by: str | None
    locked_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Overview:
    probe: Probe
    tasks: list[TaskRow]
    #: Where each (priority, task) count of the claim index stopped ("1,000+").
    cap: int
    #: The claim index's counts were cut at WEB_MAX_TASK_PAIRS pairs.
    pairs_cut: bool
    window: Window
    queues: list[QueueRow]
    stuck_queues: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class PoolRow:
    """A kongtaskd pool's heartbeat row (every column the table has) and its age."""

    columns: dict[str, Any]
    uptime_seconds: float
    seconds_since_beat: float
    stale: bool

    def __getattr__(self, name: str) -> Any:
        try:
            return self.columns[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass(frozen=True)
class JobRow:
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
    key: str | None
    locked_by: str | None
    sort_value: float


@dataclasses.dataclass(frozen=True)
class JobPage:
    jobs: list[JobRow]
    #: Matches in the window (all of them, not just this page).
    matches: int
    window: Window
    #: The keyset of the next page within this window, or None.
    next_after: tuple[float, int] | None


@dataclasses.dataclass(frozen=True)
class JobDetail:
    columns: dict[str, Any]
    pool: dict[str, Any] | None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.columns[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass(frozen=True)
class NoStatistics:
    """What a chart shows before the statistics table exists."""

    reason: str


NO_STATISTICS = NoStatistics(
    "no statistics: this schema has no kongtaskd statistics table (run 'kongtaskd migrate'; "
    "graphile-worker workers record none); counts above are from the jobs table"
)

#: The /jobs sorts: name -> default direction (descending?).
SORTS: dict[str, bool] = {"id": True, "run_at": False, "priority": False, "attempts": True}


#: The caps a (priority, task) count may get, largest first: round numbers read better.
_CAPS = (10_000, 5_000, 2_000, 1_000, 500, 200, 100)


def count_cap(pairs: int) -> int:
    """The largest cap (at most WEB_COUNT_CAP) with which counting two states of ``pairs``
    (priority, task) pairs reads at most WEB_COUNT_BUDGET index entries."""
    for cap in _CAPS:
        if cap <= tunables.WEB_COUNT_CAP and 2 * max(pairs, 1) * cap <= tunables.WEB_COUNT_BUDGET:
            return cap
    return _CAPS[-1]


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Data:
    """The queries of the dashboard's pages, for one database and schema."""

    def __init__(
        self,
        pool: Pool,
        schema: str,
        *,
        refresh: float,
        stale_after: float,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.stale_after = stale_after
        #: A heartbeat older than this is late (drawn red) before it is stale.
        self.late_after = min(stale_after, heartbeat_interval * tunables.WEB_LATE_BEATS)
        self.cache = Cache(refresh)
        self.queries = 0
        self._count_lock = threading.Lock()

    # --- plumbing ---

    def _run(
        self, name: str, params: Mapping[str, Any], fetch: Callable[[Any], T], *, cached: bool
    ) -> T:
        def compute() -> T:
            with self._count_lock:
                self.queries += 1
            started = time.perf_counter()
            try:
                with self.pool.connection() as conn, conn, conn.cursor() as cur:
                    cur.execute(
                        bind_schema(_source(name), self.schema, conn, with_parameters=True),
                        dict(params),
                    )
                    result = fetch(cur)
            except (
                psycopg2.errors.UndefinedTable,
                psycopg2.errors.InvalidSchemaName,
                psycopg2.errors.UndefinedColumn,
            ) as error:
                first = str(error).strip().splitlines()[0]
                raise DatabaseError(
                    f"schema {self.schema} holds no graphile-worker queue ({first}); "
                    "run 'kongtaskd migrate' first, or start the dashboard with the right "
                    "--schema"
                ) from None
            log.debug("query %s (%.1f ms)", name, (time.perf_counter() - started) * 1000)
            return result

        if not cached:
            return compute()
        key = (name, tuple(sorted((k, _hashable(v)) for k, v in params.items())))
        return self.cache.get(key, compute)

    def _all(self, name: str, params: Mapping[str, Any], *, cached: bool = True) -> list[Any]:
        def fetch(cur: Any) -> list[dict[str, Any]]:
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return self._run(name, params, fetch, cached=cached)

    def _name(self, table: str) -> str:
        with self.pool.connection() as conn:
            return sql.Identifier(self.schema, table).as_string(conn)

    # --- what exists ---

    def probe(self) -> Probe:
        def fetch(cur: Any) -> Probe:
            row = cur.fetchone()
            return Probe(*row)

        params = {
            "heartbeats": self._qualified(HEARTBEATS),
            "ready_index": self._qualified(READY_INDEX),
            "stats": self._qualified(STATS_TABLE),
            "history": self._qualified(HISTORY_TABLE),
        }
        return self._run("probe", params, fetch, cached=True)

    @functools.cached_property
    def _quoted_names(self) -> dict[str, str]:
        return {
            table: self._name(table)
            for table in (HEARTBEATS, READY_INDEX, STATS_TABLE, HISTORY_TABLE)
        }

    def _qualified(self, table: str) -> str:
        return self._quoted_names[table]

    # --- overview ---

    def overview(self) -> Overview:
        probe = self.probe()
        rows: dict[str, TaskRow] = {}
        pairs_cut = False
        window_rows = self._all("window_by_task", {"window": tunables.WEB_WINDOW_ROWS})
        cap = tunables.WEB_COUNT_CAP
        if probe.ready_index:
            pairs = self._all("task_pairs", {"max_pairs": tunables.WEB_MAX_TASK_PAIRS})
            pairs_cut = len(pairs) >= tunables.WEB_MAX_TASK_PAIRS
            cap = count_cap(len(pairs))
            counted = (
                self._all(
                    "available_counts",
                    {
                        "priorities": [pair["priority"] for pair in pairs],
                        "task_ids": [pair["task_id"] for pair in pairs],
                        "cap": cap,
                    },
                )
                if pairs
                else []
            )
            for pair in counted:
                row = rows.setdefault(pair["identifier"], TaskRow(pair["identifier"]))
                row.ready = row.ready + Count(min(pair["due"], cap), pair["due"] > cap)
                row.scheduled = row.scheduled + Count(
                    min(pair["future"], cap), pair["future"] > cap
                )
                first = pair["first_run_at"]
                due = first is not None and first <= probe.now
                if due and (row.oldest_due is None or first < row.oldest_due):
                    row.oldest_due = first
        low: int | None = None
        seen = 0
        for found in window_rows:
            row = rows.setdefault(found["identifier"], TaskRow(found["identifier"]))
            row.running = found["running"]
            row.failed = found["failed"]
            # In the window: the claim index cannot tell a retry from a first run.
            row.retrying = Count(found["retrying"])
            row.with_error = found["with_error"]
            row.in_window = (
                found["running"]
                + found["failed"]
                + found["retrying"]
                + found["scheduled"]
                + found["ready"]
            )
            seen, low = found["window_rows"], found["window_low"]
            if not probe.ready_index:
                # graphile-worker only: no claim index, so the waiting states come from the
                # window too (the page says "among the newest N jobs").
                row.ready = Count(found["ready"])
                row.scheduled = Count(found["scheduled"])
                row.oldest_due = found["oldest_due"]
        queues = [
            QueueRow(**row)
            for row in self._all(
                "window_by_queue", {"window": tunables.WEB_WINDOW_ROWS, "limit": 20}
            )
        ]
        stuck = self._all(
            "stuck_queues", {"stuck_seconds": tunables.WEB_STUCK_QUEUE_SECONDS, "limit": 20}
        )
        return Overview(
            probe=probe,
            tasks=sorted(rows.values(), key=lambda r: r.task),
            pairs_cut=pairs_cut,
            cap=cap,
            window=Window(seen, low, tunables.WEB_WINDOW_ROWS),
            queues=queues,
            stuck_queues=stuck,
        )

    # --- daemons ---

    def pools(self) -> list[PoolRow]:
        if not self.probe().heartbeats:
            return []
        return [
            PoolRow(
                columns=dict(row["row"]),
                uptime_seconds=row["uptime_seconds"],
                seconds_since_beat=row["seconds_since_beat"],
                stale=row["stale"],
            )
            for row in self._all(
                "pools", {"stale_after": self.stale_after, "limit": tunables.WEB_PAGE_ROWS * 4}
            )
        ]

    def running_jobs(self) -> list[dict[str, Any]]:
        return self._all(
            "running_jobs", {"window": tunables.WEB_WINDOW_ROWS, "limit": tunables.WEB_PAGE_ROWS}
        )

    # --- queues, cron, tasks ---

    def queues_page(
        self, *, after: str, prefix: str | None, held: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        rows = self._all(
            "queues_page",
            {
                "after": after,
                "prefix": None if prefix is None else like_pattern(prefix)[1:],
                "held": held,
                "limit": tunables.WEB_PAGE_ROWS + 1,
            },
        )
        more = len(rows) > tunables.WEB_PAGE_ROWS
        rows = rows[: tunables.WEB_PAGE_ROWS]
        if rows:
            counts = {
                row["job_queue_id"]: row
                for row in self._all(
                    "queue_jobs",
                    {
                        "window": tunables.WEB_WINDOW_ROWS,
                        "queue_ids": sorted(row["id"] for row in rows),
                    },
                )
            }
            for row in rows:
                found = counts.get(row["id"], {})
                row["waiting"] = found.get("waiting", 0)
                row["failed"] = found.get("failed", 0)
                row["running_job"] = found.get("running_job")
        return rows, more

    def crontabs(self, *, after: str) -> tuple[list[dict[str, Any]], bool]:
        rows = self._all("crontabs", {"after": after, "limit": tunables.WEB_PAGE_ROWS + 1})
        return rows[: tunables.WEB_PAGE_ROWS], len(rows) > tunables.WEB_PAGE_ROWS

    def task_names(self) -> list[str]:
        return [row["identifier"] for row in self._all("tasks", {"limit": 500})]

    # --- jobs ---

    def jobs_page(
        self,
        *,
        task: str | None,
        queue: str | None,
        state: str | None,
        error: str | None,
        sort: str,
        descending: bool,
        top: int | None,
        after: tuple[float, int] | None,
    ) -> JobPage:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        limit = tunables.WEB_PAGE_ROWS
        rows = self._all(
            "jobs_page",
            {
                "top": top,
                "window": tunables.WEB_WINDOW_ROWS,
                "task": task,
                "queue": queue,
                "state": state,
                "error": None if error is None else like_pattern(error),
                "sort": sort,
                "descending": descending,
                "after_value": None if after is None else after[0],
                "after_id": None if after is None else after[1],
                "limit": limit + 1,
            },
        )
        first = rows[0] if rows else {"window_rows": 0, "window_low": None, "matches": 0}
        window = Window(first["window_rows"], first["window_low"], tunables.WEB_WINDOW_ROWS)
        found = [row for row in rows if row["id"] is not None]
        matches = found[0]["matches"] if found else 0
        jobs = [JobRow(**{k: v for k, v in row.items() if k not in _PAGE_EXTRAS}) for row in found]
        next_after = None
        if len(jobs) > limit:
            jobs = jobs[:limit]
            next_after = (jobs[-1].sort_value, jobs[-1].id)
        return JobPage(jobs, matches, window, next_after)

    def job(self, job_id: int) -> JobDetail | None:
        rows = self._all("job", {"id": job_id})
        if not rows:
            return None
        columns = rows[0]
        flags = columns.get("flags")
        columns["flags"] = sorted(flags) if isinstance(flags, dict) else flags
        pool = None
        if columns["locked_by"] and self.probe().heartbeats:
            found = self._all(
                "pool", {"pool_id": columns["locked_by"], "stale_after": self.stale_after}
            )
            pool = found[0] if found else None
        return JobDetail(columns, pool)

    def job_by_key(self, key: str) -> int | None:
        rows = self._all("job_by_key", {"key": key})
        return int(rows[0]["id"]) if rows else None

    # --- statistics and history (kongtaskd migration 5, read through kongtaskd.stats) ---

    def _api(self, name: str, params: Mapping[str, Any], call: Callable[[Connection], T]) -> T:
        """Like :meth:`_run` for a query of :mod:`kongtaskd.stats` (the one copy of its SQL):
        counted, logged as ``query NAME`` and cached for one refresh interval."""

        def compute() -> T:
            with self._count_lock:
                self.queries += 1
            started = time.perf_counter()
            with self.pool.connection() as conn, conn:
                result = call(conn)
            log.debug("query %s (%.1f ms)", name, (time.perf_counter() - started) * 1000)
            return result

        key = (name, tuple(sorted((k, _hashable(v)) for k, v in params.items())))
        return self.cache.get(key, compute)

    def task_stats(self) -> NoStatistics | TaskStats:
        """Per task for the last hour and the last day, and the per-minute series behind the
        charts: one read of the statistics (the day's rows; the hour is a part of them).

        :data:`NO_STATISTICS` where the statistics table does not exist (a schema only
        graphile-worker migrated)."""
        probe = self.probe()
        if not probe.stats:
            return NO_STATISTICS
        # Whole minutes, so every refresh within a minute asks the same (cached) question.
        now = probe.now.replace(second=0, microsecond=0)
        since = now - dt.timedelta(days=1)
        rows = self._api(
            "stats_minutes",
            {"since": since},
            lambda conn: stats.per_task_minutes(conn, self.schema, since),
        )
        hour_start = probe.now - dt.timedelta(hours=1)
        return TaskStats(
            now=probe.now,
            hour=stats.summarise([row for row in rows if row.minute >= hour_start]),
            day=stats.summarise(rows),
            rows=rows,
            cut=len(rows) >= stats.MAX_ROWS,
        )

    def daemon_details(self) -> dict[str, stats.Daemon]:
        """Each pool's heartbeat row with its published ``details`` (children, config
        summary, cron next runs), by pool id; empty without the heartbeat table."""
        probe = self.probe()
        if not probe.heartbeats or not probe.history:
            # No migration 5 in this schema: no details column either.
            return {}
        found = self._api(
            "stats_daemons",
            {"stale_after": self.stale_after},
            lambda conn: stats.daemons(
                conn, self.schema, stale_after=self.stale_after, limit=tunables.WEB_PAGE_ROWS * 4
            ),
        )
        return {daemon.pool_id: daemon for daemon in found}

    def cron_next_runs(self) -> dict[str, list[dict[str, Any]]]:
        """Crontab identifier -> the next runs the live daemons running it publish
        (``next_run``, ``next_run_local`` in the crontab's time zone, ``pool_id``)."""
        runs: dict[str, list[dict[str, Any]]] = {}
        for daemon in self.daemon_details().values():
            if daemon.stale:
                continue
            for item in daemon.cron:
                runs.setdefault(str(item.get("identifier")), []).append(
                    {**item, "pool_id": daemon.pool_id}
                )
        return runs

    def pauses(self) -> list[steer.Pause]:
        """The pauses in force (tasks and named queues, kongtaskd.steer), tasks first; none in
        a schema without kongtaskd's flow control (graphile-worker only)."""
        if not self.probe().heartbeats:
            return []

        def read(conn: Connection) -> list[steer.Pause]:
            try:
                return steer.pauses(conn, schema=self.schema)
            except psycopg2.errors.UndefinedTable:
                return []

        return self._api("steer_list", {}, read)

    def history(self, job_id: int) -> stats.CompletedJob | None:
        """The completed-job record of ``job_id`` (``keep_completed``), None without one."""
        probe = self.probe()
        # kongtaskd.stats names the host from the heartbeat row: both tables are needed.
        if not (probe.history and probe.heartbeats):
            return None
        return self._api(
            "stats_completed",
            {"id": job_id},
            lambda conn: stats.completed(conn, self.schema, job_id),
        )

    def recent_completed(self, *, task: str | None = None) -> list[stats.CompletedJob]:
        """The newest completed jobs (``keep_completed``), newest first."""
        probe = self.probe()
        # kongtaskd.stats names the host from the heartbeat row: both tables are needed.
        if not (probe.history and probe.heartbeats):
            return []
        return self._api(
            "stats_recent_completed",
            {"task": task},
            lambda conn: stats.recent_completed(
                conn, self.schema, task=task, limit=tunables.WEB_PAGE_ROWS
            ),
        )


@dataclasses.dataclass(frozen=True)
class TaskStats:
    """The statistics of the overview: per task summaries and the minutes behind them."""

    now: dt.datetime
    hour: list[stats.TaskSummary]
    day: list[stats.TaskSummary]
    rows: list[stats.MinuteStats]
    #: The day had more rows than one read returns: the oldest minutes are missing.
    cut: bool

    def per_minute(self, since: dt.datetime) -> list[tuple[float, float, float]]:
        """(minutes ago, attempts, failed attempts) per minute since ``since``, all tasks;
        minutes without rows are zero, so the line shows the quiet ones too."""
        totals: dict[dt.datetime, list[int]] = {}
        for row in self.rows:
            if row.minute >= since:
                entry = totals.setdefault(row.minute, [0, 0])
                entry[0] += row.attempts
                entry[1] += row.failed + row.retried
        start = since.replace(second=0, microsecond=0)
        points = []
        minute = start
        while minute <= self.now:
            attempts, failed = totals.get(minute, (0, 0))
            points.append(((minute - start).total_seconds() / 60, float(attempts), float(failed)))
            minute += dt.timedelta(minutes=1)
        return points

    def failing(
        self, *, min_attempts: int, factor: float, floor: float
    ) -> list[tuple[stats.TaskSummary, float]]:
        """Tasks whose last hour fails above their usual rate: (the hour's summary, the
        usual rate), usual = the rest of the day (0 for a task new this hour)."""
        day = {summary.task: summary for summary in self.day}
        found = []
        for hour in self.hour:
            rate = hour.failure_rate
            if hour.attempts < min_attempts or rate is None or rate < floor:
                continue
            whole = day.get(hour.task)
            before = (whole.attempts - hour.attempts) if whole else 0
            usual = (
                (whole.failed + whole.retried - hour.failed - hour.retried) / before
                if whole and before > 0
                else 0.0
            )
            if rate >= usual * factor and rate > usual:
                found.append((hour, usual))
        return found


_PAGE_EXTRAS = ("matches", "window_rows", "window_low")


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def first_line(text: str | None) -> str:
    """The first non-blank line of an error (kongtaskd puts 'Type: message' there)."""
    if not text:
        return ""
    return next((line for line in text.splitlines() if line.strip()), "").strip()


def pretty_json(text: str) -> str:
    """A payload, indented; a payload that is not JSON (cannot happen: the column is json)
    is shown as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
