-- Delete up to $2 completed-job records older than $1 seconds (keep_completed), oldest
-- first, through _kongtaskd_completed_jobs_finished. Bounded, like prune_stats.sql: a fleet
-- completing thousands of jobs a second is kept up with one batch per loop turn, never one
-- long delete. Returns how many rows it deleted.
with doomed as (
  select history.ctid
  from {{schema}}._kongtaskd_completed_jobs as history
  where history.finished_at < now() - $1 * interval '1 second'
  order by history.finished_at
  limit $2
),
deleted as (
  delete from {{schema}}._kongtaskd_completed_jobs as history
  where history.ctid = any(array(select doomed.ctid from doomed))
  returning 1
)
select count(*) from deleted
