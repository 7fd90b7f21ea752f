-- `kongtaskd jobs list`: jobs from graphile-worker's public `jobs` view (its columns are
-- the stable interface), oldest first, with a derived state. The view leaves the payload
-- out on purpose; --json asks for it and gets it from _private_jobs, row by row.
--
-- States, first match wins: locked (a worker holds it), failed (no attempts left: permanently
-- failed), retrying (failed before, will run again), scheduled (run_at still ahead), ready.
--
-- Parameters: task, queue (null: any), only (null | 'failed' | 'locked' | 'scheduled'),
-- with_payload (boolean), limit (null: no limit). Run through a server-side cursor, so a
-- list of any length streams: no count(*) over () here, which would make PostgreSQL
-- collect every match before the first row; admin_count_jobs.sql counts when needed.
-- Its where clause is this one's, word for word (tests/integration/test_admin.py checks).
select
  jobs.id,
  jobs.task_identifier,
  jobs.queue_name,
  case
    when jobs.locked_at is not null then 'locked'
    when jobs.attempts >= jobs.max_attempts then 'failed'
    when jobs.attempts > 0 and jobs.last_error is not null then 'retrying'
    when jobs.run_at > now() then 'scheduled'
    else 'ready'
  end as state,
  jobs.priority,
  jobs.run_at,
  jobs.attempts,
  jobs.max_attempts,
  jobs.last_error,
  jobs.created_at,
  jobs.updated_at,
  jobs.key,
  jobs.locked_at,
  jobs.locked_by,
  jobs.revision,
  jobs.flags,
  case
    when %(with_payload)s then (
      select private.payload from {{schema}}._private_jobs as private where private.id = jobs.id
    )
  end as payload
from {{schema}}.jobs as jobs
where (%(task)s::text is null or jobs.task_identifier = %(task)s::text)
  and (%(queue)s::text is null or jobs.queue_name = %(queue)s::text)
  and case %(only)s::text
    -- Every job whose last attempt failed: retrying, permanently failed, or running again.
    when 'failed' then jobs.last_error is not null
    when 'locked' then jobs.locked_at is not null
    -- Waiting for a future run_at: new jobs added for later and retries in back-off.
    when 'scheduled' then jobs.locked_at is null
      and jobs.attempts < jobs.max_attempts
      and jobs.run_at > now()
    else true
  end
order by jobs.id
limit %(limit)s
