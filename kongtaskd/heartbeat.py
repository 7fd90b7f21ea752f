"""The pool's heartbeat row and the sweeps that recover jobs from dead pools.

graphile-worker leaves a crashed worker's jobs locked for four hours. kongtaskd daemons
write a heartbeat row (``_kongtaskd_heartbeats``) every ``heartbeat_interval`` seconds, and
each beat also sweeps: the jobs of any pool whose heartbeat is older than ``stale_after``
are failed (their handlers may have run partly) and unlocked, so they run again within a
minute instead of four hours. Locks of pools without a heartbeat row, i.e. graphile-worker's
own workers, keep graphile-worker's four-hour rule, which this module applies too (every 8
to 10 minutes, as graphile-worker does).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
import time

from kongtaskd import __version__, tunables
from kongtaskd.queries import Queries
from kongtaskd.redact import scrub

log = logging.getLogger("kongtaskd.heartbeat")


class Heartbeat:
    def __init__(self, pool_id: str, interval: float, stale_after: float) -> None:
        self.pool_id = pool_id
        self.interval = interval
        self.stale_after = stale_after
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
        return now >= self.next_beat

    def beat(self, queries: Queries, *, concurrency: int, busy: int, jobs_done: int) -> None:
        """Refresh our row and recover dead pools' jobs. Database errors propagate."""
        now = time.monotonic()
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

    def forget(self, queries: Queries) -> None:
        """A graceful exit: remove our heartbeat row."""
        queries.fetchall("forget_pool", self.pool_id)
