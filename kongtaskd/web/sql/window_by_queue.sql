-- Overview: jobs per named queue among the newest `window` jobs, with who holds the queue
-- and since when, the busiest `limit` queues first. Per-entity queues can number 100k; the
-- full list is /queues.
with newest as (
  select jobs.job_queue_id, jobs.locked_at, jobs.attempts, jobs.max_attempts, jobs.run_at
  from {{schema}}._private_jobs as jobs
  order by jobs.id desc
  limit %(window)s
),
counts as (
  select
    newest.job_queue_id,
    count(*) filter (
      where newest.locked_at is null and newest.attempts < newest.max_attempts
        and newest.run_at <= now()
    ) as waiting,
    count(*) filter (where newest.locked_at is not null) as running,
    count(*) filter (
      where newest.locked_at is null and newest.attempts >= newest.max_attempts
    ) as failed,
    count(*) as total
  from newest
  where newest.job_queue_id is not null
  group by newest.job_queue_id
  order by count(*) desc
  limit %(limit)s
)
select queues.queue_name as name, counts.waiting, counts.running, counts.failed, counts.total,
  -- A queue paused by kongtaskd (steer) is locked at 'infinity': shown without a time.
  queues.locked_by, case when isfinite(queues.locked_at) then queues.locked_at end as locked_at
from counts
join {{schema}}._private_job_queues as queues on queues.id = counts.job_queue_id
order by counts.total desc, queues.queue_name
