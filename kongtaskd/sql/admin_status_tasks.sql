-- `kongtaskd status`: jobs per task identifier in four disjoint states. locked: a worker
-- holds it; failed: no attempts left (permanently failed); scheduled: available, run_at
-- still ahead (including retries in back-off); ready: available and due, i.e. the backlog.
select
  jobs.task_identifier as name,
  count(*) filter (
    where jobs.locked_at is null and jobs.attempts < jobs.max_attempts and jobs.run_at <= now()
  ) as ready,
  count(*) filter (
    where jobs.locked_at is null and jobs.attempts < jobs.max_attempts and jobs.run_at > now()
  ) as scheduled,
  count(*) filter (where jobs.locked_at is not null) as locked,
  count(*) filter (
    where jobs.locked_at is null and jobs.attempts >= jobs.max_attempts
  ) as failed
from {{schema}}.jobs as jobs
group by jobs.task_identifier
order by jobs.task_identifier
