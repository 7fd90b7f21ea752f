-- The cancels this pool ($1) still has to act on: jobs it holds with a _kongtaskd_cancels
-- row (kongtaskd migration 7). Read after a 'kongtaskd:cancel' NOTIFY, after every
-- (re)connect (a NOTIFY sent while the connection was down is lost) and at each heartbeat.
select cancels.job_id, cancels.message
from {{schema}}._kongtaskd_cancels as cancels
join {{schema}}._private_jobs as jobs on jobs.id = cancels.job_id
where jobs.locked_by = $1
order by cancels.job_id
