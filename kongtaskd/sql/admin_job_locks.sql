-- The jobs listed in `ids` that exist, with who holds them: after an admin function skipped
-- some ids, this tells a locked job (skipped because it is running) from a missing one.
select jobs.id, jobs.locked_by, jobs.locked_at
from {{schema}}._private_jobs as jobs
where jobs.id = any(%(ids)s::bigint[])
