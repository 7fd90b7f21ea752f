-- Overview, step 2: for each (priority, task) pair of step 1, its due jobs (available,
-- run_at <= now(): ready, and retries whose back-off has passed), its future ones (run_at
-- ahead) and its oldest due run_at, all from index-only range scans of _kongtaskd_jobs_ready.
-- Each count stops at cap + 1 rows, the caller choosing cap so pairs x cap stays within a
-- fixed budget: a million waiting jobs cost what a few thousand index entries cost.
select tasks.identifier, pairs.priority,
  (
    select count(*) from (
      select 1 from {{schema}}._private_jobs as jobs
      where jobs.is_available and jobs.priority = pairs.priority
        and jobs.task_id = pairs.task_id and jobs.run_at <= now()
      limit %(cap)s + 1
    ) as hits
  ) as due,
  (
    select count(*) from (
      select 1 from {{schema}}._private_jobs as jobs
      where jobs.is_available and jobs.priority = pairs.priority
        and jobs.task_id = pairs.task_id and jobs.run_at > now()
      limit %(cap)s + 1
    ) as hits
  ) as future,
  (
    select jobs.run_at from {{schema}}._private_jobs as jobs
    where jobs.is_available and jobs.priority = pairs.priority
      and jobs.task_id = pairs.task_id
    order by jobs.run_at
    limit 1
  ) as first_run_at
from unnest(%(priorities)s::smallint[], %(task_ids)s::integer[]) as pairs (priority, task_id)
join {{schema}}._private_tasks as tasks on tasks.id = pairs.task_id
