-- /queues: for the queues of one page, their jobs among the newest `window` jobs: waiting,
-- running (with the running job's id: which job holds the queue), failed.
with newest as (
  select jobs.id, jobs.job_queue_id, jobs.locked_at, jobs.attempts, jobs.max_attempts,
    jobs.run_at
  from {{schema}}._private_jobs as jobs
  order by jobs.id desc
  limit %(window)s
)
select newest.job_queue_id,
  count(*) filter (
    where newest.locked_at is null and newest.attempts < newest.max_attempts
  ) as waiting,
  count(*) filter (
    where newest.locked_at is null and newest.attempts >= newest.max_attempts
  ) as failed,
  min(newest.id) filter (where newest.locked_at is not null) as running_job
from newest
where newest.job_queue_id = any(%(queue_ids)s::integer[])
group by newest.job_queue_id
