-- `kongtaskd jobs remove`, through graphile-worker's complete_jobs(): deletes the jobs,
-- skipping running ones (locked < 4 h).
select jobs.id, jobs.locked_by, jobs.locked_at
from {{schema}}.complete_jobs(%(ids)s::bigint[]) as jobs
order by jobs.id
