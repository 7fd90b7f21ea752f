"""The pool's heartbeat row and the sweeps that recover jobs from dead pools.

graphile-worker leaves a crashed worker's jobs locked for four hours. kongtaskd daemons
write a heartbeat row (``_kongtaskd_heartbeats``) every ``heartbeat_interval`` seconds, and
each beat also sweeps: the jobs of any pool whose heartbeat is older than ``stale_after``
are failed (their handlers may have run partly) and unlocked, so they run again within a
minute instead of four hours. Locks of pools without a heartbeat row, i.e. graphile-worker's
own workers, keep graphile-worker's four-hour rule, which this module applies too (every 8
to 10 minutes, as graphile-worker does).

The heartbeat also carries what the dashboard reads (kongtaskd migration 5,
docs/statistics.md), all written by this module and nothing else:

* the row's ``details`` (jsonb): every child (index, pid, state, the job it runs, its task,
  since when), a configuration summary without secrets (every string through
  ``redact.scrub``) and each crontab item's next run in its time zone; bounded in size
  (``tunables.DETAILS_MAX_*``);
* the statistics: outcomes the supervisor counted into ``self.tally`` since the previous
  beat go out in ONE statement (``sql/stats_add.sql``), never one per job; a failed write
  puts them back for the next beat;
* pruning: one bounded batch of statistics older than ``stats_retention`` and of completed
  job records older than ``keep_completed`` per beat; while a batch comes back full, the
  next one is due on the next loop turn (``due``).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from kongtaskd import __version__, tally, tunables
from kongtaskd.queries import Queries
from kongtaskd.redact import scrub

if TYPE_CHECKING:
    from kongtaskd.config import Config
    from kongtaskd.cron import CronItem, CronScheduler

log = logging.getLogger("kongtaskd.heartbeat")


class ChildView(Protocol):
    """What the details need of a child (``fleet.ChildProcess``)."""

    index: int
    pid: int
    state: str
    job_started: float
    jobs_done: int

    @property
    def job_id(self) -> int | None: ...

    @property
    def task(self) -> str: ...


def scrubbed(value: Any) -> Any:
    """``value`` with every string in it scrubbed of the configuration's secrets."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrubbed(v) for v in value]
    return value


def capped(items: Iterable[str], most: int = tunables.DETAILS_MAX_LIST_ITEMS) -> list[str]:
    return sorted(items)[:most]


