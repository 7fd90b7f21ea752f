-- `kongtaskd jobs fail`, through graphile-worker's permanently_fail_jobs(): attempts =
-- max_attempts so no worker claims the job again, last_error = the message (null: its
-- default, 'Manually marked as failed'). Running jobs (locked < 4 h) are skipped.
select jobs.id, jobs.locked_by, jobs.locked_at
from {{schema}}.permanently_fail_jobs(%(ids)s::bigint[], %(message)s::text) as jobs
order by jobs.id
