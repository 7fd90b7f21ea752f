-- `kongtaskd status`: everyone holding a lock on a job or a named queue, with how many and
-- since when. The caller sets aside the kongtaskd pools it knows from their heartbeats;
-- the rest are graphile-worker pools (which write no heartbeat) or dead pools already swept.
-- `expired`: the oldest lock is older than `stale_lock_seconds` (graphile-worker's
-- four hours), so the stale-lock sweep of any running worker will release it.
with job_locks as (
  select jobs.locked_by, count(*) as jobs, min(jobs.locked_at) as since
  from {{schema}}._private_jobs as jobs
  where jobs.locked_by is not null
  group by jobs.locked_by
),
queue_locks as (
  select queues.locked_by, count(*) as queues, min(queues.locked_at) as since
  from {{schema}}._private_job_queues as queues
  where queues.locked_by is not null
  group by queues.locked_by
)
select
  locked_by,
  coalesce(job_locks.jobs, 0) as jobs,
  coalesce(queue_locks.queues, 0) as queues,
  least(job_locks.since, queue_locks.since) as since,
  least(job_locks.since, queue_locks.since)
    < now() - %(stale_lock_seconds)s * interval '1 second' as expired
from job_locks
full join queue_locks using (locked_by)
order by since, locked_by
