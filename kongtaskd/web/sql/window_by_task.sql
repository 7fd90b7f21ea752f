-- Overview: jobs per task and state among the newest `window` jobs (a backwards walk of the
-- primary key, whatever the table's size). Running and permanently failed jobs are not in
-- any index (is_available is false for both), so this window is how they are counted
-- without scanning the table; the page says how many jobs the window held. Also the
-- states the index counts, for databases without kongtaskd's index (graphile-worker only).
with newest as (
  select jobs.id, jobs.task_id, jobs.locked_at, jobs.attempts, jobs.max_attempts,
    jobs.last_error, jobs.run_at
  from {{schema}}._private_jobs as jobs
  order by jobs.id desc
  limit %(window)s
)
select
  tasks.identifier,
  count(*) filter (where newest.locked_at is not null) as running,
  count(*) filter (
    where newest.locked_at is null and newest.attempts >= newest.max_attempts
  ) as failed,
  count(*) filter (
    where newest.locked_at is null and newest.attempts < newest.max_attempts
      and newest.attempts > 0 and newest.last_error is not null
  ) as retrying,
  count(*) filter (
    where newest.locked_at is null and newest.attempts < newest.max_attempts
      and not (newest.attempts > 0 and newest.last_error is not null)
      and newest.run_at > now()
  ) as scheduled,
  count(*) filter (
    where newest.locked_at is null and newest.attempts < newest.max_attempts
      and not (newest.attempts > 0 and newest.last_error is not null)
      and newest.run_at <= now()
  ) as ready,
  min(newest.run_at) filter (
    where newest.locked_at is null and newest.attempts < newest.max_attempts
      and newest.run_at <= now()
  ) as oldest_due,
  -- Jobs whose last attempt failed (retrying or failed), for the failure share.
  count(*) filter (where newest.last_error is not null) as with_error,
  (select count(*) from newest) as window_rows,
  (select min(newest.id) from newest) as window_low
from newest
join {{schema}}._private_tasks as tasks on tasks.id = newest.task_id
group by tasks.identifier
order by tasks.identifier