def iso(moment: datetime.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def config_summary(config: Config) -> dict[str, Any]:
    """What the Daemons page shows of a daemon's configuration: no connection string, no
    secret (every string is scrubbed again on the way out), lists capped."""
    return {
        "source": config.source,
        "schema": config.schema,
        "concurrency": config.concurrency,
        "tasks": capped(config.tasks),
        "task_count": len(config.tasks),
        "task_modules": capped(config.task_modules),
        "forbidden_flags": capped(config.forbidden_flags),
        "poll_interval": config.poll_interval,
        "job_timeout": config.job_timeout,
        "max_jobs_per_child": config.max_jobs_per_child,
        "max_memory_per_child": config.max_memory_per_child,
        "timezone": config.timezone,
        "crontab": config.crontab is not None or config.crontab_file is not None,
        "metrics": (
            f"{config.metrics.host}:{config.metrics.port}" if config.metrics is not None else None
        ),
        "heartbeat_interval": config.heartbeat_interval,
        "stale_after": config.stale_after,
        "stats_retention": config.stats_retention,
        "keep_completed": config.keep_completed,
        "django": config.django_settings is not None,
    }


class Heartbeat:
    def __init__(
        self,
        pool_id: str,
        interval: float,
        stale_after: float,
        *,
        stats_retention: float = 7 * 86400.0,
        keep_completed: float | None = None,
    ) -> None:
        self.pool_id = pool_id
        self.interval = interval
        self.stale_after = stale_after
        self.stats_retention = stats_retention
        #: None: this daemon keeps no history, and leaves the table to daemons that do.
        self.keep_completed = keep_completed
        #: Outcomes counted since the last beat (the supervisor adds; ``beat`` writes).
        self.tally = tally.Tally()
        #: A prune batch came back full: another one is due on the next loop turn.
        self.prune_backlog = False
        #: Crontab item identifier -> its next run (UTC), recomputed once it has passed.
        self.next_runs: dict[str, datetime.datetime | None] = {}
        self.hostname = socket.gethostname()
        self.next_beat = 0.0  # the first beat is due at once
        # graphile-worker runs its first stale-lock sweep at a random time within a minute.
        self.next_expired_sweep = time.monotonic() + random.uniform(0, 60)
        self.beats = 0
        #: What the last reload did (written with every beat; see kongtaskd migration 4):
        #: when it finished, and its error (None: it succeeded).
        self.last_reload_at: datetime.datetime | None = None
        self.last_reload_error: str | None = None
        #: Why the pool cannot fork replacement children (None: it can).
        self.degraded: str | None = None

    def reloaded(self, error: str | None) -> None:
        """Record a reload's outcome; the next beat (due at once) writes it."""
        self.last_reload_at = datetime.datetime.now(datetime.timezone.utc)
        # An import error is user code's text: no secret of the config goes into the row.
        self.last_reload_error = scrub(error) if error is not None else None
        self.next_beat = 0.0

    def set_degraded(self, why: str | None) -> None:
        """Record (or clear) why the pool is degraded; written at once if it changed."""
        why = scrub(why) if why is not None else None
        if why != self.degraded:
            self.degraded = why
            self.next_beat = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_beat or self.prune_backlog or self.tally.full()

    def next_deadline(self) -> float:
        """When ``due`` turns true by itself (at once while pruning has a backlog)."""
        return 0.0 if self.prune_backlog or self.tally.full() else self.next_beat

    def beat(
        self,
        queries: Queries,
        *,
        concurrency: int,
        busy: int,
        jobs_done: int,
        children: Iterable[ChildView] = (),
        config: Config | None = None,
        cron: CronScheduler | None = None,
    ) -> None:
        """Refresh our row and recover dead pools' jobs; write the statistics; prune one
        batch. Only the pruning when a beat is not due yet (a backlog). Database errors
        propagate (the statistics taken for the write are put back first)."""
        now = time.monotonic()
        if now >= self.next_beat or self.tally.full():
            self.full_beat(queries, now, concurrency, busy, jobs_done, children, config, cron)
        self.prune(queries)

    def full_beat(
        self,
        queries: Queries,
        now: float,
        concurrency: int,
        busy: int,
        jobs_done: int,
        children: Iterable[ChildView],
        config: Config | None,
        cron: CronScheduler | None,
    ) -> None:
        self.write_stats(queries)
        details = json.dumps(self.details(children, config, cron), separators=(",", ":"))
        ((inserted,),) = queries.fetchall(
            "heartbeat",
            self.pool_id,
            self.hostname,
            os.getpid(),
            __version__,
            concurrency,
            busy,
            jobs_done,
            self.last_reload_at,
            self.last_reload_error,
            self.degraded,
            details,
        )
        if inserted and self.beats:
            log.warning(
                "this pool's heartbeat row was gone (another daemon presumed it dead); "
                "jobs it failed will run again, and our outcomes for them are dropped"
            )
        self.beats += 1
        for pool_id, hostname, pid, job_ids in queries.fetchall(
            "sweep", self.stale_after, self.pool_id
        ):
            log.warning(
                "pool %s (pid %s on %s) stopped sending heartbeats: failed its %d locked jobs %s",
                pool_id,
                pid,
                hostname,
                len(job_ids),
                job_ids,
            )
        if now >= self.next_expired_sweep:
            ((jobs, queues),) = queries.fetchall("sweep_expired", tunables.STALE_LOCK_SECONDS)
            if jobs or queues:
                log.warning(
                    "unlocked %d jobs and %d queues locked for more than %d hours",
                    jobs,
                    queues,
                    tunables.STALE_LOCK_SECONDS // 3600,
                )
            self.next_expired_sweep = now + random.uniform(*tunables.STALE_LOCK_SWEEP_EVERY)
        self.next_beat = now + self.interval

    def write_stats(self, queries: Queries) -> None:
        """The statistics counted since the last write, in one statement (none if none)."""
        if not self.tally:
            return
        rows = self.tally.take()
        try:
            queries.fetchall("stats_add", tally.payload(rows))
        except BaseException:
            self.tally.restore(rows)  # written with the next beat on the next connection
            raise

    def prune(self, queries: Queries) -> None:
        """One bounded batch of each kind of old row; a full batch means more are due."""
        batch = tunables.PRUNE_BATCH
        ((stats,),) = queries.fetchall("prune_stats", self.stats_retention, batch)
        history = 0
        if self.keep_completed is not None:
            ((history,),) = queries.fetchall("prune_completed", self.keep_completed, batch)
        self.prune_backlog = stats >= batch or history >= batch

    def details(
        self,
        children: Iterable[ChildView],
        config: Config | None,
        cron: CronScheduler | None,
    ) -> dict[str, Any]:
        """The ``details`` column: children, configuration summary, crontab next runs."""
        wall, mono = time.time(), time.monotonic()
        listed = []
        for child in sorted(children, key=lambda c: c.index):
            job_id = child.job_id
            since = None
            if job_id is not None:
                since = datetime.datetime.fromtimestamp(
                    wall - (mono - child.job_started), datetime.timezone.utc
                ).isoformat()
            listed.append(
                {
                    "index": child.index,
                    "pid": child.pid,
                    "state": child.state,
                    "job_id": job_id,
                    "task": child.task or None,
                    "since": since,
                    "jobs_done": child.jobs_done,
                }
            )
        details: dict[str, Any] = {
            "children": listed[: tunables.DETAILS_MAX_CHILDREN],
            "children_count": len(listed),
            "config": config_summary(config) if config is not None else None,
            "cron": self.cron_details(cron),
        }
        return scrubbed(details)

    def cron_details(self, cron: CronScheduler | None) -> dict[str, Any] | None:
        """Each crontab item's next run, in UTC and in the crontab's time zone."""
        if cron is None or not cron.items:
            self.next_runs.clear()
            return None
        from kongtaskd.cron import next_fire_time  # only daemons with a crontab import cron

        now = datetime.datetime.now(datetime.timezone.utc)
        items: list[CronItem] = list(cron.items)
        known = {item.identifier for item in items}
        for identifier in list(self.next_runs):
            if identifier not in known:  # a reload removed it
                del self.next_runs[identifier]
        listed = []
        for item in items[: tunables.DETAILS_MAX_CRON_ITEMS]:
            next_run = self.next_runs.get(item.identifier)
            if next_run is None or next_run <= now:
                next_run = next_fire_time(item, now, cron.zone)
                self.next_runs[item.identifier] = next_run
            listed.append(
                {
                    "identifier": item.identifier,
                    "task": item.task,
                    "next_run": iso(next_run),
                    "next_run_local": iso(next_run.astimezone(cron.zone) if next_run else None),
                }
            )
        return {"timezone": cron.timezone, "items": listed, "items_count": len(items)}

    def forget(self, queries: Queries) -> None:
        """A graceful exit: remove our heartbeat row."""
        queries.fetchall("forget_pool", self.pool_id)
