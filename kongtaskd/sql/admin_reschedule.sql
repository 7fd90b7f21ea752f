-- `kongtaskd jobs retry` and `jobs reschedule`, through graphile-worker's own
-- reschedule_jobs(): it skips jobs a worker holds (locked less than four hours ago), so it
-- is safe beside running workers. A null argument leaves that column as it is; run_now
-- (retry) means the database's now(), not the client's clock.
-- Returns the changed jobs; a lock older than four hours is kept (reschedule_jobs does not
-- release it), so locked_by tells the caller the job waits for the stale-lock sweep.
select jobs.id, jobs.locked_by, jobs.locked_at
from {{schema}}.reschedule_jobs(
  %(ids)s::bigint[],
  run_at => case when %(run_now)s then now() else %(run_at)s::timestamptz end,
  priority => %(priority)s::integer,
  attempts => %(attempts)s::integer
) as jobs
order by jobs.id
