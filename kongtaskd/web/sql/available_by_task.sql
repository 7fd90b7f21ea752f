-- Overview: ready / scheduled / retrying jobs and the oldest due job, per task, from the
-- partial index _kongtaskd_jobs_ready (priority, task_id, run_at) where is_available (kongtaskd
-- migration 000002). A loose index scan finds each (priority, task) pair that has available
-- jobs (one probe per pair, not per job); per pair, each count stops at cap + 1 rows, so
-- a million waiting jobs cost what cap of them cost. Parameters: cap, max_pairs.
with recursive pairs as (
  (
    select jobs.priority, jobs.task_id
    from {{schema}}._private_jobs as jobs
    where jobs.is_available
    order by jobs.priority, jobs.task_id
    limit 1
  )
  union all
  select next.priority, next.task_id
  from pairs
  cross join lateral (
    select jobs.priority, jobs.task_id
    from {{schema}}._private_jobs as jobs
    where jobs.is_available and (jobs.priority, jobs.task_id) > (pairs.priority, pairs.task_id)
    order by jobs.priority, jobs.task_id
    limit 1
  ) as next
),
some_pairs as (select * from pairs limit %(max_pairs)s)
select
  tasks.identifier,
  some_pairs.priority,
  (
    select count(*) from (
      select 1 from {{schema}}._private_jobs as jobs
      where jobs.is_available and jobs.priority = some_pairs.priority
        and jobs.task_id = some_pairs.task_id and jobs.run_at <= now()
        and not (jobs.attempts > 0 and jobs.last_error is not null)
      limit %(cap)s + 1
    ) as hits
  ) as ready,
  (
    select count(*) from (
      select 1 from {{schema}}._private_jobs as jobs
      where jobs.is_available and jobs.priority = some_pairs.priority
        and jobs.task_id = some_pairs.task_id and jobs.run_at > now()
        and not (jobs.attempts > 0 and jobs.last_error is not null)
      limit %(cap)s + 1
    ) as hits
  ) as scheduled,
  (
    select count(*) from (
      select 1 from {{schema}}._private_jobs as jobs
      where jobs.is_available and jobs.priority = some_pairs.priority
        and jobs.task_id = some_pairs.task_id
        and jobs.attempts > 0 and jobs.last_error is not null
      limit %(cap)s + 1
    ) as hits
  ) as retrying,
  (
    select min(jobs.run_at) from {{schema}}._private_jobs as jobs
    where jobs.is_available and jobs.priority = some_pairs.priority
      and jobs.task_id = some_pairs.task_id and jobs.run_at <= now()
  ) as oldest_due
from some_pairs
join {{schema}}._private_tasks as tasks on tasks.id = some_pairs.task_id
order by tasks.identifier, some_pairs.priority
