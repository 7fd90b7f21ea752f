-- Overview, step 1: every (priority, task) pair that has available jobs, by a loose index
-- scan of _kongtaskd_jobs_ready (priority, task_id, run_at) where is_available (kongtaskd
-- migration 000002): one index probe per pair, never one per job. At most max_pairs.
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
)
select pairs.priority, pairs.task_id from pairs limit %(max_pairs)s
