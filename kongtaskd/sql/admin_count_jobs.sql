-- `kongtaskd jobs list` when a --limit cut the list: how many jobs match in all, for
-- "showing 100 of 105". The where clause is admin_list_jobs.sql's, word for word
-- (tests/integration/test_admin.py checks), so the two always agree on what matches.
--
-- Parameters: task, queue (null: any), only (null | 'failed' | 'locked' | 'scheduled').
select count(*)
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
