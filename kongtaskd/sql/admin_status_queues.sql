-- `kongtaskd status`: jobs per named queue, in the states of admin_status_tasks.sql, and
-- who holds the queue (a named queue runs one job at a time: its holder is running it).
-- Queues without jobs are left out unless someone holds them: a held, empty queue is a
-- lock nobody will release before the stale-lock sweep, worth seeing.
with counts as (
  select
    jobs.job_queue_id,
    count(*) filter (
      where jobs.locked_at is null and jobs.attempts < jobs.max_attempts
        and jobs.run_at <= now()
    ) as ready,
    count(*) filter (
      where jobs.locked_at is null and jobs.attempts < jobs.max_attempts
        and jobs.run_at > now()
    ) as scheduled,
    count(*) filter (where jobs.locked_at is not null) as locked,
    count(*) filter (
      where jobs.locked_at is null and jobs.attempts >= jobs.max_attempts
    ) as failed
  from {{schema}}._private_jobs as jobs
  where jobs.job_queue_id is not null
  group by jobs.job_queue_id
)
select
  queues.queue_name as name,
  coalesce(counts.ready, 0) as ready,
  coalesce(counts.scheduled, 0) as scheduled,
  coalesce(counts.locked, 0) as locked,
  coalesce(counts.failed, 0) as failed,
  queues.locked_by,
  queues.locked_at
from {{schema}}._private_job_queues as queues
left join counts on counts.job_queue_id = queues.id
where counts.job_queue_id is not null or queues.locked_by is not null
order by queues.queue_name
